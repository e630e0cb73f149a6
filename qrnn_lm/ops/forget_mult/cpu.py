"""ForgetMult "numba" backend: parallel CPU kernels compiled by numba. This module holds the
backend's entry points and its choices (tile width, strategy, serial or parallel launch); the
kernels live in ``cpu_sequential.py`` and ``cpu_chunked.py``.

Shapes: T = time steps, B = batch, H = hidden lanes; tensors are time-major ``[T, B, H]``.

Two strategies, both forward and backward, both directions, with per-sequence lengths:

- sequential (``cpu_sequential.py``): the lanes of each batch element are cut into tiles of
  contiguous lanes; tiles run in parallel, each walks time sequentially over its contiguous lanes
  (vectorised). Every tensor is read or written once. Small calls run the same tiles in the
  calling thread, skipping the parallel launch. When every sequence has the full length (the
  language-model case), the batch is folded into the lanes, ``[T, B, H]`` viewed as
  ``[T, 1, B*H]``: a time step is then one contiguous row, and a tile walks long contiguous runs
  that the hardware prefetchers follow, instead of ``H``-lane pieces a whole ``[B, H]`` row apart
  (2x faster at (70, 20, 1550) with the data coming from memory; docs/cpu-thresholds.md).
- chunked scan (``cpu_chunked.py``): for long T with few lanes, where there are too few tiles to
  keep the cores busy: T is cut into chunks scanned in parallel, then the chunk boundaries are
  carried. Chosen automatically by :func:`use_chunked`.

float32 and float64 arrays go to the kernels zero-copy through ``tensor.numpy()``, and so do
bfloat16 tensors, as their 16-bit patterns (numba has no bfloat16; the kernels widen each element
on load and round on store, as ``.to(torch.bfloat16)`` does: ``cpu_sequential.py``). float16 is
converted to float32 first and the results cast back. Arithmetic is float32 for
float32/float16/bfloat16 inputs and float64 for float64.
"""

from __future__ import annotations

import os

import numpy as np
import torch

# Chooses numba's threading layer before any kernel runs; parallel launches hold PARALLEL_LOCK,
# and none happens in a forked child (parallel_launch_safe).
from ..numba_setup import HAS_NUMBA, IMPORT_ERROR, PARALLEL_LOCK, parallel_launch_safe

if HAS_NUMBA:
    import numba

    from ..numba_bfloat16 import kernel_array
    from .cpu_chunked import _chunked_backward, _chunked_forward
    from .cpu_sequential import _seq_backward, _seq_backward_serial, _seq_forward, _seq_forward_serial

__all__ = ["HAS_NUMBA", "IMPORT_ERROR", "forward", "backward", "use_chunked", "INSTALL_HINT"]

INSTALL_HINT = "pip install numba"

# Lanes per tile. Tiles start on multiples of 16 lanes (one 64-byte cache line of float32) so
# two threads never write the same cache line; 16-lane tiles that did cost 2x at (4096, 1, 64).
# Wide tiles are faster: each time step of a tile is one contiguous run per tensor, and the
# longer the run the better the prefetchers keep up (docs/cpu-thresholds.md). The cap keeps a
# tile's running state (4 bytes a lane) within a core's L2 cache.
ALIGN_LANES = 16
MIN_TILE_LANES = 32
MAX_TILE_LANES = 1 << 17


def _tile_lanes(batch_size: int, hidden_size: int) -> int:
    """Lanes per tile: as wide as possible while there is a tile for each numba thread, at least
    MIN_TILE_LANES (each step has a fixed cost) and at most MAX_TILE_LANES, a multiple of
    ALIGN_LANES."""
    threads = numba.get_num_threads()
    wanted_per_row = -(-threads // max(batch_size, 1))  # ceil(threads / B)
    tile = -(-hidden_size // wanted_per_row)
    tile = -(-tile // ALIGN_LANES) * ALIGN_LANES
    return max(1, min(max(tile, MIN_TILE_LANES), MAX_TILE_LANES, hidden_size))


def _fold_batch(arrays, lens):
    """``[T, B, H]`` arrays (and ``[B, H]`` ones) viewed as ``[T, 1, B*H]`` (``[1, B*H]``) when
    every sequence has the full length, else unchanged: ``(arrays, lens)``. The kernels then walk
    whole contiguous time steps. Outputs are fresh contiguous tensors, so theirs are views."""
    seq_len, batch_size, hidden_size = arrays[0].shape
    if batch_size <= 1 or bool((lens != seq_len).any()):
        return arrays, lens
    lanes = batch_size * hidden_size
    folded = [a.reshape(seq_len, 1, lanes) if a.ndim == 3 else a.reshape(1, lanes) for a in arrays]
    return folded, lens[:1]


def _as_compute(tensor: torch.Tensor) -> torch.Tensor:
    """float32/float64/bfloat16 stay as they are (zero-copy); float16 becomes float32."""
    if tensor.dtype in (torch.float32, torch.float64, torch.bfloat16):
        return tensor.detach()
    return tensor.detach().to(torch.float32)


def _arithmetic_dtype(tensor: torch.Tensor) -> torch.dtype:
    return torch.float64 if tensor.dtype == torch.float64 else torch.float32


def _lengths_array(lengths: torch.Tensor | None, seq_len: int, batch_size: int):
    if lengths is None:
        return torch.full((batch_size,), seq_len, dtype=torch.int64).numpy()
    return lengths.detach().to(torch.int64).contiguous().numpy()


# When the chunked scan pays. It reads f and x twice (phase 1 and phase 3), so it needs about
# twice the work of the sequential kernel and only wins when most threads would otherwise idle:
# at least CHUNKED_MIN_IDLE_RATIO threads per sequential tile, and T long enough to amortise
# three parallel launches (measurements: docs/cpu-thresholds.md; on 2 threads it lost at every
# shape measured under workqueue, and under OpenMP it wins at some shapes and loses at others).
CHUNKED_MIN_STEPS = 1024
CHUNKED_MIN_IDLE_RATIO = 3


# Up to this many elements the sequential kernel runs in the calling thread, where a parallel
# launch costs more than it saves. With numba's workqueue layer a launch wakes the workers through
# the OS (75-130 us); with an OpenMP (or TBB) pool it costs about 2 us, and the parallel kernels
# were as fast as the serial ones from 1,024 elements up (measurements: docs/cpu-thresholds.md).
SERIAL_MAX_ELEMENTS = 1 << 18  # workqueue, or no layer started yet (numba starts one at the first launch)
POOLED_SERIAL_MAX_ELEMENTS = 1 << 10  # omp or tbb


def _serial_max_elements() -> int:
    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel kernel has run in this process yet
        return SERIAL_MAX_ELEMENTS
    return SERIAL_MAX_ELEMENTS if layer == "workqueue" else POOLED_SERIAL_MAX_ELEMENTS


def _run_serially(numel: int, batch_size: int, tile: int, hidden_size: int) -> bool:
    n_tiles = batch_size * -(-hidden_size // tile)
    return (numel <= _serial_max_elements() or n_tiles == 1 or numba.get_num_threads() == 1
            or not parallel_launch_safe())


def _chunk_len(seq_len: int, n_tiles: int) -> int:
    """Steps per chunk: about 4 chunks per thread over all tiles, so the split evens out."""
    threads = numba.get_num_threads()
    n_chunks = max(1, -(-4 * threads // max(n_tiles, 1)))
    return max(1, -(-seq_len // n_chunks))


def use_chunked(seq_len: int, batch_size: int, hidden_size: int) -> bool:
    """True when the chunked scan is expected to beat the sequential kernel: long sequences
    whose lanes make fewer sequential tiles than there are threads."""
    n_tiles = batch_size * -(-hidden_size // _tile_lanes(batch_size, hidden_size))
    return seq_len >= CHUNKED_MIN_STEPS and numba.get_num_threads() >= CHUNKED_MIN_IDLE_RATIO * n_tiles


def _strategy(seq_len: int, batch_size: int, hidden_size: int) -> str:
    """"chunked" or "sequential"; env QRNN_LM_FORGET_MULT_CPU_STRATEGY forces one (tests, benches).
    Always "sequential" in a forked child, where only the serial kernels can run."""
    if not parallel_launch_safe():
        return "sequential"
    forced = os.environ.get("QRNN_LM_FORGET_MULT_CPU_STRATEGY", "auto")
    if forced not in ("auto", "chunked", "sequential"):
        raise ValueError(
            "QRNN_LM_FORGET_MULT_CPU_STRATEGY must be 'auto', 'chunked' or 'sequential', "
            f"got {forced!r}"
        )
    if forced != "auto":
        return forced
    return "chunked" if use_chunked(seq_len, batch_size, hidden_size) else "sequential"


def _chunk_scratch(seq_len, batch_size, hidden_size, tile, x):
    """(chunk_len, starts, decays): scratch ``[B, n_chunks, H]`` for the chunked kernels, in the
    arithmetic dtype of ``x``."""
    dtype = np.float64 if _arithmetic_dtype(x) == torch.float64 else np.float32
    chunk_len = _chunk_len(seq_len, batch_size * -(-hidden_size // tile))
    n_chunks = max(1, -(-seq_len // chunk_len))
    starts = np.empty((batch_size, n_chunks, hidden_size), dtype=dtype)
    return chunk_len, starts, np.empty_like(starts)


def forward(f, x, h0, lengths, reverse):
    """Contract forward: f, x ``[T, B, H]``, h0 ``[B, H]``, lengths None or int64 ``[B]`` -> h."""
    seq_len, batch_size, _ = x.shape
    f_c, x_c, h0_c = _as_compute(f), _as_compute(x), _as_compute(h0)
    out = torch.empty(x.shape, dtype=x_c.dtype)
    if out.numel() > 0:
        lens = _lengths_array(lengths, seq_len, batch_size)
        arrays = [kernel_array(t) for t in (f_c, x_c, h0_c, out)]
        (f_a, x_a, h0_a, out_a), lens = _fold_batch(arrays, lens)
        _, batch_size, hidden_size = x_a.shape
        tile = _tile_lanes(batch_size, hidden_size)
        args = (f_a, x_a, h0_a, lens, bool(reverse), tile)
        if _strategy(seq_len, batch_size, hidden_size) == "chunked":
            scratch = _chunk_scratch(seq_len, batch_size, hidden_size, tile, x)
            with PARALLEL_LOCK:
                _chunked_forward(*args, *scratch, out_a)
        elif _run_serially(out.numel(), batch_size, tile, hidden_size):
            _seq_forward_serial(*args, out_a)
        else:
            with PARALLEL_LOCK:
                _seq_forward(*args, out_a)
    return out.to(x.dtype)


def backward(grad_h, f, x, h, h0, lengths, reverse):
    """Contract backward -> ``(grad_f, grad_x, grad_h0)`` in the input dtype."""
    seq_len, batch_size, _ = x.shape
    compute = _arithmetic_dtype(x)
    # The gradients of f and x in the dtype the kernels write (bfloat16 stays bfloat16); that of
    # h0, a small [B, H], in the arithmetic dtype, cast after.
    grads_dtype = torch.bfloat16 if x.dtype == torch.bfloat16 else compute
    grad_f = torch.empty(x.shape, dtype=grads_dtype)
    grad_x = torch.empty(x.shape, dtype=grads_dtype)
    grad_h0 = torch.empty(h0.shape, dtype=compute)
    if grad_h0.numel() > 0:
        lens = _lengths_array(lengths, seq_len, batch_size)
        arrays = [kernel_array(_as_compute(t)) for t in (grad_h, f, x, h, h0)]
        outs = [kernel_array(t) for t in (grad_f, grad_x, grad_h0)]
        folded, lens = _fold_batch(arrays + outs, lens)
        arrays, outs = folded[:5], folded[5:]
        _, batch_size, hidden_size = arrays[2].shape
        tile = _tile_lanes(batch_size, hidden_size)
        args = (*arrays, lens, bool(reverse), tile)
        if _strategy(seq_len, batch_size, hidden_size) == "chunked":
            scratch = _chunk_scratch(seq_len, batch_size, hidden_size, tile, x)
            with PARALLEL_LOCK:
                _chunked_backward(*args, *scratch, *outs)
        elif _run_serially(x.numel(), batch_size, tile, hidden_size):
            _seq_backward_serial(*args, *outs)
        else:
            with PARALLEL_LOCK:
                _seq_backward(*args, *outs)
    return grad_f.to(x.dtype), grad_x.to(x.dtype), grad_h0.to(h0.dtype)
