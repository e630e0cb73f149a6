"""The softmax decoder's cross-entropy without the full float32 tensors autograd would make.

Two forms, both exact (same value and gradients as ``F.cross_entropy(logits.float())``, up to
float rounding):

- :func:`chunked_cross_entropy`: linear + cross-entropy over chunks of tokens, for vocabularies
  whose logits would not fit in memory.
- :func:`blocked_cross_entropy`: for logits that do fit, in training on the CPU. It forms
  ``softmax - one_hot`` row by row in float32 while the row is in cache, straight into a gradient
  in the logits' dtype (autograd's path widens bf16 logits to float32 and allocates two more
  ``[N, V]`` float32 tensors).

The chunked form: the full softmax of a decoder holds ``logits [N, V]`` (N = T * B tokens,
V = vocabulary) and, in training, their gradient as large again: 9 GB each for WikiText-103 at
awd-lstm-lm's batch. :func:`chunked_cross_entropy` computes the same sum of ``-log p(target)`` and
the same gradients for ``x``, the weight and the bias, going over ``chunk_size`` tokens at a time:
only ``[chunk_size, V]`` logits exist at any moment.

The gradients are computed chunk by chunk inside the forward (as Liger-Kernel's fused linear
cross-entropy does) and kept, since they are no larger than ``x`` and the weight themselves; the
backward then only scales them by the incoming gradient. So training does one pass over the
chunks, with the same matrix products as the full softmax (logits, then ``dx``, ``dW``), and no
logits are recomputed. Without grad mode (evaluation) no gradient is computed.

Shapes: N = tokens, E = input features, V = vocabulary size.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..ops import softmax_cross_entropy

__all__ = ["chunked_cross_entropy", "blocked_cross_entropy", "chunk_rows", "logits_bytes"]

DEFAULT_CHUNK_BYTES = 64 * 2**20  # logits per chunk: each chunk also rewrites the [V, E] weight gradient, so not tiny
# float32 rows per block of blocked_cross_entropy's torch-ops form (float16 logits): a block stays in
# the last-level cache between its passes. [1400, 10000] bf16 on a Zen 4 (2 cores): 64 rows 14.3 ms,
# 128 rows 13.1, 256 rows 15.4.
BLOCK_BYTES = 5 * 2**20


def logits_bytes(num_tokens: int, vocab_size: int) -> int:
    """Bytes of the float32 logits ``[N, V]`` a full softmax holds (its gradient is as large again)."""
    return 4 * num_tokens * vocab_size


def chunk_rows(vocab_size: int, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """Tokens per chunk so that a chunk's float32 logits take about ``chunk_bytes``."""
    return max(1, chunk_bytes // (4 * vocab_size))


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, targets, chunk_size, needs_grad):
        # x [N, E], weight [V, E], bias [V] or None, targets [N] long.
        total = torch.zeros((), dtype=torch.float32, device=x.device)
        grad_x = torch.empty_like(x) if needs_grad else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=x.device) if needs_grad else None
        grad_bias = (torch.zeros(bias.shape, dtype=torch.float32, device=x.device)
                     if needs_grad and bias is not None else None)
        for start in range(0, x.size(0), chunk_size):
            x_chunk = x[start:start + chunk_size]  # [C, E]
            target_chunk = targets[start:start + chunk_size]  # [C]
            logits = x_chunk @ weight.t()  # [C, V], in x's dtype (lower under autocast)
            if bias is not None:
                logits = logits + bias
            logits = logits.float()  # the softmax in float32, as F.cross_entropy(logits.float())
            log_norm = torch.logsumexp(logits, dim=-1)  # [C]
            target_logits = logits.gather(1, target_chunk.unsqueeze(1)).squeeze(1)  # [C]
            total += (log_norm - target_logits).sum()
            if needs_grad:
                # d(sum of nll)/d(logits) = softmax - one_hot(target), formed in place of the logits.
                probs = logits.sub_(log_norm.unsqueeze(1)).exp_()  # [C, V]
                probs.scatter_add_(1, target_chunk.unsqueeze(1),
                                   torch.full_like(target_logits, -1.0).unsqueeze(1))
                grad_logits = probs.to(x.dtype)
                grad_x[start:start + chunk_size] = grad_logits @ weight  # [C, E]
                grad_weight.addmm_(grad_logits.t().float(), x_chunk.float())  # [V, E]
                if grad_bias is not None:
                    grad_bias += probs.sum(0)
        ctx.save_for_backward(grad_x, grad_weight, grad_bias)
        ctx.weight_dtype = weight.dtype
        ctx.bias_dtype = bias.dtype if bias is not None else None
        return total

    @staticmethod
    def backward(ctx, grad_total):
        grad_x, grad_weight, grad_bias = ctx.saved_tensors
        if grad_x is None:
            raise RuntimeError("chunked_cross_entropy was called without grad mode; it has no gradient")
        if getattr(ctx, "used", False):
            raise RuntimeError("chunked_cross_entropy's backward scales its kept gradients in place: run it once")
        ctx.used = True
        # In place: a second [V, E] copy of the weight's gradient would double the peak memory.
        scale = grad_total.float()
        return (
            grad_x.mul_(scale.to(grad_x.dtype)) if ctx.needs_input_grad[0] else None,
            grad_weight.mul_(scale).to(ctx.weight_dtype) if ctx.needs_input_grad[1] else None,
            grad_bias.mul_(scale).to(ctx.bias_dtype) if grad_bias is not None and ctx.needs_input_grad[2] else None,
            None,
            None,
            None,
        )


def chunked_cross_entropy(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """``sum over tokens of -log softmax(x @ weight.T + bias)[target]`` without all the logits.

    Equals ``F.cross_entropy((x @ weight.T + bias).float(), targets, reduction="sum")`` in value
    and in the gradients of ``x``, ``weight`` and ``bias`` (up to float rounding).

    Args:
        x: ``[N, E]`` decoder inputs.
        weight: ``[V, E]`` decoder weight (the tied embedding matrix).
        bias: ``[V]`` or None.
        targets: ``[N]`` long, in ``[0, V)``.
        chunk_size: tokens per chunk; default about 64 MiB of float32 logits per chunk.

    Returns:
        a float32 scalar, the summed negative log-likelihood in nats.
    """
    if x.dim() != 2 or weight.dim() != 2 or x.size(1) != weight.size(1):
        raise ValueError(f"x must be [N, E] and weight [V, E], got {tuple(x.shape)} and {tuple(weight.shape)}")
    if targets.shape != (x.size(0),):
        raise ValueError(f"targets must have shape [{x.size(0)}], got {tuple(targets.shape)}")
    chunk_size = chunk_size or chunk_rows(weight.size(0))
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if torch.is_autocast_enabled(x.device.type):
        # Autocast does not reach inside an autograd.Function: cast here, as it would for a linear.
        dtype = torch.get_autocast_dtype(x.device.type)
        x, weight = x.to(dtype), weight.to(dtype)
        bias = bias.to(dtype) if bias is not None else None
    else:
        weight = weight.to(x.dtype)
        bias = bias.to(x.dtype) if bias is not None else None
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, weight, bias))
    with torch.autocast(x.device.type, enabled=False):
        return _ChunkedLinearCrossEntropy.apply(x, weight, bias, targets, chunk_size, needs_grad)


class _BlockedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets, bias, block_rows, grad_scale):
        # logits [N, V], targets [N] long, bias [V] or None (added here, in float32). The gradients
        # are formed here already multiplied by grad_scale (in float32; a number, or a 0-dim tensor
        # where torch.compile traced the caller).
        grad_scale = float(grad_scale)
        if not (math.isfinite(grad_scale) and grad_scale > 0):
            raise ValueError(f"blocked_cross_entropy: grad_scale must be positive and finite, got {grad_scale}")
        if logits.dtype == torch.float16:
            # float16's range ends at 6e-5 (then subnormals): 1/N would cost small probabilities
            # their precision before a gradient scaler's large incoming gradient could lift them back.
            grad_scale = 1.0
        if softmax_cross_entropy.supports(logits):
            total, grad, grad_bias = softmax_cross_entropy.loss_and_gradients(logits, targets, bias, grad_scale)
            grad_bias = None if bias is None else grad_bias
        else:
            total, grad, grad_bias = _blocks_with_torch_ops(logits, targets, bias, block_rows, grad_scale)
        ctx.save_for_backward(grad, grad_bias)
        ctx.bias_dtype = None if bias is None else bias.dtype
        ctx.grad_scale = grad_scale
        return total

    @staticmethod
    def backward(ctx, grad_total):
        if getattr(ctx, "used", False):
            raise RuntimeError("blocked_cross_entropy's backward scales its kept gradient in place: run it once")
        ctx.used = True
        grad, grad_bias = ctx.saved_tensors
        if grad_total.item() != float(np.float32(ctx.grad_scale)):  # not the expected gradient: scale by the ratio
            ratio = grad_total.float() / ctx.grad_scale  # float32: the multiply is done in float32
            grad.mul_(ratio)
            grad_bias = None if grad_bias is None else grad_bias * ratio
        grad_bias = None if grad_bias is None else grad_bias.to(ctx.bias_dtype)
        return grad, None, grad_bias, None, None


def blocked_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, bias: torch.Tensor | None = None,
                          block_rows: int | None = None, grad_scale: float = 1.0) -> torch.Tensor:
    """``F.cross_entropy((logits + bias).float(), targets, reduction="sum")``, with the gradients
    formed in the forward: the logits' in their dtype, the bias's in float32 (then its dtype).

    For training on the CPU. float32 and bfloat16 logits go to one numba pass over the rows
    (:mod:`qrnn_lm.ops.softmax_cross_entropy`), others (float16) to torch ops ``block_rows`` rows
    at a time in float32. Autograd's path would widen bf16 logits to float32 and allocate two more
    ``[N, V]`` float32 tensors; this keeps one gradient in the logits' dtype. Training steps on a
    2-core Zen 4, medians of 30-40 interleaved steps against the torch blocks (bf16) or autograd
    (float32): ``ptb-cpu`` in float32 562.7 -> 487.9 ms, ``ptb-cpu-bf16`` 309.7 -> 299.2 ms (the
    fastest steps 275.9 -> 281.2: within the noise). The bias is added in float32 row by row: a
    linear layer's ``addmm`` would first copy it into every row of the ``[N, V]`` output, and its
    backward sum the whole gradient again.

    ``grad_scale`` is the gradient the caller expects backward to bring (``1 / N`` for a loss that
    is the mean over the N targets, as the trainer's): the forward writes the gradients already
    multiplied by it, in float32 before their one rounding, and a backward that brings exactly it
    returns them as they are (float32 and bfloat16 logits; float16's are formed unscaled). Any
    other incoming gradient is still exact: the kept gradients are then multiplied by its ratio to
    ``grad_scale``, one more pass over ``[N, V]`` and one more rounding, as every backward took
    before (1.0-1.4 ms of the ``[1400, 10000]`` bf16 loss's 8-11 ms on a Zen 4).

    Args:
        logits: ``[N, V]``, requiring grad (without the bias when ``bias`` is given).
        targets: ``[N]`` long, in ``[0, V)``.
        bias: ``[V]`` or None.
        block_rows: rows per block of the torch-ops form (float16 logits); default about
            :data:`BLOCK_BYTES` of float32 per block.
        grad_scale: the expected incoming gradient, a positive finite number (used in float32).

    Returns:
        a float32 scalar, the summed negative log-likelihood in nats. Its backward runs once.
    """
    if logits.dim() != 2 or targets.shape != (logits.size(0),):
        raise ValueError(f"logits must be [N, V] and targets [N], got {tuple(logits.shape)} and {tuple(targets.shape)}")
    if bias is not None and bias.shape != (logits.size(1),):
        raise ValueError(f"bias must have shape [{logits.size(1)}], got {tuple(bias.shape)}")
    block_rows = block_rows or max(1, BLOCK_BYTES // (4 * logits.size(1)))
    return _BlockedCrossEntropy.apply(logits, targets, bias, block_rows, grad_scale)


def _blocks_with_torch_ops(logits, targets, bias, block_rows, grad_scale):
    """``(loss, grad, grad_bias)`` as :func:`qrnn_lm.ops.softmax_cross_entropy.loss_and_gradients`
    gives them, ``block_rows`` rows at a time in float32 with torch ops: for the logits its kernel
    does not take (float16)."""
    grad = torch.empty_like(logits)  # softmax - one_hot, in the logits' dtype
    total = torch.zeros((), dtype=torch.float32, device=logits.device)
    bias32 = None if bias is None else bias.float()
    grad_bias = None if bias is None else torch.zeros_like(bias32)  # [V], the rows' sum of grad
    for start in range(0, logits.size(0), block_rows):
        block = logits[start:start + block_rows].float()  # [b, V]
        if bias32 is not None:
            block.add_(bias32)
        target_block = targets[start:start + block_rows].unsqueeze(1)  # [b, 1]
        block.sub_(block.amax(1, keepdim=True))
        target_logits = block.gather(1, target_block)  # [b, 1], shifted like the block
        norm = block.exp_().sum(1, keepdim=True)  # [b, 1]
        total += (norm.log() - target_logits).sum()  # -log p(target) = log sum exp - target logit
        block.mul_(norm.reciprocal_().mul_(grad_scale))
        block.scatter_add_(1, target_block, torch.full_like(target_logits, -grad_scale))
        if grad_bias is not None:
            grad_bias += block.sum(0)
        grad[start:start + block_rows] = block
    return total, grad, grad_bias
