"""The QRNN's gates and recurrence from the gate pre-activations, on the CPU in one numba pass each
way: for the layer outside its fused float32 path, above all under bfloat16 autocast.

Shape letters: T = time steps, B = batch, H = hidden size, k = 3 gates (Z, F, O) or 2 without the
output gate; time-major ``[T, B, ...]``.

From ``Y [T, B, k*H]`` (the window's linear map, bias included), with ``m`` the zoneout scale times
the zoneout mask (1 without zoneout), per lane and step:

    forward:  z = tanh(y_z), f = s_f * m with s_f = sigmoid(y_f), c_t = f * z + (1 - f) * c_{t-1},
              h_t = s_o * c_t with s_o = sigmoid(y_o) (h_t = c_t without the output gate)
    backward: g = dL/dc_t = carry + dL/dh_t * s_o (+ dL/dh_t without the output gate)
              dy_o = dL/dh_t * c_t * s_o (1 - s_o),  dy_z = g * f * (1 - z^2)
              dy_f = g * (z - c_{t-1}) * f * (1 - s_f),  carry = g * (1 - f)

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
    def _forward_sequence(b, y, keep, has_keep, scale, h0, reverse, output_gate, saving, c, h, acts, scratch):
        """Sequence ``b`` of the arrays of :func:`_forward`; ``scratch``: float32 ``[4, H]``."""
        steps, hidden = c.shape[0], c.shape[2]
        state, z, sigmoid_f, s_o = scratch[0], scratch[1], scratch[2], scratch[3]
        one, two = np.float32(1), np.float32(2)
        state[:] = h0[b]
        for i in range(steps):
            t = steps - 1 - i if reverse else i
            y_row, c_row = y[t, b], c[t, b]
            y_z, y_f, y_o = y_row[:hidden], y_row[hidden:2 * hidden], y_row[2 * hidden:]
            for j in range(hidden):
                z[j] = two * _sigmoid(two * load(y_z, j)) - one  # tanh
            for j in range(hidden):
                sigmoid_f[j] = _sigmoid(load(y_f, j))
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
                    s_o[j] = _sigmoid(load(y_o, j))
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
    def _forward(y, keep, has_keep, scale, h0, reverse, output_gate, saving, c, h, acts):
        """All sequences, in the calling thread. ``y [T, B, k*H]``, ``keep [T, B, H]`` (read when
        has_keep), ``h0 [B, H]`` float32. Writes ``c [T, B, H]``, with the output gate
        ``h [T, B, H]``, and when ``saving`` ``acts [T, B, k*H]``: tanh(y_z), sigmoid(y_f) (before
        the mask), sigmoid(y_o)."""
        scratch = np.empty((4, c.shape[2]), dtype=np.float32)
        for b in range(y.shape[1]):
            _forward_sequence(b, y, keep, has_keep, scale, h0, reverse, output_gate, saving, c, h, acts, scratch)

    @njit(cache=True, parallel=True, error_model="numpy")
    def _forward_parallel(y, keep, has_keep, scale, h0, reverse, output_gate, saving, c, h, acts):
        """:func:`_forward` with the sequences in parallel."""
        for b in prange(y.shape[1]):
            scratch = np.empty((4, c.shape[2]), dtype=np.float32)
            _forward_sequence(b, y, keep, has_keep, scale, h0, reverse, output_gate, saving, c, h, acts, scratch)

    @njit(cache=True, error_model="numpy")
    def _backward_sequence(b, acts, c, h0, grad_h, keep, has_keep, scale, reverse, output_gate, carry, grad_y,
                           scratch):
        """Sequence ``b`` of the arrays of :func:`_backward`, walked in the reverse of the forward
        order; ``scratch``: float32 ``[5, H]``."""
        steps, hidden = c.shape[0], c.shape[2]
        carry = carry[b]
        z, sigmoid_f, f, g, previous = scratch[0], scratch[1], scratch[2], scratch[3], scratch[4]
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
                    store(gy_o, j, load(gh, j) * load(c_row, j) * s_o * (one - s_o))
            else:
                for j in range(hidden):
                    g[j] = carry[j] + load(gh, j)
            for j in range(hidden):
                store(gy_z, j, g[j] * f[j] * (one - z[j] * z[j]))
            # f = s_f * m, so m s_f (1 - s_f) = f (1 - s_f).
            for j in range(hidden):
                store(gy_f, j, g[j] * (z[j] - previous[j]) * f[j] * (one - sigmoid_f[j]))
            for j in range(hidden):
                carry[j] = g[j] * (one - f[j])

    @njit(cache=True, error_model="numpy")
    def _backward(acts, c, h0, grad_h, keep, has_keep, scale, reverse, output_gate, carry, grad_y):
        """All sequences, in the calling thread. ``acts [T, B, k*H]`` as :func:`_forward` saved
        them, ``c``/``grad_h [T, B, H]``, ``h0 [B, H]`` float32, ``keep [T, B, H]``, ``carry [B, H]``
        float32 (in: dL/dh_n, out: dL/dh0); writes ``grad_y [T, B, k*H]``."""
        scratch = np.empty((5, c.shape[2]), dtype=np.float32)
        for b in range(acts.shape[1]):
            _backward_sequence(b, acts, c, h0, grad_h, keep, has_keep, scale, reverse, output_gate, carry, grad_y,
                               scratch)

    @njit(cache=True, parallel=True, error_model="numpy")
    def _backward_parallel(acts, c, h0, grad_h, keep, has_keep, scale, reverse, output_gate, carry, grad_y):
        """:func:`_backward` with the sequences in parallel."""
        for b in prange(acts.shape[1]):
            scratch = np.empty((5, c.shape[2]), dtype=np.float32)
            _backward_sequence(b, acts, c, h0, grad_h, keep, has_keep, scale, reverse, output_gate, carry, grad_y,
                               scratch)


def supports(Y: torch.Tensor, lengths) -> bool:
    """Whether :func:`gated_recurrence` takes ``Y``: numba present, CPU, float32 or bfloat16, not
    empty, no variable lengths, not being traced (``torch.compile``/export or ``torch.jit``: the
    numba calls are opaque to them)."""
    return (HAS_NUMBA and Y.device.type == "cpu" and Y.dtype in (torch.float32, torch.bfloat16)
            and Y.numel() > 0 and lengths is None and not torch.compiler.is_compiling()
            and not torch.jit.is_tracing() and not torch.jit.is_scripting())


def gated_recurrence(Y: torch.Tensor, h0: torch.Tensor | None, keep: torch.Tensor | None, scale: float,
                     output_gate: bool, reverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(H [T, B, H], h_n [B, H])`` in ``Y``'s dtype: the QRNN's output and its state after the
    walk's last step (step 0 when ``reverse``).

    Args:
        Y: ``[T, B, k*H]`` gate pre-activations (Z, F, O blocks; bias included); see :func:`supports`.
        h0: ``[B, H]`` initial state, or None (zeros).
        keep: zoneout mask ``[T, B, H]`` (0/1) or None; ``scale`` multiplies the forget gate.
        output_gate: whether Y has the O block (``H = sigmoid(O) * C``; else ``H`` is ``C``).
        reverse: walk the steps from last to first.
    """
    steps, batch_size, width = Y.shape
    hidden_size = width // (3 if output_gate else 2)
    if h0 is None:
        h0 = Y.new_zeros(batch_size, hidden_size)
    return _GatedRecurrence.apply(Y, h0, keep, float(scale), output_gate, reverse)


class _GatedRecurrence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, Y, h0, keep, scale, output_gate, reverse):
        Y = Y.contiguous()
        h0_32 = h0.float().contiguous()
        steps, batch_size, _ = Y.shape
        hidden_size = h0.shape[1]
        saving = any(ctx.needs_input_grad[:2])  # (forward runs with grad mode off)
        C = torch.empty((steps, batch_size, hidden_size), dtype=Y.dtype)
        H = torch.empty((steps, batch_size, hidden_size), dtype=Y.dtype) if output_gate else C
        acts = torch.empty_like(Y) if saving else Y  # (not written unless saving)
        with _launch(Y) as (_forward_kernel, _):
            _forward_kernel(kernel_array(Y), _keep_array(keep), keep is not None, np.float32(scale), h0_32.numpy(),
                            reverse, output_gate, saving, kernel_array(C), kernel_array(H), kernel_array(acts))
        if saving:
            ctx.save_for_backward(acts, C, h0_32, keep)
        ctx.scale, ctx.output_gate, ctx.reverse, ctx.h0_dtype = scale, output_gate, reverse, h0.dtype
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
        with _launch(acts) as (_, _backward_kernel):
            _backward_kernel(kernel_array(acts), kernel_array(C), h0_32.numpy(), kernel_array(grad_H),
                             _keep_array(keep), keep is not None, np.float32(ctx.scale), ctx.reverse, ctx.output_gate,
                             carry.numpy(), kernel_array(grad_Y))
        return grad_Y, carry.to(ctx.h0_dtype), None, None, None, None


@contextlib.contextmanager
def _launch(Y: torch.Tensor):
    """``(forward kernel, backward kernel)``: the parallel ones, under the launch lock, for large
    inputs where a parallel launch is safe (not in a forked child); else the serial ones."""
    with parallel_launch(Y.numel(), PARALLEL_MIN_ELEMENTS) as parallel:
        yield (_forward_parallel, _backward_parallel) if parallel else (_forward, _backward)


def _keep_array(keep: torch.Tensor | None) -> np.ndarray:
    """The zoneout mask as float32 ``[T, B, H]``, or a placeholder the kernels do not read."""
    return np.ones((1, 1, 1), np.float32) if keep is None else keep.float().contiguous().numpy()
