"""Sample text from a trained language model, one token at a time.

The model is any object with ``reset()`` and
``forward(tokens [T, B] long, hidden) -> (logits [T, B, V], new_hidden, ...)``
(:class:`qrnn_lm.models.LanguageModel`). Generation runs batch size 1: the prompt is fed in one
forward call, then each sampled token is fed back with the hidden state carried along, exactly as
in training's stateful BPTT.

Sampling, per step, on the last position's logits ``[V]``:
``logits / temperature`` -> keep the ``top_k`` largest (0 keeps all) -> keep the smallest set of
most likely tokens whose probability sums to at least ``top_p`` (nucleus) -> draw one token from
the softmax with a ``torch.Generator`` seeded by ``seed`` (same seed, same model, same device ->
same text).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch

from ..config import ConfigError, UserError, check_options

EOS = "<eos>"  # the end-of-line token the corpus adds to every line
UNK = "<unk>"  # the token unknown words map to


class GenerationError(UserError, ValueError):
    """A bad prompt or sampling value (a UserError for the CLI, a ValueError for library users)."""


@dataclass
class EncodedPrompt:
    ids: list[int]  # token ids fed to the model before sampling
    unknown: list[str]  # prompt words missing from the vocabulary (each mapped to <unk>)


def encode_prompt(vocab, prompt: str | None) -> EncodedPrompt:
    """Whitespace-tokenise ``prompt`` (as the corpus is tokenised) into vocabulary ids.

    ``None`` starts from a line boundary (the ``<eos>`` token), i.e. a fresh sentence. A prompt that
    is empty after tokenisation (``""``, only spaces) raises GenerationError: it is almost always a
    mistake (an empty shell variable), and there is nothing to continue.
    """
    if prompt is None:
        if EOS not in vocab.stoi:
            raise GenerationError(f"the checkpoint's vocabulary has no {EOS} token; pass --prompt TEXT")
        return EncodedPrompt(ids=[vocab.stoi[EOS]], unknown=[])
    words = prompt.split()
    if not words:
        raise GenerationError(f"the prompt {prompt!r} is empty after tokenisation; give some words or omit --prompt")
    unknown = [word for word in words if word not in vocab.stoi]
    if unknown and UNK not in vocab.stoi:
        raise GenerationError(
            f"prompt words {', '.join(unknown[:5])} are not in the vocabulary, which has no {UNK} token "
            "to stand for them; leave them out of the prompt"
        )
    return EncodedPrompt(ids=vocab.encode(words), unknown=unknown)


def check_sampling(*, num_tokens: int, temperature: float, top_k: int, top_p: float) -> None:
    """Raise GenerationError naming the expected and the actual value for a bad sampling option
    (the ranges of ``qrnn-lm generate``'s options, :data:`qrnn_lm.rules.OPTIONS`)."""
    try:
        check_options(tokens=num_tokens, temperature=temperature, top_k=top_k, top_p=top_p)
    except ConfigError as error:
        raise GenerationError(str(error)) from None


def filter_logits(logits: torch.Tensor, *, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Scale and filter one step's logits.

    Args:
        logits: ``[V]`` unnormalised scores.
        temperature: divides the logits; < 1 sharpens, > 1 flattens.
        top_k: keep exactly the ``top_k`` highest-scoring tokens; 0 (or >= V) keeps all.
        top_p: keep the most likely tokens until their probability reaches ``top_p``; the most
            likely token is always kept, 1 keeps all.

    Returns:
        ``[V]`` float32 logits, shifted so that the largest is 0 (the same softmax), with removed
        tokens at ``-inf`` (softmax gives them probability 0).
    """
    # Shift before dividing: any temperature > 0, however small, then gives 0 for the best tokens and
    # at worst -inf for the others (greedy), never inf - inf = NaN.
    logits = logits.float()
    logits = (logits - logits.max()) / temperature
    vocab_size = logits.shape[-1]
    if 0 < top_k < vocab_size:
        values, indices = torch.topk(logits, top_k)
        # Scatter the kept values into a -inf canvas: exactly k survivors even when scores tie.
        logits = torch.full_like(logits, float("-inf")).scatter(0, indices, values)
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        sorted_probs = torch.softmax(sorted_logits, dim=-1)
        # Probability mass strictly before each token: a token is needed while that is < top_p,
        # so the most likely token (mass before it = 0) always stays.
        mass_before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
        remove_sorted = mass_before >= top_p
        remove = torch.zeros_like(remove_sorted).scatter(0, order, remove_sorted)
        logits = logits.masked_fill(remove, float("-inf"))
    return logits


@torch.inference_mode()  # per call, not around the generator: a suspended `with` would leak to the caller
def _last_logits(model, ids: list[int], hidden, device: torch.device):
    """Feed ``ids`` as one ``[T, 1]`` sequence; return the last position's logits ``[V]`` and the new hidden."""
    tokens = torch.tensor(ids, dtype=torch.long, device=device).unsqueeze(1)  # [T] -> [T, B=1]
    if getattr(model, "decodes_last_only", False):  # the decoder runs on the last position only
        logits, hidden = model(tokens, hidden, last_only=True)[:2]  # logits [1, 1, V]
    else:
        logits, hidden = model(tokens, hidden)[:2]  # logits [T, 1, V]
    return logits[-1, 0], hidden


def _model_device(model) -> torch.device:
    parameter = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
    return parameter.device if parameter is not None else torch.device("cpu")


def generate(
    model,
    vocab,
    prompt: str | None = None,
    *,
    num_tokens: int = 100,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int | None = None,
) -> Iterator[str]:
    """Yield ``num_tokens`` sampled tokens (strings, ``<eos>`` included) continuing ``prompt``.

    Lazy: each token is yielded as soon as it is sampled, so a caller can stream it. The prompt
    itself is not yielded. ``seed=None`` draws a fresh random seed; an int makes the text
    reproducible for the same model, device and options. Bad values raise GenerationError before
    the model runs.
    """
    check_sampling(num_tokens=num_tokens, temperature=temperature, top_k=top_k, top_p=top_p)
    encoded = encode_prompt(vocab, prompt)
    return (vocab.itos[i] for i in _sample(model, encoded.ids, num_tokens, temperature, top_k, top_p, seed))


def encode_text_prompt(tokenizer, prompt: str | None) -> EncodedPrompt:
    """A char, byte or subword ``prompt`` through the checkpoint's tokenizer; ``None`` starts
    after a line end (a newline token or ``<eos>``). ``unknown``: characters outside a char
    model's alphabet (each read as ``<unk>``)."""
    if prompt == "":
        raise GenerationError("the prompt is empty; give some text or omit --prompt")
    ids = tokenizer.encode("\n" if prompt is None else prompt)
    unknown = []
    if tokenizer.kind == "char":
        unk = tokenizer.vocab.unk_index
        if prompt is None and ids == [unk]:
            raise GenerationError("the model never saw a line end, so it cannot start a fresh line; pass --prompt TEXT")
        unknown = [c for c, i in zip(prompt or "", ids) if i == unk] if not tokenizer.spaced else []
    return EncodedPrompt(ids=ids, unknown=unknown)


def generate_text(
    model,
    tokenizer,
    prompt: str | None = None,
    *,
    num_tokens: int = 100,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int | None = None,
) -> Iterator[str]:
    """As :func:`generate` for char, byte and subword models: yield readable text, decoded as it
    is sampled (PTB-char's ``_`` as a space; bytes as UTF-8 with invalid sequences replaced, an
    unfinished sequence held back until it completes)."""
    check_sampling(num_tokens=num_tokens, temperature=temperature, top_k=top_k, top_p=top_p)
    encoded = encode_text_prompt(tokenizer, prompt)
    return _decoded(tokenizer.decoder(), _sample(model, encoded.ids, num_tokens, temperature, top_k, top_p, seed))


def _decoded(step, ids: Iterator[int]) -> Iterator[str]:
    for token_id in ids:
        piece = step(token_id)
        if piece:
            yield piece
    tail = step(None)  # an unfinished UTF-8 sequence at the end, replaced
    if tail:
        yield tail


def _sample(model, prompt_ids, num_tokens, temperature, top_k, top_p, seed) -> Iterator[int]:
    device = _model_device(model)
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()  # no dropout while sampling
    try:
        model.reset()  # forget save_prev_x inputs left over from earlier use
        logits, hidden = _last_logits(model, prompt_ids, None, device)
        for step in range(num_tokens):
            probs = torch.softmax(filter_logits(logits, temperature=temperature, top_k=top_k, top_p=top_p), dim=-1)
            token_id = int(torch.multinomial(probs, 1, generator=generator))
            yield token_id
            if step + 1 < num_tokens:  # the last token needs no forward pass
                logits, hidden = _last_logits(model, [token_id], hidden, device)
    finally:
        if was_training and hasattr(model, "train"):
            model.train()


def render(tokens: Iterable[str], *, first: bool = True) -> Iterator[str]:
    """Turn tokens into printable pieces: words separated by spaces, ``<eos>`` as a newline.

    ``first=False`` means text is already on the current line (e.g. an echoed prompt), so the
    first word gets a leading space.
    """
    at_line_start = first
    for token in tokens:
        if token == EOS:
            yield "\n"
            at_line_start = True
        else:
            yield token if at_line_start else " " + token
            at_line_start = False
