"""The QRNN layer after its input: which path runs it, and the unfused path.

Shape letters: T = time steps, B = batch, H = hidden size; time-major ``[T, B, ...]``.

Two paths with the same results (tested against each other, ``tests/nn/test_fused.py``):

- fused (CPU, float32, numba): ``fused.fused_layer`` runs the matrix product, activations,
  recurrence and output gate chunk by chunk over time as one autograd node, so the gate tensors
  are touched while they are in cache (see that module).
- unfused (everywhere else: CUDA, other dtypes, autocast): the window's linear map
  (``window.project``), then the gates and the recurrence. On the CPU in float32 or bfloat16
  (autocast) these are one numba pass each way (``ops.gated_recurrence``), which also adds the
  linear map's bias and forms its gradient (:func:`gate_kernel_takes`); elsewhere torch
  activations and the ForgetMult op of the device (numba on CPU, the Triton kernel on CUDA).

``QRNN_LM_QRNN_GATES`` chooses: ``auto`` (default) takes the fused path and the gated-recurrence
kernel wherever they can run; ``unfused`` forces the torch activations and ForgetMult (to compare
them, or to rule the fused kernels out).
"""

from __future__ import annotations

import os

import torch

from ..ops import gated_recurrence
from ..ops.forget_mult import forget_mult
from ..ops.forget_mult.function import resolve_backend
from ..ops.qrnn_chunk import HAS_NUMBA

__all__ = ["use_fused", "zoneout_mask", "gate_kernel_takes", "gates_and_recurrence", "ENV_GATES"]

# "auto" (default): the fused kernels wherever they can run; "unfused": never.
ENV_GATES = "QRNN_LM_QRNN_GATES"


def use_fused(X: torch.Tensor, weight: torch.Tensor, use_cuda: bool) -> bool:
    """True when the layer's input ``X`` ``[T, B, I]`` and ``weight`` go through the fused CPU path:
    float32 on the CPU, not empty, no autocast, numba present, ``use_cuda`` (False asks for the
    plain torch loop), not turned off by ``QRNN_LM_QRNN_GATES=unfused``, and not being traced by
    ``torch.compile`` (which cannot trace the numba calls; the unfused path's ops are registered
    PyTorch operators it can)."""
    return (_gates_choice() != "unfused" and use_cuda and HAS_NUMBA and X.device.type == "cpu"
            and X.dtype == torch.float32 and weight.dtype == torch.float32 and X.numel() > 0
            and not torch.is_autocast_enabled("cpu") and not torch.compiler.is_compiling()
            and resolve_backend(X.device, "auto") == "numba")


def _gates_choice() -> str:
    """``QRNN_LM_QRNN_GATES``: "auto" (also when unset or empty) or "unfused"; ValueError otherwise."""
    choice = os.environ.get(ENV_GATES, "auto") or "auto"
    if choice not in ("auto", "unfused"):
        raise ValueError(f"{ENV_GATES} must be 'auto' or 'unfused', got {choice!r}")
    return choice


def zoneout_mask(shape, zoneout, training, dtype, device):
    """``(keep, scale)``: in training with zoneout a Bernoulli(1 - zoneout) mask ``[T, B, H]``
    (0 keeps that state element at that step) and scale 1; otherwise None and ``1 - zoneout``."""
    if zoneout and training:
        return torch.empty(shape, dtype=dtype, device=device).bernoulli_(1 - zoneout), 1.0
    return None, 1.0 - zoneout


def gate_kernel_takes(device, dtype, numel, lengths, use_cuda) -> bool:
    """Whether :func:`gates_and_recurrence` will run the CPU gate kernel (``ops.gated_recurrence``)
    on pre-activations of ``dtype`` and ``numel`` elements on ``device``: then the layer leaves
    the bias out of its linear map and hands it over (the kernel adds it, and sums its gradient
    while forming the pre-activations')."""
    return (use_cuda and _gates_choice() != "unfused" and gated_recurrence.takes(device, dtype, numel, lengths)
            and resolve_backend(device, "auto") == "numba")


def gates_and_recurrence(Y, h0, *, zoneout, training, output_gate, reverse, lengths, use_cuda, bias=None):
    """The unfused path from the gate pre-activations ``Y`` ``[T, B, k*H]`` to
    ``(H [T, B, H], h_n [1, B, H])``.

    ``Z = tanh``, ``F = sigmoid`` (times a Bernoulli(1 - zoneout) mask in training, times
    ``1 - zoneout`` in eval), ``C = ForgetMult(F, Z, h0)``, ``H = sigmoid(O) * C`` (``C`` without
    the output gate); ``h_n`` is each sequence's state after its last valid step (step 0 when
    ``reverse``; ``h0`` for an empty sequence). ``h0``: ``[B, H]`` in Y's dtype or None;
    ``lengths``: None or ``[B]``; ``bias``: ``[k*H]`` still to be added to ``Y`` (where
    :func:`gate_kernel_takes` says the kernel runs), or None.
    """
    num_gates = 3 if output_gate else 2
    hidden_size = Y.shape[2] // num_gates
    keep, scale = zoneout_mask((Y.shape[0], Y.shape[1], hidden_size), zoneout, training, Y.dtype, Y.device)
    if gate_kernel_takes(Y.device, Y.dtype, Y.numel(), lengths, use_cuda):
        H, h_n = gated_recurrence.gated_recurrence(Y, h0, keep, scale, output_gate, reverse, bias)
        return H, h_n.unsqueeze(0)
    if bias is not None:
        Y = Y + bias
    gates = Y.chunk(num_gates, dim=2)  # each [T, B, H]
    Z = torch.tanh(gates[0])
    F = torch.sigmoid(gates[1])
    if keep is not None:
        F = F * keep
    elif scale != 1.0:
        F = F * scale
    backend = "auto" if use_cuda else "torch"
    C = forget_mult(F, Z, h0, reverse=reverse, lengths=lengths, backend=backend)  # [T, B, H]
    H = torch.sigmoid(gates[2]) * C if output_gate else C
    return H, _final_state(C, h0, lengths, reverse)


def _final_state(C, h0, lengths, reverse):
    """Each sequence's state after its last step ``[1, B, H]``."""
    if lengths is None:
        return C[:1] if reverse else C[-1:]
    if reverse:
        last = C[0]  # the backward pass of every sequence ends at step 0
    else:
        batch = torch.arange(C.shape[1], device=C.device)
        last = C[(lengths - 1).clamp(min=0), batch]  # [B, H]
    # An empty sequence keeps its initial state.
    start = torch.zeros_like(last) if h0 is None else h0
    return torch.where((lengths > 0).unsqueeze(1), last, start).unsqueeze(0)
