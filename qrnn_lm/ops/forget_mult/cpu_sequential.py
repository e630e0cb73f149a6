"""ForgetMult on the CPU, numba kernels of the sequential strategy and the per-tile building
blocks the chunked scan (``cpu_chunked.py``) reuses. ``cpu.py`` chooses between them and calls them.

Shapes: T = time steps, B = batch, H = hidden lanes; arrays are time-major ``[T, B, H]``.

The lanes of each batch element are cut into tiles of contiguous lanes; a work item is one tile
(batch element b, lanes lo:hi). Tiles run in parallel (``prange``), each walks time sequentially
with the inner loop over its contiguous lanes, which LLVM vectorises; every array is read or
written once. Small calls run the same tiles in the calling thread (``_seq_*_serial``), skipping
the parallel launch.
"""

from __future__ import annotations

# Chooses numba's threading layer before any kernel is compiled.
from ..numba_setup import HAS_NUMBA

if HAS_NUMBA:
    from numba import njit, prange

    # bf16 tensors go to the kernels zero-copy, as their 16-bit patterns: at (70, 20, 1000)
    # forward+backward through the op took 1.36 ms instead of 4.16 with float32 copies (Zen 4).
    from ..numba_bfloat16 import load, scratch, store

    # Building blocks, run by one thread on one tile (batch element b, lanes lo:hi) over a range
    # of walk steps. The running state lives in a small scratch array rather than being read
    # back from the previous output row: numba does not tell LLVM that arrays do not alias, and
    # with a fresh scratch array the lane loop vectorises (measured 2-3x faster). The constant 1 is
    # typed as the arrays' dtype: a bare ``1.0`` is float64 in numba, which turns float32 lanes
    # into float64 arithmetic with conversions (measured 1.8x slower at (500, 4, 320)).

    @njit(cache=True, inline="always")
    def _forward_run(f, x, b, lo, hi, length, reverse, s_start, s_stop, state, out):
        """Forward walk steps s_start..s_stop-1 from ``state`` (updated in place), writing out."""
        one = state.dtype.type(1)
        for s in range(s_start, s_stop):
            t = length - 1 - s if reverse else s
            f_row, x_row, out_row = f[t, b, lo:hi], x[t, b, lo:hi], out[t, b, lo:hi]
            for j in range(hi - lo):
                ft = load(f_row, j)
                value = ft * load(x_row, j) + (one - ft) * state[j]
                state[j] = value
                store(out_row, j, value)

    @njit(cache=True, inline="always")
    def _backward_run(grad_h, f, x, h, h0, b, lo, hi, length, reverse, u_start, u_stop, carry,
                      grad_f, grad_x):
        """Backward walk steps u_start..u_stop-1 (u = 0 undoes the forward's last step) from
        ``carry`` = (1 - f) * g of the step undone before (updated in place)."""
        one = carry.dtype.type(1)
        for u in range(u_start, u_stop):
            t = u if reverse else length - 1 - u
            first = (t == length - 1) if reverse else (t == 0)  # the forward's first step
            t_prev = t + 1 if reverse else t - 1
            h_prev = h0[b, lo:hi] if first else h[t_prev, b, lo:hi]
            f_row, x_row, g_row = f[t, b, lo:hi], x[t, b, lo:hi], grad_h[t, b, lo:hi]
            gf_row, gx_row = grad_f[t, b, lo:hi], grad_x[t, b, lo:hi]
            for j in range(hi - lo):
                ft = load(f_row, j)
                g = load(g_row, j) + carry[j]
                store(gx_row, j, ft * g)
                store(gf_row, j, (load(x_row, j) - load(h_prev, j)) * g)
                carry[j] = (one - ft) * g

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
        state = scratch(hi - lo, x)
        for j in range(hi - lo):
            state[j] = load(h0[b], lo + j)
        _forward_run(f, x, b, lo, hi, length, reverse, 0, length, state, out)

    @njit(cache=True)
    def _backward_tile(grad_h, f, x, h, h0, lengths, reverse, tile, item, grad_f, grad_x, grad_h0):
        seq_len, _, hidden_size = x.shape
        tiles_per_row = -(-hidden_size // tile)
        b, lo = item // tiles_per_row, (item % tiles_per_row) * tile
        hi, length = min(lo + tile, hidden_size), lengths[b]
        _zero_steps(grad_f, b, lo, hi, length, seq_len)  # padding
        _zero_steps(grad_x, b, lo, hi, length, seq_len)
        carry = scratch(hi - lo, x)
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
