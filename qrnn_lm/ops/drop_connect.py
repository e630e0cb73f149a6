"""DropConnect on the CPU in one numba pass each way, with no mask in memory.

``drop_connect(weight, p)`` is ``F.dropout(weight, p)``: each element zeroed with probability
``p``, the others scaled by ``1 / (1 - p)``. The language models draw one per weight-dropped
matrix per segment (``qrnn_lm.models.dropout.WeightDrop``).

Why a kernel: PyTorch's CPU path draws a random number per element, compares, multiplies and
scales in separate passes, and under bf16 autocast the consumer then casts the result, and the
backward runs the same passes again. For a ``[3000, 1000]`` weight on a 2-core Zen 4 that was
8-10 ms forward+backward under autocast. Here the decision for element ``i`` is a hash of
``(seed, i)``, recomputed in the backward instead of stored, and the forward writes the result
straight in the dtype the consumer wants (bfloat16 under CPU autocast): about 1.7 ms.

The decisions. ``seed`` is one 64-bit draw of PyTorch's default CPU generator per call, so
``torch.manual_seed``, a saved generator state (exact resume) and the trainer's swap of the
generator state (the same masks on every DDP rank) govern the masks as they govern
``F.dropout``'s. Element ``i`` (row-major) keeps its value when the top 32 bits of
``splitmix64(seed + i * golden_gamma)`` (the output function of Steele, Lea and Flood's
SplitMix64, which passes BigCrush on a counter) are at least ``round(p * 2^32)``: P(drop) is
``p`` rounded to a multiple of 2^-32. The masks do not depend on the thread count.

Shapes: any; the kernels see the weight flattened, ``[N]``.
"""

from __future__ import annotations

import numpy as np
import torch

from .numba_setup import HAS_NUMBA, parallel_launch

__all__ = ["drop_connect", "supports"]

# Dtypes the kernels read and write (bfloat16 as its bit patterns); others go to F.dropout.
_KERNEL_DTYPES = (torch.float32, torch.bfloat16)

# Elements per block: a block's part of the mask is formed and applied while it is in cache, and
# the blocks are the parallel work items.
BLOCK = 1 << 14
# Below this many elements the kernels run in the calling thread (a parallel launch costs
# 2-130 us depending on numba's threading layer; 2^18 elements take about 80 us in one thread).
PARALLEL_MIN_ELEMENTS = 1 << 18

if HAS_NUMBA:
    from numba import njit, prange

    from .numba_bfloat16 import kernel_array, load, store

    _GAMMA = np.uint64(0x9E3779B97F4A7C15)
    _MIX1 = np.uint64(0xBF58476D1CE4E5B9)
    _MIX2 = np.uint64(0x94D049BB133111EB)

    @njit(cache=True, inline="always")
    def _kept(seed, index, threshold):
        """Whether element ``index`` keeps its value (SplitMix64's output function of the counter)."""
        z = seed + np.uint64(index) * _GAMMA
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        z = z ^ (z >> np.uint64(31))
        return (z >> np.uint64(32)) >= threshold

    # One block each; ``source`` and ``out`` are the block's own slices, so the loop starts at 0:
    # numba's loops over an offset range inside a prange body did not vectorise (2.3 ms against
    # 0.9 ms for [3000, 1000]).
    @njit(cache=True)
    def _masked_block(source, out, first_index, seed, threshold, scale):
        """``out[j] = source[j] * scale`` where element ``first_index + j`` is kept, else 0."""
        for j in range(source.shape[0]):
            # Assigned before the store: passed as an argument expression to the inlined ``store``,
            # the conditional compiled to a kernel that wrote nothing (numba 0.68).
            masked = load(source, j) * scale if _kept(seed, first_index + j, threshold) else np.float32(0)
            store(out, j, masked)

    @njit(cache=True, parallel=True)
    def _masked_parallel(source, out, seed, threshold, scale):
        n = source.shape[0]
        for block in prange((n + BLOCK - 1) // BLOCK):
            start = block * BLOCK
            stop = min(start + BLOCK, n)
            _masked_block(source[start:stop], out[start:stop], start, seed, threshold, scale)

    @njit(cache=True)
    def _masked_serial(source, out, seed, threshold, scale):
        _masked_block(source, out, 0, seed, threshold, scale)


def supports(weight: torch.Tensor, out_dtype: torch.dtype) -> bool:
    """Whether :func:`drop_connect` runs its kernel for ``weight`` (else it uses ``F.dropout``):
    numba present, a CPU tensor, float32 or bfloat16 in and out."""
    return (HAS_NUMBA and weight.device.type == "cpu" and weight.dtype in _KERNEL_DTYPES
            and out_dtype in _KERNEL_DTYPES)


def _apply_mask(source: torch.Tensor, out_dtype: torch.dtype, seed: int, threshold: int, scale: float) -> torch.Tensor:
    """``source`` with the mask of ``seed`` (its 64 bits, signed or not) applied and the kept elements
    scaled, in ``out_dtype``."""
    source = source.detach().contiguous()
    out = torch.empty(source.shape, dtype=out_dtype)
    arguments = (kernel_array(source.view(-1)), kernel_array(out.view(-1)), np.uint64(seed & (2**64 - 1)),
                 np.uint64(threshold), np.float32(scale))
    with parallel_launch(source.numel(), PARALLEL_MIN_ELEMENTS) as parallel:
        (_masked_parallel if parallel else _masked_serial)(*arguments)
    return out


class _DropConnect(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weight, out_dtype, seed, threshold, scale):
        ctx.mask = (seed, threshold, scale)
        ctx.weight_dtype = weight.dtype
        return _apply_mask(weight, out_dtype, seed, threshold, scale)

    @staticmethod
    def backward(ctx, grad_out):
        # The same decisions again from the seed: the gradient is grad_out * mask / (1 - p).
        return _apply_mask(grad_out, ctx.weight_dtype, *ctx.mask), None, None, None, None


def drop_connect(weight: torch.Tensor, p: float, out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """``F.dropout(weight, p)`` (in training), in ``out_dtype`` (default ``weight.dtype``).

    On the CPU for float32 and bfloat16 (see :func:`supports`) one numba pass forward and one
    backward, the mask recomputed from one 64-bit draw of the default generator (module
    docstring); P(drop) is ``p`` rounded to a multiple of 2^-32. Elsewhere ``F.dropout``, then
    a cast. The gradient reaching ``weight`` is in ``weight``'s dtype.

    Args:
        weight: any shape.
        p: drop probability in ``[0, 1)``.
        out_dtype: the result's dtype: e.g. ``torch.bfloat16`` for a consumer under CPU autocast,
            which saves the cast of the whole result (and of its gradient).

    Returns:
        a tensor of ``weight``'s shape in ``out_dtype``.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"drop_connect: p must be in [0, 1), got {p}")
    out_dtype = out_dtype or weight.dtype
    if not supports(weight, out_dtype):
        return torch.nn.functional.dropout(weight, p).to(out_dtype)
    # All 64 bits, kept as a signed int64 until the kernel call: the profiler (record_shapes=True)
    # converts an autograd Function's int arguments to C++ int64 and fails on larger ones.
    seed = int(torch.empty((), dtype=torch.int64).random_(-2**63, None))
    threshold = round(p * 2**32)
    return _DropConnect.apply(weight, out_dtype, seed, threshold, 1.0 / (1.0 - p))
