"""The original's extension point: ``QRNNLayer.linear`` replaced by any module mapping
``[..., window * input_size]`` to ``[..., k * hidden_size]``, as awd-lstm-lm and fastai do with
their weight-drop wrappers. A plain (or parametrized) ``nn.Linear`` keeps the fast paths."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import qrnn_lm.nn.layer as qrnn_module
from qrnn_lm import QRNN, QRNNLayer


class WeightDrop(nn.Module):
    """Written the way awd-lstm-lm's ``WeightDrop`` / fastai's ``WeightDropout`` are: the raw weight
    moves to the wrapper, and each forward sets a dropped copy on the wrapped Linear and calls it."""

    def __init__(self, module, p):
        super().__init__()
        self.module, self.p = module, p
        raw = module.weight
        del module._parameters["weight"]
        self.weight_raw = nn.Parameter(raw.detach().clone())
        self.last_weight = None

    def forward(self, *args):
        weight = F.dropout(self.weight_raw, self.p, self.training)
        self.last_weight = weight.detach()
        self.module.weight = weight  # a plain tensor attribute, recomputed every call
        return self.module.forward(*args)


def pair(window, reverse=False, p=0.5):
    """A plain layer and a copy whose linear is wrapped in WeightDrop (same raw weights)."""
    torch.manual_seed(window)
    plain = QRNNLayer(5, 6, window=window, reverse=reverse)
    wrapped = QRNNLayer(5, 6, window=window, reverse=reverse)
    wrapped.load_state_dict(plain.state_dict())
    wrapped.linear = WeightDrop(wrapped.linear, p)
    return plain, wrapped


@pytest.mark.parametrize("window,reverse", [(1, False), (2, False), (3, False), (2, True)])
def test_wrapped_linear_in_eval_equals_the_plain_layer(window, reverse):
    plain, wrapped = pair(window, reverse)
    plain.eval(), wrapped.eval()
    X, h0 = torch.randn(7, 3, 5), torch.randn(3, 6)
    expected, expected_state = plain(X, h0)
    output, state = wrapped(X, h0)
    torch.testing.assert_close(output, expected)
    torch.testing.assert_close(state, expected_state)


@pytest.mark.parametrize("window", [1, 2])
def test_wrapped_linear_drops_weights_in_training_and_gradients_reach_the_raw_weight(window):
    plain, wrapped = pair(window)
    X = torch.randn(7, 3, 5)
    output, _ = wrapped(X)
    dropped = wrapped.linear.last_weight
    assert (dropped == 0).any(), "dropout was not applied in training"
    with torch.no_grad():
        plain.linear.weight.copy_(dropped)  # the plain layer with the same dropped weight
    torch.testing.assert_close(output, plain(X)[0])
    output.square().sum().backward()
    grad = wrapped.linear.weight_raw.grad
    assert grad is not None and grad.abs().sum() > 0
    assert (grad[dropped == 0] == 0).all()  # dropped weights get no gradient
    assert wrapped.linear.module.bias.grad.abs().sum() > 0


def test_save_prev_x_carries_the_window_through_a_wrapped_linear():
    plain, wrapped = pair(3)
    plain.save_prev_x = wrapped.save_prev_x = True
    plain.eval(), wrapped.eval()
    X = torch.randn(9, 2, 5)
    for chunk in (X[:4], X[4:]):
        torch.testing.assert_close(wrapped(chunk)[0], plain(chunk)[0])


def test_plain_and_parametrized_linear_keep_the_fused_path(monkeypatch):
    calls = []
    real = qrnn_module.fused_layer
    monkeypatch.setattr(qrnn_module, "fused_layer", lambda *args: calls.append(1) or real(*args))
    layer = QRNNLayer(5, 6, window=2)
    layer(torch.randn(4, 2, 5))
    torch.nn.utils.parametrize.register_parametrization(layer.linear, "weight", nn.Dropout(0.3))
    layer(torch.randn(4, 2, 5))
    assert len(calls) == 2
    layer.linear = WeightDrop(nn.Linear(10, 18), 0.3)
    layer(torch.randn(4, 2, 5))
    assert len(calls) == 2  # the wrapper is called instead


def test_wrapped_linears_inside_a_qrnn_stack():
    qrnn = QRNN(5, 6, num_layers=2, window=2)
    for layer in qrnn.layers:
        layer.linear = WeightDrop(layer.linear, 0.2)
    output, hidden = qrnn(torch.randn(4, 3, 5))
    assert output.shape == (4, 3, 6) and hidden.shape == (2, 3, 6)


def test_a_linear_of_the_wrong_size_says_what_it_must_map():
    layer = QRNNLayer(5, 6, window=2)
    layer.linear = nn.Sequential(nn.Linear(10, 12))
    with pytest.raises(ValueError, match=r"linear must map \[T, B, window \* input_size = 10\] to \(4, 2, 18\), got \(4, 2, 12\)"):
        layer(torch.randn(4, 2, 5))
