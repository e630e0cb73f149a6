"""ForgetMult "numba" backend: parallel CPU kernels compiled by numba.

Shapes: T = time steps, B = batch, H = hidden lanes; tensors are time-major ``[T, B, H]``.

Two strategies, both forward and backward, both directions, with per-sequence lengths:

- sequential (``_seq_*``): the lanes of each batch element are cut into tiles of contiguous lanes;
  tiles run in parallel (``prange``), each walks time sequentially with the inner loop over its
  contiguous lanes, which LLVM vectorises. Every tensor is read or written once.
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

try:
    import numba
    from numba import njit, prange

    HAS_NUMBA = True
    IMPORT_ERROR = ""
    # numba's default "omp" layer starts a second OpenMP runtime beside PyTorch's own libgomp;
    # both pools spin on the same cores, and on a 2-core machine that made every kernel call
    # take 8 ms instead of 0.5-4 ms. The "workqueue" layer sleeps instead of spinning. It is
    # not re-entrant, but our kernels hold the GIL, so two Python threads cannot launch at once.
    # An explicit NUMBA_THREADING_LAYER (or a layer already started) wins over this default.
    if "NUMBA_THREADING_LAYER" not in os.environ and numba.config.THREADING_LAYER == "default":
        numba.config.THREADING_LAYER = "workqueue"
except ImportError as error:  # numba is a hard dependency; this guard only makes the failure explicit
    HAS_NUMBA = False
    IMPORT_ERROR = str(error)

__all__ = ["HAS_NUMBA", "forward", "backward", "use_chunked", "INSTALL_HINT"]

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

    # The running state lives in a small per-tile scratch array rather than being read back
    # from the previous output row: numba does not tell LLVM that arrays do not alias, and
    # with a fresh scratch array the lane loop vectorises (measured 2-3x faster).

    @njit(parallel=True, cache=True)
    def _seq_forward(f, x, h0, lengths, reverse, tile, out):
        """out[t, b, :] = f * x + (1 - f) * state; out[t >= len_b] = 0."""
        seq_len, batch_size, hidden_size = x.shape
        tiles_per_row = -(-hidden_size // tile)
        for item in prange(batch_size * tiles_per_row):
            b = item // tiles_per_row
            lo = (item % tiles_per_row) * tile
            hi = min(lo + tile, hidden_size)
            length = lengths[b]
            for t in range(length, seq_len):
                for j in range(lo, hi):
                    out[t, b, j] = 0.0
            state = np.empty(hi - lo, dtype=out.dtype)
            for j in range(hi - lo):
                state[j] = h0[b, lo + j]
            for s in range(length):
                t = length - 1 - s if reverse else s
                f_row, x_row, out_row = f[t, b, lo:hi], x[t, b, lo:hi], out[t, b, lo:hi]
                for j in range(hi - lo):
                    ft = f_row[j]
                    value = ft * x_row[j] + (1.0 - ft) * state[j]
                    state[j] = value
                    out_row[j] = value

    @njit(parallel=True, cache=True)
    def _seq_backward(grad_h, f, x, h, h0, lengths, reverse, tile, grad_f, grad_x, grad_h0):
        """Walk opposite to the forward, carrying (1 - f) * g in a scratch array."""
        seq_len, batch_size, hidden_size = x.shape
        tiles_per_row = -(-hidden_size // tile)
        for item in prange(batch_size * tiles_per_row):
            b = item // tiles_per_row
            lo = (item % tiles_per_row) * tile
            hi = min(lo + tile, hidden_size)
            length = lengths[b]
            for t in range(length, seq_len):
                for j in range(lo, hi):
                    grad_f[t, b, j] = 0.0
                    grad_x[t, b, j] = 0.0
            carry = np.zeros(hi - lo, dtype=grad_h0.dtype)
            # s counts backward steps; t is the forward step being undone.
            for s in range(length):
                t = s if reverse else length - 1 - s
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
            for j in range(hi - lo):
                grad_h0[b, lo + j] = carry[j]


    @njit(parallel=True, cache=True)
    def _chunked_forward(f, x, h0, lengths, reverse, tile, chunk_len, starts, decays, out):
        """Chunked scan. starts, decays: scratch ``[B, n_chunks, H]``.

        The recurrence is linear in the state: a chunk run from state s ends at
        ``local_end + decay * s``, with local_end its end state from a zero start and decay the
        product of its (1 - f). Phase 1 finds both for every chunk in parallel, phase 2 carries
        the true start of every chunk across the (few) chunk boundaries, phase 3 reruns every
        chunk in parallel from its true start and writes h.
        """
        seq_len, batch_size, hidden_size = x.shape
        n_chunks = starts.shape[1]
        tiles_per_row = -(-hidden_size // tile)
        n_tiles = batch_size * tiles_per_row
        for item in prange(n_tiles * n_chunks):  # phase 1
            b, k = item // (tiles_per_row * n_chunks), item % n_chunks
            lo = (item // n_chunks % tiles_per_row) * tile
            hi = min(lo + tile, hidden_size)
            length = lengths[b]
            state = np.zeros(hi - lo, dtype=out.dtype)
            decay = np.ones(hi - lo, dtype=out.dtype)
            for s in range(k * chunk_len, min((k + 1) * chunk_len, length)):
                t = length - 1 - s if reverse else s
                f_row, x_row = f[t, b, lo:hi], x[t, b, lo:hi]
                for j in range(hi - lo):
                    ft = f_row[j]
                    state[j] = ft * x_row[j] + (1.0 - ft) * state[j]
                    decay[j] *= 1.0 - ft
            starts[b, k, lo:hi] = state
            decays[b, k, lo:hi] = decay
        for item in prange(n_tiles):  # phase 2: starts[b, k] becomes chunk k's true start
            b = item // tiles_per_row
            lo = (item % tiles_per_row) * tile
            for j in range(lo, min(lo + tile, hidden_size)):
                carry = h0[b, j]
                for k in range(n_chunks):
                    end = starts[b, k, j] + decays[b, k, j] * carry
                    starts[b, k, j] = carry
                    carry = end
        for item in prange(n_tiles * n_chunks):  # phase 3
            b, k = item // (tiles_per_row * n_chunks), item % n_chunks
            lo = (item // n_chunks % tiles_per_row) * tile
            hi = min(lo + tile, hidden_size)
            length = lengths[b]
            for t in range(max(k * chunk_len, length), min((k + 1) * chunk_len, seq_len)):
                for j in range(lo, hi):
                    out[t, b, j] = 0.0  # padding
            state = starts[b, k, lo:hi].copy()
            for s in range(k * chunk_len, min((k + 1) * chunk_len, length)):
                t = length - 1 - s if reverse else s
                f_row, x_row, out_row = f[t, b, lo:hi], x[t, b, lo:hi], out[t, b, lo:hi]
                for j in range(hi - lo):
                    ft = f_row[j]
                    value = ft * x_row[j] + (1.0 - ft) * state[j]
                    state[j] = value
                    out_row[j] = value

    @njit(parallel=True, cache=True)
    def _chunked_backward(
        grad_h, f, x, h, h0, lengths, reverse, tile, chunk_len, starts, decays,
        grad_f, grad_x, grad_h0,
    ):
        """Chunked scan of the backward carry c <- (1 - f[t]) * (grad_h[t] + c), same phases
        as _chunked_forward; chunks are numbered along the backward walk (u = 0 first)."""
        seq_len, batch_size, hidden_size = x.shape
        n_chunks = starts.shape[1]
        tiles_per_row = -(-hidden_size // tile)
        n_tiles = batch_size * tiles_per_row
        for item in prange(n_tiles * n_chunks):  # phase 1
            b, k = item // (tiles_per_row * n_chunks), item % n_chunks
            lo = (item // n_chunks % tiles_per_row) * tile
            hi = min(lo + tile, hidden_size)
            length = lengths[b]
            carry = np.zeros(hi - lo, dtype=grad_f.dtype)
            decay = np.ones(hi - lo, dtype=grad_f.dtype)
            for u in range(k * chunk_len, min((k + 1) * chunk_len, length)):
                t = u if reverse else length - 1 - u
                f_row, g_row = f[t, b, lo:hi], grad_h[t, b, lo:hi]
                for j in range(hi - lo):
                    keep = 1.0 - f_row[j]
                    carry[j] = keep * (g_row[j] + carry[j])
                    decay[j] *= keep
            starts[b, k, lo:hi] = carry
            decays[b, k, lo:hi] = decay
        for item in prange(n_tiles):  # phase 2; the carry left after the last chunk is grad_h0
            b = item // tiles_per_row
            lo = (item % tiles_per_row) * tile
            for j in range(lo, min(lo + tile, hidden_size)):
                carry = 0.0
                for k in range(n_chunks):
                    end = starts[b, k, j] + decays[b, k, j] * carry
                    starts[b, k, j] = carry
                    carry = end
                grad_h0[b, j] = carry
        for item in prange(n_tiles * n_chunks):  # phase 3
            b, k = item // (tiles_per_row * n_chunks), item % n_chunks
            lo = (item // n_chunks % tiles_per_row) * tile
            hi = min(lo + tile, hidden_size)
            length = lengths[b]
            for t in range(max(k * chunk_len, length), min((k + 1) * chunk_len, seq_len)):
                for j in range(lo, hi):
                    grad_f[t, b, j] = 0.0  # padding
                    grad_x[t, b, j] = 0.0
            carry = starts[b, k, lo:hi].copy()
            for u in range(k * chunk_len, min((k + 1) * chunk_len, length)):
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


def _as_compute(tensor: torch.Tensor) -> torch.Tensor:
    """float32/float64 stay as they are (zero-copy); float16/bfloat16 become float32."""
    if tensor.dtype in (torch.float32, torch.float64):
        return tensor.detach()
    return tensor.detach().to(torch.float32)


def _lengths_array(lengths: torch.Tensor | None, seq_len: int, batch_size: int):
    if lengths is None:
        return torch.full((batch_size,), seq_len, dtype=torch.int64).numpy()
    return lengths.detach().to(torch.int64).contiguous().numpy()


# Measured on this project's 2-core CI machine (scripts/bench_forget_mult.py, "chunked" section):
# CHUNK_RULE_PLACEHOLDER
CHUNKED_MIN_STEPS = 1024
CHUNKED_MIN_IDLE_RATIO = 3


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
            _chunked_forward(*args, *scratch, out.numpy())
        else:
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
            _chunked_backward(*args, *scratch, *outs)
        else:
            _seq_backward(*args, *outs)
    return grad_f.to(x.dtype), grad_x.to(x.dtype), grad_h0.to(h0.dtype)
