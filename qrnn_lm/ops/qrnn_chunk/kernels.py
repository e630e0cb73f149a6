"""numba kernels for one time chunk of a QRNN layer on the CPU: recurrence and output gate (forward),
and the gradient of the gate pre-activations (backward).

Shape letters: R = rows of the chunk = steps x B (time-major: row ``t * B + b``), B = batch,
H = hidden lanes, k = 3 gates (Z, F, O) or 2 without the output gate.

The activations arrive computed: ``acts`` ``[R, k*H]`` holds ``sigmoid`` of the pre-activations,
where the Z columns were doubled by the caller, so ``z = tanh(y_z) = 2 * sigmoid(2 y_z) - 1``.
One PyTorch ``sigmoid_`` over the chunk (vectorised, on both cores, while the chunk is still in
cache from the matrix product) is faster than any exponential written here.

Per lane and step, with ``m`` = zoneout scale times the zoneout mask (1 without):
    forward:  f = s_f * m,  c_t = f * z + (1 - f) * c_{t-1},  h_t = s_o * c_t
    backward: g = dL/dc_t = carry + dL/dh_t * s_o (+ dL/dh_t without the output gate)
              dy_o = dL/dh_t * c_t * s_o (1 - s_o)
              dy_z = g * f * (1 - z^2) = g * f * 4 s_z (1 - s_z)   (gradient of the undoubled y_z)
              dy_f = g * (z - c_{t-1}) * m * s_f (1 - s_f)
              carry = g * (1 - f)      (dL/dc_{t-1}; after the last chunk, dL/dh0)
Steps at or past ``lengths[b]`` are padding: output 0, no gradient, state untouched. The loops
run serially in the calling thread: a chunk is small, and a parallel launch would cost more than
it saves while PyTorch's OpenMP threads are still spinning after the matrix product.

Each lane loop stores into one array only: numba does not tell LLVM that arrays do not alias,
and a loop storing into two arrays stays scalar.
"""

from __future__ import annotations

import numpy as np

from ..numba_setup import HAS_NUMBA

__all__ = ["HAS_NUMBA", "forward_chunk", "backward_chunk"]

if HAS_NUMBA:
    from numba import njit

    @njit(cache=True, fastmath=True, error_model="numpy")
    def forward_chunk(acts, keep, has_keep, scale, lengths, t0, batch, reverse, output_gate, state, c_out, h_out):
        """Walk the chunk's steps (last to first when ``reverse``), updating ``state`` ``[B, H]``.

        acts ``[R, k*H]``, keep ``[R, H]`` (read when has_keep), scale float32, lengths ``[B]``
        int64, t0: the global step of the chunk's row 0. Writes c_out ``[R, H]`` and, with the
        output gate, h_out ``[R, H]``.
        """
        hidden = state.shape[1]
        steps = acts.shape[0] // batch
        one, two = np.float32(1), np.float32(2)
        for i in range(steps):
            t = steps - 1 - i if reverse else i
            for b in range(batch):
                r = t * batch + b
                c_row = c_out[r]
                if t0 + t >= lengths[b]:  # padding
                    c_row[:] = 0
                    if output_gate:
                        h_out[r][:] = 0
                    continue
                a, st = acts[r], state[b]
                s_z, s_f = a[:hidden], a[hidden:2 * hidden]
                if has_keep:
                    keep_row = keep[r]
                    for j in range(hidden):
                        f = s_f[j] * scale * keep_row[j]
                        st[j] = f * (two * s_z[j] - one) + (one - f) * st[j]
                else:
                    for j in range(hidden):
                        f = s_f[j] * scale
                        st[j] = f * (two * s_z[j] - one) + (one - f) * st[j]
                c_row[:] = st
                if output_gate:
                    h_row, s_o = h_out[r], a[2 * hidden:]
                    for j in range(hidden):
                        h_row[j] = s_o[j] * st[j]

    @njit(cache=True, fastmath=True, error_model="numpy")
    def backward_chunk(acts, c, c_before, h0, grad_h, keep, has_keep, scale, lengths, t0, batch, reverse,
                       output_gate, carry, grad_y, g, m):
        """Walk the chunk's steps in the reverse of the forward order, updating ``carry`` ``[B, H]``.

        c ``[R, H]``: the chunk's states; c_before ``[B, H]``: the state before the chunk's first
        forward step (the neighbouring chunk's row, or h0); h0 ``[B, H]``; grad_h ``[R, H]``:
        dL/d(output). Writes grad_y ``[R, k*H]``. g, m: scratch ``[H]``.
        """
        hidden = carry.shape[1]
        steps = acts.shape[0] // batch
        one, four = np.float32(1), np.float32(4)
        for i in range(steps):
            t = i if reverse else steps - 1 - i
            for b in range(batch):
                r = t * batch + b
                gy = grad_y[r]
                if t0 + t >= lengths[b]:  # padding gets no gradient
                    gy[:] = 0
                    continue
                # The state before step t in the forward walk.
                if reverse:
                    if t0 + t + 1 >= lengths[b]:
                        prev = h0[b]
                    elif t + 1 < steps:
                        prev = c[r + batch]
                    else:
                        prev = c_before[b]
                else:
                    prev = c[r - batch] if t > 0 else c_before[b]
                a, c_row, cb, gh = acts[r], c[r], carry[b], grad_h[r]
                s_z, s_f, s_o = a[:hidden], a[hidden:2 * hidden], a[2 * hidden:]
                gy_z, gy_f, gy_o = gy[:hidden], gy[hidden:2 * hidden], gy[2 * hidden:]
                if output_gate:
                    for j in range(hidden):
                        g[j] = cb[j] + gh[j] * s_o[j]
                    for j in range(hidden):
                        gy_o[j] = gh[j] * c_row[j] * s_o[j] * (one - s_o[j])
                else:
                    for j in range(hidden):
                        g[j] = cb[j] + gh[j]
                if has_keep:
                    keep_row = keep[r]
                    for j in range(hidden):
                        m[j] = scale * keep_row[j]
                else:
                    m[:] = scale
                for j in range(hidden):
                    gy_z[j] = g[j] * s_f[j] * m[j] * four * s_z[j] * (one - s_z[j])
                for j in range(hidden):
                    gy_f[j] = g[j] * (s_z[j] + s_z[j] - one - prev[j]) * m[j] * s_f[j] * (one - s_f[j])
                for j in range(hidden):
                    cb[j] = g[j] * (one - s_f[j] * m[j])
