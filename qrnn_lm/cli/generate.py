"""``qrnn-lm generate``: stream sampled text from a checkpoint to stdout."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..config import check_options
from .options import Device, DeviceOption, checkpoint_file, user_errors


def generate_command(
    checkpoint: Annotated[Path, typer.Argument(metavar="CHECKPOINT", help="A .pt file, or a run folder (its best.pt).")],
    prompt: Annotated[Optional[str], typer.Option("--prompt", "-p", help="Text to continue (default: start a new line).")] = None,
    tokens: Annotated[int, typer.Option("--tokens", "-n", help="How many tokens to sample.")] = 100,
    temperature: Annotated[float, typer.Option("--temperature", "-t", help="> 0; below 1 is more conservative.")] = 1.0,
    top_k: Annotated[int, typer.Option("--top-k", help="Sample among the K most likely tokens; 0 keeps all.")] = 0,
    top_p: Annotated[float, typer.Option("--top-p", help="Sample among the most likely tokens holding this probability mass; in (0, 1].")] = 1.0,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Same seed, same text (default: random).")] = None,
    device: DeviceOption = Device.auto,
):
    """Stream sampled text from a checkpoint to stdout (needs no data files; <eos> prints as a newline).

    Example: qrnn-lm generate runs/ptb-small/best.pt --prompt "the company said" --tokens 50 --top-p 0.9
    """
    with user_errors():
        from ..inference.generate import check_sampling

        check_sampling(num_tokens=tokens, temperature=temperature, top_k=top_k, top_p=top_p)  # before the slow load
        check_options(seed=seed)
        _stream_sample(checkpoint_file(checkpoint, "best.pt"), prompt, tokens, temperature, top_k, top_p, seed, device.value)


def _stream_sample(path, prompt, tokens, temperature, top_k, top_p, seed, device) -> None:
    from ..device import resolve_device
    from ..inference.generate import encode_prompt
    from ..inference.generate import generate as sample
    from ..inference.generate import render
    from ..models.checkpoint_file import load_checkpoint, model_from_checkpoint, tokenizer_from_checkpoint

    payload = load_checkpoint(path)
    model, vocab, _ = model_from_checkpoint(payload, device=resolve_device(device))
    tokenizer = tokenizer_from_checkpoint(payload)
    if tokenizer.kind != "word":
        _stream_text(model, tokenizer, prompt, tokens, temperature, top_k, top_p, seed)
        return
    encoded = encode_prompt(vocab, prompt)
    if encoded.unknown:
        words = ", ".join(dict.fromkeys(encoded.unknown))
        typer.echo(f"warning: not in the vocabulary, read as <unk>: {words}", err=True)
    if prompt is not None:
        typer.echo(" ".join(prompt.split()), nl=False)
    ended_with_newline = prompt is None
    stream = sample(model, vocab, prompt, num_tokens=tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    try:
        for piece in render(stream, first=prompt is None):
            typer.echo(piece, nl=False)  # click's echo flushes: text appears as it is sampled
            ended_with_newline = piece == "\n"
        if not ended_with_newline:
            typer.echo()
    except BrokenPipeError:  # e.g. `qrnn-lm generate ... | head`: stop quietly
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - Python flushes stdout again at exit


def _stream_text(model, tokenizer, prompt, tokens, temperature, top_k, top_p, seed) -> None:
    """Char, byte and subword models: the prompt as typed, then the decoded continuation."""
    from ..inference.generate import encode_text_prompt, generate_text

    encoded = encode_text_prompt(tokenizer, prompt)
    if encoded.unknown:
        typer.echo(f"warning: not in the model's alphabet, read as <unk>: {''.join(dict.fromkeys(encoded.unknown))}", err=True)
    typer.echo(prompt or "", nl=False)
    text = ""
    try:
        for text in generate_text(model, tokenizer, prompt, num_tokens=tokens, temperature=temperature,
                                  top_k=top_k, top_p=top_p, seed=seed):
            typer.echo(text, nl=False)
        if not text.endswith("\n"):
            typer.echo()
    except BrokenPipeError:  # e.g. `qrnn-lm generate ... | head`: stop quietly
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - Python flushes stdout again at exit
