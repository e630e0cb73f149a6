"""Triton kernels of ForgetMult (the launch wrappers are in ``triton.py``).

Shapes: T = time steps, B = batch, H = hidden lanes, N = B*H lanes. Tensors are time-major
``[T, B, H]``, so the N lanes of one step are contiguous.

Every kernel works on tiles of ``[BLOCK_T steps, BLOCK_N lanes]``: a tile row is one coalesced
load of neighbouring lanes, and all BLOCK_T rows are loaded before any arithmetic, so BLOCK_T
steps of loads are in flight per lane instead of one. Triton lays such a tile out with the time
axis inside each thread (``sizePerThread = [1, 1]``, threads and warps along the lanes; check
``asm["ttgir"]`` of a compiled kernel), so the scan along time below is register-only.

One step of the recurrence is an affine map of the state, ``h -> a*h + b`` with ``a = 1 - f``
and ``b = f*x``; affine maps compose associatively (``_compose``), which gives both the
in-tile scan and the chunk summaries of the chunked path:

- single-launch path (``num_chunks == 1``): one program per block of lanes walks all of T.
- chunked path, for few lanes and long T: T is split into chunks; pass 1 (``*_summary_kernel``)
  reduces each chunk to its affine map, pass 2 (``*_scan_kernel``, one program per chunk and
  lane block) first folds the maps of the chunks before its own (a short sequential loop over
  chunks, so no third launch is needed) and then scans its chunk from the true start state.

Padded steps (``t >= lengths[b]``) are the identity map (a = 1, b = 0) and output 0.
The backward pass scans the total gradient ``g_t = grad_h[t] + (1 - f[t+1]) * g_{t+1}`` the other
way round, with the same machinery (its ``a`` comes from the *next* forward step's ``f``).
Accumulation is float32 for every input dtype.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _compose(a1, b1, a2, b2):
    """The affine map (a1, b1) followed by (a2, b2): h -> a2 * (a1 * h + b1) + b2."""
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _lane_block(len_ptr, T, N, H, HAS_LENGTHS: tl.constexpr, BLOCK_N: tl.constexpr):
    """This program's lanes [BLOCK_N], their in-range mask, and each lane's sequence length."""
    lanes = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    lane_ok = lanes < N
    if HAS_LENGTHS:
        length = tl.load(len_ptr + lanes // H, mask=lane_ok, other=0).to(tl.int32)
    else:
        length = tl.zeros([BLOCK_N], tl.int32) + T
    return lanes, lane_ok, length


@triton.jit
def _walk_to_time(steps, T, REVERSE: tl.constexpr):
    """Forward-walk step index -> time index (the forward walk runs T-1..0 when REVERSE)."""
    if REVERSE:
        times = T - 1 - steps
    else:
        times = steps
    return times


@triton.jit
def _offsets(times, lanes, N):
    """Element offsets of a [BLOCK_T, BLOCK_N] tile, in int64 so T*N may exceed 2**31."""
    return times.to(tl.int64)[:, None] * N + lanes[None, :]


@triton.jit
def _last_row(tile, BLOCK_T: tl.constexpr):
    """Row BLOCK_T-1 of a tile (a reduction inside each thread: time is per-thread)."""
    rows = tl.arange(0, BLOCK_T)
    return tl.sum(tl.where(rows[:, None] == BLOCK_T - 1, tile, 0.0), axis=0)


@triton.jit
def _forward_tile(f_ptr, x_ptr, steps, row_in, lanes, lane_ok, length, T, N,
                  REVERSE: tl.constexpr):
    """Load one forward tile; return its step maps (a, b), offsets, valid mask, store mask."""
    times = _walk_to_time(steps, T, REVERSE)
    row_ok = row_in[:, None] & lane_ok[None, :]
    valid = row_ok & (times[:, None] < length[None, :])
    offs = _offsets(times, lanes, N)
    f = tl.load(f_ptr + offs, mask=valid, other=0.0).to(tl.float32)
    x = tl.load(x_ptr + offs, mask=valid, other=0.0).to(tl.float32)
    a = tl.where(valid, 1.0 - f, 1.0)  # padding is the identity map
    return a, f * x, offs, valid, row_ok


@triton.jit
def forget_mult_fwd_summary_kernel(
    f_ptr, x_ptr, len_ptr, sum_a_ptr, sum_b_ptr, T, N, H, chunk_len,
    HAS_LENGTHS: tl.constexpr, REVERSE: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Chunked pass 1: chunk c's map ``h_end = A*h_start + B`` into sum_a/sum_b[c] ([chunks, N], fp32).

    Grid: (lane blocks, num_chunks - 1); the last chunk's map is never needed.
    """
    lanes, lane_ok, length = _lane_block(len_ptr, T, N, H, HAS_LENGTHS, BLOCK_N)
    chunk = tl.program_id(1)
    start = chunk * chunk_len
    end = tl.minimum(start + chunk_len, T)
    rows = tl.arange(0, BLOCK_T)
    map_a = tl.zeros([BLOCK_N], tl.float32) + 1.0
    map_b = tl.zeros([BLOCK_N], tl.float32)
    for tile_start in range(start, end, BLOCK_T):
        steps = tile_start + rows
        a, b, _, _, _ = _forward_tile(f_ptr, x_ptr, steps, steps < end, lanes, lane_ok,
                                      length, T, N, REVERSE)
        tile_a, tile_b = tl.reduce((a, b), 0, _compose)
        map_a, map_b = _compose(map_a, map_b, tile_a, tile_b)
    summary = chunk.to(tl.int64) * N + lanes
    tl.store(sum_a_ptr + summary, map_a, mask=lane_ok)
    tl.store(sum_b_ptr + summary, map_b, mask=lane_ok)


@triton.jit
def forget_mult_fwd_scan_kernel(
    f_ptr, x_ptr, h0_ptr, len_ptr, h_ptr, sum_a_ptr, sum_b_ptr, T, N, H, chunk_len,
    HAS_LENGTHS: tl.constexpr, REVERSE: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Write h for one chunk of one lane block. Grid: (lane blocks, num_chunks).

    With one chunk this is the whole forward pass (sum_a/sum_b are then never read).
    """
    lanes, lane_ok, length = _lane_block(len_ptr, T, N, H, HAS_LENGTHS, BLOCK_N)
    chunk = tl.program_id(1)
    state = tl.load(h0_ptr + lanes, mask=lane_ok, other=0.0).to(tl.float32)
    map_a_ptrs, map_b_ptrs = sum_a_ptr + lanes, sum_b_ptr + lanes
    for _ in range(0, chunk):  # carry h0 across the chunks before this one
        state = (tl.load(map_a_ptrs, mask=lane_ok, other=1.0) * state
                 + tl.load(map_b_ptrs, mask=lane_ok, other=0.0))
        map_a_ptrs += N
        map_b_ptrs += N
    start = chunk * chunk_len
    end = tl.minimum(start + chunk_len, T)
    rows = tl.arange(0, BLOCK_T)
    for tile_start in range(start, end, BLOCK_T):
        steps = tile_start + rows
        a, b, offs, valid, row_ok = _forward_tile(f_ptr, x_ptr, steps, steps < end, lanes,
                                                  lane_ok, length, T, N, REVERSE)
        scan_a, scan_b = tl.associative_scan((a, b), 0, _compose)
        tile_h = scan_a * state[None, :] + scan_b
        tl.store(h_ptr + offs, tl.where(valid, tile_h, 0.0).to(h_ptr.dtype.element_ty),
                 mask=row_ok)
        state = _last_row(tile_h, BLOCK_T)  # rows past the chunk are identity maps


@triton.jit
def _backward_tile(grad_h_ptr, f_ptr, steps, row_in, lanes, lane_ok, length, T, N,
                   REVERSE: tl.constexpr):
    """Backward maps of one tile: ``g = a*g_next + b`` with a = 1 - f[next step], b = grad_h.

    Also returns the tile's times, offsets, valid mask and store mask.
    """
    times = _walk_to_time(steps, T, REVERSE)
    row_ok = row_in[:, None] & lane_ok[None, :]
    valid = row_ok & (times[:, None] < length[None, :])
    if REVERSE:
        next_times = times - 1
    else:
        next_times = times + 1
    # A next step past the end (or before 0) has g = 0, so its f does not matter: use a = 0.
    next_ok = valid & (next_times[:, None] >= 0) & (next_times[:, None] < length[None, :])
    f_next = tl.load(f_ptr + _offsets(next_times, lanes, N), mask=next_ok, other=1.0)
    offs = _offsets(times, lanes, N)
    grad_h = tl.load(grad_h_ptr + offs, mask=valid, other=0.0).to(tl.float32)
    a = tl.where(valid, 1.0 - f_next.to(tl.float32), 1.0)  # padding is the identity map
    return a, grad_h, times, offs, valid, row_ok


@triton.jit
def forget_mult_bwd_summary_kernel(
    grad_h_ptr, f_ptr, len_ptr, sum_a_ptr, sum_b_ptr, T, N, H, chunk_len,
    HAS_LENGTHS: tl.constexpr, REVERSE: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Chunked backward pass 1: chunk c's map ``g_first = A*g_in + B`` into sum_a/sum_b[c].

    Grid: (lane blocks, num_chunks - 1) for chunks 1..num_chunks-1 (chunk 0 is walked last).
    """
    lanes, lane_ok, length = _lane_block(len_ptr, T, N, H, HAS_LENGTHS, BLOCK_N)
    chunk = tl.program_id(1) + 1
    start = chunk * chunk_len
    end = tl.minimum(start + chunk_len, T)
    rows = tl.arange(0, BLOCK_T)
    map_a = tl.zeros([BLOCK_N], tl.float32) + 1.0
    map_b = tl.zeros([BLOCK_N], tl.float32)
    for tile in range(0, tl.cdiv(end - start, BLOCK_T)):
        steps = end - 1 - tile * BLOCK_T - rows  # rows in backward-walk order
        a, b, _, _, _, _ = _backward_tile(grad_h_ptr, f_ptr, steps, steps >= start, lanes,
                                          lane_ok, length, T, N, REVERSE)
        tile_a, tile_b = tl.reduce((a, b), 0, _compose)
        map_a, map_b = _compose(map_a, map_b, tile_a, tile_b)
    summary = chunk.to(tl.int64) * N + lanes
    tl.store(sum_a_ptr + summary, map_a, mask=lane_ok)
    tl.store(sum_b_ptr + summary, map_b, mask=lane_ok)


@triton.jit
def forget_mult_bwd_scan_kernel(
    grad_h_ptr, f_ptr, x_ptr, h_ptr, h0_ptr, len_ptr,
    grad_f_ptr, grad_x_ptr, grad_h0_ptr, sum_a_ptr, sum_b_ptr, T, N, H, chunk_len, num_chunks,
    HAS_LENGTHS: tl.constexpr, REVERSE: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Write grad_f, grad_x of one chunk of one lane block; chunk 0 also writes grad_h0.

    Grid: (lane blocks, num_chunks). ``grad_f = (x - h_prev) * g``, ``grad_x = f * g``,
    ``grad_h0 = (1 - f[first step]) * g[first step]``, h_prev read from the saved h (or h0).
    """
    lanes, lane_ok, length = _lane_block(len_ptr, T, N, H, HAS_LENGTHS, BLOCK_N)
    chunk = tl.program_id(1)
    g = tl.zeros([BLOCK_N], tl.float32)  # total gradient of the step after this chunk
    last_summary = (num_chunks - 1) * N + lanes  # int32: the wrapper keeps chunks * N < 2**31
    map_a_ptrs, map_b_ptrs = sum_a_ptr + last_summary, sum_b_ptr + last_summary
    for _ in range(0, num_chunks - 1 - chunk):  # carry across the chunks walked before
        g = (tl.load(map_a_ptrs, mask=lane_ok, other=1.0) * g
             + tl.load(map_b_ptrs, mask=lane_ok, other=0.0))
        map_a_ptrs -= N
        map_b_ptrs -= N
    h0 = tl.load(h0_ptr + lanes, mask=lane_ok, other=0.0).to(tl.float32)
    start = chunk * chunk_len
    end = tl.minimum(start + chunk_len, T)
    rows = tl.arange(0, BLOCK_T)
    for tile in range(0, tl.cdiv(end - start, BLOCK_T)):
        steps = end - 1 - tile * BLOCK_T - rows  # rows in backward-walk order
        a, b, times, offs, valid, row_ok = _backward_tile(
            grad_h_ptr, f_ptr, steps, steps >= start, lanes, lane_ok, length, T, N, REVERSE)
        scan_a, scan_b = tl.associative_scan((a, b), 0, _compose)
        tile_g = scan_a * g[None, :] + scan_b
        if REVERSE:
            prev_times = times + 1
            is_first = times[:, None] == length[None, :] - 1
        else:
            prev_times = times - 1
            is_first = times[:, None] == 0
        h_prev = tl.load(h_ptr + _offsets(prev_times, lanes, N), mask=valid & ~is_first,
                         other=0.0).to(tl.float32)
        h_prev = tl.where(is_first, h0[None, :], h_prev)
        f = tl.load(f_ptr + offs, mask=valid, other=0.0).to(tl.float32)
        x = tl.load(x_ptr + offs, mask=valid, other=0.0).to(tl.float32)
        grad_f = tl.where(valid, (x - h_prev) * tile_g, 0.0)
        grad_x = tl.where(valid, f * tile_g, 0.0)
        tl.store(grad_f_ptr + offs, grad_f.to(grad_f_ptr.dtype.element_ty), mask=row_ok)
        tl.store(grad_x_ptr + offs, grad_x.to(grad_x_ptr.dtype.element_ty), mask=row_ok)
        g = _last_row(tile_g, BLOCK_T)  # rows before the chunk are identity maps
    if chunk == 0:
        # g is now the gradient of the first valid step (padding carried it unchanged).
        if REVERSE:
            first_time = length - 1
        else:
            first_time = tl.zeros([BLOCK_N], tl.int32)
        f_first = tl.load(f_ptr + first_time.to(tl.int64) * N + lanes,
                          mask=lane_ok & (length > 0), other=1.0).to(tl.float32)
        grad_h0 = (1.0 - f_first) * g
        tl.store(grad_h0_ptr + lanes, grad_h0.to(grad_h0_ptr.dtype.element_ty), mask=lane_ok)
