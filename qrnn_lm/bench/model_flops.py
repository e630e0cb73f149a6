"""The FLOPs of one training step of a built language model, part by part (see ``flops.py`` for what
is counted): the sizes are read from the model itself, so what is counted is what is timed.

Shapes: T = BPTT length, B = batch size, N = T * B tokens.
"""

from __future__ import annotations

import torch
from torch import nn

from ..nn import QRNNLayer
from . import flops

__all__ = ["step_flops", "find_lstm"]


def step_flops(model: nn.Module, targets: torch.Tensor, optimizer: str, weight_decay: float) -> dict[str, flops.Flops]:
    """``{part: Flops}`` of one training step of ``model`` on ``targets`` ``[T, B]`` (the adaptive
    decoder's work depends on which cluster each target falls in) with the ``optimizer`` kind."""
    seq_len, batch_size = targets.shape
    recurrent = flops.Flops()
    for layer in model.layers:
        recurrent += _layer_flops(layer, seq_len, batch_size)
    parameters = sum(p.numel() for p in model.parameters())  # a tied matrix counts once
    return {
        "embedding": flops.Flops(),  # a lookup and dropout masks: nothing counted (see flops.py)
        "recurrent": recurrent,
        "softmax": _decoder_flops(model.decoder, targets.reshape(-1)),
        "optimizer": flops.optimizer(parameters, optimizer, weight_decay),
    }


def _layer_flops(layer: nn.Module, seq_len: int, batch_size: int) -> flops.Flops:
    if isinstance(layer, QRNNLayer):
        return flops.qrnn_layer(seq_len, batch_size, layer.input_size, layer.hidden_size, layer.window,
                                layer.output_gate)
    lstm = find_lstm(layer)
    return flops.lstm_layer(seq_len, batch_size, lstm.input_size, lstm.hidden_size)


def find_lstm(layer: nn.Module) -> nn.LSTM:
    """The one-layer, one-direction ``nn.LSTM`` that is ``layer`` or inside it (a wrapper);
    ValueError for anything else."""
    lstm = next((module for module in layer.modules() if isinstance(module, nn.LSTM)), None)
    if lstm is None or lstm.num_layers != 1 or lstm.bidirectional or lstm.proj_size:
        raise ValueError(f"cannot count the FLOPs of a {type(layer).__name__} layer: a QRNNLayer or a "
                         "one-layer, one-direction nn.LSTM (inside a wrapper) is expected")
    return lstm


def _decoder_flops(decoder: nn.Module, targets: torch.Tensor) -> flops.Flops:
    """The decoder's FLOPs for flat ``targets`` ``[N]``."""
    if isinstance(decoder, nn.AdaptiveLogSoftmaxWithLoss):
        bounds = decoder.cutoffs  # [shortlist, ..., V]: cluster i holds bounds[i] <= target < bounds[i + 1]
        clusters = [(int(((targets >= low) & (targets < high)).sum()), tail[0].out_features, tail[1].out_features)
                    for low, high, tail in zip(bounds, bounds[1:], decoder.tail)]
        return flops.adaptive_decoder(targets.numel(), decoder.in_features, decoder.head_size, clusters)
    return flops.softmax_decoder(targets.numel(), decoder.in_features, decoder.out_features)
