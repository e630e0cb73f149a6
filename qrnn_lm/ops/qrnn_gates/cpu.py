"""Fused QRNN gates, "numba" CPU kernels: activations, zoneout, recurrence and output gate in one pass.

Shapes: T = time steps, B = batch, H = hidden lanes; ``y`` is ``[T, B, k*H]`` with the gate
pre-activations Z, F, O side by side in each row (k = 3, or 2 without the output gate).

Per lane and step (``m`` = zoneout_scale, times the zoneout mask when there is one; ``y`` plus
the bias of its column):
    z = tanh(y_z), s = sigmoid(y_f), f = s * m, c_t = f * z + (1 - f) * c_{t-1}, h_t = sigmoid(y_o) * c_t
The forward also writes each sequence's final state, and (under autograd) the activations z, s, o
into one ``[T, B, k*H]`` tensor; the backward reads them (or recomputes them from ``y`` when they
were not kept) and writes the gradient of ``y`` directly, so the gates' gradients never exist as
separate tensors:
    g = dL/dh_t * o + dL/dc_t (from outside) + carry      (carry starts at dL/dc_n)
    dy_o = dL/dh_t * c_t * o (1 - o);  dy_z = g f (1 - z^2);  dy_f = g (z - c_{t-1}) m s (1 - s)
    carry = g (1 - f)                  (dL/dc_{t-1} through the recurrence; dL/dh0 at the end)

Work is split like the ForgetMult kernel: tiles of contiguous lanes of one batch element run in
parallel, each walking time sequentially. float32/float64 are used zero-copy; float16/bfloat16
are converted to float32 first and the results cast back.
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import numpy as np
import torch

# Chooses numba's threading layer before any kernel runs; parallel launches hold PARALLEL_LOCK.
from ..numba_setup import PARALLEL_LOCK

try:
    import numba
    from llvmlite import ir as llvm_ir
    from numba import njit, prange
    from numba.core import types as numba_types
    from numba.extending import intrinsic, overload

    HAS_NUMBA = True
    IMPORT_ERROR = ""
except ImportError as error:  # numba is a hard dependency; this guard only makes the failure explicit
    HAS_NUMBA = False
    IMPORT_ERROR = str(error)

__all__ = ["HAS_NUMBA", "IMPORT_ERROR", "forward", "backward"]

# Lanes per tile: multiples of 16 float32 (a 64-byte cache line), so threads never share one.
ALIGN_LANES = 16
MIN_TILE_LANES = 32
MAX_TILE_LANES = 512
# Up to this many lanes x steps a call runs in the calling thread: a parallel launch costs
# tens of microseconds on a 2-core machine.
SERIAL_MAX_ELEMENTS = 1 << 16


def _tile_lanes(batch_size: int, hidden_size: int) -> int:
    """About two tiles per thread, 32-512 lanes each, a multiple of ALIGN_LANES."""
    wanted_per_row = -(-2 * numba.get_num_threads() // max(batch_size, 1))
    tile = -(-hidden_size // wanted_per_row)
    tile = -(-tile // ALIGN_LANES) * ALIGN_LANES
    return max(1, min(max(tile, MIN_TILE_LANES), MAX_TILE_LANES, hidden_size))


if HAS_NUMBA:

    # ``consts`` = [1, zoneout_scale] in the compute dtype: numba types a float literal as
    # float64, which would turn float32 arithmetic into float64.

    @intrinsic
    def _float32_from_bits(typingctx, bits):
        """Reinterpret an int32 as a float32 (an LLVM bitcast, which vectorises)."""
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], llvm_ir.FloatType())
        return numba_types.float32(numba_types.int32), codegen

    def _sigmoid(v):
        """1 / (1 + exp(-v)); float32 uses a vectorisable exp, float64 the exact math.exp."""

    def _tanh(v):
        """tanh(v); float32 through the vectorisable exp, float64 the exact math.tanh."""

    @overload(_sigmoid, inline="always")
    def _sigmoid_overload(v):
        if v == numba_types.float32:
            return lambda v: np.float32(1) / (np.float32(1) + _exp_float32(-v))
        return lambda v: 1.0 / (1.0 + math.exp(-v))

    @overload(_tanh, inline="always")
    def _tanh_overload(v):
        if v == numba_types.float32:
            def impl(v):
                # (1 - e) / (1 + e) with e = exp(-2|v|) <= 1: no overflow; absolute error ~1e-7.
                e = _exp_float32(-(abs(v) + abs(v)))
                t = (np.float32(1) - e) / (np.float32(1) + e)
                return t if v >= np.float32(0) else -t
            return impl
        return lambda v: math.tanh(v)

    @njit(inline="always")
    def _exp_float32(v):
        """exp(v) for float32 in plain arithmetic (Cephes expf: exp(v) = 2^k exp(r), |r| <= ln2/2,
        exp(r) by a degree-7 polynomial; max relative error ~1e-7), so the lane loops vectorise;
        numba's math.exp is a scalar libm call that keeps them scalar (measured 4x slower)."""
        x = min(max(v, np.float32(-87.0)), np.float32(88.0))
        # k = round(x / ln2); int32 truncation is a floor here because the argument is positive.
        k = np.int32(x * np.float32(1.4426950408889634) + np.float32(128.5)) - np.int32(128)
        n = np.float32(k)
        r = x - n * np.float32(0.693359375) - n * np.float32(-2.12194440e-4)  # x - k ln2, in two parts
        p = np.float32(1.9875691500e-4)
        p = p * r + np.float32(1.3981999507e-3)
        p = p * r + np.float32(8.3334519073e-3)
        p = p * r + np.float32(4.1665795894e-2)
        p = p * r + np.float32(1.6666665459e-1)
        p = p * r + np.float32(5.0000001201e-1)
        p = p * (r * r) + r + np.float32(1.0)
        return p * _float32_from_bits((k + np.int32(127)) << np.int32(23))  # times 2^k

    @njit(cache=True)
    def _tile_of(item, tile, hidden_size, lengths):
        tiles_per_row = -(-hidden_size // tile)
        b, lo = item // tiles_per_row, (item % tiles_per_row) * tile
        return b, lo, min(lo + tile, hidden_size), lengths[b]

    # The tile kernels run each step as a few simple loops over the tile's lanes, each writing
    # one small scratch array: numba does not tell LLVM that arrays do not alias, and a loop
    # that stores into several arrays, or stores conditionally, stays scalar (measured 4x
    # slower). The scratch rows are then copied out (a memcpy within L1).

    @njit(cache=True, error_model="numpy", fastmath=True)
    def _forward_tile(y, bias, h0, keep, has_keep, consts, lengths, reverse, output_gate, save, tile, item,
                      h, c, c_n, acts):
        seq_len, _, hidden_size = c.shape
        b, lo, hi, length = _tile_of(item, tile, hidden_size, lengths)
        one, scale = consts[0], consts[1]
        for t in range(length, seq_len):  # padding
            c[t, b, lo:hi] = 0
            if output_gate:
                h[t, b, lo:hi] = 0
            if save:
                for gate in range(acts.shape[2] // hidden_size):
                    acts[t, b, gate * hidden_size + lo:gate * hidden_size + hi] = 0
        lanes = hi - lo
        state = h0[b, lo:hi].copy()
        z, s, f, o, out = (np.empty(lanes, c.dtype), np.empty(lanes, c.dtype), np.empty(lanes, c.dtype),
                           np.empty(lanes, c.dtype), np.empty(lanes, c.dtype))
        bias_z, bias_f = bias[lo:hi], bias[hidden_size + lo:hidden_size + hi]
        bias_o = bias[2 * hidden_size + lo:2 * hidden_size + hi] if output_gate else bias_z
        for step in range(length):
            t = length - 1 - step if reverse else step
            y_z, y_f = y[t, b, lo:hi], y[t, b, hidden_size + lo:hidden_size + hi]
            for j in range(lanes):
                z[j] = _tanh(y_z[j] + bias_z[j])
            for j in range(lanes):
                s[j] = _sigmoid(y_f[j] + bias_f[j])
            for j in range(lanes):
                f[j] = s[j] * scale
            if has_keep:
                keep_row = keep[t, b, lo:hi]
                for j in range(lanes):
                    f[j] *= keep_row[j]
            for j in range(lanes):
                state[j] = f[j] * z[j] + (one - f[j]) * state[j]
            c[t, b, lo:hi] = state
            if save:
                acts[t, b, lo:hi] = z
                acts[t, b, hidden_size + lo:hidden_size + hi] = s
            if output_gate:
                y_o = y[t, b, 2 * hidden_size + lo:2 * hidden_size + hi]
                for j in range(lanes):
                    o[j] = _sigmoid(y_o[j] + bias_o[j])
                for j in range(lanes):
                    out[j] = o[j] * state[j]
                h[t, b, lo:hi] = out
                if save:
                    acts[t, b, 2 * hidden_size + lo:2 * hidden_size + hi] = o
        c_n[b, lo:hi] = state  # the state after the walk (h0 for an empty sequence)

    @njit(cache=True, error_model="numpy", fastmath=True)
    def _backward_tile(grad_h, grad_c, grad_c_n, has_grad, source, from_acts, bias, c, h0, keep, has_keep,
                       consts, lengths, reverse, output_gate, tile, item, grad_y, grad_h0):
        seq_len, _, hidden_size = c.shape
        b, lo, hi, length = _tile_of(item, tile, hidden_size, lengths)
        one, scale = consts[0], consts[1]
        num_gates = grad_y.shape[2] // hidden_size
        for t in range(length, seq_len):  # padding gets no gradient
            for gate in range(num_gates):
                grad_y[t, b, gate * hidden_size + lo:gate * hidden_size + hi] = 0
        lanes = hi - lo
        dtype = grad_h0.dtype
        carry = grad_c_n[b, lo:hi].copy() if has_grad[2] else np.zeros(lanes, dtype)
        z, s, m, o = np.empty(lanes, dtype), np.empty(lanes, dtype), np.empty(lanes, dtype), np.empty(lanes, dtype)
        g, grad = np.empty(lanes, dtype), np.empty(lanes, dtype)
        bias_z, bias_f = bias[lo:hi], bias[hidden_size + lo:hidden_size + hi]
        bias_o = bias[2 * hidden_size + lo:2 * hidden_size + hi] if output_gate else bias_z
        for u in range(length):
            t = u if reverse else length - 1 - u
            first = (t == length - 1) if reverse else (t == 0)  # the forward walk's first step
            prev = h0[b, lo:hi] if first else c[t + 1 if reverse else t - 1, b, lo:hi]
            value = c[t, b, lo:hi]
            src_z, src_f = source[t, b, lo:hi], source[t, b, hidden_size + lo:hidden_size + hi]
            if from_acts:  # the activations saved by the forward
                z[:] = src_z
                s[:] = src_f
            else:  # recomputed from the pre-activations
                for j in range(lanes):
                    z[j] = _tanh(src_z[j] + bias_z[j])
                for j in range(lanes):
                    s[j] = _sigmoid(src_f[j] + bias_f[j])
            m[:] = scale  # the forget gate's multiplier: f = s * m
            if has_keep:
                keep_row = keep[t, b, lo:hi]
                for j in range(lanes):
                    m[j] *= keep_row[j]
            g[:] = carry  # dL/dc_t
            if has_grad[1]:
                grad_c_row = grad_c[t, b, lo:hi]
                for j in range(lanes):
                    g[j] += grad_c_row[j]
            if output_gate:
                src_o = source[t, b, 2 * hidden_size + lo:2 * hidden_size + hi]
                if from_acts:
                    o[:] = src_o
                else:
                    for j in range(lanes):
                        o[j] = _sigmoid(src_o[j] + bias_o[j])
                if has_grad[0]:
                    grad_out = grad_h[t, b, lo:hi]
                    for j in range(lanes):
                        g[j] += grad_out[j] * o[j]
                    for j in range(lanes):
                        grad[j] = grad_out[j] * value[j] * o[j] * (one - o[j])
                else:
                    grad[:] = 0
                grad_y[t, b, 2 * hidden_size + lo:2 * hidden_size + hi] = grad
            for j in range(lanes):
                grad[j] = g[j] * s[j] * m[j] * (one - z[j] * z[j])
            grad_y[t, b, lo:hi] = grad
            for j in range(lanes):
                grad[j] = g[j] * (z[j] - prev[j]) * m[j] * s[j] * (one - s[j])
            grad_y[t, b, hidden_size + lo:hidden_size + hi] = grad
            for j in range(lanes):
                carry[j] = g[j] * (one - s[j] * m[j])
        grad_h0[b, lo:hi] = carry

    @njit(parallel=True, cache=True)
    def _forward_parallel(y, bias, h0, keep, has_keep, consts, lengths, reverse, output_gate, save, tile,
                          h, c, c_n, acts):
        for item in prange(c.shape[1] * -(-c.shape[2] // tile)):
            _forward_tile(y, bias, h0, keep, has_keep, consts, lengths, reverse, output_gate, save, tile, item,
                          h, c, c_n, acts)

    @njit(cache=True)
    def _forward_serial(y, bias, h0, keep, has_keep, consts, lengths, reverse, output_gate, save, tile,
                        h, c, c_n, acts):
        for item in range(c.shape[1] * -(-c.shape[2] // tile)):
            _forward_tile(y, bias, h0, keep, has_keep, consts, lengths, reverse, output_gate, save, tile, item,
                          h, c, c_n, acts)

    @njit(parallel=True, cache=True)
    def _backward_parallel(grad_h, grad_c, grad_c_n, has_grad, source, from_acts, bias, c, h0, keep, has_keep,
                           consts, lengths, reverse, output_gate, tile, grad_y, grad_h0):
        for item in prange(c.shape[1] * -(-c.shape[2] // tile)):
            _backward_tile(grad_h, grad_c, grad_c_n, has_grad, source, from_acts, bias, c, h0, keep, has_keep,
                           consts, lengths, reverse, output_gate, tile, item, grad_y, grad_h0)

    @njit(cache=True)
    def _backward_serial(grad_h, grad_c, grad_c_n, has_grad, source, from_acts, bias, c, h0, keep, has_keep,
                         consts, lengths, reverse, output_gate, tile, grad_y, grad_h0):
        for item in range(c.shape[1] * -(-c.shape[2] // tile)):
            _backward_tile(grad_h, grad_c, grad_c_n, has_grad, source, from_acts, bias, c, h0, keep, has_keep,
                           consts, lengths, reverse, output_gate, tile, item, grad_y, grad_h0)


def _compute(tensor: torch.Tensor, dtype: torch.dtype) -> np.ndarray:
    """A contiguous numpy view (zero-copy when already contiguous in ``dtype``)."""
    return tensor.detach().to(dtype).contiguous().numpy()


def _common(y, keep, bias, lengths, zoneout_scale, hidden_size):
    """(compute dtype, keep array, has_keep, bias array, consts, lengths array, tile, serially?)."""
    seq_len, batch_size, width = y.shape
    dtype = torch.float64 if y.dtype == torch.float64 else torch.float32
    has_keep = keep is not None
    numpy_dtype = np.float64 if dtype == torch.float64 else np.float32
    keep_array = _compute(keep, dtype) if has_keep else np.ones((1, 1, 1), dtype=numpy_dtype)  # unread
    bias_array = _compute(bias, dtype) if bias is not None else np.zeros(width, dtype=numpy_dtype)
    consts = np.array([1.0, zoneout_scale], dtype=numpy_dtype)
    if lengths is None:
        lens = np.full(batch_size, seq_len, dtype=np.int64)
    else:
        lens = lengths.detach().to(torch.int64).contiguous().numpy()
    tile = _tile_lanes(batch_size, hidden_size)
    serial = seq_len * batch_size * hidden_size <= SERIAL_MAX_ELEMENTS or numba.get_num_threads() == 1
    return dtype, keep_array, has_keep, bias_array, consts, lens, tile, serial


def forward(y, h0, keep, bias, lengths, zoneout_scale, output_gate, reverse, save_activations):
    """y ``[T, B, k*H]``, h0 ``[B, H]``, keep None or ``[T, B, H]``, bias None or ``[k*H]``,
    lengths None or ``[B]`` -> ``(h, c, c_n, acts)`` in y's dtype: outputs and states
    ``[T, B, H]`` (``h`` empty without the output gate), the final states ``[B, H]``, and the
    activations ``tanh(Z), sigmoid(F), sigmoid(O)`` ``[T, B, k*H]`` (empty unless saved)."""
    seq_len, batch_size, hidden_size = y.shape[0], y.shape[1], h0.shape[1]
    dtype, keep_array, has_keep, bias_array, consts, lens, tile, serial = _common(
        y, keep, bias, lengths, zoneout_scale, hidden_size)
    c = torch.empty(seq_len, batch_size, hidden_size, dtype=dtype)
    h = torch.empty_like(c) if output_gate else torch.empty(0, 0, 0, dtype=dtype)
    c_n = torch.empty(batch_size, hidden_size, dtype=dtype)
    acts = torch.empty(y.shape, dtype=dtype) if save_activations else torch.empty(0, 0, 0, dtype=dtype)
    if c_n.numel() > 0:
        run = _forward_serial if serial else _forward_parallel
        with nullcontext() if serial else PARALLEL_LOCK:
            run(_compute(y, dtype), bias_array, _compute(h0, dtype), keep_array, has_keep, consts, lens, bool(reverse),
                bool(output_gate), bool(save_activations), tile, h.numpy(), c.numpy(), c_n.numpy(), acts.numpy())
    if not output_gate:
        h = h.reshape(0)
    if not save_activations:
        acts = acts.reshape(0)
    return h.to(y.dtype), c.to(y.dtype), c_n.to(y.dtype), acts.to(y.dtype)


def backward(grad_h, grad_c, grad_c_n, source, from_acts, bias, c, h0, keep, lengths, zoneout_scale, output_gate,
             reverse):
    """Gradients of :func:`forward` -> ``(grad_y [T, B, k*H], grad_h0 [B, H])`` in the input dtypes.

    ``grad_h``, ``grad_c``, ``grad_c_n``: the upstream gradients of h, c, c_n, or None (zero).
    ``source``: the saved activations when ``from_acts``, else the pre-activations y.
    """
    hidden_size = h0.shape[1]
    dtype, keep_array, has_keep, bias_array, consts, lens, tile, serial = _common(
        source, keep, bias, lengths, zoneout_scale, hidden_size)
    grad_y = torch.empty(source.shape, dtype=dtype)
    grad_h0 = torch.empty(h0.shape, dtype=dtype)
    if grad_h0.numel() > 0:
        unread = np.zeros((1, 1, 1), dtype=consts.dtype)
        has_grad = np.array([grad_h is not None and output_gate, grad_c is not None, grad_c_n is not None])
        arrays = [unread if g is None or not flag else _compute(g, dtype)
                  for g, flag in zip((grad_h, grad_c), has_grad[:2])]
        grad_c_n_array = _compute(grad_c_n, dtype) if has_grad[2] else np.zeros((1, 1), dtype=consts.dtype)
        run = _backward_serial if serial else _backward_parallel
        with nullcontext() if serial else PARALLEL_LOCK:
            run(*arrays, grad_c_n_array, has_grad, _compute(source, dtype), bool(from_acts), bias_array,
                _compute(c, dtype), _compute(h0, dtype), keep_array, has_keep, consts, lens, bool(reverse),
                bool(output_gate), tile, grad_y.numpy(), grad_h0.numpy())
    return grad_y.to(source.dtype), grad_h0.to(h0.dtype)
