"""ForgetMult "numba" backend: parallel CPU kernels compiled by numba.

Shapes: T = time steps, B = batch, H = hidden lanes; tensors are time-major ``[T, B, H]``.

Two strategies, both forward and backward, both directions, with per-sequence lengths:

- sequential (``_seq_*``): the lanes of each batch element are cut into tiles of contiguous lanes;
  tiles run in parallel (``prange``), each walks time sequentially with the inner loop over its
  contiguous lanes, which LLVM vectorises. Every tensor is read or written once.
- chunked scan (``chunked.py``): for long T with few lanes, where there are too few tiles to keep
  the cores busy. Chosen automatically by :func:`use_chunked`.

float32 and float64 arrays go to the kernels zero-copy through ``tensor.numpy()``; float16 and
bfloat16 (numba has no bfloat16) are converted to float32 first and the results cast back.
Arithmetic is float32 for float32/float16/bfloat16 inputs and float64 for float64.
"""

from __future__ import annotations

import os

import torch

try:
    import numba
    from numba import njit, prange

    HAS_NUMBA = True
    IMPORT_ERROR = ""
except ImportError as error:  # numba is a hard dependency; this guard only makes the failure explicit
    HAS_NUMBA = False
    IMPORT_ERROR = str(error)

__all__ = ["HAS_NUMBA", "forward", "backward", "use_chunked", "INSTALL_HINT"]

INSTALL_HINT = "pip install numba"

# Lanes per tile. Narrower tiles give more parallel work items but shorter vector loops;
# 16 float32 lanes are two AVX2 registers. See _tiles_per_row for how the width is chosen.
MIN_TILE_LANES = 16
MAX_TILE_LANES = 512


def _tiles_per_row(batch_size: int, hidden_size: int) -> int:
    """How many tiles to cut each batch element's H lanes into.

    Enough tiles for every numba thread to get work (at least 2 per thread when possible, so an
    uneven split costs little), but no tile narrower than MIN_TILE_LANES or wider than
    MAX_TILE_LANES (wide tiles keep a long stride-T walk per tile, which the prefetcher follows).
    """
    threads = numba.get_num_threads()
    wanted_per_row = -(-2 * threads // max(batch_size, 1))  # ceil(2 * threads / B)
    most = max(1, hidden_size // MIN_TILE_LANES)
    least = -(-hidden_size // MAX_TILE_LANES)
    return max(1, least, min(wanted_per_row, most))


if HAS_NUMBA:

    @njit(parallel=True, cache=True)
    def _seq_forward(f, x, h0, lengths, reverse, tiles_per_row, out):
        """out[t, b, :] = f * x + (1 - f) * out[prev step]; out[t >= len_b] = 0."""
        seq_len, batch_size, hidden_size = x.shape
        tile = -(-hidden_size // tiles_per_row)
        for item in prange(batch_size * tiles_per_row):
            b = item // tiles_per_row
            lo = (item % tiles_per_row) * tile
            hi = min(lo + tile, hidden_size)
            length = lengths[b]
            for t in range(length, seq_len):
                for j in range(lo, hi):
                    out[t, b, j] = 0.0
            if length == 0:
                continue
            t = length - 1 if reverse else 0
            for j in range(lo, hi):
                ft = f[t, b, j]
                out[t, b, j] = ft * x[t, b, j] + (1.0 - ft) * h0[b, j]
            for s in range(1, length):
                t_prev = t
                t = length - 1 - s if reverse else s
                for j in range(lo, hi):
                    ft = f[t, b, j]
                    out[t, b, j] = ft * x[t, b, j] + (1.0 - ft) * out[t_prev, b, j]

    @njit(parallel=True, cache=True)
    def _seq_backward(grad_h, f, x, h, h0, lengths, reverse, tiles_per_row, grad_f, grad_x, grad_h0):
        """Walk opposite to the forward; grad_h0 doubles as the running carry (1 - f) * g."""
        seq_len, batch_size, hidden_size = x.shape
        tile = -(-hidden_size // tiles_per_row)
        for item in prange(batch_size * tiles_per_row):
            b = item // tiles_per_row
            lo = (item % tiles_per_row) * tile
            hi = min(lo + tile, hidden_size)
            length = lengths[b]
            for t in range(length, seq_len):
                for j in range(lo, hi):
                    grad_f[t, b, j] = 0.0
                    grad_x[t, b, j] = 0.0
            for j in range(lo, hi):
                grad_h0[b, j] = 0.0
            # s counts backward steps; t is the forward step being undone.
            for s in range(length):
                t = s if reverse else length - 1 - s
                first = t == length - 1 if reverse else t == 0  # the forward's first step
                t_prev = t + 1 if reverse else t - 1
                for j in range(lo, hi):
                    ft = f[t, b, j]
                    g = grad_h[t, b, j] + grad_h0[b, j]
                    h_prev = h0[b, j] if first else h[t_prev, b, j]
                    grad_x[t, b, j] = ft * g
                    grad_f[t, b, j] = (x[t, b, j] - h_prev) * g
                    grad_h0[b, j] = (1.0 - ft) * g


def _as_compute(tensor: torch.Tensor) -> torch.Tensor:
    """float32/float64 stay as they are (zero-copy); float16/bfloat16 become float32."""
    if tensor.dtype in (torch.float32, torch.float64):
        return tensor.detach()
    return tensor.detach().to(torch.float32)


def _lengths_array(lengths: torch.Tensor | None, seq_len: int, batch_size: int):
    if lengths is None:
        return torch.full((batch_size,), seq_len, dtype=torch.int64).numpy()
    return lengths.detach().to(torch.int64).contiguous().numpy()


def use_chunked(seq_len: int, batch_size: int, hidden_size: int) -> bool:
    """True when the chunked scan is expected to beat the sequential kernel (see chunked.py)."""
    return False  # chunked scan: not yet


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


def forward(f, x, h0, lengths, reverse):
    """Contract forward: f, x ``[T, B, H]``, h0 ``[B, H]``, lengths None or int64 ``[B]`` -> h."""
    seq_len, batch_size, hidden_size = x.shape
    f_c, x_c, h0_c = _as_compute(f), _as_compute(x), _as_compute(h0)
    out = torch.empty(x.shape, dtype=x_c.dtype)
    lens = _lengths_array(lengths, seq_len, batch_size)
    if out.numel() > 0:
        if _strategy(seq_len, batch_size, hidden_size) == "chunked":
            from . import chunked

            chunked.forward(f_c.numpy(), x_c.numpy(), h0_c.numpy(), lens, bool(reverse), out.numpy())
        else:
            tiles = _tiles_per_row(batch_size, hidden_size)
            _seq_forward(f_c.numpy(), x_c.numpy(), h0_c.numpy(), lens, bool(reverse), tiles, out.numpy())
    return out.to(x.dtype)


def backward(grad_h, f, x, h, h0, lengths, reverse):
    """Contract backward -> ``(grad_f, grad_x, grad_h0)`` in the input dtype."""
    seq_len, batch_size, hidden_size = x.shape
    arrays = [_as_compute(t) for t in (grad_h, f, x, h, h0)]
    compute = arrays[1].dtype
    grad_f = torch.empty(x.shape, dtype=compute)
    grad_x = torch.empty(x.shape, dtype=compute)
    grad_h0 = torch.empty(h0.shape, dtype=compute)
    lens = _lengths_array(lengths, seq_len, batch_size)
    outs = (grad_f.numpy(), grad_x.numpy(), grad_h0.numpy())
    if grad_h0.numel() > 0:
        numpy_in = [a.numpy() for a in arrays]
        if _strategy(seq_len, batch_size, hidden_size) == "chunked":
            from . import chunked

            chunked.backward(*numpy_in, lens, bool(reverse), *outs)
        else:
            tiles = _tiles_per_row(batch_size, hidden_size)
            _seq_backward(*numpy_in, lens, bool(reverse), tiles, *outs)
    return grad_f.to(x.dtype), grad_x.to(x.dtype), grad_h0.to(h0.dtype)
