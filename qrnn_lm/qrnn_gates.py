"""The QRNN layer after its linear map: gate activations, zoneout, ForgetMult, output gate.

Shape letters: T = time steps, B = batch, H = hidden size; time-major ``[T, B, ...]``.

Two paths with the same results (tested against each other):

- unfused: torch activations and the ForgetMult op of the device (numba on CPU, the Triton
  kernel on CUDA).
- fused (CPU with numba): one op, ``qrnn_lm::qrnn_gates``, reads the linear map's output once,
  adds the bias, and writes ``H``, ``C`` and the final state; its backward writes the gradient
  of ``Y`` in one pass.

``QRNN_LM_QRNN_GATES`` chooses: ``auto`` (default) takes the fused op on CPU for large layers
(``T*B*H >= FUSED_MIN_ELEMENTS``) and the unfused path otherwise; ``fused`` / ``unfused`` force
one. Why by size: on the 2-core CPU this was written on, a layer's step is bound by its matrix
products and by the exponentials of the activations, which torch's vectorised elementwise ops
already spread over both cores; the fused op only wins once its tensors are much larger than the
cache and saving passes over memory pays. Measured, training, hidden 320, window 1, median time
unfused / fused: (T, B) = (128, 64) 0.96, (256, 16) 0.84, (32, 256) 0.92 (2.6M or fewer
elements); (256, 256) 1.06 quiet, and 1.07-1.12 at 10.5M elements with other jobs running.
"""

from __future__ import annotations

import os

import torch

from .ops.forget_mult import forget_mult
from .ops.forget_mult.function import resolve_backend
from .ops.qrnn_gates import HAS_NUMBA, qrnn_gates

__all__ = ["use_fused", "gates_and_recurrence", "ENV_GATES"]

# "auto" (default): by size, see above; "fused": the fused CPU op where it can run; "unfused".
ENV_GATES = "QRNN_LM_QRNN_GATES"
# Lanes x steps (T*B*H) from which "auto" takes the fused op: 32 MB per float32 [T, B, H] tensor,
# twice the 16 MB last-level cache of the machine measured.
FUSED_MIN_ELEMENTS = 1 << 23


def use_fused(X: torch.Tensor, hidden_size: int, use_cuda: bool) -> bool:
    """True when the layer's input ``X`` ``[T, B, I]`` goes through the fused op (CPU, numba,
    and asked for or large enough; see the module docstring)."""
    choice = os.environ.get(ENV_GATES, "auto") or "auto"
    if choice not in ("auto", "fused", "unfused"):
        raise ValueError(f"{ENV_GATES} must be 'auto', 'fused' or 'unfused', got {choice!r}")
    if choice == "unfused" or not (use_cuda and HAS_NUMBA and X.device.type == "cpu"
                                   and resolve_backend(X.device, "auto") == "numba"):
        return False
    return choice == "fused" or X.shape[0] * X.shape[1] * hidden_size >= FUSED_MIN_ELEMENTS


def gates_and_recurrence(Y, bias, h0, *, fused, zoneout, training, output_gate, reverse, lengths, use_cuda):
    """From the gate pre-activations ``Y`` ``[T, B, k*H]`` to ``(H [T, B, H], h_n [1, B, H])``.

    ``Z = tanh``, ``F = sigmoid`` (times a Bernoulli(1 - zoneout) mask in training, times
    ``1 - zoneout`` in eval), ``C = ForgetMult(F, Z, h0)``, ``H = sigmoid(O) * C`` (``C`` without
    the output gate); ``h_n`` is each sequence's state after its last valid step (step 0 when
    ``reverse``; ``h0`` for an empty sequence). ``bias``: None, or ``[k*H]`` still to be added
    to ``Y`` (the fused op adds it inside, sparing the matrix product a pass over its output).
    ``h0``: ``[B, H]`` in Y's dtype or None; ``lengths``: None or ``[B]``; ``fused``: from
    :func:`use_fused`.
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
    bias = None if bias is None else bias.to(Y.dtype)
    if fused:
        H, C, c_n = qrnn_gates(Y, h0, keep, bias, zoneout_scale=scale, output_gate=output_gate, reverse=reverse,
                               lengths=lengths)
        return (H if output_gate else C), c_n.unsqueeze(0)
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
