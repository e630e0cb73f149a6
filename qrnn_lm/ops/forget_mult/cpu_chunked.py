"""ForgetMult on the CPU, the chunked scan: numba kernels for long sequences with few lanes,
where the sequential strategy has too few tiles to keep the cores busy. ``cpu.py`` decides when
(:func:`cpu.use_chunked`, with the measurements) and allocates the scratch arrays.

Shapes: T = time steps, B = batch, H = hidden lanes; arrays are time-major ``[T, B, H]``.
"""

from __future__ import annotations

import numpy as np

from ..numba_setup import HAS_NUMBA

if HAS_NUMBA:
    from numba import njit, prange

    from .cpu_sequential import _backward_run, _forward_run, _zero_steps, load

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
            state = np.zeros(hi - lo, dtype=starts.dtype)  # scratch in the arithmetic dtype
            decay = np.ones(hi - lo, dtype=starts.dtype)
            one = starts.dtype.type(1)  # typed: a bare 1.0 is float64 (see cpu_sequential.py)
            for s in range(s_start, s_stop):
                t = length - 1 - s if reverse else s
                f_row, x_row = f[t, b, lo:hi], x[t, b, lo:hi]
                for j in range(hi - lo):
                    ft = load(f_row, j)
                    state[j] = ft * load(x_row, j) + (one - ft) * state[j]
                    decay[j] *= one - ft
            starts[b, k, lo:hi] = state
            decays[b, k, lo:hi] = decay
        for b in prange(batch_size):  # phase 2: starts[b, k] becomes chunk k's true start
            for j in range(hidden_size):
                carry = load(h0[b], j)
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
            carry = np.zeros(hi - lo, dtype=starts.dtype)
            decay = np.ones(hi - lo, dtype=starts.dtype)
            one = starts.dtype.type(1)
            for u in range(u_start, u_stop):
                t = u if reverse else length - 1 - u
                f_row, g_row = f[t, b, lo:hi], grad_h[t, b, lo:hi]
                for j in range(hi - lo):
                    keep = one - load(f_row, j)
                    carry[j] = keep * (load(g_row, j) + carry[j])
                    decay[j] *= keep
            starts[b, k, lo:hi] = carry
            decays[b, k, lo:hi] = decay
        for b in prange(batch_size):  # phase 2; the carry left after the last chunk is grad_h0
            for j in range(hidden_size):
                carry = grad_h0.dtype.type(0)
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
