"""Reference QRNN gates: plain PyTorch ops and the reference ForgetMult loop, for tests only.

Shapes: T = time steps, B = batch, H = hidden lanes; ``y`` is ``[T, B, k*H]`` (k = 3 gates
Z, F, O, or 2 without the output gate). This is the ground truth the fused kernel is compared
with: the unfused QRNN layer written out. Never "fix" it to match a kernel.
"""

from __future__ import annotations

import torch

from ..forget_mult.naive import forget_mult_reference


def qrnn_gates_reference(
    y: torch.Tensor,
    h0: torch.Tensor | None = None,
    keep: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    *,
    zoneout_scale: float = 1.0,
    output_gate: bool = True,
    reverse: bool = False,
    lengths: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """With ``Z, F, O = (y + bias).chunk(k)``: ``Z = tanh``, ``F = sigmoid * zoneout_scale * keep``,
    ``C = ForgetMult(F, Z, h0)``, ``H = sigmoid(O) * C``, differentiable by autograd.

    Returns ``(h, c, c_n)``: ``h`` and ``c`` ``[T, B, H]`` (without the output gate ``h`` is an
    empty tensor and the output is ``c``; padded steps are 0 in both) and each sequence's final
    state ``c_n`` ``[B, H]`` (``h0``, or zeros, for an empty sequence).
    """
    if bias is not None:
        y = y + bias
    gates = y.chunk(3 if output_gate else 2, dim=2)  # each [T, B, H]
    z = torch.tanh(gates[0])
    f = torch.sigmoid(gates[1]) * zoneout_scale
    if keep is not None:
        f = f * keep
    c = forget_mult_reference(f, z, h0, reverse=reverse, lengths=lengths)
    h = torch.sigmoid(gates[2]) * c if output_gate else c.new_empty(0)
    seq_len, batch_size, hidden_size = c.shape
    start = c.new_zeros(batch_size, hidden_size) if h0 is None else h0
    if lengths is None:
        lengths = torch.full((batch_size,), seq_len, dtype=torch.long)
    last = (lengths.to(c.device) - 1).clamp(min=0)
    if reverse:
        last = torch.zeros_like(last)  # the backward walk of every sequence ends at step 0
    c_n = c[last, torch.arange(batch_size, device=c.device)] if seq_len else start
    c_n = torch.where((lengths.to(c.device) > 0).unsqueeze(1), c_n, start)
    return h, c, c_n
