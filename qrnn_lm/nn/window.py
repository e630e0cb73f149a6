"""The QRNN layer's linear map over its convolution window, without building the window.

Shape letters: T = time steps, B = batch, I = input features, H = hidden size; time-major rows.

``Y[t] = bias + W_0 x_t + W_1 x_{t-1} + ... + W_{k-1} x_{t-k+1}`` (``x_{t+s}`` when reverse), where
``W_s`` is the s-th input-sized column block of the one ``linear.weight`` of the original
pytorch-qrnn layout, which applies it to the concatenation ``[x_t, x_{t-1}, ...]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as nnf

__all__ = ["project", "window_inputs", "check_projection"]


def project(X, prev, weight, bias, window, reverse):
    """The gate pre-activations ``Y = linear([x_t, x_{t-1}, ...])``, ``[T, B, k*H]``.

    Args:
        X: inputs ``[T, B, I]``.
        prev: None or the inputs kept from the previous call ``[window - 1, B, I]`` (they stand
            for the steps before ``X``; missing ones are zeros).
        weight, bias: the layer's ``linear`` parameters ``[k*H, window*I]`` and ``[k*H]`` (or None).
        window: the convolution width.
        reverse: the window looks at later inputs ``x_{t+1}, ...``.

    For ``window > 1`` the ``[T, B, window*I]`` concatenation is never built: see
    :class:`_ShiftedLinear`. Same sums as the original's Linear, on the same parameters.
    """
    if window == 1:
        return nnf.linear(X, weight, bias)
    if torch.compiler.is_exporting():
        # The shifted products' row ranges depend on T; an exported program takes any T, so it
        # gets the concatenated window (one product, same sums) instead.
        return nnf.linear(window_inputs(X, prev, window, reverse), weight, bias)
    device_type = X.device.type
    if torch.is_autocast_enabled(device_type):
        # Autocast does not cast the inputs of an autograd.Function: cast as it would for a
        # Linear, so every product inside runs in one dtype.
        dtype = torch.get_autocast_dtype(device_type)
        X, weight = X.to(dtype), weight.to(dtype)
        bias = None if bias is None else bias.to(dtype)
        prev = None if prev is None else prev.to(dtype)
    seq_len, batch_size, input_size = X.shape
    x_rows = X.reshape(seq_len * batch_size, input_size)  # a view when X is time-major contiguous
    prev_rows = None if prev is None else prev.reshape(-1, input_size)  # [(window-1)*B, I]
    Y = _ShiftedLinear.apply(x_rows, weight, bias, prev_rows, batch_size, reverse)
    return Y.view(seq_len, batch_size, -1)


class _ShiftedLinear(torch.autograd.Function):
    """``Y[t] = bias + sum_s W_s x_{t-s}`` (``x_{t+s}`` when reverse) as one autograd node.

    In time-major rows (``X.view(T*B, I)``) a shift by s steps is a shift by ``s*B`` rows, so every
    block product is one matrix product on contiguous row ranges, accumulated in place. Compared
    with a Linear over the concatenated window it saves building (and keeping for backward) a
    ``[T*B, window*I]`` copy; the backward pass accumulates the matching products the same way.
    Measured about as fast as the concatenation on CPU forward+backward, usually a few percent faster.
    """

    @staticmethod
    def forward(ctx, x_rows, weight, bias, prev_rows, batch_size, reverse):
        blocks = weight.split(x_rows.shape[1], dim=1)  # window x [out, I], views
        Y = x_rows @ blocks[0].t() if bias is None else torch.addmm(bias, x_rows, blocks[0].t())
        sources = {"x": x_rows, "prev": prev_rows}
        for shift, out, source, rows in _shift_terms(x_rows, prev_rows, batch_size, len(blocks), reverse):
            Y[out].addmm_(sources[source][rows], blocks[shift].t())
        ctx.save_for_backward(x_rows, weight, prev_rows)
        ctx.batch_size, ctx.reverse, ctx.has_bias = batch_size, reverse, bias is not None
        return Y

    @staticmethod
    def backward(ctx, grad_Y):
        x_rows, weight, prev_rows = ctx.saved_tensors
        blocks = weight.split(x_rows.shape[1], dim=1)
        sources = {"x": x_rows, "prev": prev_rows}
        need_x, need_weight, need_bias = ctx.needs_input_grad[:3]
        grad_x = grad_Y @ blocks[0] if need_x else None  # [T*B, I]
        grad_blocks = [grad_Y.t() @ x_rows if need_weight else None] + [None] * (len(blocks) - 1)
        for shift, out, source, rows in _shift_terms(x_rows, prev_rows, ctx.batch_size, len(blocks), ctx.reverse):
            if need_x and source == "x":
                grad_x[rows].addmm_(grad_Y[out], blocks[shift])
            if need_weight:
                term = grad_Y[out].t() @ sources[source][rows]  # [out, I]
                grad_blocks[shift] = term if grad_blocks[shift] is None else grad_blocks[shift].add_(term)
        grad_weight = None
        if need_weight:
            # A block with no term (a chunk shorter than its shift, nothing kept) gets zeros.
            grad_weight = torch.cat([torch.zeros_like(blocks[0]) if g is None else g for g in grad_blocks], dim=1)
        grad_bias = grad_Y.sum(0) if need_bias and ctx.has_bias else None
        return grad_x, grad_weight, grad_bias, None, None, None


def _shift_terms(x_rows, prev_rows, batch_size, window, reverse):
    """Yield ``(shift, output rows, "x" or "prev", source rows)`` for every block product but block 0."""
    seq_len = x_rows.shape[0] // batch_size
    for shift in range(1, window):
        rows = max(seq_len - shift, 0) * batch_size  # output rows whose shifted input is inside X
        offset = shift * batch_size
        if rows and reverse:
            yield shift, slice(0, rows), "x", slice(offset, offset + rows)
        elif rows:
            yield shift, slice(offset, offset + rows), "x", slice(0, rows)
        if prev_rows is not None:
            # The first steps' earlier inputs were kept from the previous call: prev[window-1-shift+t].
            steps = min(shift, seq_len) * batch_size
            start = (window - 1 - shift) * batch_size
            yield shift, slice(0, steps), "prev", slice(start, start + steps)


def window_inputs(X, prev, window, reverse):
    """The concatenated window ``[x_t, x_{t-1}, ..., x_{t-window+1}]`` ``[T, B, window*I]``, as the
    original layer builds it for ``self.linear(source)`` (``x_{t+1}, ...`` when reverse).

    Only for a ``linear`` that is not a plain ``nn.Linear`` (e.g. a weight-drop wrapper): the
    module is called on this tensor. ``prev``: None (zeros) or ``[window - 1, B, I]``, the inputs
    before ``X`` (forward layers only).
    """
    if window == 1:
        return X
    seq_len = X.shape[0]
    pad = X.new_zeros(window - 1, X.shape[1], X.shape[2]) if prev is None else prev.to(X.dtype)
    if reverse:
        history = torch.cat([X, pad])  # [T + w - 1, B, I]; x_{t+s} is history[t + s]
        shifted = [history[shift:shift + seq_len] for shift in range(window)]
    else:
        history = torch.cat([pad, X])  # x_{t-s} is history[w - 1 + t - s]
        shifted = [history[window - 1 - shift:window - 1 - shift + seq_len] for shift in range(window)]
    return torch.cat(shifted, dim=2)  # [T, B, window*I], block s holds x_{t-s} (x_{t+s})


def check_projection(Y, X, window, out_features):
    """A custom ``linear`` must map ``X``'s window ``[T, B, window * I]`` to ``[T, B, out_features]``."""
    expected = (X.shape[0], X.shape[1], out_features)
    if not isinstance(Y, torch.Tensor) or tuple(Y.shape) != expected:
        shape = tuple(Y.shape) if isinstance(Y, torch.Tensor) else type(Y).__name__
        raise ValueError(f"QRNNLayer: linear must map [T, B, window * input_size = {window * X.shape[2]}] "
                         f"to {expected}, got {shape}")
