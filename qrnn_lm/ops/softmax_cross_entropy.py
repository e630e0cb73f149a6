"""Softmax cross-entropy and its gradient on the CPU, row by row in one numba pass over the logits.

For logits ``[N, V]`` (float32, or bfloat16 read as its bit patterns), targets ``[N]`` and an
optional bias ``[V]`` added first, :func:`loss_and_gradients` returns ``sum_n -log
softmax(logits[n] + bias)[targets[n]]`` and its gradients: ``softmax - one_hot`` ``[N, V]`` in the
logits' dtype (times an optional ``grad_scale``, e.g. the 1/N of a mean, before its one rounding),
and its sum over the rows ``[V]`` in float32 for the bias. Each row is read from
memory once and its gradient written once; the row's float32 values stay in a thread's scratch
(40 KB for V = 10k), where the exponentials, the normaliser and the gradient are formed. The
exponentials are taken unshifted, and again shifted by the row's max only when their sum leaves a
safe range (``_SUM_RANGE``: overflow, underflow, NaN), which a trained model's logits rarely do.
The exponential is :func:`qrnn_lm.ops.numba_math.exp`, which vectorises (numba's ``math.exp``
does not). Rows run in parallel, each thread summing its own rows' bias gradient.

``[1400, 10000]`` on a 2-core Zen 4 (AMD EPYC family 25 model 17), medians of 35 interleaved
calls: bf16 7.4 and 6.4 ms, float32 9.3 and 8.9 ms (two processes), against 8.9 and 7.8, 11.9 and
11.2 ms with the max taken first in every row; before that max became an integer max
(:func:`qrnn_lm.ops.numba_math.order_key`) 11.3 and 13.0 ms; 16.4 and 14.5 ms for the same loss
and gradients formed block by block with torch ops (``qrnn_lm.models.softmax``'s fallback).

Shapes: N = rows (tokens), V = vocabulary size.
"""

from __future__ import annotations

import numpy as np
import torch

from .numba_setup import HAS_NUMBA, parallel_launch

__all__ = ["loss_and_gradients", "supports"]

# Rows per parallel work item: enough rows that a thread's bias-gradient row [V] is reused, enough
# items that the two threads finish together.
ROWS_PER_ITEM = 64
# Below this many logits the rows run in the calling thread.
PARALLEL_MIN_ELEMENTS = 1 << 16
# The sums of unshifted exponentials a row may keep. Below 2^-40 the largest term may be as small
# as 2^-40 / V, and the terms exp flushes to 0 (under 2^-126) would no longer be negligible next to
# it for the largest vocabularies; above 2^64 (a logit over about 44) the loss, log(sum) minus the
# target logit, would cancel more digits than the shifted form does. NaN fails both tests.
_SUM_RANGE = (np.float32(2.0**-40), np.float32(2.0**64))

if HAS_NUMBA:
    from numba import njit, prange

    from .numba_bfloat16 import kernel_array, load, store
    from .numba_math import exp, from_order_key, order_key

    # Reassociation lets LLVM vectorise the sum (adding in another order than a sequential loop).
    # Only the sum gets it: in the row's other arithmetic it could, e.g., add the row's max back
    # before a subtraction meant to cancel it. No "nnan": a NaN logit must give a NaN loss. (The
    # max is an integer max over order keys, which vectorises without fast-math.)
    _REDUCTION_FASTMATH = {"reassoc", "nsz"}

    @njit(cache=True, fastmath=_REDUCTION_FASTMATH)
    def _sum(values):
        total = np.float32(0)
        for j in range(values.shape[0]):
            total += values[j]
        return total

    @njit(cache=True)
    def _row(logits, bias, target, grad_scale, grad, grad_bias, scratch):
        """One row: returns ``-log softmax(logits + bias)[target]``, writes ``grad_scale *
        (softmax - one_hot)`` to ``grad`` and adds it to ``grad_bias``. Every array is the row's
        own ``[V]``, starting at 0 (loops over an offset range inside a prange body did not
        vectorise)."""
        size = logits.shape[0]
        # Softmax is the same whatever is subtracted from the logits; the row's max keeps the
        # exponentials in range, but a trained model's logits rarely need it. So first without:
        # the sum alone shows whether that was safe (see _SUM_RANGE), saving a pass over the row.
        top = np.float32(0)
        for j in range(size):
            scratch[j] = exp(load(logits, j) + bias[j])
        total = _sum(scratch)
        if not (_SUM_RANGE[0] <= total <= _SUM_RANGE[1]):  # overflow, underflow or NaN: shift by the max
            top_key = np.int32(-2147483648)
            for j in range(size):
                value = load(logits, j) + bias[j]
                scratch[j] = value
                top_key = max(top_key, order_key(value))
            top = from_order_key(top_key)  # NaN if any logit is NaN
            for j in range(size):
                scratch[j] = exp(scratch[j] - top)
            total = _sum(scratch)
        inverse = np.float32(1) / total * grad_scale  # free here; in the backward, a pass of its own
        for j in range(size):
            probability = scratch[j] * inverse
            grad_bias[j] += probability
            store(grad, j, probability)
        target_grad = scratch[target] * inverse - grad_scale
        store(grad, target, target_grad)
        grad_bias[target] -= grad_scale
        # log sum exp minus the target logit, both shifted by ``top``.
        return np.float32(np.log(total)) - (load(logits, target) + bias[target] - top)

    @njit(cache=True)
    def _rows(logits, bias, targets, grad_scale, grad, grad_bias, losses):
        """Rows ``0..N`` of the given arrays, in the calling thread; ``grad_bias`` is ``[V]``."""
        scratch = np.empty(logits.shape[1], dtype=np.float32)
        grad_scale = np.float32(grad_scale)  # passed as a Python float (see loss_and_gradients)
        for n in range(logits.shape[0]):
            losses[n] = _row(logits[n], bias, targets[n], grad_scale, grad[n], grad_bias, scratch)

    @njit(cache=True, parallel=True)
    def _rows_parallel(logits, bias, targets, grad_scale, grad, grad_bias, losses):
        """All rows, ``ROWS_PER_ITEM`` per work item; ``grad_bias`` is ``[items, V]``, one row each."""
        count = logits.shape[0]
        for item in prange(grad_bias.shape[0]):
            start = item * ROWS_PER_ITEM
            stop = min(start + ROWS_PER_ITEM, count)
            _rows(logits[start:stop], bias, targets[start:stop], grad_scale, grad[start:stop], grad_bias[item],
                  losses[start:stop])


def supports(logits: torch.Tensor) -> bool:
    """Whether :func:`loss_and_gradients` takes ``logits``: numba present, on the CPU, float32 or
    bfloat16."""
    return HAS_NUMBA and logits.device.type == "cpu" and logits.dtype in (torch.float32, torch.bfloat16)


def loss_and_gradients(logits: torch.Tensor, targets: torch.Tensor, bias: torch.Tensor | None = None,
                       grad_scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(loss, grad, grad_bias)`` of ``F.cross_entropy((logits + bias).float(), targets,
    reduction="sum")``, without autograd.

    Args:
        logits: ``[N, V]`` float32 or bfloat16 on the CPU (see :func:`supports`).
        targets: ``[N]`` integers in ``[0, V)``.
        bias: ``[V]`` (any float dtype; used in float32) or None.
        grad_scale: multiplies both gradients (in float32, before the one rounding), e.g. ``1 / N``
            for the mean's.

    Returns:
        loss: float32 scalar, the summed negative log-likelihood in nats (not scaled).
        grad: ``[N, V]`` in the logits' dtype, ``grad_scale * (softmax - one_hot)`` (rounded once).
        grad_bias: ``[V]`` float32, ``grad``'s float32 values summed over the rows.
    """
    count, size = logits.shape
    targets = targets.detach().to(torch.int64).contiguous()
    if count and (int(targets.min()) < 0 or int(targets.max()) >= size):
        raise ValueError(f"targets must be in [0, {size}), got values from {int(targets.min())} "
                         f"to {int(targets.max())}")
    logits = logits.detach().contiguous()
    bias32 = torch.zeros(size) if bias is None else bias.detach().float().contiguous()
    grad = torch.empty_like(logits)
    losses = torch.empty(count)
    # A Python float, rounded to float32 in the kernel: torch.compile traces numpy calls in its
    # callers into 0-dim arrays, which np.float32() here would have passed on.
    arrays = (kernel_array(logits), bias32.numpy(), targets.numpy(), float(grad_scale), kernel_array(grad))
    with parallel_launch(logits.numel(), PARALLEL_MIN_ELEMENTS) as parallel:
        grad_bias = torch.zeros(-(-count // ROWS_PER_ITEM) if parallel else 1, size)  # a row per work item
        if parallel:
            _rows_parallel(*arrays, grad_bias.numpy(), losses.numpy())
        else:
            _rows(*arrays, grad_bias[0].numpy(), losses.numpy())
    return losses.sum(), grad, grad_bias.sum(0)
