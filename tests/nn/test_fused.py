"""The QRNN layer's fused CPU path (``ops.qrnn_chunk.fused.fused_layer``: products, activations, recurrence
and output gate chunk by chunk) against its unfused path (``nn.window.project``, torch
activations, the ForgetMult op), outputs and all gradients, over the layer's options.

``QRNN_LM_QRNN_GATES`` selects the path (``auto`` takes the fused one on CPU float32, ``unfused``
the other); both run on the same parameters, inputs and RNG state, so zoneout masks in training
are the same draws. ``CHUNK_ROWS`` is made tiny (and the weight-size floor on chunk rows is lifted) so that windows and
states cross chunk edges.
"""

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import qrnn_lm.nn.layer as qrnn_module
from qrnn_lm import QRNN, QRNNLayer
from qrnn_lm.ops.qrnn_chunk import fused as qrnn_fused
from qrnn_lm.nn import gates as gates_module


def run_both(monkeypatch, make_module, make_inputs, chunk_rows=qrnn_fused.CHUNK_ROWS, seed=0, grad=True):
    """(fused results, unfused results): outputs, final states and every gradient. Fails unless
    the fused path really ran for the first and not for the second."""
    monkeypatch.setattr(qrnn_fused, "CHUNK_ROWS", chunk_rows)
    monkeypatch.setattr(qrnn_fused, "ROWS_PER_WEIGHT_COLUMN", 0)  # chunks as small as asked
    calls = []
    monkeypatch.setattr(qrnn_module, "fused_layer", lambda *a: calls.append(1) or qrnn_fused.fused_layer(*a))
    # Uninitialised memory reads as NaN, so a buffer read before it is written cannot pass by luck.
    new_empty = torch.Tensor.new_empty
    monkeypatch.setattr(torch.Tensor, "new_empty", lambda self, *a, **k: new_empty(self, *a, **k).fill_(float("nan")))
    results = []
    for choice in ("auto", "unfused"):
        monkeypatch.setenv(gates_module.ENV_GATES, choice)
        calls.clear()
        torch.manual_seed(seed)
        module = make_module()
        inputs = make_inputs()
        torch.manual_seed(seed + 1)  # the zoneout masks
        with torch.set_grad_enabled(grad):
            output, h_n = module(*inputs)
        assert bool(calls) == (choice == "auto"), f"{choice}: fused path calls {len(calls)}"
        data = output.data if hasattr(output, "batch_sizes") else output
        if not grad:
            results.append((data, h_n))
            continue
        upstream = torch.randn(data.shape, generator=torch.Generator().manual_seed(5))
        leaves = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
        grads = torch.autograd.grad((data * upstream).sum() + h_n.square().sum(), [*leaves, *module.parameters()])
        results.append((data.detach(), h_n.detach(), *grads))
    return results


def assert_all_close(fused, unfused):
    assert len(fused) == len(unfused)
    for index, (got, want) in enumerate(zip(fused, unfused)):
        torch.testing.assert_close(got, want, atol=2e-5, rtol=2e-5, msg=f"item {index}")


@pytest.mark.parametrize("chunk_rows", [3, 6, 512], ids=["1-step-chunks", "2-step-chunks", "one-chunk"])
@pytest.mark.parametrize("window", [1, 2, 3])
@pytest.mark.parametrize("output_gate", [True, False], ids=["fo", "f"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("zoneout,training", [(0.0, True), (0.3, False), (0.3, True)],
                         ids=["no-zoneout", "zoneout-eval", "zoneout-train"])
def test_layer_fused_equals_unfused(chunk_rows, window, output_gate, reverse, zoneout, training, monkeypatch):
    def make_module():
        layer = QRNNLayer(5, 7, window=window, output_gate=output_gate, zoneout=zoneout, reverse=reverse)
        return layer.train(training)

    def make_inputs():
        return torch.randn(7, 3, 5, requires_grad=True), torch.randn(3, 7, requires_grad=True)

    assert_all_close(*run_both(monkeypatch, make_module, make_inputs, chunk_rows))


@pytest.mark.parametrize("seq_len", [1, 2])
def test_sequence_shorter_than_the_window_fused_equals_unfused(seq_len, monkeypatch):
    """Window blocks whose inputs all lie before the sequence (zeros) get a zero weight gradient."""
    assert_all_close(*run_both(monkeypatch, lambda: QRNNLayer(4, 6, window=3),
                               lambda: (torch.randn(seq_len, 2, 4, requires_grad=True),)))


@pytest.mark.parametrize("window", [1, 2])
def test_layer_without_bias_or_h0_fused_equals_unfused(window, monkeypatch):
    assert_all_close(*run_both(monkeypatch, lambda: QRNNLayer(4, 6, window=window, bias=False),
                               lambda: (torch.randn(5, 2, 4, requires_grad=True),), chunk_rows=4))


@pytest.mark.parametrize("chunk_rows", [4, 512])
@pytest.mark.parametrize("window", [1, 2, 3])
def test_packed_bidirectional_stack_fused_equals_unfused(chunk_rows, window, monkeypatch):
    lengths = torch.tensor([6, 2, 4, 1])

    def make_module():
        return QRNN(5, 6, num_layers=2, window=window, bidirectional=True, zoneout=0.2).train()

    def make_inputs():
        X = torch.randn(6, 4, 5, requires_grad=True)
        return pack_padded_sequence(X, lengths, enforce_sorted=False), torch.randn(4, 4, 6, requires_grad=True)

    assert_all_close(*run_both(monkeypatch, make_module, make_inputs, chunk_rows))


@pytest.mark.parametrize("window", [1, 2, 3])
def test_inference_without_grad_fused_equals_unfused(window, monkeypatch):
    # Under no_grad the fused path keeps nothing and reuses one chunk buffer.
    make_inputs = lambda: (torch.randn(9, 3, 5), torch.randn(3, 6))  # noqa: E731
    for output_gate in (True, False):
        make_module = lambda: QRNNLayer(5, 6, window=window, output_gate=output_gate).eval()  # noqa: E731
        assert_all_close(*run_both(monkeypatch, make_module, make_inputs, chunk_rows=6, grad=False))


@pytest.mark.parametrize("chunk_rows", [3, 512])
def test_chunks_with_save_prev_x_fused_equals_unfused(chunk_rows, monkeypatch):
    def make_module():
        return QRNN(4, 5, num_layers=2, window=3, save_prev_x=True)

    def make_inputs():
        return (torch.randn(9, 3, 4, requires_grad=True),)

    class TwoCalls(torch.nn.Module):
        """Feeds the sequence in two calls, as BPTT does; returns the second call's results."""

        def __init__(self):
            super().__init__()
            self.qrnn = make_module()

        def forward(self, X):
            first, hidden = self.qrnn(X[:4])
            second, hidden = self.qrnn(X[4:], hidden)
            return torch.cat([first, second]), hidden

    assert_all_close(*run_both(monkeypatch, TwoCalls, make_inputs, chunk_rows))


def test_the_path_is_chosen_by_device_dtype_and_environment(monkeypatch):
    X, weight = torch.randn(3, 2, 4), torch.randn(15, 4)
    assert gates_module.use_fused(X, weight, use_cuda=True)
    assert not gates_module.use_fused(X, weight, use_cuda=False)  # use_cuda=False: the plain torch loop
    assert not gates_module.use_fused(X.double(), weight.double(), use_cuda=True)  # float32 only
    assert not gates_module.use_fused(torch.empty(0, 2, 4), weight, use_cuda=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not gates_module.use_fused(X, weight, use_cuda=True)
    monkeypatch.setenv(gates_module.ENV_GATES, "unfused")
    assert not gates_module.use_fused(X, weight, use_cuda=True)
    monkeypatch.setenv(gates_module.ENV_GATES, "fast")
    with pytest.raises(ValueError, match="must be 'auto' or 'unfused', got 'fast'"):
        gates_module.use_fused(X, weight, use_cuda=True)


def test_torch_compile_traces_the_unfused_path_and_matches_eager():
    # numba calls cannot be traced: under torch.compile the layer takes the unfused path, whose
    # ForgetMult is a registered operator, so even fullgraph compiles.
    torch.manual_seed(0)
    qrnn = QRNN(8, 16, num_layers=2, window=2)
    X = torch.randn(5, 3, 8, requires_grad=True)
    results = []
    for module in (qrnn, torch.compile(qrnn, backend="aot_eager", fullgraph=True)):
        output, h_n = module(X)
        grads = torch.autograd.grad(output.square().sum() + h_n.sum(), [X, *qrnn.parameters()])
        results.append((output.detach(), h_n.detach(), *grads))
    assert_all_close(*results)


def test_second_derivatives_raise_instead_of_being_wrong():
    layer = QRNNLayer(3, 4)
    X = torch.randn(5, 2, 3, requires_grad=True)
    (grad,) = torch.autograd.grad(layer(X)[0].sum(), X, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|does not require grad"):
        torch.autograd.grad(grad.sum(), X)
