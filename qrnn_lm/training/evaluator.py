"""Validation and test during training: exact per-token means over every rank's share.

Each rank scores its block of the evaluation streams (:func:`~qrnn_lm.training.stream.make_stream`,
which may be uneven, even empty) with :func:`~qrnn_lm.inference.evaluate.loss_sum`; the sums and
token counts are all-reduced, so the mean is the one a single process would compute.
"""

from __future__ import annotations

import torch

from ..config import DataConfig
from ..data import Corpus
from ..inference.evaluate import loss_sum
from . import distributed
from .stream import make_stream

__all__ = ["Evaluator"]


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
