"""Streaming: run a QRNN a few steps at a time with the carried state passed in and returned.

Shape letters: T = time steps of one chunk, B = batch (streams), I = input features of a layer,
H = hidden size; time-major ``[T, B, ...]``.

A QRNN layer's step t depends on the past through two things only: the state ``c_{t-1}`` and, for
``window > 1``, the inputs ``x_{t-1}, ..., x_{t-window+1}`` of its convolution window. A
:class:`StreamState` holds both, so feeding a sequence chunk by chunk (one step at a time, for
online use) gives the outputs of one call on the whole sequence. Unlike ``save_prev_x`` nothing
is kept in the modules: one model serves any number of streams, each with its own state.

The kept inputs are detached (as ``save_prev_x`` keeps them); the hidden states are not, like
``h_n`` of ``forward``: detach them between chunks for truncated back-propagation.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as nnf

__all__ = ["StreamState", "stream_layer", "stream_qrnn"]


class StreamState(NamedTuple):
    """What one stream carries between calls.

    hidden: the recurrent states, in the owner's ``forward`` format: ``[num_layers, B, H]`` for
        ``QRNN``, a list of ``[B, H_l]`` for the language model.
    inputs: per layer, its last ``window - 1`` inputs ``[window - 1, B, I_l]`` (detached; steps
        before the first are zeros), or None for a layer with window 1.
    """

    hidden: object
    inputs: tuple


def stream_layer(layer, X, hidden=None, prev=None):
    """Run one forward :class:`~qrnn_lm.nn.QRNNLayer` over the chunk ``X`` ``[T, B, I]``.

    Args:
        hidden: the state before ``X``, ``[B, H]`` or ``[1, B, H]``; default None (zeros).
        prev: the inputs before ``X``, ``[window - 1, B, I]``; default None (zeros).

    Returns:
        ``(H [T, B, H], h_n [1, B, H], next_prev)``, ``next_prev`` the ``prev`` of the next chunk
        (None for window 1). The layer's ``save_prev_x`` buffer is neither read nor written.
    """
    if layer.reverse:
        raise ValueError("streaming needs forward layers: a reversed (bidirectional) layer reads later inputs "
                         "that no chunk has yet; run the whole sequence through forward()")
    weight, bias = layer._plain_linear_parameters()
    layer._check_input(X, hidden, layer._reference_parameter(weight))
    if prev is not None:
        expected = (layer.window - 1, X.shape[1], layer.input_size)
        if tuple(prev.shape) != expected:
            raise ValueError(f"streaming: the kept inputs must have shape [window - 1, B, input_size] = {expected}, "
                             f"got {tuple(prev.shape)}; start a new stream with state=None")
    H, h_n = layer._outputs(X, hidden, prev, None, weight, bias)
    next_prev = layer._last_inputs(X, prev, None) if layer.window > 1 else None
    return H, h_n, next_prev


def stream_qrnn(qrnn, input, state=None):
    """Run a unidirectional :class:`~qrnn_lm.nn.QRNN` over one chunk with carried state.

    Args:
        input: ``[T, B, input_size]`` (``[B, T, input_size]`` if ``batch_first``).
        state: the :class:`StreamState` returned by the previous call; default None starts a
            stream (zero states, zero inputs before the first step).

    Returns:
        ``(output, state)``: output as ``forward`` gives it for this chunk, and the state for the
        next one (``state.hidden`` ``[num_layers, B, H]`` is ``forward``'s ``h_n``).
    """
    if qrnn.num_directions != 1:
        raise ValueError("QRNN.stream needs bidirectional=False: the backward direction reads later inputs "
                         "that no chunk has yet; run the whole sequence through forward()")
    if not isinstance(input, torch.Tensor) or input.dim() != 3:
        shape = tuple(input.shape) if isinstance(input, torch.Tensor) else type(input).__name__
        raise ValueError(f"QRNN.stream: input must have shape {'[B, T, input_size]' if qrnn.batch_first else '[T, B, input_size]'}, "
                         f"got {shape}")
    X = input.transpose(0, 1) if qrnn.batch_first else input  # [T, B, I]
    hidden, inputs = (None, (None,) * qrnn.num_layers) if state is None else state
    qrnn._check_hidden(hidden, X.shape[1])
    if len(inputs) != qrnn.num_layers:
        raise ValueError(f"QRNN.stream: state.inputs must hold one entry per layer ({qrnn.num_layers}), got {len(inputs)}")
    final_states, kept = [], []
    for depth, layer in enumerate(qrnn.layers):
        X, h_n, prev = stream_layer(layer, X, None if hidden is None else hidden[depth], inputs[depth])
        final_states.append(h_n)  # [1, B, H]
        kept.append(prev)
        if qrnn.dropout and depth < qrnn.num_layers - 1:
            X = nnf.dropout(X, p=qrnn.dropout, training=qrnn.training)
    output = X.transpose(0, 1) if qrnn.batch_first else X
    return output, StreamState(torch.cat(final_states, dim=0), tuple(kept))
