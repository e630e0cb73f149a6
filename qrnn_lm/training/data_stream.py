"""A run's data streams: the training stream (the corpus cut into parallel streams, walked in BPTT
segments, with the state carried from one segment to the next) and the validation and test streams
the :class:`Evaluator` scores.

A :class:`TrainingStream` owns this rank's columns of the ``[N, batch_size]`` training streams, the
generator that draws the segment lengths (awd's variable BPTT; the same on every rank) and the
carried state: the hidden state (detached) and, inside the model's QRNN layers, each layer's saved
inputs ``prevX`` (an LSTM layer has none: its h and c are all in the hidden state). Its distributed details: :func:`make_stream` gives each rank its contiguous
block of stream columns, and a checkpoint stores the carried state of the *global* batch
(gathered from the ranks, :func:`concat_streams`), from which any number of ranks take their
columns back (:func:`stream_columns`).

Shapes: N = time steps of a stream, B = streams, S = a layer's state size (its hidden size for a
QRNN layer, twice it for an LSTM layer: h and c), I = a layer's input size.

Validation and test during training are exact per-token means over every rank's share: each rank
scores its block of the evaluation streams (:func:`make_stream`, which may be uneven, even empty) with :func:`~qrnn_lm.inference.evaluate.loss_sum`; the sums and
token counts are all-reduced, so the mean is the one a single process would compute.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import Config, DataConfig, UserError
from ..data import Corpus, Vocab, batchify, get_batch, make_tokenizer, prepare_data, sample_seq_len
from ..inference.evaluate import loss_sum
from . import distributed

__all__ = ["TrainingStream", "make_stream", "load_corpus", "next_segment", "capture_stream", "restore_stream", "stream_columns", "concat_streams", "Evaluator"]


def make_stream(ids: torch.Tensor, batch_size: int, device: torch.device, rank: int = 0, world_size: int = 1,
                *, even: str | None = None) -> torch.Tensor:
    """``[N]`` token ids -> ``[N // B, B]`` parallel streams cut as in one process, of which this
    rank keeps its contiguous block of columns (``[N // B, B / world_size]`` when even), on
    ``device``: the one place where the training, validation and test streams are cut.

    ``even`` names the config key of ``batch_size`` when every rank must get the same number of
    streams (training: equal token counts make DDP's average the global mean); a batch size that
    the number of processes does not divide is then a UserError.
    """
    if even is not None and batch_size % world_size:
        raise UserError(
            f"{even} = {batch_size} must be divisible by the number of processes ({world_size}): it is the "
            f"global batch, split into equal per-rank blocks; use e.g. --set {even}={batch_size // world_size * world_size or world_size}"
        )
    start, stop = distributed.column_range(batch_size, rank, world_size)
    return batchify(ids, batch_size)[:, start:stop].contiguous().to(device)


def load_corpus(config: Config, data_dir: str | Path | None, progress: bool, vocab: list[str] | None = None) -> Corpus:
    """The run's corpus, over ``vocab`` when given (a finetune's checkpoint's; words it lacks read as
    its ``<unk>``), else the training text's own vocabulary. Rank 0 prepares (maybe downloads) and tokenises the dataset first, then
    each other machine's first rank, then all the others, which find the files and the token cache
    ready: no two processes download into one folder, nor tokenise a large corpus, at once."""
    rank, local_rank = distributed.get_rank(), distributed.get_local_rank()
    turn = 0 if rank == 0 else 1 if local_rank == 0 else 2
    corpus = None
    for current in range(3 if distributed.get_world_size() > 1 else 1):
        if turn == current:
            folder = prepare_data(config.data.dataset, data_dir, progress=progress)
            corpus = Corpus.load(folder, None if vocab is None else Vocab.from_list(vocab),
                                 tokenizer=make_tokenizer(config.data), progress=progress)
        distributed.barrier()
    return corpus


def next_segment(
    source: torch.Tensor, position: int, data: DataConfig, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """The next BPTT segment of ``source`` ``[N, B]`` starting at time step ``position``.

    The length is drawn from ``generator`` (awd's variable BPTT) when ``data.variable_bptt``, else
    ``data.bptt``; it is cut at the end of the stream. Returns ``(inputs, targets)``, ``[L, B]`` each.
    """
    seq_len = sample_seq_len(data.bptt, generator) if data.variable_bptt else data.bptt
    return get_batch(source, position, seq_len)


class TrainingStream:
    """This rank's training streams, the BPTT generator and the carried state: the hidden state
    and the saved inputs of ``model``'s layers.

    Args:
        ids: the ``[N]`` training token ids of the whole corpus.
        data: the ``[data]`` section (global ``batch_size``, ``bptt``, ``variable_bptt``).
        device: where the streams live.
        seed: seeds the BPTT generator (equal on every rank, so every rank draws the same lengths).
        model: the language model whose layers carry saved inputs between segments.

    As a checkpoint component (key ``stream``): :meth:`state_dict` is this rank's carried state
    (references, not copies: the model replaces these tensors rather than writing into them),
    :meth:`merge_ranks` joins the ranks' into the global batch's, and :meth:`load_state_dict` takes
    this rank's columns of it back. (The BPTT generator is the random state's.)
    """

    def __init__(self, ids: torch.Tensor, data: DataConfig, device: torch.device, seed: int, model: nn.Module):
        self.data, self.device, self.model = data, device, model
        self.tokens = make_stream(ids, data.batch_size, device, distributed.get_rank(),
                                  distributed.get_world_size(), even="data.batch_size")  # [N, B / ranks]
        self.generator = torch.Generator().manual_seed(seed)  # BPTT lengths only
        self.hidden: list[torch.Tensor] | None = None  # [B / ranks, S] per layer, detached

    @property
    def limit(self) -> int:
        """An epoch ends when fewer than 2 time steps are left (as awd-lstm-lm)."""
        return self.tokens.size(0) - 2

    def next_segment(self, position: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(inputs, targets)``, ``[L, B / ranks]`` each, starting at ``position``."""
        return next_segment(self.tokens, position, self.data, self.generator)

    def start_epoch(self) -> None:
        """A new pass over the stream: no saved inputs, zero hidden state."""
        self.model.reset()
        self.hidden = None

    def state_dict(self) -> dict[str, Any]:
        """The carried state now (see :func:`capture_stream`)."""
        return capture_stream(self.model, self.hidden)

    def merge_ranks(self, states: list[dict[str, Any]]) -> dict[str, Any]:
        """The ranks' carried states (on the CPU, in rank order) -> the global batch's."""
        return concat_streams(states)

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """Take this rank's columns of a carried state saved for the global batch."""
        start, stop = distributed.column_range(self.data.batch_size, distributed.get_rank(),
                                               distributed.get_world_size())
        self.hidden = restore_stream(self.model, stream_columns(saved, start, stop), self.device)


def capture_stream(model: nn.Module, hidden: list[torch.Tensor] | None) -> dict[str, Any]:
    """The state carried from one segment to the next: hidden ``[B, S]`` per layer and each layer's
    saved inputs ``prevX`` (``[window - 1, B, I]``, or None: nothing saved yet, or an LSTM layer).
    References, not copies: the model replaces these tensors rather than writing into them."""
    return {
        "hidden": None if hidden is None else [h.detach() for h in hidden],
        "prev_x": [getattr(layer, "prevX", None) for layer in model.layers],
    }


def restore_stream(model: nn.Module, stream: dict[str, Any], device: torch.device) -> list[torch.Tensor] | None:
    """Put the saved inputs back into the layers; return the hidden state (on ``device``)."""
    for layer, prev in zip(model.layers, stream["prev_x"]):
        if hasattr(layer, "save_prev_x"):  # a QRNN layer; an LSTM layer keeps no inputs (no stray attribute)
            layer.prevX = None if prev is None else prev.to(device)
        elif prev is not None:
            raise ValueError(f"saved inputs {tuple(prev.shape)} for a {type(layer).__name__}, which keeps none")
    hidden = stream["hidden"]
    return None if hidden is None else [h.to(device) for h in hidden]


def stream_columns(stream: dict[str, Any], start: int, stop: int) -> dict[str, Any]:
    """The carried state of streams ``start:stop`` (hidden ``[B, S]`` rows, prev_x ``[w-1, B, I]``
    columns) of a stream state saved for the global batch."""
    return {
        "hidden": None if stream["hidden"] is None else [h[start:stop] for h in stream["hidden"]],
        "prev_x": [None if p is None else p[:, start:stop] for p in stream["prev_x"]],
    }


def concat_streams(streams: list[dict[str, Any]]) -> dict[str, Any]:
    """Join the ranks' stream states (in rank order) into the state of the global batch."""
    first = streams[0]
    hidden = None
    if first["hidden"] is not None:
        hidden = [torch.cat(parts, dim=0) for parts in zip(*(s["hidden"] for s in streams))]
    prev_x = [None if parts[0] is None else torch.cat(parts, dim=1) for parts in zip(*(s["prev_x"] for s in streams))]
    return {"hidden": hidden, "prev_x": prev_x}


class Evaluator:
    """The validation streams of a run and the test split, scored exactly across ranks."""

    def __init__(self, corpus: Corpus, data: DataConfig, device: torch.device):
        self.corpus, self.data, self.device = corpus, data, device
        self.valid = self._streams(corpus.valid, data.eval_batch_size)  # [N, about eval_batch_size / ranks]

    def _streams(self, ids: torch.Tensor, batch_size: int) -> torch.Tensor:
        return make_stream(ids, batch_size, self.device, distributed.get_rank(), distributed.get_world_size())

    def mean_loss(self, model: torch.nn.Module, source: torch.Tensor, progress: bool = False) -> float:
        """The per-token mean loss over every rank's share of ``source``."""
        total, count = distributed.all_reduce_sum(loss_sum(model, source, self.data.bptt, progress=progress))
        return total / count

    def valid_loss(self, model: torch.nn.Module) -> float:
        return self.mean_loss(model, self.valid)

    def test_loss(self, model: torch.nn.Module, progress: bool = False) -> tuple[float, int]:
        """``(mean loss, number of target tokens)`` on the test split at ``data.test_batch_size``."""
        source = self._streams(self.corpus.test, self.data.test_batch_size)
        return self.mean_loss(model, source, progress), (source.size(0) - 1) * self.data.test_batch_size
