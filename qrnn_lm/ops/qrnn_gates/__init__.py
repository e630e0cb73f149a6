"""Fused QRNN gates: ``tanh``/``sigmoid`` activations, zoneout, the ForgetMult recurrence and the
output gate in one CPU kernel, forward and backward.

Shapes: T = time steps, B = batch, H = hidden lanes. ``y`` is the output of the QRNN layer's
linear map, ``[T, B, k*H]``, holding the pre-activations of the gates Z, F (and O) side by side.
"""

from __future__ import annotations

import torch

from ..forget_mult import check_lengths
from .cpu import HAS_NUMBA, IMPORT_ERROR
from .function import qrnn_gates_op

__all__ = ["qrnn_gates", "HAS_NUMBA", "IMPORT_ERROR"]

_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _check(y, h0, keep, bias, zoneout_scale, output_gate, lengths):
    """Raise ValueError naming the expected and the actual value for any bad argument."""
    if not isinstance(y, torch.Tensor) or y.dim() != 3:
        shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(f"qrnn_gates: y must have shape [T, B, k*H] (3 dims), got {shape}")
    if y.dtype not in _DTYPES:
        raise ValueError(f"qrnn_gates: y must be float16, bfloat16, float32 or float64, got {y.dtype}")
    if y.device.type != "cpu":
        raise ValueError(f"qrnn_gates: y must be a CPU tensor (the fused kernel is CPU-only), got {y.device}")
    num_gates = 3 if output_gate else 2
    seq_len, batch_size, width = y.shape
    if width % num_gates:
        raise ValueError(f"qrnn_gates: y's last dim must be {num_gates} * hidden_size "
                         f"(output_gate={output_gate}), got {width}")
    hidden_size = width // num_gates
    if h0 is not None and (not isinstance(h0, torch.Tensor) or tuple(h0.shape) != (batch_size, hidden_size)
                           or h0.dtype != y.dtype or h0.device != y.device):
        got = (tuple(h0.shape), h0.dtype, h0.device) if isinstance(h0, torch.Tensor) else type(h0).__name__
        raise ValueError(f"qrnn_gates: h0 must be [B, H] = {(batch_size, hidden_size)} of dtype {y.dtype} "
                         f"on {y.device}, got {got}")
    if keep is not None and (not isinstance(keep, torch.Tensor)
                             or tuple(keep.shape) != (seq_len, batch_size, hidden_size) or keep.dtype != y.dtype):
        got = (tuple(keep.shape), keep.dtype) if isinstance(keep, torch.Tensor) else type(keep).__name__
        raise ValueError(f"qrnn_gates: keep must be [T, B, H] = {(seq_len, batch_size, hidden_size)} "
                         f"of dtype {y.dtype}, got {got}")
    if bias is not None and (not isinstance(bias, torch.Tensor) or tuple(bias.shape) != (width,)
                             or bias.dtype != y.dtype):
        got = (tuple(bias.shape), bias.dtype) if isinstance(bias, torch.Tensor) else type(bias).__name__
        raise ValueError(f"qrnn_gates: bias must be [k*H] = ({width},) of dtype {y.dtype}, got {got}")
    if not 0.0 <= zoneout_scale <= 1.0:
        raise ValueError(f"qrnn_gates: zoneout_scale must lie in [0, 1], got {zoneout_scale!r}")
    check_lengths("qrnn_gates", lengths, batch_size, seq_len)

def qrnn_gates(
    y: torch.Tensor,
    h0: torch.Tensor | None = None,
    keep: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    *,
    zoneout_scale: float = 1.0,
    output_gate: bool = True,
    reverse: bool = False,
    lengths: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The QRNN layer after its linear map, fused: with ``Z, F, O = (y + bias).chunk(k, dim=2)``,
    ``f = sigmoid(F) * zoneout_scale * keep``, ``c_t = f_t * tanh(Z_t) + (1 - f_t) * c_{t-1}``,
    ``h_t = sigmoid(O_t) * c_t``.

    Args:
        y: gate pre-activations ``[T, B, k*H]`` on the CPU (k = 3 with the output gate, else 2).
        h0: initial state ``[B, H]``; default None means zeros.
        keep: default None. Zoneout mask ``[T, B, H]`` (0 keeps the previous state of a lane at a
            step), same dtype as ``y``; not differentiated.
        bias: default None. ``[k*H]`` added to every row of ``y`` (the linear map's bias, so that
            the matrix product does not need a pass of its own to add it).
        zoneout_scale: default 1. Multiplies the forget gate (``1 - zoneout`` in evaluation).
        output_gate: default True. False: ``y`` holds Z and F only and the output is ``c``.
        reverse: default False. True walks from each sequence's last valid step to step 0.
        lengths: default None. ``[B]`` integers in ``[0, T]``; steps at or past ``lengths[b]``
            output 0 and do not enter the recurrence.

    Returns:
        ``(h, c, c_n)`` in y's dtype: the outputs and the states ``[T, B, H]`` (without the
        output gate ``h`` is an empty tensor and the output is ``c``), and each sequence's final
        state ``[B, H]`` (after its last valid step; step 0 when ``reverse``; ``h0`` for an empty
        sequence). Differentiable in ``y``, ``h0`` and ``bias``.
    """
    _check(y, h0, keep, bias, zoneout_scale, output_gate, lengths)
    if h0 is None:
        h0 = y.new_zeros(y.shape[1], y.shape[2] // (3 if output_gate else 2))
    # Keep the activations for the backward only when there will be one.
    save = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (y, h0, bias))
    h, c, c_n, _ = qrnn_gates_op(y, h0, keep, bias, lengths, float(zoneout_scale), bool(output_gate), bool(reverse),
                                 save)
    return h, c, c_n
