"""The QRNN layer after its linear map: gate activations, zoneout, ForgetMult, output gate.

Shape letters: T = time steps, B = batch, H = hidden size; time-major ``[T, B, ...]``.

Two paths with the same results (tested against each other):

- fused (CPU with the numba kernels): one op, ``qrnn_lm::qrnn_gates``, reads the linear map's
  output ``Y`` once and writes ``H`` and ``C``; its backward writes the gradient of ``Y`` in one
  pass. No ``chunk``/``cat``, no ``.contiguous()`` copies, no separate activation passes.
- unfused (GPU, other devices, ``use_cuda=False``, or ``QRNN_LM_QRNN_GATES=unfused``): torch
  activations and the ForgetMult op of the device (the Triton kernel on CUDA).
"""

from __future__ import annotations

import os

import torch

from .ops.forget_mult import forget_mult
from .ops.forget_mult.function import resolve_backend
from .ops.qrnn_gates import HAS_NUMBA, qrnn_gates

__all__ = ["gates_and_recurrence", "ENV_GATES"]

# "auto" (default): fused where available; "unfused": always the torch ops + ForgetMult path.
ENV_GATES = "QRNN_LM_QRNN_GATES"


def _use_fused(Y: torch.Tensor, use_cuda: bool) -> bool:
    choice = os.environ.get(ENV_GATES, "auto") or "auto"
    if choice not in ("auto", "unfused"):
        raise ValueError(f"{ENV_GATES} must be 'auto' or 'unfused', got {choice!r}")
    return (choice == "auto" and use_cuda and HAS_NUMBA and Y.device.type == "cpu"
            and resolve_backend(Y.device, "auto") == "numba")


def gates_and_recurrence(Y, h0, *, zoneout, training, output_gate, reverse, lengths, use_cuda):
    """From the gate pre-activations ``Y`` ``[T, B, k*H]`` to ``(H, C)``, ``[T, B, H]`` each.

    ``Z = tanh``, ``F = sigmoid`` (times a Bernoulli(1 - zoneout) mask in training, times
    ``1 - zoneout`` in eval), ``C = ForgetMult(F, Z, h0)``, ``H = sigmoid(O) * C`` (``C`` without
    the output gate). ``h0``: ``[B, H]`` in Y's dtype or None; ``lengths``: None or ``[B]``.
    """
    num_gates = 3 if output_gate else 2
    hidden_size = Y.shape[2] // num_gates
    mask_shape = (Y.shape[0], Y.shape[1], hidden_size)
    keep = None
    if zoneout and training:
        # A zero keeps the previous state of that element at that step. Drawn like the unfused
        # path's empty_like(F).bernoulli_, so both paths consume the RNG alike.
        keep = torch.empty(mask_shape, dtype=Y.dtype, device=Y.device).bernoulli_(1 - zoneout)
    scale = 1 - zoneout if zoneout and not training else 1.0
    if _use_fused(Y, use_cuda):
        H, C = qrnn_gates(Y, h0, keep, zoneout_scale=scale, output_gate=output_gate, reverse=reverse,
                          lengths=lengths)
        return (H if output_gate else C), C
    gates = Y.chunk(num_gates, dim=2)  # each [T, B, H]
    Z = torch.tanh(gates[0])
    F = torch.sigmoid(gates[1])
    if keep is not None:
        F = F * keep
    elif scale != 1.0:
        F = F * scale
    backend = "auto" if use_cuda else "torch"
    C = forget_mult(F, Z, h0, reverse=reverse, lengths=lengths, backend=backend)  # [T, B, H]
    return (torch.sigmoid(gates[2]) * C if output_gate else C), C
