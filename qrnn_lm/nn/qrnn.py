"""Quasi-Recurrent Neural Network layers, drop-in compatible with salesforce/pytorch-qrnn.

A QRNN layer computes, for every step at once, ``Z = tanh``, ``F = sigmoid``, ``O = sigmoid`` of one
linear map over the window ``[x_t, x_{t-1}, ...]``, then runs the only sequential part, the
ForgetMult recurrence ``c_t = f_t * z_t + (1 - f_t) * c_{t-1}``, and outputs ``h_t = o_t * c_t``.

Shape letters: T = time steps, B = batch, I = input features, H = hidden size of one direction.
Layout is time-major ``[T, B, ...]`` inside the layers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as nnf
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from .fused import fused_layer
from .rnn_compat import RNNCompat, pop_rnn_arguments, reset_layer_parameters
from .gates import gates_and_recurrence, use_fused, zoneout_mask
from .jit import refuse_torchscript, refuse_tracing
from .stream import stream_qrnn
from .window import check_projection, project, window_inputs

__all__ = ["QRNNLayer", "QRNN"]


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
        if self.window > 1 and self.save_prev_x:
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
        if weight is not None:
            Y = project(X, prev, weight, bias, self.window, self.reverse)  # [T, B, k*H]
        else:
            Y = self.linear(window_inputs(X, prev, self.window, self.reverse))  # [T, B, k*H]
            check_projection(Y, X, self.window, (3 if self.output_gate else 2) * self.hidden_size)
        h0 = None if hidden is None else hidden.reshape(batch_size, self.hidden_size).to(Y.dtype)
        return gates_and_recurrence(Y, h0, zoneout=self.zoneout, training=self.training,
                                    output_gate=self.output_gate, reverse=self.reverse, lengths=lengths,
                                    use_cuda=self.use_cuda)  # [T, B, H], [1, B, H]

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
        if self.prevX is None or not self.save_prev_x or self.window == 1:
            return None
        if self.prevX.shape[1] != batch_size:
            raise ValueError(f"QRNNLayer: save_prev_x kept inputs of batch size {self.prevX.shape[1]} but got batch "
                             f"size {batch_size}; call reset() before a sequence with a different batch size")
        return self.prevX

    def _last_inputs(self, X, prev, lengths):
        """The last ``window - 1`` inputs ``[window - 1, B, I]`` (detached) for the next call."""
        keep = self.window - 1
        if lengths is None and X.shape[0] >= keep:
            return X[-keep:].detach().clone()  # clone: a view would keep all of X alive
        if prev is None:
            prev = X.new_zeros(keep, X.shape[1], X.shape[2])
        history = torch.cat([prev, X.detach()])  # [keep + T, B, I]; X[t] is history[keep + t]
        if lengths is None:
            return history[-keep:].clone()
        # Sequence b's last inputs are X[len_b - keep : len_b] = history[len_b : len_b + keep].
        rows = lengths.unsqueeze(0) + torch.arange(keep, device=X.device).unsqueeze(1)  # [keep, B]
        return history[rows, torch.arange(X.shape[1], device=X.device)]


def _valid_steps(lengths, seq_len):
    """``[T, B]`` booleans: step t of sequence b is inside its length."""
    return torch.arange(seq_len, device=lengths.device).unsqueeze(1) < lengths.unsqueeze(0)


class QRNN(RNNCompat, nn.Module):
    """A stack of QRNN layers, usable wherever ``nn.LSTM`` is: ``output, h_n = qrnn(input, h0)``.

    Args:
        input_size: features of the input.
        hidden_size: features of the state of each layer and direction.
        num_layers: default 1. Stacked layers; layer ``i > 0`` reads the previous layer's output
            (``hidden_size * num_directions`` features).
        bias: default True. False builds every layer without a bias.
        batch_first: default False. True takes and returns ``[B, T, features]``.
        dropout: default 0. Dropout on the outputs of every layer but the last, in training only.
        bidirectional: default False. True adds a reversed layer at every depth; outputs are
            concatenated ``[fwd, bwd]`` and the backward window looks at later inputs.
        layers: default None. Prebuilt :class:`QRNNLayer` s to stack instead (with
            ``bidirectional``: forward and reversed layers alternating, ``2 * num_layers`` of them).
        **kwargs: passed to every :class:`QRNNLayer` (``save_prev_x``, ``zoneout``, ``window``,
            ``output_gate``, ``use_cuda``, ``device``, ``dtype``); ``nn.LSTM``'s ``proj_size=0`` and
            ``nn.RNN``'s ``nonlinearity="tanh"`` are accepted, other values refused (``rnn_compat``).

    The rest of ``nn.GRU``'s surface (``hx=``, unbatched input, ``flatten_parameters``,
    ``reset_parameters``, ``all_weights``, ``weight_ih_l0``, ...) comes from :class:`RNNCompat`.

    Inputs: ``input`` ``[T, B, input_size]`` (``[B, T, input_size]`` if ``batch_first``) or a
    ``PackedSequence``; ``hidden`` ``[num_layers * num_directions, B, hidden_size]`` or None (zeros).

    Returns ``(output, h_n)``: output ``[T, B, num_directions * hidden_size]`` (or a
    ``PackedSequence`` for one), and ``h_n`` ``[num_layers * num_directions, B, hidden_size]``
    ordered like ``nn.LSTM``'s (layer 0 forward, layer 0 backward, layer 1 forward, ...), holding
    each sequence's own final state. The parameters are ``layers.{i}.linear.weight/bias`` with
    ``i = layer * num_directions + direction``, as in the original for the unidirectional case.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0, bidirectional=False, layers=None, **kwargs):
        super().__init__()
        pop_rnn_arguments(kwargs)
        if not 0 <= dropout < 1:
            raise ValueError(f"QRNN: dropout must lie in [0, 1), got {dropout!r}")
        num_directions = 2 if bidirectional else 1
        if layers:
            layers = list(layers)
            directions = [bool(getattr(layer, "reverse", False)) for layer in layers]
            expected = [d == 1 for _ in range(len(layers) // num_directions) for d in range(num_directions)]
            if directions != expected:
                raise ValueError(f"QRNN: layers must be {'forward/reversed pairs' if bidirectional else 'forward'} "
                                 f"(reverse flags {expected}), got reverse flags {directions}")
            num_layers = len(layers) // num_directions
        else:
            layers = [
                QRNNLayer(input_size if depth == 0 else hidden_size * num_directions, hidden_size,
                          reverse=direction == 1, bias=bias, **kwargs)
                for depth in range(num_layers) for direction in range(num_directions)
            ]
        self.layers = nn.ModuleList(layers)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_directions = num_directions
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = dropout
        self.bidirectional = bidirectional

    def reset(self):
        """Forget the inputs kept by ``save_prev_x`` in every layer (start of a new sequence)."""
        for layer in self.layers:
            layer.reset()

    def __prepare_scriptable__(self):
        refuse_torchscript(self)

    def forward(self, input, hidden=None, hx=None):
        hidden = self._initial_state(hidden, hx)  # hx: nn.GRU's name for it
        if isinstance(input, torch.Tensor) and input.dim() == 2:
            return self._unbatched(input, hidden)  # nn.GRU's unbatched [T, input_size]
        lengths = None
        if isinstance(input, PackedSequence):
            X, lengths = pad_packed_sequence(input)  # [T, B, I] in the caller's batch order, zero padding
        elif not isinstance(input, torch.Tensor) or input.dim() != 3:
            shape = tuple(input.shape) if isinstance(input, torch.Tensor) else type(input).__name__
            order = "[B, T, input_size]" if self.batch_first else "[T, B, input_size]"
            raise ValueError(f"QRNN: input must be a PackedSequence or have shape {order} (or unbatched "
                             f"[T, input_size]), got {shape}")
        else:
            X = input.transpose(0, 1) if self.batch_first else input  # [T, B, I]
        self._check_hidden(hidden, X.shape[1])
        # Pass lengths only when there are some, so layers without that argument still stack.
        extra = {} if lengths is None else {"lengths": lengths}

        final_states = []
        for depth in range(self.num_layers):
            outputs = []
            for direction in range(self.num_directions):
                index = depth * self.num_directions + direction
                h0 = None if hidden is None else hidden[index]  # [B, H]
                output, h_n = self.layers[index](X, h0, **extra)
                outputs.append(output)
                final_states.append(h_n)  # [1, B, H]
            X = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=2)  # [T, B, D*H]
            if self.dropout and depth < self.num_layers - 1:
                X = nnf.dropout(X, p=self.dropout, training=self.training)
        h_n = torch.cat(final_states, dim=0)  # [num_layers * num_directions, B, H]

        if lengths is not None:
            return _repack(X, lengths, input), h_n
        return (X.transpose(0, 1) if self.batch_first else X), h_n

    def stream(self, input, state=None):
        """Run one chunk of a sequence with carried state, for online use: ``output, state =
        qrnn.stream(chunk, state)``; feeding a sequence chunk by chunk (even one step at a time)
        gives the outputs of one ``forward`` call on it. Start with ``state=None``; see
        :func:`~qrnn_lm.nn.stream.stream_qrnn` (unidirectional only, no PackedSequence)."""
        return stream_qrnn(self, input, state)

    def _check_hidden(self, hidden, batch_size):
        expected = (self.num_layers * self.num_directions, batch_size, self.hidden_size)
        if isinstance(hidden, (tuple, list)):
            raise ValueError(f"QRNN: hidden is one tensor {expected} like nn.GRU's, not nn.LSTM's (h_0, c_0) pair; "
                             "pass a single state tensor (a QRNN keeps no separate cell state)")
        if hidden is not None and (not isinstance(hidden, torch.Tensor) or tuple(hidden.shape) != expected):
            shape = tuple(hidden.shape) if isinstance(hidden, torch.Tensor) else type(hidden).__name__
            raise ValueError(f"QRNN: hidden must have shape [num_layers * num_directions, B, hidden_size] = "
                             f"{expected}, got {shape}")


def _repack(padded, lengths, like):
    """Pack ``padded`` ``[T, B, features]`` (caller's batch order) with the batch order of ``like``."""
    if like.sorted_indices is not None:
        padded = padded.index_select(1, like.sorted_indices)  # into decreasing-length order
        lengths = lengths.index_select(0, like.sorted_indices.cpu())
    data = pack_padded_sequence(padded, lengths.cpu(), enforce_sorted=True).data
    return PackedSequence(data, like.batch_sizes, like.sorted_indices, like.unsorted_indices)
