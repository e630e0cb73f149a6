"""One QRNN layer in one direction (``QRNNLayer``), drop-in compatible with salesforce/pytorch-qrnn.

A QRNN layer computes, for every step at once, ``Z = tanh``, ``F = sigmoid``, ``O = sigmoid`` of one
linear map over the window ``[x_t, x_{t-1}, ...]``, then runs the only sequential part, the
ForgetMult recurrence ``c_t = f_t * z_t + (1 - f_t) * c_{t-1}``, and outputs ``h_t = o_t * c_t``.

Shape letters: T = time steps, B = batch, I = input features, H = hidden size.
Layout is time-major ``[T, B, ...]``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..ops.qrnn_chunk import fused_layer
from .gates import gate_kernel_takes, gates_and_recurrence, use_fused, zoneout_mask
from .jit import refuse_torchscript, refuse_tracing
from .rnn_compat import reset_layer_parameters
from .window import check_projection, project, window_inputs

__all__ = ["QRNNLayer"]


class QRNNLayer(nn.Module):
    """One QRNN layer in one direction (the original's ``QRNNLayer``, plus ``reverse`` and ``bias``).

    Args:
        input_size: features of the input ``x``.
        hidden_size: features of the state; default None uses ``input_size``.
        save_prev_x: default False. True keeps the last ``window - 1`` inputs (detached) for the
            window of the next call, for a sequence fed in chunks (BPTT); call :meth:`reset` at
            the start of a new sequence.
        zoneout: default 0. Probability of keeping a state element unchanged at a step (the forget
            gate is multiplied by a Bernoulli(1 - zoneout) mask in training, by 1 - zoneout in eval).
        window: default 1. How many inputs each step sees: ``[x_t, x_{t-1}, ..., x_{t-window+1}]``
            (``x_{t+1}, ...`` when ``reverse``); missing inputs are zeros.
        output_gate: default True (QRNN-fo: ``h = sigmoid(O) * c``); False gives QRNN-f (``h = c``).
        use_cuda: default True uses the fastest ForgetMult kernel for the device; False forces the
            plain torch loop, like the original's CPU fallback.
        reverse: default False. True runs the recurrence from the last step to the first (the
            backward direction of a bidirectional QRNN).
        bias: default True. False builds the linear map without a bias.
        device, dtype: default None. Where and in which dtype to create the parameters (as nn.Linear).

    The parameters are one ``linear`` of shape ``(k * hidden_size, window * input_size)``, gates in
    the order Z, F, O (k = 3, or 2 without the output gate), exactly as in the original.
    """

    def __init__(self, input_size, hidden_size=None, save_prev_x=False, zoneout=0, window=1,
                 output_gate=True, use_cuda=True, *, reverse=False, bias=True, device=None, dtype=None):
        super().__init__()
        if not isinstance(window, int) or window < 1:
            raise ValueError(f"QRNNLayer: window must be an integer >= 1, got {window!r}")
        if not 0 <= zoneout < 1:
            raise ValueError(f"QRNNLayer: zoneout must lie in [0, 1), got {zoneout!r}")
        if reverse and save_prev_x and window > 1:
            raise ValueError("QRNNLayer: save_prev_x=True needs a forward layer (reverse=False): "
                             "the window of a reversed layer looks at later inputs, which no earlier chunk holds")
        self.window = window
        self.input_size = input_size
        self.hidden_size = hidden_size if hidden_size else input_size
        self.zoneout = zoneout
        self.save_prev_x = save_prev_x
        self.prevX = None  # [window - 1, B, I] inputs kept for the next call (save_prev_x)
        self.output_gate = output_gate
        self.use_cuda = use_cuda
        self.reverse = reverse
        num_gates = 3 if output_gate else 2
        # One Linear over the concatenated window, as in the original, so its checkpoints load.
        self.linear = nn.Linear(window * input_size, num_gates * self.hidden_size, bias=bias, device=device, dtype=dtype)

    def reset_parameters(self):
        """Re-initialise ``linear`` as the constructor does (the raw weight under weight drop)."""
        reset_layer_parameters(self)

    def reset(self):
        """Forget the inputs kept by ``save_prev_x``; call at the start of every new sequence."""
        self.prevX = None

    def __prepare_scriptable__(self):
        refuse_torchscript(self)  # torch.jit.script: one clear line instead of a compiler error

    def extra_repr(self):
        return (f"{self.input_size}, {self.hidden_size}, window={self.window}, zoneout={self.zoneout}, "
                f"save_prev_x={self.save_prev_x}, output_gate={self.output_gate}, reverse={self.reverse}")

    def forward(self, X, hidden=None, lengths=None):
        """Run the layer over a whole sequence.

        Args:
            X: input ``[T, B, input_size]``.
            hidden: initial state ``[B, hidden_size]`` (or ``[1, B, hidden_size]``); default zeros.
            lengths: default None. ``[B]`` integers, each sequence's valid length; steps past it
                output 0 and do not enter the recurrence or any window.

        Returns:
            ``(H, h_n)``: outputs ``[T, B, hidden_size]`` and the final state ``[1, B, hidden_size]``
            (each sequence's own last step; step 0 when ``reverse``).
        """
        # Read the weight once: under a parametrization (e.g. weight drop) every read recomputes it.
        refuse_tracing(self)  # torch.jit.trace would otherwise die inside numba
        weight, bias = self._plain_linear_parameters()
        self._check_input(X, hidden, self._reference_parameter(weight))
        prev = self._saved_inputs(X.shape[1])
        if lengths is not None:
            lengths = lengths.to(X.device)
            if self.reverse and self.window > 1:
                # The window of step t reads x_{t+1}, ...: padding past a sequence's end must be zero.
                X = X.masked_fill(~_valid_steps(lengths, X.shape[0]).unsqueeze(2), 0)
        H, h_n = self._outputs(X, hidden, prev, lengths, weight, bias)
        if self.window > 1 and self.save_prev_x and not torch.compiler.is_exporting():
            self.prevX = self._last_inputs(X, prev, lengths)
        return H, h_n

    def _plain_linear_parameters(self):
        """``(weight, bias)`` of ``linear`` when it is a plain ``nn.Linear`` (a parametrized one
        included: its class keeps ``nn.Linear.forward``), for the fused and shifted-product paths;
        ``(None, None)`` for any other module (the original's extension point: awd-lstm-lm's and
        fastai's weight-drop wrappers), which is then called on the concatenated window."""
        linear = self.linear
        if isinstance(linear, nn.Linear) and type(linear).forward is nn.Linear.forward:
            return linear.weight, linear.bias
        return None, None

    def _reference_parameter(self, weight):
        """A tensor carrying the parameters' dtype and device (None: a module without parameters)."""
        return weight if weight is not None else next(self.linear.parameters(), None)

    def _outputs(self, X, hidden, prev, lengths, weight, bias):
        """``(H [T, B, H], h_n [1, B, H])`` of the checked input ``X`` ``[T, B, I]``, with ``prev``
        ``[window - 1, B, I]`` (or None: zeros) the inputs before ``X``."""
        seq_len, batch_size, _ = X.shape
        if weight is not None and use_fused(X, weight, self.use_cuda):
            h0 = None if hidden is None else hidden.reshape(batch_size, self.hidden_size).to(X.dtype)
            keep, scale = zoneout_mask((seq_len, batch_size, self.hidden_size), self.zoneout, self.training,
                                       X.dtype, X.device)
            H, h_n = fused_layer(X, weight, bias, h0, prev, keep, scale, self.window, self.output_gate,
                                 self.reverse, lengths)  # [T, B, H], [B, H]
            return H, h_n.unsqueeze(0)
        gate_bias = None  # the bias when the gate kernel adds it instead of the linear map
        if weight is not None:
            if bias is not None and gate_kernel_takes(X.device, _projection_dtype(X, weight),
                                                      seq_len * batch_size * weight.shape[0], lengths, self.use_cuda):
                bias, gate_bias = None, bias
            Y = project(X, prev, weight, bias, self.window, self.reverse)  # [T, B, k*H]
        else:
            Y = self.linear(window_inputs(X, prev, self.window, self.reverse))  # [T, B, k*H]
            check_projection(Y, X, self.window, (3 if self.output_gate else 2) * self.hidden_size)
        h0 = None if hidden is None else hidden.reshape(batch_size, self.hidden_size).to(Y.dtype)
        return gates_and_recurrence(Y, h0, zoneout=self.zoneout, training=self.training,
                                    output_gate=self.output_gate, reverse=self.reverse, lengths=lengths,
                                    use_cuda=self.use_cuda, bias=gate_bias)  # [T, B, H], [1, B, H]

    def _check_input(self, X, hidden, weight):
        """Raise ValueError naming the expected and the actual value for a bad input or state."""
        if not isinstance(X, torch.Tensor) or X.dim() != 3:
            shape = tuple(X.shape) if isinstance(X, torch.Tensor) else type(X).__name__
            raise ValueError(f"QRNNLayer: input must have shape [T, B, input_size={self.input_size}], got {shape}")
        if X.shape[2] != self.input_size:
            raise ValueError(f"QRNNLayer: input must have {self.input_size} features (last dim), "
                             f"got shape {tuple(X.shape)}")
        if not X.is_floating_point():
            raise ValueError(f"QRNNLayer: input must be a floating point tensor, got {X.dtype}")
        # weight is None for a custom linear without parameters: nothing to compare with.
        if weight is not None and X.dtype != weight.dtype and not torch.is_autocast_enabled(X.device.type):
            raise ValueError(f"QRNNLayer: input dtype must match the parameters' {weight.dtype}, got {X.dtype} "
                             "(convert one of them, or run under torch.autocast)")
        if weight is not None and X.device != weight.device:
            raise ValueError(f"QRNNLayer: input must be on the parameters' device {weight.device}, got {X.device}")
        if hidden is not None:
            batch_size = X.shape[1]
            if not isinstance(hidden, torch.Tensor) or tuple(hidden.shape) not in (
                    (batch_size, self.hidden_size), (1, batch_size, self.hidden_size)):
                shape = tuple(hidden.shape) if isinstance(hidden, torch.Tensor) else type(hidden).__name__
                raise ValueError(f"QRNNLayer: hidden must have shape [B, hidden_size] = "
                                 f"{(batch_size, self.hidden_size)}, got {shape}")

    def _saved_inputs(self, batch_size):
        """The inputs kept from the previous call ``[window - 1, B, I]``, or None."""
        # An exported program is a pure function: it neither reads nor writes module state (to carry
        # the window across calls, pass the kept inputs in and out: see nn/stream.py).
        if self.prevX is None or not self.save_prev_x or self.window == 1 or torch.compiler.is_exporting():
            return None
        if self.prevX.shape[1] != batch_size:
            raise ValueError(f"QRNNLayer: save_prev_x kept inputs of batch size {self.prevX.shape[1]} but got batch "
                             f"size {batch_size}; call reset() before a sequence with a different batch size")
        return self.prevX

    def _last_inputs(self, X, prev, lengths):
        """The last ``window - 1`` inputs ``[window - 1, B, I]`` (detached) for the next call."""
        keep = self.window - 1
        # Exporting, T is symbolic: comparing it with keep would fix the program's lengths to one side.
        if lengths is None and not torch.compiler.is_exporting() and X.shape[0] >= keep:
            return X[-keep:].detach().clone()  # clone: a view would keep all of X alive
        if prev is None:
            prev = X.new_zeros(keep, X.shape[1], X.shape[2])
        history = torch.cat([prev, X.detach()])  # [keep + T, B, I]; X[t] is history[keep + t]
        if lengths is None:
            return history[-keep:].clone()
        # Sequence b's last inputs are X[len_b - keep : len_b] = history[len_b : len_b + keep].
        rows = lengths.unsqueeze(0) + torch.arange(keep, device=X.device).unsqueeze(1)  # [keep, B]
        return history[rows, torch.arange(X.shape[1], device=X.device)]


def _projection_dtype(X, weight):
    """The dtype of the linear map's output: autocast's where it is on, else the operands'."""
    device_type = X.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return torch.promote_types(X.dtype, weight.dtype)  # (torch.result_type breaks torch.compile's graph)


def _valid_steps(lengths, seq_len):
    """``[T, B]`` booleans: step t of sequence b is inside its length."""
    return torch.arange(seq_len, device=lengths.device).unsqueeze(1) < lengths.unsqueeze(0)
