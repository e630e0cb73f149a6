"""The AWD dropouts (salesforce/awd-lstm-lm, Merity et al. 2017), shared by the language models.

* :func:`embedding_dropout` drops whole words (rows of the embedding matrix) for a whole segment;
* :class:`LockedDropout` (variational dropout): one mask per sequence, shared over time;
* :class:`WeightDrop` (DropConnect) as a ``torch.nn.utils.parametrize`` parametrization: a fresh
  mask per forward call in training, the plain weight in evaluation, and the gradient flows to the
  raw weight. On the CPU its mask comes from :func:`drop_connect`, four elements per 64-bit draw.

Shapes: T = time steps, B = batch, H = features, V = vocabulary size, E = embedding size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LockedDropout", "WeightDrop", "drop_connect", "embedding_dropout"]


def embedding_dropout(embedding: nn.Embedding, tokens: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Look ``tokens`` up in ``embedding`` with whole words dropped (awd "dropoute").

    A word's row is zeroed with probability ``p`` (the same for every occurrence of the word in
    the segment) and the kept rows are scaled by ``1 / (1 - p)``.

    Args:
        embedding: the ``[V, E]`` embedding module.
        tokens: ``[T, B]`` token ids.
        p: drop probability in ``[0, 1)``.
        training: dropout is applied only when True.

    Returns:
        ``[T, B, E]`` embedded tokens.
    """
    weight = embedding.weight
    if training and p > 0:
        keep = weight.new_empty(weight.size(0), 1).bernoulli_(1 - p) / (1 - p)  # [V, 1]
        # The looked-up rows times their words' scales: the same values as looking up in
        # weight * keep, without a pass over the whole [V, E] matrix forward and backward.
        return F.embedding(tokens, weight) * F.embedding(tokens, keep)  # [T, B, E] * [T, B, 1]
    return F.embedding(tokens, weight)


class LockedDropout(nn.Module):
    """Variational dropout: one mask per sequence ``[1, B, H]``, shared by all T time steps."""

    def __init__(self, p: float):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"LockedDropout: p must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``[T, B, H]`` -> same shape; the identity in eval mode or when ``p == 0``."""
        if not self.training or self.p == 0:
            return x
        mask = x.new_empty(1, x.size(1), x.size(2)).bernoulli_(1 - self.p) / (1 - self.p)
        return x * mask  # [1, B, H] broadcast over T

    def extra_repr(self) -> str:
        return f"p={self.p}"


class WeightDrop(nn.Module):
    """DropConnect as a parametrization: ``weight -> dropout(weight, p)`` in training only.

    Registered on ``layer.linear`` for its ``weight``; the learnable tensor then lives at
    ``linear.parametrizations.weight.original`` and every read of ``linear.weight`` in training
    draws a new mask (one per QRNN layer call, i.e. per segment, as awd-lstm-lm's WeightDrop).
    """

    def __init__(self, p: float):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"WeightDrop: p must be in [0, 1), got {p}")
        self.p = p

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return weight
        if weight.device.type != "cpu":
            return F.dropout(weight, self.p)  # CUDA's dropout draws its mask in the same kernel
        return drop_connect(weight, self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


# drop_connect's resolution: each element's drop decision compares 16 random bits with a threshold.
_DECISION_BITS = 16


def drop_connect(weight: torch.Tensor, p: float) -> torch.Tensor:
    """``weight`` (any shape) with each element zeroed with probability ``p`` and the others
    scaled by ``1 / (1 - p)``: ``F.dropout(weight, p)``, with the drop probability rounded to a
    multiple of 2^-16 (0.1 becomes 0.1000061).

    Why not ``F.dropout``: on the CPU it draws one random number per element (``bernoulli_``),
    about 20 ms for a ``[3000, 1000]`` weight on 2 cores, 13% of ``ptb-cpu-bf16``'s training step
    for three layers. Here each 64-bit draw of the default generator (so ``torch.manual_seed`` and
    the trainer's saved generator states govern it as before) decides four elements.
    """
    count = weight.numel()
    draws = torch.empty((count + 3) // 4, dtype=torch.int64, device=weight.device)
    draws.random_(-2**63, None)  # all 64 bits uniform (the default range leaves the top bit 0)
    bits = draws.view(torch.int16)[:count].view(weight.shape)  # uniform over [-2^15, 2^15)
    levels = 2 ** _DECISION_BITS
    keep = bits >= round(p * levels) - levels // 2  # [weight.shape] bool, P(False) = round(p * 2^16) / 2^16
    return weight * keep.to(weight.dtype).mul_(1 / (1 - p))
