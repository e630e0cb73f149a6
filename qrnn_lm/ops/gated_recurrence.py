"""The QRNN's gates and recurrence from the gate pre-activations, on the CPU in one numba pass each
way: for the layer outside its fused float32 path, above all under bfloat16 autocast.

Shape letters: T = time steps, B = batch, H = hidden size, k = 3 gates (Z, F, O) or 2 without the
output gate; time-major ``[T, B, ...]``.

From ``Y [T, B, k*H]`` (the window's linear map) and the linear map's bias ``[k*H]`` (added here, in
float32; its gradient is the sum of ``dL/dY`` over steps and sequences, also formed here), with
``m`` the zoneout scale times the zoneout mask (1 without zoneout), per lane and step:

    forward:  z = tanh(y_z), f = s_f * m with s_f = sigmoid(y_f), c_t = f * z + (1 - f) * c_{t-1},
              h_t = s_o * c_t with s_o = sigmoid(y_o) (h_t = c_t without the output gate)
    backward: g = dL/dc_t = carry + dL/dh_t * s_o (+ dL/dh_t without the output gate)
              dy_o = dL/dh_t * c_t * s_o (1 - s_o),  dy_z = g * f * (1 - z^2)
              dy_f = g * (z - c_{t-1}) * f * (1 - s_f),  carry = g * (1 - f)

Taking the bias here rather than in the linear map's ``addmm`` saves the backward's separate pass
over ``dL/dY`` for the bias gradient (a bf16 column sum over ``[T*B, k*H]``), and the bias and its
gradient stay float32 under autocast.

The torch form of the same (``qrnn_lm.nn.gates``' unfused path: ``tanh``, ``sigmoid``, the mask
product, ForgetMult, the output gate, then each one's backward) makes about a dozen passes over
``[T, B, H]`` tensors, each bound by memory bandwidth. Here the forward reads ``Y`` once and writes
``h``, ``c`` and, when a backward will follow, the activations ``z``, ``s_f``, ``s_o`` (what the
torch form keeps too); the backward reads those, ``c`` and ``dL/dh`` once and writes ``dL/dY``.
The exponential is :func:`qrnn_lm.ops.numba_math.exp`, which vectorises. The arithmetic is
float32 whatever the tensors' dtype, the state carried in float32 from step to step; bfloat16
tensors are read and written as their bit patterns (:mod:`qrnn_lm.ops.numba_bfloat16`), each
value rounded once. The batch's sequences run in parallel.

Not taken (see :func:`supports`): variable lengths, other dtypes, other devices, tracing.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from .numba_setup import HAS_NUMBA, parallel_launch

__all__ = ["supports", "gated_recurrence"]

# Below this many pre-activations the sequences run in the calling thread (a parallel launch costs
# 2 us under numba's OpenMP layer, 75-130 us under workqueue: see numba_setup.py).
PARALLEL_MIN_ELEMENTS = 1 << 16

if HAS_NUMBA:
    from numba import njit, prange

    from .numba_bfloat16 import kernel_array, load, store
    from .numba_math import exp

    @njit(cache=True, inline="always", error_model="numpy")
    def _sigmoid(x):
        return np.float32(1) / (np.float32(1) + exp(-x))

    # error_model="numpy": a division by zero gives inf instead of raising; with numba's default
    # error model the zero-division check on the sigmoid's division keeps the loops scalar. Each
    # lane loop stores into one array: numba does not tell LLVM that arrays do not alias, and a
    # loop storing into two stays scalar.
    @njit(cache=True, error_model="numpy")
    def _forward_sequence(b, y, bias, keep, has_keep, scale, h0, reverse, output_gate, saving, c, h, acts, scratch):
        """Sequence ``b`` of the arrays of :func:`_forward`; ``scratch``: float32 ``[4, H]``."""
        steps, hidden = c.shape[0], c.shape[2]
        state, z, sigmoid_f, s_o = scratch[0], scratch[1], scratch[2], scratch[3]
        one, two = np.float32(1), np.float32(2)
        state[:] = h0[b]
        b_z, b_f, b_o = bias[:hidden], bias[hidden:2 * hidden], bias[2 * hidden:]
        for i in range(steps):
            t = steps - 1 - i if reverse else i
            y_row, c_row = y[t, b], c[t, b]
            y_z, y_f, y_o = y_row[:hidden], y_row[hidden:2 * hidden], y_row[2 * hidden:]
            for j in range(hidden):
                z[j] = two * _sigmoid(two * (load(y_z, j) + b_z[j])) - one  # tanh
            for j in range(hidden):
                sigmoid_f[j] = _sigmoid(load(y_f, j) + b_f[j])
            if has_keep:
                keep_row = keep[t, b]
                for j in range(hidden):
                    f = sigmoid_f[j] * scale * keep_row[j]
                    state[j] = f * z[j] + (one - f) * state[j]
            else:
                for j in range(hidden):
                    f = sigmoid_f[j] * scale
                    state[j] = f * z[j] + (one - f) * state[j]
            for j in range(hidden):
                store(c_row, j, state[j])
            if output_gate:
                h_row = h[t, b]
                for j in range(hidden):
                    s_o[j] = _sigmoid(load(y_o, j) + b_o[j])
                for j in range(hidden):
                    store(h_row, j, s_o[j] * state[j])
            if saving:
                a_row = acts[t, b]
                a_z, a_f, a_o = a_row[:hidden], a_row[hidden:2 * hidden], a_row[2 * hidden:]
                for j in range(hidden):
                    store(a_z, j, z[j])
                for j in range(hidden):
                    store(a_f, j, sigmoid_f[j])
                if output_gate:
                    for j in range(hidden):
                        store(a_o, j, s_o[j])

    @njit(cache=True, error_model="numpy")
    def _forward(y, bias, keep, has_keep, scale, h0, reverse, output_gate, saving, c, h, acts):
        """All sequences, in the calling thread. ``y [T, B, k*H]``, ``bias [k*H]`` float32 (zeros
        for none), ``keep [T, B, H]`` (read when has_keep), ``h0 [B, H]`` float32. Writes
        ``c [T, B, H]``, with the output gate ``h [T, B, H]``, and when ``saving``
        ``acts [T, B, k*H]``: tanh(y_z), sigmoid(y_f) (before the mask), sigmoid(y_o), with y the
        pre-activations plus the bias."""
        scratch = np.empty((4, c.shape[2]), dtype=np.float32)
        for b in range(y.shape[1]):
            _forward_sequence(b, y, bias, keep, has_keep, scale, h0, reverse, output_gate, saving, c, h, acts,
                              scratch)

    @njit(cache=True, parallel=True, error_model="numpy")
    def _forward_parallel(y, bias, keep, has_keep, scale, h0, reverse, output_gate, saving, c, h, acts):
        """:func:`_forward` with the sequences in parallel."""
        for b in prange(y.shape[1]):
            scratch = np.empty((4, c.shape[2]), dtype=np.float32)
            _forward_sequence(b, y, bias, keep, has_keep, scale, h0, reverse, output_gate, saving, c, h, acts,
                              scratch)

    @njit(cache=True, inline="always")
    def _store_gradient(d, grad_y_row, has_bias, grad_bias_row):
        """``grad_y_row = d`` rounded to its dtype; with a bias also ``grad_bias_row += d`` (float32).
        Two loops: a loop storing into two arrays stays scalar (see above)."""
        for j in range(d.shape[0]):
            store(grad_y_row, j, d[j])
        if has_bias:
            for j in range(d.shape[0]):
                grad_bias_row[j] += d[j]

    @njit(cache=True, error_model="numpy")
    def _backward_sequence(b, acts, c, h0, grad_h, keep, has_keep, scale, reverse, output_gate, carry, grad_y,
                           has_bias, grad_bias, scratch):
        """Sequence ``b`` of the arrays of :func:`_backward`, walked in the reverse of the forward
        order; ``scratch``: float32 ``[6, H]``."""
        steps, hidden = c.shape[0], c.shape[2]
        carry, grad_bias = carry[b], grad_bias[b]
        gb_z, gb_f, gb_o = grad_bias[:hidden], grad_bias[hidden:2 * hidden], grad_bias[2 * hidden:]
        z, sigmoid_f, f, g, previous = scratch[0], scratch[1], scratch[2], scratch[3], scratch[4]
        d = scratch[5]  # one gate's dL/dy row in float32, before its rounding
        one = np.float32(1)
        for i in range(steps):
            t = i if reverse else steps - 1 - i
            a_row, c_row, gh, gy = acts[t, b], c[t, b], grad_h[t, b], grad_y[t, b]
            a_z, a_f, a_o = a_row[:hidden], a_row[hidden:2 * hidden], a_row[2 * hidden:]
            gy_z, gy_f, gy_o = gy[:hidden], gy[hidden:2 * hidden], gy[2 * hidden:]
            # The state before step t in the forward walk.
            if (t == steps - 1) if reverse else (t == 0):
                previous[:] = h0[b]
            else:
                before = c[t + 1, b] if reverse else c[t - 1, b]
                for j in range(hidden):
                    previous[j] = load(before, j)
            for j in range(hidden):
                z[j] = load(a_z, j)
            for j in range(hidden):
                sigmoid_f[j] = load(a_f, j)
            if has_keep:
                keep_row = keep[t, b]
                for j in range(hidden):
                    f[j] = sigmoid_f[j] * scale * keep_row[j]
            else:
                for j in range(hidden):
                    f[j] = sigmoid_f[j] * scale
            if output_gate:
                for j in range(hidden):
                    g[j] = carry[j] + load(gh, j) * load(a_o, j)
                for j in range(hidden):
                    s_o = load(a_o, j)
                    d[j] = load(gh, j) * load(c_row, j) * s_o * (one - s_o)
                _store_gradient(d, gy_o, has_bias, gb_o)
            else:
                for j in range(hidden):
                    g[j] = carry[j] + load(gh, j)
            for j in range(hidden):
                d[j] = g[j] * f[j] * (one - z[j] * z[j])
            _store_gradient(d, gy_z, has_bias, gb_z)
            # f = s_f * m, so m s_f (1 - s_f) = f (1 - s_f).
            for j in range(hidden):
                d[j] = g[j] * (z[j] - previous[j]) * f[j] * (one - sigmoid_f[j])
            _store_gradient(d, gy_f, has_bias, gb_f)
            for j in range(hidden):
                carry[j] = g[j] * (one - f[j])

    @njit(cache=True, error_model="numpy")
    def _backward(acts, c, h0, grad_h, keep, has_keep, scale, reverse, output_gate, carry, grad_y, has_bias,
                  grad_bias):
        """All sequences, in the calling thread. ``acts [T, B, k*H]`` as :func:`_forward` saved
        them, ``c``/``grad_h [T, B, H]``, ``h0 [B, H]`` float32, ``keep [T, B, H]``, ``carry [B, H]``
        float32 (in: dL/dh_n, out: dL/dh0); writes ``grad_y [T, B, k*H]`` and, when has_bias, adds
        each sequence's ``dL/dy`` summed over its steps to its row of ``grad_bias [B, k*H]``
        float32."""
        scratch = np.empty((6, c.shape[2]), dtype=np.float32)
        for b in range(acts.shape[1]):
            _backward_sequence(b, acts, c, h0, grad_h, keep, has_keep, scale, reverse, output_gate, carry, grad_y,
                               has_bias, grad_bias, scratch)

    @njit(cache=True, parallel=True, error_model="numpy")
    def _backward_parallel(acts, c, h0, grad_h, keep, has_keep, scale, reverse, output_gate, carry, grad_y,
                           has_bias, grad_bias):
        """:func:`_backward` with the sequences in parallel."""
        for b in prange(acts.shape[1]):
            scratch = np.empty((6, c.shape[2]), dtype=np.float32)
            _backward_sequence(b, acts, c, h0, grad_h, keep, has_keep, scale, reverse, output_gate, carry, grad_y,
                               has_bias, grad_bias, scratch)


def supports(Y: torch.Tensor, lengths) -> bool:
    """Whether :func:`gated_recurrence` takes ``Y``: numba present, CPU, float32 or bfloat16, not
    empty, no variable lengths, not being traced (``torch.compile``/export or ``torch.jit``: the
    numba calls are opaque to them)."""
    return takes(Y.device, Y.dtype, Y.numel(), lengths)


def takes(device: torch.device, dtype: torch.dtype, numel: int, lengths) -> bool:
    """:func:`supports` for pre-activations not made yet: on ``device``, of ``dtype``, ``numel``
    elements."""
    return (HAS_NUMBA and device.type == "cpu" and dtype in (torch.float32, torch.bfloat16)
            and numel > 0 and lengths is None and not torch.compiler.is_compiling()
            and not torch.jit.is_tracing() and not torch.jit.is_scripting())


def gated_recurrence(Y: torch.Tensor, h0: torch.Tensor | None, keep: torch.Tensor | None, scale: float,
                     output_gate: bool, reverse: bool, bias: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(H [T, B, H], h_n [B, H])`` in ``Y``'s dtype: the QRNN's output and its state after the
    walk's last step (step 0 when ``reverse``).

    Args:
        Y: ``[T, B, k*H]`` gate pre-activations (Z, F, O blocks); see :func:`supports`.
        h0: ``[B, H]`` initial state, or None (zeros).
        keep: zoneout mask ``[T, B, H]`` (0/1) or None; ``scale`` multiplies the forget gate.
        output_gate: whether Y has the O block (``H = sigmoid(O) * C``; else ``H`` is ``C``).
        reverse: walk the steps from last to first.
        bias: ``[k*H]`` (any float dtype, used in float32) added to ``Y``, or None; its gradient
            comes in its dtype.
    """
    steps, batch_size, width = Y.shape
    hidden_size = width // (3 if output_gate else 2)
    if bias is not None and bias.shape != (width,):
        raise ValueError(f"bias must have shape [{width}], got {tuple(bias.shape)}")
    if h0 is None:
        h0 = Y.new_zeros(batch_size, hidden_size)
    return _GatedRecurrence.apply(Y, h0, keep, float(scale), output_gate, reverse, bias)


class _GatedRecurrence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, Y, h0, keep, scale, output_gate, reverse, bias):
        Y = Y.contiguous()
        h0_32 = h0.float().contiguous()
        bias_32 = Y.new_zeros(Y.shape[2], dtype=torch.float32) if bias is None else bias.float().contiguous()
        steps, batch_size, _ = Y.shape
        hidden_size = h0.shape[1]
        saving = any(ctx.needs_input_grad)  # (forward runs with grad mode off)
        C = torch.empty((steps, batch_size, hidden_size), dtype=Y.dtype)
        H = torch.empty((steps, batch_size, hidden_size), dtype=Y.dtype) if output_gate else C
        acts = torch.empty_like(Y) if saving else Y  # (not written unless saving)
        with _launch(Y) as (_forward_kernel, _):
            _forward_kernel(kernel_array(Y), bias_32.numpy(), _keep_array(keep), keep is not None, np.float32(scale),
                            h0_32.numpy(), reverse, output_gate, saving, kernel_array(C), kernel_array(H),
                            kernel_array(acts))
        if saving:
            ctx.save_for_backward(acts, C, h0_32, keep)
        ctx.scale, ctx.output_gate, ctx.reverse, ctx.h0_dtype = scale, output_gate, reverse, h0.dtype
        ctx.bias_dtype = None if bias is None else bias.dtype
        h_n = C[0 if reverse else -1].clone()  # [B, H]
        return H, h_n

    @staticmethod
    @once_differentiable  # the backward runs numba kernels: a second derivative raises instead of being wrong
    def backward(ctx, grad_H, grad_h_n):
        acts, C, h0_32, keep = ctx.saved_tensors
        # dL/dc of the walk's last state: where the walk back starts.
        carry = torch.zeros_like(h0_32) if grad_h_n is None else grad_h_n.float().contiguous().clone()
        grad_H = torch.zeros_like(C) if grad_H is None else grad_H.to(C.dtype).contiguous()
        grad_Y = torch.empty_like(acts)
        has_bias = ctx.bias_dtype is not None and ctx.needs_input_grad[6]
        # A row per sequence (each written by one thread), summed after the walk.
        grad_bias = torch.zeros((acts.shape[1] if has_bias else 1, acts.shape[2]), dtype=torch.float32)
        with _launch(acts) as (_, _backward_kernel):
            _backward_kernel(kernel_array(acts), kernel_array(C), h0_32.numpy(), kernel_array(grad_H),
                             _keep_array(keep), keep is not None, np.float32(ctx.scale), ctx.reverse, ctx.output_gate,
                             carry.numpy(), kernel_array(grad_Y), has_bias, grad_bias.numpy())
        grad_bias = grad_bias.sum(0).to(ctx.bias_dtype) if has_bias else None
        return grad_Y, carry.to(ctx.h0_dtype), None, None, None, None, grad_bias


@contextlib.contextmanager
def _launch(Y: torch.Tensor):
    """``(forward kernel, backward kernel)``: the parallel ones, under the launch lock, for large
    inputs where a parallel launch is safe (not in a forked child); else the serial ones."""
    with parallel_launch(Y.numel(), PARALLEL_MIN_ELEMENTS) as parallel:
        yield (_forward_parallel, _backward_parallel) if parallel else (_forward, _backward)


def _keep_array(keep: torch.Tensor | None) -> np.ndarray:
    """The zoneout mask as float32 ``[T, B, H]``, or a placeholder the kernels do not read."""
    return np.ones((1, 1, 1), np.float32) if keep is None else keep.float().contiguous().numpy()
