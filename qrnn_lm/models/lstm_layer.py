"""One AWD-LSTM layer with the QRNN layer's interface inside the language model.

salesforce/awd-lstm-lm builds its LSTM language model from single-layer ``nn.LSTM`` modules, one
per depth, each wrapped in its ``WeightDrop`` on ``weight_hh_l0`` (DropConnect on the
hidden-to-hidden weights). :class:`LSTMLayer` is that module: an ``nn.LSTM(input_size,
hidden_size)`` whose ``weight_hh_l0`` carries the same :class:`~qrnn_lm.models.dropout.WeightDrop`
parametrization the QRNN layers' gate weights carry (so the trainer's shared mask generator draws
its masks too).

The carried state is one tensor per layer, as for a QRNN layer, so the trainer, checkpoints,
evaluation and generation handle both alike: ``state [B, 2H]`` is ``h`` and ``c`` side by side
(``h = state[:, :H]``, ``c = state[:, H:]``).

Shapes: T = time steps, B = batch, I = input features, H = hidden size; time-major ``[T, B, ...]``.
"""

from __future__ import annotations

import contextlib
import functools
import logging

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from .dropout import WeightDrop

__all__ = ["LSTMLayer", "lstm_scan"]


class LSTMLayer(nn.Module):
    """``(x [T, B, I], state [B, 2H]) -> (output [T, B, H], new_state [1, B, 2H])`` with an
    ``nn.LSTM`` inside (``self.lstm``, its parameters under their ``nn.LSTM`` names).

    Args:
        input_size: I.
        hidden_size: H (the output size; the state holds ``2 * H`` numbers per stream).
        weight_drop: DropConnect probability on ``lstm.weight_hh_l0``; 0 registers nothing, so the
            weight stays a plain parameter.
    """

    def __init__(self, input_size: int, hidden_size: int, weight_drop: float = 0.0):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.state_size = 2 * hidden_size  # h and c
        self.lstm = nn.LSTM(input_size, hidden_size)
        if weight_drop > 0:
            parametrize.register_parametrization(self.lstm, "weight_hh_l0", WeightDrop(weight_drop))

    def reset(self) -> None:
        """Nothing to forget: an LSTM keeps no inputs between calls (the QRNN's ``save_prev_x``)."""

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Run one segment from ``state`` (``[B, 2H]``, or None for zeros); returns ``(output
        [T, B, H], new_state [1, B, 2H])``, ``new_state`` still attached to the graph."""
        if x.dim() != 3 or x.size(-1) != self.input_size:
            raise ValueError(f"LSTMLayer: x must have shape [T, B, {self.input_size}], got {tuple(x.shape)}")
        if state is None:
            state = x.new_zeros(x.size(1), self.state_size)
        if tuple(state.shape) != (x.size(1), self.state_size):
            raise ValueError(f"LSTMLayer: state must have shape [B, 2 * hidden_size] = {(x.size(1), self.state_size)} "
                             f"(h and c side by side), got {tuple(state.shape)}")
        h0, c0 = state.unsqueeze(0).chunk(2, dim=-1)  # [1, B, H] each
        if torch.compiler.is_exporting():
            # nn.LSTM's traced form unrolls the time loop (the exported program would accept one
            # sequence length only); the same recurrence as a scan keeps the length dynamic.
            lstm = self.lstm
            output, h_n, c_n = lstm_scan(x, h0[0], c0[0], lstm.weight_ih_l0, lstm.weight_hh_l0,
                                         lstm.bias_ih_l0, lstm.bias_hh_l0)
            return output, torch.cat([h_n, c_n], dim=-1).unsqueeze(0)  # [1, B, 2H]
        # nn.LSTM reads its weights several times per call (to see whether they changed, then to
        # refresh _flat_weights); caching the parametrization makes that one weight-drop mask per
        # call, used by the recurrence, instead of a mask per read.
        cache = parametrize.cached() if self.training and parametrize.is_parametrized(self.lstm) else contextlib.nullcontext()
        fallback = _cpu_lacks_bf16_lstm(x)
        with cache, torch.autocast("cpu", enabled=False) if fallback else contextlib.nullcontext():
            if fallback:
                x, h0, c0 = x.float(), h0.float(), c0.float()
            output, (h_n, c_n) = self.lstm(x, (h0.contiguous(), c0.contiguous()))  # [T, B, H], [1, B, H] x 2
        if fallback:  # what autocast would have returned, for the ops after (e.g. the adaptive softmax)
            output, h_n, c_n = (t.to(torch.bfloat16) for t in (output, h_n, c_n))
        return output, torch.cat([h_n, c_n], dim=-1)  # [1, B, 2H]

    def extra_repr(self) -> str:
        return f"state_size={self.state_size}"


@functools.cache  # asked on every forward under bf16 autocast; the answer never changes
def _cpu_can_run_bf16_lstm() -> bool:
    """Whether oneDNN can build a bf16 LSTM on this CPU (it needs AVX-512; on AVX2-only CPUs such
    as AMD Zen 2/3 the primitive cannot be created and nn.LSTM under bf16 autocast raises)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _cpu_lacks_bf16_lstm(x: torch.Tensor) -> bool:
    """True where bf16 autocast is on for ``x``'s CPU but this CPU cannot run a bf16 LSTM: the
    recurrence then runs in fp32 with autocast off (logged once) instead of failing."""
    if (x.device.type != "cpu" or not torch.is_autocast_enabled("cpu")
            or torch.get_autocast_dtype("cpu") != torch.bfloat16 or _cpu_can_run_bf16_lstm()):
        return False
    _log_fp32_fallback_once()
    return True


@functools.cache
def _log_fp32_fallback_once() -> None:
    logging.getLogger(__name__).warning(
        "this CPU cannot run a bf16 LSTM (oneDNN needs AVX-512); the LSTM layers run in fp32")


def lstm_scan(x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh):
    """``nn.LSTM``'s recurrence (gates i, f, g, o) written with torch's scan op, for export.

    ``x [T, B, I]``, ``h0, c0 [B, H]``; weights as ``nn.LSTM``'s layer 0. Returns ``(output
    [T, B, H], h_n [B, H], c_n [B, H])``. The input projection of all steps is one matrix product.
    For export only (under ``torch.no_grad``, as export runs it): called eagerly, torch's scan
    compiles itself with dynamo, which in torch 2.14 breaks a later ONNX export of a scan.
    """
    from torch._higher_order_ops.scan import scan

    gates_x = F.linear(x, weight_ih, bias_ih + bias_hh)  # [T, B, 4H]

    def step(carry, gates_t):
        h, c = carry  # [B, H] each
        gates = gates_t + F.linear(h, weight_hh)  # [B, 4H]
        i, f, g, o = gates.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return (h, c), h.clone()  # carry, and this step's output (scan needs distinct tensors)

    (h_n, c_n), output = scan(step, (h0.contiguous(), c0.contiguous()), gates_x)  # scan: carry laid out as h0
    return output, h_n, c_n
