"""The ``qrnn-lm`` command line: ``train``, ``eval``, ``generate``, ``export``, ``plot`` and ``bench``.

A thin typer app: each command parses and checks its options, then calls one library function
(``training.train``, ``inference.evaluate.evaluate_checkpoint``, ``inference.generate.generate``). torch and the engine are
imported inside the commands, so ``qrnn-lm --help`` is instant.

Exit codes: 0 success; 1 a problem the user can fix (any ``qrnn_lm.config.UserError``), printed as
one ``error: ...`` line on stderr, never a traceback; 2 a malformed command line (typer's usage
message, e.g. ``--tokens abc``); 128 + signum when a run is stopped (130 Ctrl-C, 143 SIGTERM, 129
SIGHUP; the shell convention).
The ``bench`` sub-app (``qrnn_lm.cli.bench``) is mounted with ``app.add_typer``.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..config import UserError
from .bench import bench_app
from .export import export_command
from .plot import plot_command
from .recipes import resolve_train_config
from .train import EXIT_INTERRUPTED, argv_without_nproc, run_training

EXIT_USER_ERROR = 1

app = typer.Typer(
    name="qrnn-lm",
    no_args_is_help=True,
    help="Train, evaluate and sample QRNN language models (Penn Treebank, WikiText or your own text).",
)


class Dataset(str, Enum):
    """The named corpora (``qrnn_lm.data.DATASETS``); ``--data`` also takes a folder."""

    ptb = "ptb"
    wikitext_2 = "wikitext-2"
    wikitext_103 = "wikitext-103"


class Device(str, Enum):
    auto = "auto"  # CUDA when available, else CPU
    cpu = "cpu"
    cuda = "cuda"


class Split(str, Enum):
    train = "train"
    valid = "valid"
    test = "test"


def _complete_dataset(incomplete: str) -> list[str]:
    return [item.value for item in Dataset if item.value.startswith(incomplete)]


# Options shared by several commands.
DataOption = Annotated[
    Optional[str],
    typer.Option(
        "--data",
        metavar="NAME|PATH",
        help="ptb, wikitext-2, wikitext-103 (downloaded when missing), a folder holding train.txt, valid.txt, test.txt, or one text file (split 90/5/5% by lines).",
        autocompletion=_complete_dataset,
    ),
]
DataDirOption = Annotated[
    Optional[Path],
    typer.Option("--data-dir", metavar="DIR", help="Where named datasets live (default: $QRNN_LM_DATA, else ./data)."),
]
DeviceOption = Annotated[Device, typer.Option("--device", help="auto picks CUDA when available.", case_sensitive=False)]
ProgressOption = Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")]


def _one_line(message: str) -> str:
    return " ".join(part.strip() for part in str(message).splitlines() if part.strip())


def _error_exit(message: str) -> typer.Exit:
    """Print ``error: <message>`` as one line on stderr; return the exit-1 exception to raise."""
    typer.echo(f"error: {_one_line(message)}", err=True)
    return typer.Exit(EXIT_USER_ERROR)


@contextmanager
def _user_errors():
    """Turn a UserError into ``error: <one line>`` + exit 1, and Ctrl-C into exit 130."""
    try:
        yield
    except UserError as error:
        raise _error_exit(str(error)) from None
    except KeyboardInterrupt:
        typer.echo("\ninterrupted", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None


def _check_data(data: str | None) -> None:
    """Fail fast (before torch loads) on a --data that is neither a known name, a folder nor a file."""
    if data is None or data in {item.value for item in Dataset} or Path(data).expanduser().exists():
        return
    names = ", ".join(item.value for item in Dataset)
    raise _error_exit(f"unknown dataset or missing folder '{data}': use {names}, a folder holding train.txt, "
                      "valid.txt, test.txt, or one text file (split by lines)")


def _checkpoint_file(path: Path, default_name: str) -> Path:
    """A run folder stands for its ``default_name`` checkpoint (best.pt to use, last.pt to resume)."""
    return path / default_name if path.is_dir() else path


@app.command()
def train(
    data: DataOption = None,
    config: Annotated[
        Optional[Path],
        typer.Option("--config", "-c", metavar="FILE", help="TOML recipe (default: configs/<data>.toml when it exists)."),
    ] = None,
    set_: Annotated[
        Optional[list[str]],
        typer.Option("--set", "-s", metavar="SECTION.KEY=VALUE", help="Override one config value (repeatable), e.g. --set train.lr=10."),
    ] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", metavar="DIR", help="Run folder (default: runs/<name>); a resumed run keeps its folder.")] = None,
    device: DeviceOption = Device.auto,
    resume: Annotated[
        Optional[Path],
        typer.Option("--resume", metavar="DIR|CHECKPOINT", help="Continue an interrupted run (a run folder means its last.pt)."),
    ] = None,
    resume_previous: Annotated[
        bool,
        typer.Option("--resume-previous", help="With --resume DIR: when its last.pt is damaged, continue from the earlier last.prev.pt."),
    ] = False,
    max_steps: Annotated[Optional[int], typer.Option("--max-steps", help="Stop after N optimizer steps (= --set train.max_steps=N).")] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Train for N epochs (= --set train.epochs=N).")] = None,
    max_minutes: Annotated[Optional[float], typer.Option("--max-minutes", metavar="M", help="Stop after M minutes of training and validation, counted across resumes (= --set train.max_minutes=M).")] = None,
    data_dir: DataDirOption = None,
    progress: ProgressOption = True,
    nproc: Annotated[
        int,
        typer.Option(
            "--nproc", min=1,
            help="Data-parallel processes on this machine (torchrun's machinery): one GPU each, or gloo "
            "on the CPU. data.batch_size stays the global batch.",
        ),
    ] = 1,
):
    """Train a QRNN language model; checkpoints, TensorBoard logs and results.json go to the run folder.

    Example: qrnn-lm train --data ptb --config configs/ptb-small.toml
    (add --set model.rnn=lstm for the same recipe with AWD-LSTM layers)
    """
    if nproc > 1:
        from ..training.distributed import launch_local

        # Each rank runs this same command line without --nproc, under torchrun's agent.
        raise typer.Exit(launch_local(nproc, argv_without_nproc(sys.argv[1:])))
    overrides = list(set_ or [])
    if max_steps is not None:
        overrides.append(f"train.max_steps={max_steps}")
    if epochs is not None:
        overrides.append(f"train.epochs={epochs}")
    if max_minutes is not None:
        overrides.append(f"train.max_minutes={max_minutes!r}")
    if data is None and config is None and resume is None:
        raise _error_exit("say what to train on: --data ptb|wikitext-2|wikitext-103|PATH, or --config FILE, or --resume DIR")
    _check_data(data)
    with _user_errors():
        resumed = None
        if resume is not None:
            from ..training.checkpointer import resume_checkpoint

            resume, payload = resume_checkpoint(resume, take_previous=resume_previous)  # fails early on a bad one
            resumed = payload["config"]
        run_config = resolve_train_config(data, config, overrides, resumed, [d.value for d in Dataset])
        out = out if out is not None else resume.parent if resume is not None else Path("runs") / run_config.name
        run_training(run_config, out, device.value, resume, data_dir, progress)


@app.command()
def finetune(
    checkpoint: Annotated[Path, typer.Argument(metavar="CHECKPOINT", help="A finished run's best.pt, or its run folder.")],
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="At most N epochs (= --set train.epochs=N; default: the recipe's).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", metavar="DIR", help="Run folder (default: runs/<name>-finetune).")] = None,
    set_: Annotated[
        Optional[list[str]],
        typer.Option("--set", "-s", metavar="SECTION.KEY=VALUE", help="Override one value of the run's recipe (repeatable), e.g. --set train.lr=10."),
    ] = None,
    max_steps: Annotated[Optional[int], typer.Option("--max-steps", help="Stop after N optimizer steps (= --set train.max_steps=N).")] = None,
    device: DeviceOption = Device.auto,
    data_dir: DataDirOption = None,
    progress: ProgressOption = True,
):
    """Continue a finished run's best weights in averaged SGD, as awd-lstm-lm's finetune.py.

    The run's recipe (stored in the checkpoint) applies unless overridden; the finetune stops at
    train.epochs or when validation is worse than the best but the last train.nonmono. Its own run
    folder resumes like any run (qrnn-lm train --resume DIR); results.json compares it with the start.

    Example: qrnn-lm finetune runs/ptb-small --epochs 50
    """
    overrides = list(set_ or [])
    if epochs is not None:
        overrides.append(f"train.epochs={epochs}")
    if max_steps is not None:
        overrides.append(f"train.max_steps={max_steps}")
    with _user_errors():
        from ..models.checkpoint import load_checkpoint

        checkpoint = _checkpoint_file(checkpoint, "best.pt")
        stored = load_checkpoint(checkpoint)["config"]  # fails early on a bad checkpoint
        run_config = resolve_train_config(None, None, overrides, stored, [d.value for d in Dataset])
        if "name" not in {text.split("=", 1)[0].strip() for text in overrides}:
            run_config.name = f"{run_config.name}-finetune"
        out = out if out is not None else Path("runs") / run_config.name
        run_training(run_config, out, device.value, None, data_dir, progress, init_from=checkpoint)


@app.command("eval")
def evaluate(
    checkpoint: Annotated[Path, typer.Argument(metavar="CHECKPOINT", help="A .pt file, or a run folder (its best.pt).")],
    split: Annotated[Split, typer.Option("--split", help="Which split to score.")] = Split.test,
    data: DataOption = None,
    data_dir: DataDirOption = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Parallel streams: 1 is the exact literature number, more is faster.")] = 1,
    device: DeviceOption = Device.auto,
    progress: ProgressOption = True,
    cache: Annotated[bool, typer.Option("--cache", help="Add the continuous cache pointer (Grave et al. 2017); implied by any --cache-* option.")] = False,
    cache_window: Annotated[Optional[int], typer.Option("--cache-window", metavar="N", help="Cache size in steps [default: 500].")] = None,
    cache_theta: Annotated[Optional[float], typer.Option("--cache-theta", metavar="THETA", help="Flatness of the cache attention [default: 1.0].")] = None,
    cache_lambda: Annotated[Optional[float], typer.Option("--cache-lambda", metavar="LAMBDA", help="Weight of the cache in [0, 1] [default: 0.1].")] = None,
    cache_search: Annotated[bool, typer.Option("--cache-search", help="Pick theta and lambda by a grid on valid, then score test.")] = False,
):
    """Print a checkpoint's loss and perplexity on a split (by default of the data it was trained on).

    With the cache pointer (--cache, --cache-*), the split is scored at batch size 1 without and
    with the cache. Example: qrnn-lm eval runs/ptb-small/best.pt --split test
    """
    if batch_size < 1:
        raise _error_exit(f"--batch-size must be >= 1, got {batch_size}")
    _check_data(data)
    if cache or cache_search or any(v is not None for v in (cache_window, cache_theta, cache_lambda)):
        if batch_size != 1:
            raise _error_exit("the cache pointer scores one stream: use --batch-size 1")
        if cache_search and (cache_theta is not None or cache_lambda is not None):
            raise _error_exit("--cache-search chooses theta and lambda itself: drop --cache-theta/--cache-lambda")
        with _user_errors():
            _evaluate_with_cache(_checkpoint_file(checkpoint, "best.pt"), split.value, data, data_dir, device.value,
                                 progress, cache_window, cache_theta, cache_lambda, cache_search)
        return
    with _user_errors():
        from ..inference.evaluate import evaluate_checkpoint

        result = evaluate_checkpoint(
            _checkpoint_file(checkpoint, "best.pt"),
            split=split.value,
            data=data,
            data_dir=data_dir,
            batch_size=batch_size,
            device=device.value,
            progress=progress,
        )
        units = f"  bpc {result['bpc']:.4f}" if "bpc" in result else ""
        if "word_ppl" in result:
            units = f"  per-word ppl {result['word_ppl']:.2f} ({result['words']:,} words)"
        typer.echo(
            f"{result['dataset']} {result['split']}: loss {result['loss']:.4f}  "
            f"ppl {result['ppl']:.2f}{units}  ({result['tokens']:,} tokens)"
        )
        if result.get("unknown_words"):
            typer.echo(f"note: {result['unknown_words']:,} tokens are not in the checkpoint's vocabulary "
                       "and were scored as its <unk>")


def _evaluate_with_cache(path, split, data, data_dir, device, progress, window, theta, lambd, search) -> None:
    from ..inference.cache import CacheParams, evaluate_cache_checkpoint

    defaults = CacheParams()
    params = CacheParams(window=defaults.window if window is None else window,
                         theta=defaults.theta if theta is None else theta,
                         lambd=defaults.lambd if lambd is None else lambd)
    params.check()  # before the slow load
    result = evaluate_cache_checkpoint(path, split=split, params=params, search_grid=search, data=data,
                                       data_dir=data_dir, device=device, progress=progress)
    name, pair = result["dataset"], f"window {result['window']}, theta {result['theta']:g}, lambda {result['lambda']:g}"
    if search:
        typer.echo(f"{name} valid: ppl {_exp(result['valid_loss']):.2f} -> {_exp(result['valid_cache_loss']):.2f} "
                   f"with the cache; best of the grid: {pair}")
    typer.echo(f"{name} {result['split']}: ppl {result['ppl']:.2f} -> {result['cache_ppl']:.2f} with the cache "
               f"({pair}; loss {result['loss']:.4f} -> {result['cache_loss']:.4f}; {result['tokens']:,} tokens)")


def _exp(loss: float) -> float:
    import math

    return math.exp(min(loss, 700.0))


@app.command()
def generate(
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
    with _user_errors():
        from ..inference.generate import check_sampling

        check_sampling(num_tokens=tokens, temperature=temperature, top_k=top_k, top_p=top_p)  # before the slow load
        _stream_sample(_checkpoint_file(checkpoint, "best.pt"), prompt, tokens, temperature, top_k, top_p, seed, device.value)


def _stream_sample(path, prompt, tokens, temperature, top_k, top_p, seed, device) -> None:
    from ..inference.evaluate import resolve_device
    from ..inference.generate import encode_prompt
    from ..inference.generate import generate as sample
    from ..inference.generate import render
    from ..models.checkpoint import load_checkpoint, model_from_checkpoint, tokenizer_from_checkpoint

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


app.add_typer(bench_app, name="bench")  # torch loads inside its commands too
app.command("export")(export_command)  # qrnn_lm.cli.export; torch loads inside it
app.command("plot")(plot_command)  # qrnn_lm.cli.plot; matplotlib loads inside it


def main() -> None:
    """Entry point of the ``qrnn-lm`` script and ``python -m qrnn_lm``."""
    from ..malloc_tuning import keep_freed_memory

    keep_freed_memory()  # reuse freed tensor memory instead of page-faulting on every step
    try:
        app(prog_name="qrnn-lm")
    except SystemExit as stop:
        # distributed.launched_by_torchrun's test, read here without importing torch (--help).
        if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            raise
        from ..training.distributed import exit_rank

        exit_rank(stop.code)  # a torchrun rank: skip the library teardown that can abort (see exit_rank)
