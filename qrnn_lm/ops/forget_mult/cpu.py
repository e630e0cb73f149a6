"""ForgetMult "numba" backend: parallel CPU kernels compiled by numba.

Shapes: T = time steps, B = batch, H = hidden lanes; tensors are time-major ``[T, B, H]``.

Two strategies, both forward and backward, both directions, with per-sequence lengths:

- sequential (``_seq_*``): the lanes of each batch element are cut into tiles of contiguous lanes;
  tiles run in parallel (``prange``), each walks time sequentially with the inner loop over its
  contiguous lanes, which LLVM vectorises. Every tensor is read or written once. Small calls
  run the same tiles in the calling thread (``_seq_*_serial``), skipping the parallel launch.
- chunked scan (``_chunked_*``): for long T with few lanes, where there are too few tiles to keep
  the cores busy: T is cut into chunks scanned in parallel, then the chunk boundaries are
  carried (see ``_chunked_forward``). Chosen automatically by :func:`use_chunked`.

float32 and float64 arrays go to the kernels zero-copy through ``tensor.numpy()``; float16 and
bfloat16 (numba has no bfloat16) are converted to float32 first and the results cast back.
Arithmetic is float32 for float32/float16/bfloat16 inputs and float64 for float64.
"""

from __future__ import annotations

import os

import numpy as np
import torch

# Chooses numba's threading layer before any kernel runs; parallel launches hold PARALLEL_LOCK.
from ..numba_setup import HAS_NUMBA, IMPORT_ERROR, PARALLEL_LOCK

if HAS_NUMBA:
    import numba
    from numba import njit, prange

__all__ = ["HAS_NUMBA", "IMPORT_ERROR", "forward", "backward", "use_chunked", "INSTALL_HINT"]

INSTALL_HINT = "pip install numba"

# Lanes per tile. Tiles start on multiples of 16 lanes (one 64-byte cache line of float32) so
# two threads never write the same cache line; 16-lane tiles that did cost 2x at (4096, 1, 64).
ALIGN_LANES = 16
MIN_TILE_LANES = 32
MAX_TILE_LANES = 512


def _tile_lanes(batch_size: int, hidden_size: int) -> int:
    """Lanes per tile: enough tiles for 2 per numba thread when possible (an uneven split then
    costs little), at least MIN_TILE_LANES (each step has a fixed cost) and at most
    MAX_TILE_LANES, a multiple of ALIGN_LANES."""
    threads = numba.get_num_threads()
    wanted_per_row = -(-2 * threads // max(batch_size, 1))  # ceil(2 * threads / B)
    tile = -(-hidden_size // wanted_per_row)
    tile = -(-tile // ALIGN_LANES) * ALIGN_LANES
    return max(1, min(max(tile, MIN_TILE_LANES), MAX_TILE_LANES, hidden_size))


if HAS_NUMBA:

    # Building blocks, run by one thread on one tile (batch element b, lanes lo:hi) over a range
    # of walk steps. The running state lives in a small scratch array rather than being read
    # back from the previous output row: numba does not tell LLVM that arrays do not alias, and
    # with a fresh scratch array the lane loop vectorises (measured 2-3x faster).

    @njit(cache=True, inline="always")
    def _forward_run(f, x, b, lo, hi, length, reverse, s_start, s_stop, state, out):
        """Forward walk steps s_start..s_stop-1 from ``state`` (updated in place), writing out."""
        for s in range(s_start, s_stop):
            t = length - 1 - s if reverse else s
            f_row, x_row, out_row = f[t, b, lo:hi], x[t, b, lo:hi], out[t, b, lo:hi]
            for j in range(hi - lo):
                ft = f_row[j]
                value = ft * x_row[j] + (1.0 - ft) * state[j]
                state[j] = value
                out_row[j] = value

    @njit(cache=True, inline="always")
    def _backward_run(grad_h, f, x, h, h0, b, lo, hi, length, reverse, u_start, u_stop, carry,
                      grad_f, grad_x):
        """Backward walk steps u_start..u_stop-1 (u = 0 undoes the forward's last step) from
        ``carry`` = (1 - f) * g of the step undone before (updated in place)."""
        for u in range(u_start, u_stop):
            t = u if reverse else length - 1 - u
            first = (t == length - 1) if reverse else (t == 0)  # the forward's first step
            t_prev = t + 1 if reverse else t - 1
            h_prev = h0[b, lo:hi] if first else h[t_prev, b, lo:hi]
            f_row, x_row, g_row = f[t, b, lo:hi], x[t, b, lo:hi], grad_h[t, b, lo:hi]
            gf_row, gx_row = grad_f[t, b, lo:hi], grad_x[t, b, lo:hi]
            for j in range(hi - lo):
                ft = f_row[j]
                g = g_row[j] + carry[j]
                gx_row[j] = ft * g
                gf_row[j] = (x_row[j] - h_prev[j]) * g
                carry[j] = (1.0 - ft) * g

    @njit(cache=True)
    def _zero_steps(array, b, lo, hi, t_start, t_stop):
        for t in range(t_start, t_stop):
            for j in range(lo, hi):
                array[t, b, j] = 0.0

    @njit(cache=True)
    def _forward_tile(f, x, h0, lengths, reverse, tile, item, out):
        seq_len, _, hidden_size = x.shape
        tiles_per_row = -(-hidden_size // tile)
        b, lo = item // tiles_per_row, (item % tiles_per_row) * tile
        hi, length = min(lo + tile, hidden_size), lengths[b]
        _zero_steps(out, b, lo, hi, length, seq_len)  # padding
        state = h0[b, lo:hi].copy()
        _forward_run(f, x, b, lo, hi, length, reverse, 0, length, state, out)

    @njit(cache=True)
    def _backward_tile(grad_h, f, x, h, h0, lengths, reverse, tile, item, grad_f, grad_x, grad_h0):
        seq_len, _, hidden_size = x.shape
        tiles_per_row = -(-hidden_size // tile)
        b, lo = item // tiles_per_row, (item % tiles_per_row) * tile
        hi, length = min(lo + tile, hidden_size), lengths[b]
        _zero_steps(grad_f, b, lo, hi, length, seq_len)  # padding
        _zero_steps(grad_x, b, lo, hi, length, seq_len)
        carry = np.zeros(hi - lo, dtype=grad_h0.dtype)
        _backward_run(grad_h, f, x, h, h0, b, lo, hi, length, reverse, 0, length, carry, grad_f, grad_x)
        grad_h0[b, lo:hi] = carry

    # The sequential strategy: tiles in parallel (prange) or, for small calls, all in the
    # calling thread (a parallel launch costs tens of microseconds, and on a busy machine it
    # waits for every worker thread to be scheduled).

    @njit(parallel=True, cache=True)
    def _seq_forward(f, x, h0, lengths, reverse, tile, out):
        for item in prange(x.shape[1] * -(-x.shape[2] // tile)):
            _forward_tile(f, x, h0, lengths, reverse, tile, item, out)

    @njit(cache=True)
    def _seq_forward_serial(f, x, h0, lengths, reverse, tile, out):
        for item in range(x.shape[1] * -(-x.shape[2] // tile)):
            _forward_tile(f, x, h0, lengths, reverse, tile, item, out)

    @njit(parallel=True, cache=True)
    def _seq_backward(grad_h, f, x, h, h0, lengths, reverse, tile, grad_f, grad_x, grad_h0):
        for item in prange(x.shape[1] * -(-x.shape[2] // tile)):
            _backward_tile(grad_h, f, x, h, h0, lengths, reverse, tile, item, grad_f, grad_x, grad_h0)

    @njit(cache=True)
    def _seq_backward_serial(grad_h, f, x, h, h0, lengths, reverse, tile, grad_f, grad_x, grad_h0):
        for item in range(x.shape[1] * -(-x.shape[2] // tile)):
            _backward_tile(grad_h, f, x, h, h0, lengths, reverse, tile, item, grad_f, grad_x, grad_h0)

    # The chunked scan. The recurrence is linear in the state: a chunk of steps run from state s
    # ends at ``local_end + decay * s``, where local_end is its end state from a zero start and
    # decay the product of its (1 - f). Phase 1 finds both for every chunk in parallel, phase 2
    # carries the true start of every chunk across the (few) chunk boundaries, phase 3 reruns
    # every chunk in parallel from its true start and writes the outputs. The backward carry
    # c <- (1 - f[t]) * (grad_h[t] + c) is the same kind of recurrence, scanned the same way,
    # with chunks numbered along the backward walk. Work item = (tile, chunk).

    @njit(cache=True)
    def _chunk_item(item, n_chunks, tile, hidden_size, lengths, chunk_len):
        tiles_per_row = -(-hidden_size // tile)
        b, k = item // (tiles_per_row * n_chunks), item % n_chunks
        lo = (item // n_chunks % tiles_per_row) * tile
        length = lengths[b]
        s_start, s_stop = min(k * chunk_len, length), min((k + 1) * chunk_len, length)
        return b, k, lo, min(lo + tile, hidden_size), length, s_start, s_stop

    @njit(parallel=True, cache=True)
    def _chunked_forward(f, x, h0, lengths, reverse, tile, chunk_len, starts, decays, out):
        """starts, decays: scratch ``[B, n_chunks, H]``."""
        seq_len, batch_size, hidden_size = x.shape
        n_chunks = starts.shape[1]
        n_items = batch_size * -(-hidden_size // tile) * n_chunks
        for item in prange(n_items):  # phase 1: end state from zero, product of (1 - f)
            b, k, lo, hi, length, s_start, s_stop = _chunk_item(item, n_chunks, tile, hidden_size, lengths, chunk_len)
            state = np.zeros(hi - lo, dtype=out.dtype)
            decay = np.ones(hi - lo, dtype=out.dtype)
            for s in range(s_start, s_stop):
                t = length - 1 - s if reverse else s
                f_row, x_row = f[t, b, lo:hi], x[t, b, lo:hi]
                for j in range(hi - lo):
                    ft = f_row[j]
                    state[j] = ft * x_row[j] + (1.0 - ft) * state[j]
                    decay[j] *= 1.0 - ft
            starts[b, k, lo:hi] = state
            decays[b, k, lo:hi] = decay
        for b in prange(batch_size):  # phase 2: starts[b, k] becomes chunk k's true start
            for j in range(hidden_size):
                carry = h0[b, j]
                for k in range(n_chunks):
                    end = starts[b, k, j] + decays[b, k, j] * carry
                    starts[b, k, j] = carry
                    carry = end
        for item in prange(n_items):  # phase 3
            b, k, lo, hi, length, s_start, s_stop = _chunk_item(item, n_chunks, tile, hidden_size, lengths, chunk_len)
            _zero_steps(out, b, lo, hi, max(k * chunk_len, length), min((k + 1) * chunk_len, seq_len))
            state = starts[b, k, lo:hi].copy()
            _forward_run(f, x, b, lo, hi, length, reverse, s_start, s_stop, state, out)

    @njit(parallel=True, cache=True)
    def _chunked_backward(grad_h, f, x, h, h0, lengths, reverse, tile, chunk_len, starts, decays,
                          grad_f, grad_x, grad_h0):
        seq_len, batch_size, hidden_size = x.shape
        n_chunks = starts.shape[1]
        n_items = batch_size * -(-hidden_size // tile) * n_chunks
        for item in prange(n_items):  # phase 1
            b, k, lo, hi, length, u_start, u_stop = _chunk_item(item, n_chunks, tile, hidden_size, lengths, chunk_len)
            carry = np.zeros(hi - lo, dtype=grad_f.dtype)
            decay = np.ones(hi - lo, dtype=grad_f.dtype)
            for u in range(u_start, u_stop):
                t = u if reverse else length - 1 - u
                f_row, g_row = f[t, b, lo:hi], grad_h[t, b, lo:hi]
                for j in range(hi - lo):
                    keep = 1.0 - f_row[j]
                    carry[j] = keep * (g_row[j] + carry[j])
                    decay[j] *= keep
            starts[b, k, lo:hi] = carry
            decays[b, k, lo:hi] = decay
        for b in prange(batch_size):  # phase 2; the carry left after the last chunk is grad_h0
            for j in range(hidden_size):
                carry = 0.0
                for k in range(n_chunks):
                    end = starts[b, k, j] + decays[b, k, j] * carry
                    starts[b, k, j] = carry
                    carry = end
                grad_h0[b, j] = carry
        for item in prange(n_items):  # phase 3
            b, k, lo, hi, length, u_start, u_stop = _chunk_item(item, n_chunks, tile, hidden_size, lengths, chunk_len)
            _zero_steps(grad_f, b, lo, hi, max(k * chunk_len, length), min((k + 1) * chunk_len, seq_len))
            _zero_steps(grad_x, b, lo, hi, max(k * chunk_len, length), min((k + 1) * chunk_len, seq_len))
            carry = starts[b, k, lo:hi].copy()
            _backward_run(grad_h, f, x, h, h0, b, lo, hi, length, reverse, u_start, u_stop, carry, grad_f, grad_x)


def _as_compute(tensor: torch.Tensor) -> torch.Tensor:
    """float32/float64 stay as they are (zero-copy); float16/bfloat16 become float32."""
    if tensor.dtype in (torch.float32, torch.float64):
        return tensor.detach()
    return tensor.detach().to(torch.float32)


def _lengths_array(lengths: torch.Tensor | None, seq_len: int, batch_size: int):
    if lengths is None:
        return torch.full((batch_size,), seq_len, dtype=torch.int64).numpy()
    return lengths.detach().to(torch.int64).contiguous().numpy()


# When the chunked scan pays. It reads f and x twice (phase 1 and phase 3), so it needs about
# twice the work of the sequential kernel and only wins when most threads would otherwise idle:
# at least CHUNKED_MIN_IDLE_RATIO threads per sequential tile, and T long enough to amortise
# three parallel launches. Measured on this project's 2-core machine, the backend's forward and
# backward called directly, 55 interleaved repeats, time of the sequential kernel divided by the
# chunked one (>1 would mean chunked wins), median (best):
#   (4096, 1, 64) fwd 0.44 (0.42) bwd 0.59 (0.62);  (4096, 1, 16) fwd 0.40 (0.42) bwd 0.56 (0.58);
#   (4096, 1, 1) fwd 0.41 (0.42) bwd 0.48 (0.50);   (16384, 1, 8) fwd 0.42 (0.64) bwd 0.59 (0.59);
#   (65536, 1, 4) fwd 0.54 (0.51) bwd 0.60 (0.62).
# Re-measured on the later 2-core Zen 4 machine (op level, cpu.forward/backward, 55 interleaved
# repeats): (4096, 1, 64) fwd 0.19 (0.26) bwd 0.29 (0.38); (16384, 1, 8) fwd 0.25 (0.40) bwd 0.44
# (0.80); (65536, 1, 4) fwd 0.37 (0.59) bwd 0.59 (0.63); (4096, 2, 512) fwd 0.52 bwd 0.65.
# So on 2 threads the rule below never picks it; with 3+ threads per sequential tile it does.
CHUNKED_MIN_STEPS = 1024
CHUNKED_MIN_IDLE_RATIO = 3


# Up to this many elements the sequential kernel runs in the calling thread: a parallel launch
# costs 30-90 us on the 2-core CI machine. Measured (fwd, serial vs parallel): (63, 3, 500)
# 52 vs 107 us, (4096, 1, 64) 140 vs 190 us, (70, 20, 1550) 1.76 vs 0.89 ms (best of 30).
SERIAL_MAX_ELEMENTS = 1 << 18


def _run_serially(numel: int, batch_size: int, tile: int, hidden_size: int) -> bool:
    n_tiles = batch_size * -(-hidden_size // tile)
    return numel <= SERIAL_MAX_ELEMENTS or n_tiles == 1 or numba.get_num_threads() == 1


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
    """"chunked" or "sequential"; env QRNN_LM_FORGET_MULT_CPU_STRATEGY forces one (tests, benches)."""
    forced = os.environ.get("QRNN_LM_FORGET_MULT_CPU_STRATEGY", "auto")
    if forced not in ("auto", "chunked", "sequential"):
        raise ValueError(
            "QRNN_LM_FORGET_MULT_CPU_STRATEGY must be 'auto', 'chunked' or 'sequential', "
            f"got {forced!r}"
        )
    if forced != "auto":
        return forced
    return "chunked" if use_chunked(seq_len, batch_size, hidden_size) else "sequential"


def _chunk_scratch(seq_len, batch_size, hidden_size, tile, dtype):
    """(chunk_len, starts, decays): scratch ``[B, n_chunks, H]`` for the chunked kernels."""
    chunk_len = _chunk_len(seq_len, batch_size * -(-hidden_size // tile))
    n_chunks = max(1, -(-seq_len // chunk_len))
    starts = np.empty((batch_size, n_chunks, hidden_size), dtype=dtype)
    return chunk_len, starts, np.empty_like(starts)


def forward(f, x, h0, lengths, reverse):
    """Contract forward: f, x ``[T, B, H]``, h0 ``[B, H]``, lengths None or int64 ``[B]`` -> h."""
    seq_len, batch_size, hidden_size = x.shape
    f_c, x_c, h0_c = _as_compute(f), _as_compute(x), _as_compute(h0)
    out = torch.empty(x.shape, dtype=x_c.dtype)
    lens = _lengths_array(lengths, seq_len, batch_size)
    if out.numel() > 0:
        tile = _tile_lanes(batch_size, hidden_size)
        args = (f_c.numpy(), x_c.numpy(), h0_c.numpy(), lens, bool(reverse), tile)
        if _strategy(seq_len, batch_size, hidden_size) == "chunked":
            scratch = _chunk_scratch(seq_len, batch_size, hidden_size, tile, args[0].dtype)
            with PARALLEL_LOCK:
                _chunked_forward(*args, *scratch, out.numpy())
        elif _run_serially(out.numel(), batch_size, tile, hidden_size):
            _seq_forward_serial(*args, out.numpy())
        else:
            with PARALLEL_LOCK:
                _seq_forward(*args, out.numpy())
    return out.to(x.dtype)


def backward(grad_h, f, x, h, h0, lengths, reverse):
    """Contract backward -> ``(grad_f, grad_x, grad_h0)`` in the input dtype."""
    seq_len, batch_size, hidden_size = x.shape
    arrays = [_as_compute(t).numpy() for t in (grad_h, f, x, h, h0)]
    compute = torch.float64 if x.dtype == torch.float64 else torch.float32
    grad_f = torch.empty(x.shape, dtype=compute)
    grad_x = torch.empty(x.shape, dtype=compute)
    grad_h0 = torch.empty(h0.shape, dtype=compute)
    lens = _lengths_array(lengths, seq_len, batch_size)
    outs = (grad_f.numpy(), grad_x.numpy(), grad_h0.numpy())
    if grad_h0.numel() > 0:
        tile = _tile_lanes(batch_size, hidden_size)
        args = (*arrays, lens, bool(reverse), tile)
        if _strategy(seq_len, batch_size, hidden_size) == "chunked":
            scratch = _chunk_scratch(seq_len, batch_size, hidden_size, tile, arrays[1].dtype)
            with PARALLEL_LOCK:
                _chunked_backward(*args, *scratch, *outs)
        elif _run_serially(x.numel(), batch_size, tile, hidden_size):
            _seq_backward_serial(*args, *outs)
        else:
            with PARALLEL_LOCK:
                _seq_backward(*args, *outs)
    return grad_f.to(x.dtype), grad_x.to(x.dtype), grad_h0.to(h0.dtype)
