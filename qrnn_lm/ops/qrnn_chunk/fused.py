"""The QRNN layer's fused CPU path: matrix product, activations, recurrence and output gate, run
chunk by chunk over time as one autograd node.

Shape letters: T = time steps, B = batch, I = input features, H = hidden size, k = 3 gates
(Z, F, O) or 2 without the output gate, w = window; R = T*B rows ``t * B + b`` (time-major).

Why chunks: on the CPU the layer's matrix products already run at the cores' peak; what the
unfused path adds on top is a dozen elementwise passes over ``[T, B, k*H]`` tensors that no
longer fit in cache, each bound by memory bandwidth (about 30% of a training step at hidden
320). Here the rows are cut into chunks of about :data:`CHUNK_ROWS` rows; for each chunk the
product writes the gate pre-activations, one in-place ``sigmoid_`` turns them into activations
while they are still in cache, and a numba kernel (``kernels.py``) runs the recurrence and
the output gate. The backward walks the chunks in reverse: a kernel writes the chunk's gradient
of the pre-activations into a cache-sized buffer, and the products for the input, weight and bias
gradients consume it at once, so the ``[R, k*H]`` gradient never exists in full. (What it saves,
and the measurements behind the constants below: docs/cpu-thresholds.md.)

``tanh(y) = 2 * sigmoid(2 y) - 1``: the Z columns of each chunk's product are doubled in place, so
one ``sigmoid_`` serves all gates (PyTorch's tanh is several times slower than its sigmoid on CPU).
Saved for the backward: the activations ``[R, k*H]`` and the states ``[R, H]``.

For windows > 1 the window is never built: block s of the weight multiplies the input rows s*B
away (``x_{t-s}``; ``x_{t+s}`` when reverse), which lie in this chunk, in the previous one, or
(s*B rows before row 0) in the inputs kept from the previous call (``prev``). In the backward,
the input gradient of a chunk's rows needs pre-activation gradients of up to (w-1)*B rows of the
chunk processed just before, so two gradient buffers alternate.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from .kernels import backward_chunk, forward_chunk

__all__ = ["fused_layer", "CHUNK_ROWS", "ROWS_PER_WEIGHT_COLUMN"]

# Rows per chunk: the products run at the cores' peak from about 256 rows, and a [1024, 3*320]
# float32 chunk (4 MB) stays in the last-level cache, while each chunk's fixed cost (a dozen calls
# from Python) is spread over more rows.
CHUNK_ROWS = 1024
# Chunks have at least this many rows per column of the weight (window * input features): see
# _chunk_steps (too small chunks lose to the unfused path).
ROWS_PER_WEIGHT_COLUMN = 1


def fused_layer(X, weight, bias, h0, prev, keep, zoneout_scale, window, output_gate, reverse, lengths):
    """``(output [T, B, H], h_n [B, H])`` of one QRNN layer, float32 on the CPU.

    Args:
        X: inputs ``[T, B, I]``. weight ``[k*H, w*I]``, bias ``[k*H]`` or None: the layer's linear.
        h0: ``[B, H]`` or None (zeros). prev: ``[w-1, B, I]`` inputs before ``X`` or None (zeros).
        keep: zoneout mask ``[T, B, H]`` or None; zoneout_scale multiplies the forget gate.
        lengths: ``[B]`` int64 or None; steps at or past ``lengths[b]`` output 0.

    The output is ``h = sigmoid(O) * c`` (``c`` without the output gate); h_n is each sequence's
    state after its last valid step (step 0 when reverse).
    """
    seq_len, batch_size, _ = X.shape
    hidden_size = weight.shape[0] // (3 if output_gate else 2)
    if h0 is None:
        h0 = X.new_zeros(batch_size, hidden_size)
    if lengths is None:
        lengths = torch.full((batch_size,), seq_len, dtype=torch.int64)
    args = (X.contiguous(), weight, bias, h0.contiguous(), prev, keep, float(zoneout_scale), window, output_gate,
            reverse, lengths.to(torch.int64).contiguous())
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in args[:4]):
        return _FusedLayer.apply(*args)
    # Inference: no autograd node, nothing kept.
    out, state, _, _ = _forward(*args, saving=False)
    return out, state


def _chunk_steps(batch_size, window, input_size):
    """Steps per chunk: about ``max(CHUNK_ROWS, window * input_size)`` rows (see
    ROWS_PER_WEIGHT_COLUMN), and at least
    ``window - 1`` steps, so that a row a window block reads is always in the same chunk or its
    neighbour. Each chunk's weight-gradient product reads and writes the whole ``[k*H, w*I]``
    gradient, which costs as much memory traffic as keeping ``w*I`` rows of the pre-activation
    gradient: fewer rows than that per chunk would lose more than the cache saves."""
    rows = max(CHUNK_ROWS, ROWS_PER_WEIGHT_COLUMN * window * input_size)
    return max(rows // batch_size, window - 1, 1)


def _chunk_rows(seq_len, batch_size, window, input_size):
    """Rows of the largest chunk."""
    return min(seq_len, _chunk_steps(batch_size, window, input_size)) * batch_size


def _chunks(seq_len, batch_size, window, input_size, reverse_order):
    """``(t0, steps)`` of each chunk, last chunk first when ``reverse_order``."""
    steps = _chunk_steps(batch_size, window, input_size)
    bounds = [(t0, min(steps, seq_len - t0)) for t0 in range(0, seq_len, steps)]
    return bounds[::-1] if reverse_order else bounds


def _shift(batch_size, shift, reverse):
    """Row offset d of window block ``shift``: block s reads input row ``r - d``."""
    return -shift * batch_size if reverse else shift * batch_size


def _shifted_sources(r0, r1, d, x_rows, prev_rows):
    """Pieces ``(out_lo, out_hi, source)`` of rows [r0, r1): output row r reads source row r - d,
    from ``x_rows`` (rows >= 0) or ``prev_rows`` (rows < 0, the last ones of the previous call)."""
    pieces = []
    lo, hi = max(r0, d), min(r1, x_rows.shape[0] + d)
    if lo < hi:
        pieces.append((lo, hi, x_rows[lo - d:hi - d]))
    if prev_rows is not None:
        lo, hi = r0, min(r1, d)  # rows whose source r - d < 0: prev row prev_len + r - d
        if lo < hi:
            start = prev_rows.shape[0] + lo - d
            pieces.append((lo, hi, prev_rows[start:start + hi - lo]))
    return pieces


def _forward(X, weight, bias, h0, prev, keep, scale, window, output_gate, reverse, lengths, saving):
    """``(out [T, B, H], h_n [B, H], acts [R, k*H], c [R, H])``; with ``saving`` False (no
    backward to come) acts and, with the output gate, c are one reused chunk-sized buffer."""
    seq_len, batch_size, input_size = X.shape
    width = weight.shape[0]
    hidden_size = h0.shape[1]
    rows = seq_len * batch_size
    x_rows = X.view(rows, input_size)
    prev_rows = None if prev is None else prev.reshape(-1, input_size)
    blocks = weight.split(input_size, dim=1)  # w x [k*H, I]
    full_c = saving or not output_gate
    chunk_rows = _chunk_rows(seq_len, batch_size, window, input_size)
    acts = X.new_empty(rows if saving else chunk_rows, width)
    c = X.new_empty(rows if full_c else chunk_rows, hidden_size)
    out = X.new_empty(rows, hidden_size) if output_gate else c
    state = h0.clone()
    keep_rows = None if keep is None else keep.reshape(rows, hidden_size)
    scale32 = np.float32(scale)
    for t0, steps in _chunks(seq_len, batch_size, window, input_size, reverse):
        r0, r1 = t0 * batch_size, (t0 + steps) * batch_size
        y = acts[r0:r1] if saving else acts[:r1 - r0]
        if bias is None:
            torch.mm(x_rows[r0:r1], blocks[0].t(), out=y)
        else:
            torch.addmm(bias, x_rows[r0:r1], blocks[0].t(), out=y)
        for shift in range(1, window):
            d = _shift(batch_size, shift, reverse)
            for lo, hi, source in _shifted_sources(r0, r1, d, x_rows, prev_rows):
                y[lo - r0:hi - r0].addmm_(source, blocks[shift].t())
        # Doubling the Z columns makes sigmoid give the tanh: z = 2 * sigmoid(2 y) - 1. Done on
        # the chunk while it is in cache: doubling the weight's Z rows instead costs a pass over
        # the whole weight per call, which dominates at small T*B.
        y[:, :hidden_size].mul_(2)
        y.sigmoid_()
        c_chunk = c[r0:r1] if full_c else c[:r1 - r0]
        forward_chunk(y.numpy(), _rows_or_dummy(keep_rows, r0, r1), keep_rows is not None, scale32,
                      lengths.numpy(), t0, batch_size, reverse, output_gate, state.numpy(), c_chunk.numpy(),
                      out[r0:r1].numpy())
    return out.view(seq_len, batch_size, hidden_size), state, acts, c


class _FusedLayer(torch.autograd.Function):
    """The fused layer as one autograd node; inputs as :func:`fused_layer` after its defaults."""

    @staticmethod
    def forward(ctx, X, weight, bias, h0, prev, keep, scale, window, output_gate, reverse, lengths):
        out, state, acts, c = _forward(X, weight, bias, h0, prev, keep, scale, window, output_gate, reverse,
                                       lengths, saving=True)
        ctx.save_for_backward(X, weight, prev, keep, lengths, h0, acts, c)
        ctx.scale, ctx.window, ctx.output_gate, ctx.reverse, ctx.has_bias = (
            scale, window, output_gate, reverse, bias is not None)
        return out, state

    @staticmethod
    @once_differentiable  # the backward runs numba kernels: a second derivative raises instead of being wrong
    def backward(ctx, grad_out, grad_state):
        X, weight, prev, keep, lengths, h0, acts, c = ctx.saved_tensors
        seq_len, batch_size, input_size = X.shape
        hidden_size = h0.shape[1]
        rows, width = acts.shape
        window, reverse, output_gate = ctx.window, ctx.reverse, ctx.output_gate
        x_rows = X.view(rows, input_size)
        prev_rows = None if prev is None else prev.reshape(-1, input_size)
        blocks = weight.split(input_size, dim=1)
        need_x, need_weight, need_bias, need_h0 = ctx.needs_input_grad[:4]
        grad_rows = grad_out.contiguous().view(rows, hidden_size)
        keep_rows = None if keep is None else keep.reshape(rows, hidden_size)
        grad_x = X.new_empty(rows, input_size) if need_x else None
        # The weight gradient's blocks are views of the result: no concatenation at the end. Each
        # block's first product overwrites it (beta=0), so it needs no zeroing either.
        grad_weight = weight.new_empty(weight.shape) if need_weight else None
        grad_blocks = grad_weight.split(input_size, dim=1) if need_weight else None
        first_product = [True] * window  # per block: not written yet
        grad_bias = X.new_zeros(width) if need_bias and ctx.has_bias else None
        carry = grad_state.contiguous().clone()  # dL/dc of the last walked state
        chunk_rows = _chunk_rows(seq_len, batch_size, window, input_size)
        buffers = [X.new_empty(chunk_rows, width), X.new_empty(chunk_rows, width)]  # this chunk, the previous one
        scratch_g, scratch_m = np.empty(hidden_size, np.float32), np.empty(hidden_size, np.float32)
        scale32 = np.float32(ctx.scale)
        neighbour = None  # (r0, r1, gradient rows) of the chunk processed just before
        for t0, steps in _chunks(seq_len, batch_size, window, input_size, not reverse):
            r0, r1 = t0 * batch_size, (t0 + steps) * batch_size
            grad_y = buffers[0][:r1 - r0]
            c_before = _state_before(c, h0, r0, r1, batch_size, rows, reverse)
            backward_chunk(acts[r0:r1].numpy(), c[r0:r1].numpy(), c_before.numpy(), h0.numpy(),
                           grad_rows[r0:r1].numpy(), _rows_or_dummy(keep_rows, r0, r1), keep_rows is not None,
                           scale32, lengths.numpy(), t0, batch_size, reverse, output_gate, carry.numpy(),
                           grad_y.numpy(), scratch_g, scratch_m)
            if grad_bias is not None:
                grad_bias += grad_y.sum(0)
            if need_weight:
                for shift in range(window):
                    d = _shift(batch_size, shift, reverse)
                    for lo, hi, source in _shifted_sources(r0, r1, d, x_rows, prev_rows):
                        grad_blocks[shift].addmm_(grad_y[lo - r0:hi - r0].t(), source,
                                                  beta=0 if first_product[shift] else 1)
                        first_product[shift] = False
            if need_x:
                torch.mm(grad_y, blocks[0], out=grad_x[r0:r1])
                # Input row r gets block s's gradient from output row r + d (this chunk or the neighbour).
                for shift in range(1, window):
                    d = _shift(batch_size, shift, reverse)
                    for g0, g1, grad_source in ((r0, r1, grad_y), neighbour or (0, 0, None)):
                        lo, hi = max(r0 + d, g0), min(r1 + d, g1)
                        if lo < hi:
                            grad_x[lo - d:hi - d].addmm_(grad_source[lo - g0:hi - g0], blocks[shift])
            neighbour = (r0, r1, grad_y)
            buffers.reverse()
        if need_weight:
            for block, unwritten in zip(grad_blocks, first_product):
                if unwritten:  # block s read only zeros: T <= s and no inputs kept from a previous call
                    block.zero_()
        grad_x = None if grad_x is None else grad_x.view(seq_len, batch_size, input_size)
        return grad_x, grad_weight, grad_bias, (carry if need_h0 else None), None, None, None, None, None, None, None


def _rows_or_dummy(rows, r0, r1):
    """The rows [r0, r1) as a numpy array, or a 1 x 1 placeholder the kernel does not read."""
    return np.ones((1, 1), np.float32) if rows is None else rows[r0:r1].numpy()


def _state_before(c, h0, r0, r1, batch_size, rows, reverse):
    """``[B, H]``: the state before the chunk's first forward step: the neighbouring chunk's
    edge row, or h0 at the sequence's edge (the kernel also falls back to h0 where a reversed
    sequence starts inside the chunk)."""
    if reverse:
        return c[r1:r1 + batch_size] if r1 < rows else h0
    return c[r0 - batch_size:r0] if r0 > 0 else h0
