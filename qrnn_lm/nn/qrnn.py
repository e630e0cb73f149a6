"""The QRNN stack (``QRNN``), usable wherever ``nn.LSTM`` / ``nn.GRU`` or the original
salesforce/pytorch-qrnn ``QRNN`` is: layers of :class:`~qrnn_lm.nn.layer.QRNNLayer`, optionally
bidirectional, ``batch_first``, ``PackedSequence``.

Shape letters: T = time steps, B = batch, I = input features, H = hidden size of one direction.
Layout is time-major ``[T, B, ...]`` inside the layers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as nnf
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from .jit import refuse_torchscript
from .layer import QRNNLayer
from .rnn_compat import RNNCompat, pop_rnn_arguments
from .incremental import stream_qrnn

__all__ = ["QRNNLayer", "QRNN"]


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
        :func:`~qrnn_lm.nn.incremental.stream_qrnn` (unidirectional only, no PackedSequence)."""
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
