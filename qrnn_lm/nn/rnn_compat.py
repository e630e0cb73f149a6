"""The public surface of torch's RNN modules (``nn.RNNBase``, ``nn.GRU``, ``nn.LSTM``, ``nn.RNN``) on
:class:`~qrnn_lm.nn.QRNN`, so code written for them runs with a QRNN in their place.

Shape letters: T = time steps, B = batch, H = hidden size, L*D = num_layers * num_directions.

The QRNN's state is one tensor ``[L*D, B, H]``, like a GRU's. What carries over, with the same
behaviour: the constructor arguments (``device``, ``dtype``; ``proj_size=0``; ``nonlinearity="tanh"``),
the attributes (``input_size`` ... ``bidirectional``, ``proj_size``, ``mode``), ``forward(input, hx)``
with unbatched ``[T, input_size]`` input, ``flatten_parameters`` (a no-op: there are no cuDNN flat
weights to compact, each layer's parameters are already one tensor), ``reset_parameters``,
``all_weights``, ``weight_ih_l{k}[_reverse]`` / ``bias_ih_l{k}[_reverse]`` (the layer's gate weights),
``check_forward_args``, ``check_input``, ``get_expected_hidden_size``, ``check_hidden_size``,
``permute_hidden``. What has no meaning (hidden-to-hidden weights, projections, an LSTM's
``(h, c)`` state) raises one line naming the alternative.
"""

from __future__ import annotations

import math
import re

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..config import UserError

__all__ = ["RNNCompatError", "RNNCompat", "pop_rnn_arguments", "reset_layer_parameters"]

_WEIGHT_NAME = re.compile(r"(weight|bias)_(ih|hh|hr)_l(\d+)(_reverse)?")


class RNNCompatError(UserError, ValueError):
    """An ``nn.RNNBase`` argument or feature that a QRNN cannot give; says what to use instead."""


def pop_rnn_arguments(kwargs: dict) -> None:
    """Take ``nn.LSTM``'s ``proj_size`` and ``nn.RNN``'s ``nonlinearity`` out of ``kwargs``, accepting
    the values a QRNN already has (0, "tanh") and refusing the others in one line."""
    proj_size = kwargs.pop("proj_size", 0)
    if proj_size != 0:
        raise RNNCompatError(f"QRNN has no projections (nn.LSTM's proj_size={proj_size!r}); use hidden_size="
                             f"{proj_size!r}, or a nn.Linear on the outputs")
    nonlinearity = kwargs.pop("nonlinearity", "tanh")
    if nonlinearity != "tanh":
        raise RNNCompatError(f"QRNN's candidate activation is tanh, got nn.RNN's nonlinearity={nonlinearity!r}; "
                             "use nonlinearity='tanh' (or leave it out)")


def reset_layer_parameters(layer) -> None:
    """Re-initialise a QRNNLayer's ``linear`` as ``nn.Linear`` initialises itself (uniform in
    ``+-1/sqrt(window * input_size)``); under a parametrization (weight drop) the raw weight."""
    linear = layer.linear
    if not isinstance(linear, nn.Linear):
        if not hasattr(linear, "reset_parameters"):
            raise RNNCompatError(f"QRNNLayer.reset_parameters: the custom linear {type(linear).__name__} has no "
                                 "reset_parameters(); re-initialise its parameters yourself")
        linear.reset_parameters()
        return
    weight = linear.parametrizations.weight.original if parametrize.is_parametrized(linear, "weight") else linear.weight
    with torch.no_grad():
        nn.init.kaiming_uniform_(weight, a=math.sqrt(5))  # nn.Linear.reset_parameters, on the raw weight
        if linear.bias is not None:
            bound = 1 / math.sqrt(linear.in_features) if linear.in_features > 0 else 0
            nn.init.uniform_(linear.bias, -bound, bound)


class RNNCompat:
    """Mixin for QRNN: ``nn.RNNBase``'s methods and attributes (see the module docstring)."""

    mode = "QRNN"  # nn.RNNBase.mode is "LSTM", "GRU", "RNN_TANH" or "RNN_RELU"
    proj_size = 0  # nn.LSTM's projections: a QRNN has none

    def flatten_parameters(self) -> None:
        """A no-op, as ``nn.RNNBase``'s is off cuDNN: there are no flat weights to compact."""

    def reset_parameters(self) -> None:
        """Re-initialise every layer's gate weights and biases (as the constructor does)."""
        for layer in self.layers:
            layer.reset_parameters()

    @property
    def all_weights(self) -> list[list[nn.Parameter]]:
        """Per layer and direction (index ``layer * num_directions + direction``), its parameters:
        ``[linear.weight, linear.bias]`` (``nn.RNNBase``: ``[w_ih, w_hh, b_ih, b_hh]``)."""
        return [[p for p in (layer.linear.weight, layer.linear.bias) if p is not None]
                if isinstance(layer.linear, nn.Linear) else list(layer.linear.parameters()) for layer in self.layers]

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)  # parameters, buffers, submodules
        except AttributeError:
            match = _WEIGHT_NAME.fullmatch(name)
            if match is None:
                raise
        kind, which, depth, reverse = match.groups()
        if which != "ih":
            what = "hidden-to-hidden weights: its recurrence is elementwise" if which == "hh" else "projections"
            raise AttributeError(f"QRNN has no {name} ({what}); its only weights are the gate weights "
                                 f"{kind}_ih_l{depth}{reverse or ''} = layers[i].linear.{kind}") from None
        index = int(depth) * self.num_directions + (1 if reverse else 0)
        if int(depth) >= self.num_layers or (reverse and self.num_directions == 1):
            raise AttributeError(f"QRNN has no {name}: it has {self.num_layers} layers"
                                 f"{'' if self.num_directions == 2 else ' and one direction'}") from None
        return getattr(self.layers[index].linear, kind)  # [k*H, window*I] (gates Z, F, O) / [k*H]

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}"  # as nn.RNNBase.extra_repr
        defaults = {"num_layers": 1, "bias": True, "batch_first": False, "dropout": 0, "bidirectional": False}
        changed = [f"{key}={getattr(self, key)}" for key, default in defaults.items() if getattr(self, key) != default]
        return ", ".join([text, *changed])

    # nn.RNNBase's argument checks, with its messages and exception types (RuntimeError).
    def check_input(self, input: torch.Tensor, batch_sizes: torch.Tensor | None) -> None:
        expected_dim = 2 if batch_sizes is not None else 3
        if input.dim() != expected_dim:
            raise RuntimeError(f"input must have {expected_dim} dimensions, got {input.dim()}")
        if self.input_size != input.size(-1):
            raise RuntimeError(f"input.size(-1) must be equal to input_size. Expected {self.input_size}, "
                               f"got {input.size(-1)}")

    def get_expected_hidden_size(self, input: torch.Tensor, batch_sizes: torch.Tensor | None) -> tuple[int, int, int]:
        if batch_sizes is not None:
            mini_batch = int(batch_sizes[0])
        else:
            mini_batch = input.size(0) if self.batch_first else input.size(1)
        return (self.num_layers * self.num_directions, mini_batch, self.hidden_size)

    def check_hidden_size(self, hx: torch.Tensor, expected_hidden_size, msg: str = "Expected hidden size {}, got {}") -> None:
        if hx.size() != expected_hidden_size:
            raise RuntimeError(msg.format(expected_hidden_size, list(hx.size())))

    def check_forward_args(self, input: torch.Tensor, hidden: torch.Tensor, batch_sizes: torch.Tensor | None) -> None:
        self.check_input(input, batch_sizes)
        self.check_hidden_size(hidden, self.get_expected_hidden_size(input, batch_sizes))

    def permute_hidden(self, hx: torch.Tensor, permutation: torch.Tensor | None) -> torch.Tensor:
        return hx if permutation is None else hx.index_select(1, permutation)  # [L*D, B, H] along B

    @staticmethod
    def _initial_state(hidden, hx):
        """``forward``'s initial state, given as ``hidden`` or as ``nn.GRU``'s ``hx``."""
        if hx is not None and hidden is not None:
            raise ValueError("QRNN: pass the initial state once, as hidden or as hx (nn.GRU's name), not both")
        return hidden if hx is None else hx

    def _unbatched(self, input: torch.Tensor, hidden: torch.Tensor | None):
        """``nn.GRU`` on unbatched input: ``[T, input_size]`` and ``hx`` ``[L*D, H]`` ->
        ``([T, D*H], [L*D, H])`` (``batch_first`` does not apply)."""
        if hidden is not None and (not isinstance(hidden, torch.Tensor) or hidden.dim() != 2):
            shape = tuple(hidden.shape) if isinstance(hidden, torch.Tensor) else type(hidden).__name__
            raise ValueError(f"QRNN: for unbatched 2-D input, hx must also be 2-D [num_layers * num_directions, "
                             f"hidden_size], got {shape}")
        batch_dim = 0 if self.batch_first else 1
        output, h_n = self.forward(input.unsqueeze(batch_dim), None if hidden is None else hidden.unsqueeze(1))
        return output.squeeze(batch_dim), h_n.squeeze(1)
