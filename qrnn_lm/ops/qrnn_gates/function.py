"""The fused QRNN gates as registered PyTorch operators, with autograd.

Shapes: T = time steps, B = batch, H = hidden lanes; ``y`` is ``[T, B, k*H]``.

- ``qrnn_lm::qrnn_gates(y, h0, keep, lengths, zoneout_scale, output_gate, reverse) -> (h, c)``
- ``qrnn_lm::qrnn_gates_backward(grad_h, grad_c, y, c, h0, keep, lengths, zoneout_scale,
  output_gate, reverse) -> (grad_y, grad_h0)``

CPU only (the numba kernels of ``cpu.py``): on a GPU the QRNN layer keeps the unfused path,
whose Triton ForgetMult already runs once per layer and direction. Under ``torch.autocast`` the
ops run in the dtype of ``y`` and compute in float32 inside.
"""

from __future__ import annotations

from typing import Optional

import torch

from . import cpu


def _lengths(lengths: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return None if lengths is None else lengths.to(dtype=torch.int64).contiguous()


@torch.library.custom_op("qrnn_lm::qrnn_gates", mutates_args=(), device_types="cpu")
def qrnn_gates_op(
    y: torch.Tensor,
    h0: torch.Tensor,
    keep: Optional[torch.Tensor],
    lengths: Optional[torch.Tensor],
    zoneout_scale: float,
    output_gate: bool,
    reverse: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(h, c) ``[T, B, H]`` each (h empty ``[0]`` without the output gate)."""
    return cpu.forward(y, h0, keep, _lengths(lengths), zoneout_scale, output_gate, reverse)


@qrnn_gates_op.register_fake
def _(y, h0, keep, lengths, zoneout_scale, output_gate, reverse):
    c = y.new_empty(y.shape[0], y.shape[1], h0.shape[1])
    return (torch.empty_like(c) if output_gate else y.new_empty(0)), c


@torch.library.custom_op("qrnn_lm::qrnn_gates_backward", mutates_args=(), device_types="cpu")
def qrnn_gates_backward_op(
    grad_h: torch.Tensor,
    grad_c: torch.Tensor,
    y: torch.Tensor,
    c: torch.Tensor,
    h0: torch.Tensor,
    keep: Optional[torch.Tensor],
    lengths: Optional[torch.Tensor],
    zoneout_scale: float,
    output_gate: bool,
    reverse: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad_y, grad_h0) in the shapes and dtypes of y and h0."""
    return cpu.backward(grad_h, grad_c, y, c, h0, keep, _lengths(lengths), zoneout_scale, output_gate, reverse)


@qrnn_gates_backward_op.register_fake
def _(grad_h, grad_c, y, c, h0, keep, lengths, zoneout_scale, output_gate, reverse):
    return torch.empty_like(y), torch.empty_like(h0)


def _setup_context(ctx, inputs, output):
    y, h0, keep, lengths, zoneout_scale, output_gate, reverse = inputs
    # y is saved as it is (the backward recomputes the activations from it); c for c_{t-1}.
    ctx.save_for_backward(y, h0, keep, lengths, output[1])
    ctx.zoneout_scale, ctx.output_gate, ctx.reverse = zoneout_scale, output_gate, reverse


def _backward(ctx, grad_h, grad_c):
    y, h0, keep, lengths, c = ctx.saved_tensors
    grad_y, grad_h0 = qrnn_gates_backward_op(
        grad_h, grad_c, y, c, h0, keep, lengths, ctx.zoneout_scale, ctx.output_gate, ctx.reverse
    )
    return grad_y, grad_h0, None, None, None, None, None


qrnn_gates_op.register_autograd(_backward, setup_context=_setup_context)
