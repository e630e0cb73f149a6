"""The QRNN layer's fused CPU path (``qrnn_lm::qrnn_gates``) against its unfused path (torch
activations + ForgetMult), outputs and all gradients, over the layer's options.

``QRNN_LM_QRNN_GATES`` selects the path (``fused`` or the default ``unfused``); both run on the same parameters, inputs
and RNG state, so zoneout masks in training are the same draws.
"""

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

from qrnn_lm import QRNN, QRNNLayer
from qrnn_lm import qrnn_gates as gates_module


def run_both(monkeypatch, make_module, make_inputs, seed=0):
    """(fused results, unfused results): outputs, final states and every gradient."""
    results = []
    for choice in ("fused", "unfused"):
        monkeypatch.setenv(gates_module.ENV_GATES, choice)
        torch.manual_seed(seed)
        module = make_module()
        inputs = make_inputs()
        torch.manual_seed(seed + 1)  # the zoneout masks
        output, h_n = module(*inputs)
        data = output.data if hasattr(output, "batch_sizes") else output
        upstream = torch.randn(data.shape, generator=torch.Generator().manual_seed(5))
        leaves = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
        grads = torch.autograd.grad((data * upstream).sum() + h_n.square().sum(), [*leaves, *module.parameters()])
        results.append((data.detach(), h_n.detach(), *grads))
    return results


def assert_all_close(fused, unfused):
    assert len(fused) == len(unfused)
    for index, (got, want) in enumerate(zip(fused, unfused)):
        torch.testing.assert_close(got, want, atol=2e-5, rtol=2e-5, msg=f"item {index}")


@pytest.mark.parametrize("window", [1, 2])
@pytest.mark.parametrize("output_gate", [True, False], ids=["fo", "f"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("zoneout,training", [(0.0, True), (0.3, False), (0.3, True)],
                         ids=["no-zoneout", "zoneout-eval", "zoneout-train"])
def test_layer_fused_equals_unfused(window, output_gate, reverse, zoneout, training, monkeypatch):
    def make_module():
        layer = QRNNLayer(5, 7, window=window, output_gate=output_gate, zoneout=zoneout, reverse=reverse)
        return layer.train(training)

    def make_inputs():
        return torch.randn(6, 3, 5, requires_grad=True), torch.randn(3, 7, requires_grad=True)

    assert_all_close(*run_both(monkeypatch, make_module, make_inputs))


@pytest.mark.parametrize("window", [1, 2])
def test_packed_bidirectional_stack_fused_equals_unfused(window, monkeypatch):
    lengths = torch.tensor([6, 2, 4, 1])

    def make_module():
        return QRNN(5, 6, num_layers=2, window=window, bidirectional=True, zoneout=0.2).eval()

    def make_inputs():
        X = torch.randn(6, 4, 5, requires_grad=True)
        return pack_padded_sequence(X, lengths, enforce_sorted=False), torch.randn(4, 4, 6, requires_grad=True)

    fused, unfused = run_both(monkeypatch, make_module, make_inputs)
    assert_all_close(fused, unfused)


def test_chunks_with_save_prev_x_fused_equals_unfused(monkeypatch):
    results = []
    for choice in ("fused", "unfused"):
        monkeypatch.setenv(gates_module.ENV_GATES, choice)
        torch.manual_seed(3)
        qrnn = QRNN(4, 5, num_layers=2, window=2, save_prev_x=True)
        X = torch.randn(9, 3, 4, requires_grad=True)
        first, hidden = qrnn(X[:4])
        second, hidden = qrnn(X[4:], hidden)
        loss = first.square().sum() + second.sum() + hidden.sum()
        results.append((first, second, hidden, *torch.autograd.grad(loss, [X, *qrnn.parameters()])))
    assert_all_close(*results)


def test_the_path_is_chosen_by_size_or_by_the_environment(monkeypatch):
    small, large = torch.randn(3, 2, 4), torch.empty(64, 256, 1)
    hidden_size = gates_module.FUSED_MIN_ELEMENTS // (64 * 256)
    assert not gates_module.use_fused(small, 5, use_cuda=True)  # auto: small layers stay unfused
    assert gates_module.use_fused(large, hidden_size, use_cuda=True)
    assert not gates_module.use_fused(large, hidden_size, use_cuda=False)  # use_cuda=False: the torch loop
    monkeypatch.setenv(gates_module.ENV_GATES, "fused")
    assert gates_module.use_fused(small, 5, use_cuda=True)
    monkeypatch.setenv(gates_module.ENV_GATES, "unfused")
    assert not gates_module.use_fused(large, hidden_size, use_cuda=True)
    monkeypatch.setenv(gates_module.ENV_GATES, "fast")
    with pytest.raises(ValueError, match="must be 'auto', 'fused' or 'unfused', got 'fast'"):
        gates_module.use_fused(small, 5, use_cuda=True)
