"""The AWD dropouts (salesforce/awd-lstm-lm, Merity et al. 2017), shared by the language models.

* :func:`embedding_dropout` drops whole words (rows of the embedding matrix) for a whole segment;
* :class:`LockedDropout` (variational dropout): one mask per sequence, shared over time;
* :class:`WeightDrop` (DropConnect) as a ``torch.nn.utils.parametrize`` parametrization: a fresh
  mask per forward call in training, the plain weight in evaluation, and the gradient flows to the
  raw weight. On the CPU it runs :func:`qrnn_lm.ops.drop_connect.drop_connect` (one numba pass
  each way, no mask in memory), whose result under bf16 autocast is already bfloat16.

Shapes: T = time steps, B = batch, H = features, V = vocabulary size, E = embedding size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.drop_connect import drop_connect

__all__ = ["LockedDropout", "WeightDrop", "embedding_dropout"]


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
        keep = x.new_empty(1, x.size(1), x.size(2)).bernoulli_(1 - self.p)  # [1, B, H] of 0 and 1
        scale = 1 / (1 - self.p)
        if x.dtype in (torch.bfloat16, torch.float16) and float(torch.tensor(scale, dtype=x.dtype)) != scale:
            # A mask holding the scale would hold it rounded to x's dtype, every kept value biased
            # alike (p = 0.3: bfloat16 1.4297 for 1.4286, +0.08%); x * scale rounds each product
            # to nearest, unbiased. One more pass over x, on half-precision activations only.
            return x * keep * scale
        return x * keep.mul_(scale)  # broadcast over T

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
        return drop_connect(weight, self.p, _consumer_dtype(weight))

    def extra_repr(self) -> str:
        return f"p={self.p}"


def _consumer_dtype(weight: torch.Tensor) -> torch.dtype:
    """The dtype the masked weight is used in: bfloat16 for a float32 weight under CPU bf16
    autocast (the product would cast it; the kernel writes it so, and its gradient comes back
    bfloat16, half the bytes), else the weight's own."""
    if (weight.dtype == torch.float32 and torch.is_autocast_enabled("cpu")
            and torch.get_autocast_dtype("cpu") == torch.bfloat16):
        return torch.bfloat16
    return weight.dtype
