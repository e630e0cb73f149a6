"""The fused QRNN gates as registered PyTorch operators, with autograd.

Shapes: T = time steps, B = batch, H = hidden lanes; ``y`` is ``[T, B, k*H]``.

- ``qrnn_lm::qrnn_gates(y, h0, keep, bias, lengths, zoneout_scale, output_gate, reverse,
  save_activations) -> (h, c, c_n, acts)``
- ``qrnn_lm::qrnn_gates_backward(grad_h, grad_c, grad_c_n, source, from_acts, bias, c, h0, keep,
  lengths, zoneout_scale, output_gate, reverse) -> (grad_y, grad_h0)``

CPU only (the numba kernels of ``cpu.py``): on a GPU the QRNN layer keeps the unfused path,
whose Triton ForgetMult already runs once per layer and direction. Under ``torch.autocast`` the
ops run in the dtype of ``y`` and compute in float32 inside.

The backward reads the activations saved by the forward (``acts``) when there are some, so it
needs no exponentials; otherwise (``save_activations=False`` under autograd, e.g. to save
memory) it recomputes them from ``y``. Upstream gradients of unused outputs arrive as None
(``set_materialize_grads(False)``), so no zero tensors are built for them.
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
    bias: Optional[torch.Tensor],
    lengths: Optional[torch.Tensor],
    zoneout_scale: float,
    output_gate: bool,
    reverse: bool,
    save_activations: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(h, c, c_n, acts); h empty ``[0]`` without the output gate, acts empty unless saved."""
    return cpu.forward(y, h0, keep, bias, _lengths(lengths), zoneout_scale, output_gate, reverse, save_activations)


@qrnn_gates_op.register_fake
def _(y, h0, keep, bias, lengths, zoneout_scale, output_gate, reverse, save_activations):
    c = y.new_empty(y.shape[0], y.shape[1], h0.shape[1])
    h = torch.empty_like(c) if output_gate else y.new_empty(0)
    acts = torch.empty_like(y) if save_activations else y.new_empty(0)
    return h, c, torch.empty_like(h0), acts


@torch.library.custom_op("qrnn_lm::qrnn_gates_backward", mutates_args=(), device_types="cpu")
def qrnn_gates_backward_op(
    grad_h: Optional[torch.Tensor],
    grad_c: Optional[torch.Tensor],
    grad_c_n: Optional[torch.Tensor],
    source: torch.Tensor,
    from_acts: bool,
    bias: Optional[torch.Tensor],
    c: torch.Tensor,
    h0: torch.Tensor,
    keep: Optional[torch.Tensor],
    lengths: Optional[torch.Tensor],
    zoneout_scale: float,
    output_gate: bool,
    reverse: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad_y, grad_h0) in the shapes and dtypes of source (y or acts) and h0."""
    return cpu.backward(grad_h, grad_c, grad_c_n, source, from_acts, bias, c, h0, keep, _lengths(lengths),
                        zoneout_scale, output_gate, reverse)


@qrnn_gates_backward_op.register_fake
def _(grad_h, grad_c, grad_c_n, source, from_acts, bias, c, h0, keep, lengths, zoneout_scale, output_gate, reverse):
    return torch.empty_like(source), torch.empty_like(h0)


def _setup_context(ctx, inputs, output):
    y, h0, keep, bias, lengths, zoneout_scale, output_gate, reverse, save_activations = inputs
    h, c, c_n, acts = output
    ctx.from_acts = save_activations
    # The saved activations replace y; without them the backward recomputes them from y.
    ctx.save_for_backward(acts if save_activations else y, h0, keep, bias, lengths, c)
    ctx.mark_non_differentiable(acts)
    ctx.set_materialize_grads(False)
    ctx.zoneout_scale, ctx.output_gate, ctx.reverse = zoneout_scale, output_gate, reverse
    ctx.has_bias = bias is not None


def _backward(ctx, grad_h, grad_c, grad_c_n, grad_acts):
    source, h0, keep, bias, lengths, c = ctx.saved_tensors
    grad_y, grad_h0 = qrnn_gates_backward_op(
        grad_h, grad_c, grad_c_n, source, ctx.from_acts, bias, c, h0, keep, lengths,
        ctx.zoneout_scale, ctx.output_gate, ctx.reverse,
    )
    grad_bias = grad_y.sum((0, 1)) if ctx.has_bias and ctx.needs_input_grad[3] else None
    return grad_y, grad_h0, None, grad_bias, None, None, None, None, None


qrnn_gates_op.register_autograd(_backward, setup_context=_setup_context)
