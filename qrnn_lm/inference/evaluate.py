"""Evaluation: the exact per-token cross-entropy of a model over a whole split.

``evaluate`` walks a batchified split in consecutive segments of ``bptt`` steps, carrying the
hidden state (and the saved convolution inputs) across segments, and averages the loss over every
target token: ``sum of -log p(target) / number of targets``, in nats. Perplexity is its ``exp``.
With batch size 1 (the literature's convention) every token of the split but the first is a target.

``loss_sum`` gives the sum and the count instead of the mean: a data-parallel trainer evaluates each
rank's share of the streams with it and all-reduces both, which gives the exact token-weighted mean.
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch

from ..models.checkpoint_file import load_checkpoint, model_from_checkpoint, tokenizer_from_checkpoint
from ..config import UserError
from ..device import resolve_device
from ..data import Corpus, batchify, bits_per_character, count_words, get_batch, prepare_data, word_perplexity
from .checkpoint_data import checkpoint_corpus

__all__ = ["perplexity", "evaluate", "loss_sum", "evaluate_checkpoint", "count_unknown_words", "SPLITS"]

SPLITS = ("train", "valid", "test")


def perplexity(loss: float) -> float:
    """Perplexity of a mean loss in nats: ``exp(loss)``, clamped at ``exp(700)`` (beyond it a float
    overflows, e.g. for a diverged model's loss). The one perplexity of the package."""
    return math.exp(min(loss, 700.0))


def evaluate(model: torch.nn.Module, source: torch.Tensor, bptt: int, *, progress: bool = False) -> float:
    """Mean per-token loss (nats) of ``model`` over every target of ``source``.

    Args:
        model: a :class:`~qrnn_lm.models.LanguageModel` (put in eval mode and reset here).
        source: ``[N, B]`` batchified token ids on the model's device; ``(N - 1) * B`` targets.
        bptt: segment length (does not change the result beyond float rounding: the state is
            carried across segments).
        progress: show a tqdm bar.

    Returns:
        ``total loss / (N - 1) * B`` as a Python float.
    """
    if source.dim() == 2 and source.size(1) == 0:
        raise ValueError(f"source must hold at least one stream, got {tuple(source.shape)}")
    total, count = loss_sum(model, source, bptt, progress=progress)
    return total / count


@torch.no_grad()
def loss_sum(model: torch.nn.Module, source: torch.Tensor, bptt: int, *, progress: bool = False) -> tuple[float, int]:
    """``(sum of -log p(target) in nats, number of targets)`` over ``source`` ``[N, B]``, as
    :func:`evaluate`; ``(0.0, 0)`` for a source with no streams (``B = 0``: a rank without a share)."""
    if source.dim() == 2 and source.size(1) == 0 and source.size(0) >= 2:
        return 0.0, 0
    if source.dim() != 2 or source.size(0) < 2:
        raise ValueError(f"source must be [N, B] with N >= 2, got {tuple(source.shape)}")
    if bptt < 1:
        raise ValueError(f"bptt must be >= 1, got {bptt}")
    was_training = model.training
    model.eval()
    model.reset()
    hidden = model.init_hidden(source.size(1))
    total = torch.zeros((), dtype=torch.float64, device=source.device)
    starts = range(0, source.size(0) - 1, bptt)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="eval", unit="seg", leave=False)
    for start in starts:
        inputs, targets = get_batch(source, start, bptt)  # [L, B] each
        # The model sums -log p(target) itself: in chunks when the logits would be too large.
        loss, hidden, _, _ = model(inputs, hidden, targets)
        total += loss.double()
    model.reset()
    model.train(was_training)
    return total.item(), (source.size(0) - 1) * source.size(1)


def evaluate_checkpoint(
    checkpoint: str | os.PathLike | dict[str, Any],
    *,
    split: str = "test",
    data: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    batch_size: int = 1,
    device: str = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate a checkpoint (a path or a loaded payload) on ``split`` of its dataset or of ``data``.

    Words missing from the checkpoint's vocabulary map to its ``<unk>``. With ``batch_size`` 1 every
    token but the first is scored; with ``B > 1`` the split is cut into B streams (the last
    ``N mod B`` tokens are dropped and each stream's first token is not a target), which is faster
    and differs slightly. Returns
    ``{"loss", "ppl", "tokens", "split", "dataset", "batch_size", "unknown_words"}``
    (``unknown_words``: tokens of the split absent from the checkpoint's vocabulary, scored as its
    ``<unk>``; see :func:`count_unknown_words`).
    """
    if split not in SPLITS:
        raise UserError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if batch_size < 1:
        raise UserError(f"batch size must be >= 1, got {batch_size}")
    payload = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
    torch_device = resolve_device(device)
    model, vocab, config = model_from_checkpoint(payload, torch_device)
    dataset = str(data) if data is not None else config.data.dataset
    unknown = 0
    if tokenizer_from_checkpoint(payload).kind == "word":  # first: it names a word the model lacks
        own = Corpus.load(prepare_data(dataset, data_dir, progress=progress), progress=progress)
        unknown = count_unknown_words(own, split, vocab, dataset)
    corpus, folder = checkpoint_corpus(payload, dataset, data_dir, progress=progress)
    ids = getattr(corpus, split)
    source = batchify(ids, batch_size).to(torch_device)  # [N, B]
    loss = evaluate(model, source, config.data.bptt, progress=progress)
    units: dict[str, Any] = {}
    if corpus.tokenizer.unit == "bpc":
        units["bpc"] = bits_per_character(loss)
    elif corpus.tokenizer.unit == "word_ppl":
        words = count_words(folder / f"{split}.txt")
        units.update(words=words, word_ppl=word_perplexity(loss * ids.numel(), words))
    return {
        **units,
        "tokenizer": corpus.tokenizer.kind,
        "loss": loss,
        "ppl": perplexity(loss),
        "tokens": (source.size(0) - 1) * source.size(1),
        "split": split,
        "dataset": dataset,
        "batch_size": batch_size,
        "unknown_words": unknown,
    }


def count_unknown_words(own: Corpus, split: str, vocab, dataset: str) -> int:
    """How many tokens of ``split`` (read with the data's own vocabulary ``own``) are words
    absent from the checkpoint's ``vocab``, i.e. are scored as its ``<unk>`` (a PTB model on
    WikiText-2, say). The data's own ``<unk>`` tokens are not counted. Raises UserError when
    there are some and ``vocab`` has no ``<unk>`` to stand for them."""
    ids = getattr(own, split)  # [N] ids in the data's own vocabulary
    known = torch.tensor([word in vocab or word == "<unk>" for word in own.vocab.to_list()], dtype=torch.bool)
    missing = ~known[ids]
    count = int(missing.sum())
    if count and vocab.unk_index is None:
        example = own.vocab.to_list()[int(ids[missing.nonzero()[0, 0]])]
        raise UserError(f"{count:,} of the {ids.numel():,} tokens of {dataset} {split} are not in the "
                        f"checkpoint's vocabulary (e.g. {example!r}) and it has no <unk> to stand for "
                        "them; evaluate on data with the checkpoint's vocabulary")
    return count
