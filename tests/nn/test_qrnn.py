"""QRNNLayer and QRNN: the original's API, parameter layout and outputs, chunked sequences, options.

Bidirectional and PackedSequence cases are in test_bidirectional_packed.py.
"""

import pytest
import torch

import qrnn_lm.nn.layer as qrnn_module
import qrnn_lm.nn.gates as gates_module
from qrnn_lm import QRNN, QRNNLayer
from test_transcription import original_layer, original_qrnn


def random_state_dict(num_layers, input_size, hidden_size, window, num_gates=3):
    """A state_dict with the original pytorch-qrnn key names and random values."""
    state = {}
    for i in range(num_layers):
        size_in = input_size if i == 0 else hidden_size
        state[f"layers.{i}.linear.weight"] = torch.randn(num_gates * hidden_size, window * size_in) * 0.5
        state[f"layers.{i}.linear.bias"] = torch.randn(num_gates * hidden_size) * 0.5
    return state


def test_constructor_defaults_and_parameter_layout_match_the_original():
    layer = QRNNLayer(5)
    assert (layer.hidden_size, layer.window, layer.zoneout, layer.save_prev_x) == (5, 1, 0, False)
    assert (layer.output_gate, layer.use_cuda, layer.prevX) == (True, True, None)
    layer = QRNNLayer(5, 7, window=3, output_gate=False)
    assert layer.linear.weight.shape == (2 * 7, 3 * 5)
    qrnn = QRNN(4, 6, num_layers=3, window=2)
    assert list(qrnn.state_dict()) == [f"layers.{i}.linear.{p}" for i in range(3) for p in ("weight", "bias")]
    assert qrnn.layers[0].linear.weight.shape == (18, 8)
    assert qrnn.layers[1].linear.weight.shape == (18, 12)  # later layers read the hidden_size outputs
    assert (qrnn.num_layers, qrnn.batch_first, qrnn.bidirectional, qrnn.dropout) == (3, False, False, 0)


@pytest.mark.parametrize("window,output_gate", [(1, True), (2, True), (2, False), (3, True)])
def test_original_checkpoint_loads_and_gives_the_original_outputs(window, output_gate):
    torch.manual_seed(window)
    num_gates = 3 if output_gate else 2
    state = random_state_dict(2, 6, 6, window, num_gates)
    qrnn = QRNN(6, 6, num_layers=2, window=window, output_gate=output_gate)
    qrnn.load_state_dict(state)  # strict: the key names and shapes must be the original's
    X, hidden = torch.randn(9, 3, 6), torch.randn(2, 3, 6)
    output, h_n = qrnn(X, hidden)
    expected, expected_h = original_qrnn(X, state, 2, hidden, window=window, output_gate=output_gate)
    torch.testing.assert_close(output, expected)
    torch.testing.assert_close(h_n, expected_h)


def test_zoneout_in_eval_scales_the_forget_gate_like_the_original():
    torch.manual_seed(1)
    state = random_state_dict(1, 4, 5, 2)
    qrnn = QRNN(4, 5, window=2, zoneout=0.3).eval()
    qrnn.load_state_dict(state)
    X = torch.randn(6, 2, 4)
    expected, _ = original_qrnn(X, state, 1, window=2, zoneout_eval=0.3)
    torch.testing.assert_close(qrnn(X)[0], expected)


@pytest.mark.parametrize("window", [2, 3])
@pytest.mark.parametrize("cuts", [(4,), (1, 2, 6)])
def test_chunks_with_save_prev_x_equal_the_whole_sequence(window, cuts):
    torch.manual_seed(window)
    qrnn = QRNN(4, 5, num_layers=2, window=window, save_prev_x=True)
    X = torch.randn(9, 3, 4)
    whole, whole_h = qrnn(X)
    qrnn.reset()
    outputs, hidden = [], None
    for start, stop in zip((0, *cuts), (*cuts, 9)):  # chunks shorter than the window included
        output, hidden = qrnn(X[start:stop], hidden)
        outputs.append(output)
    torch.testing.assert_close(torch.cat(outputs), whole)
    torch.testing.assert_close(hidden, whole_h)
    # Without reset() the next call sees the kept inputs; after reset() it starts from zeros again.
    assert not torch.allclose(qrnn(X)[0], whole)
    qrnn.reset()
    torch.testing.assert_close(qrnn(X)[0], whole)


def test_without_save_prev_x_earlier_inputs_are_zeros():
    torch.manual_seed(2)
    layer = QRNNLayer(3, 4, window=2)
    X = torch.randn(5, 2, 3)
    first = layer(X)[0]
    torch.testing.assert_close(layer(X)[0], first)  # nothing kept between calls
    expected, _ = original_layer(X, layer.linear.weight, layer.linear.bias, window=2)
    torch.testing.assert_close(first, expected)


def test_layer_hidden_accepts_the_original_and_the_returned_shape():
    torch.manual_seed(3)
    layer = QRNNLayer(3, 4)
    X, hidden = torch.randn(5, 2, 3), torch.randn(2, 4)
    H, h_n = layer(X, hidden)
    assert H.shape == (5, 2, 4) and h_n.shape == (1, 2, 4)
    torch.testing.assert_close(layer(X, hidden.unsqueeze(0))[0], H)
    assert not torch.allclose(layer(X)[0], H)  # the initial state is used


def test_batch_first_equals_the_transposed_run():
    torch.manual_seed(4)
    time_major = QRNN(4, 5, num_layers=2, window=2)
    batch_first = QRNN(4, 5, num_layers=2, window=2, batch_first=True)
    batch_first.load_state_dict(time_major.state_dict())
    X, hidden = torch.randn(6, 3, 4), torch.randn(2, 3, 5)
    expected, expected_h = time_major(X, hidden)
    output, h_n = batch_first(X.transpose(0, 1), hidden)
    assert output.shape == (3, 6, 5)
    torch.testing.assert_close(output, expected.transpose(0, 1))
    torch.testing.assert_close(h_n, expected_h)


def test_zoneout_in_training_keeps_the_previous_state_at_the_mask_rate():
    # F = 1 and Z = 0.5 everywhere, state 5 before: an element is 0.5 if updated, 5 if zoned out.
    layer = QRNNLayer(1, 64, zoneout=0.25, output_gate=False)
    with torch.no_grad():
        layer.linear.weight.zero_()
        layer.linear.bias[:64] = torch.atanh(torch.tensor(0.5))
        layer.linear.bias[64:] = 40.0  # sigmoid(40) == 1 in float32
    X, hidden = torch.zeros(1, 64, 1), torch.full((64, 64), 5.0)
    torch.manual_seed(5)
    first = layer(X, hidden)[0]
    kept = (first == 5.0).float().mean().item()
    assert abs(kept - 0.25) < 0.03  # 4096 Bernoulli draws: std 0.007
    assert ((first == 5.0) | torch.isclose(first, torch.tensor(0.5))).all()
    assert not torch.equal(layer(X, hidden)[0], first)  # a fresh mask every call
    layer.eval()
    torch.testing.assert_close(layer(X, hidden)[0], torch.full_like(first, 0.75 * 0.5 + 0.25 * 5.0))


def test_dropout_applies_between_layers_in_training_only():
    torch.manual_seed(6)
    plain = QRNN(4, 8, num_layers=2)
    dropped = QRNN(4, 8, num_layers=2, dropout=0.5)
    dropped.load_state_dict(plain.state_dict())
    X = torch.randn(5, 3, 4)
    torch.testing.assert_close(dropped.eval()(X)[0], plain(X)[0])
    assert not torch.allclose(dropped.train()(X)[0], plain(X)[0])
    # One layer: nothing is between layers, so training changes nothing.
    single, single_dropped = QRNN(4, 8), QRNN(4, 8, dropout=0.5)
    single_dropped.load_state_dict(single.state_dict())
    torch.testing.assert_close(single_dropped.train()(X)[0], single(X)[0])


def test_gradients_reach_every_parameter_the_input_and_the_initial_state():
    torch.manual_seed(7)
    qrnn = QRNN(3, 4, num_layers=2, window=2, bidirectional=True, zoneout=0.1, dropout=0.1)
    X = torch.randn(5, 2, 3, requires_grad=True)
    hidden = torch.randn(4, 2, 4, requires_grad=True)
    output, h_n = qrnn(X, hidden)
    (output.square().sum() + h_n.sum()).backward()
    for name, parameter in qrnn.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
        assert torch.isfinite(parameter.grad).all(), name
    assert X.grad.abs().sum() > 0 and hidden.grad.abs().sum() > 0


def test_bias_false_builds_layers_without_bias():
    qrnn = QRNN(3, 4, num_layers=2, bias=False, window=2)
    assert list(qrnn.state_dict()) == ["layers.0.linear.weight", "layers.1.linear.weight"]
    X = torch.randn(5, 2, 3)
    expected, _ = original_layer(X, qrnn.layers[0].linear.weight, None, window=2)
    torch.testing.assert_close(qrnn.layers[0](X)[0], expected)


def test_use_cuda_false_forces_the_torch_backend(monkeypatch):
    backends, fused_calls = [], []
    real_forget_mult, real_fused = gates_module.forget_mult, qrnn_module.fused_layer
    monkeypatch.setattr(gates_module, "forget_mult",
                        lambda *a, **k: backends.append(k["backend"]) or real_forget_mult(*a, **k))
    monkeypatch.setattr(qrnn_module, "fused_layer", lambda *a: fused_calls.append(1) or real_fused(*a))
    X = torch.randn(3, 2, 4)
    QRNN(4, 4, use_cuda=False)(X)  # the original's CPU fallback: the torch loop, never the fused path
    QRNN(4, 4)(X)  # float32 on CPU: the fused path
    QRNN(4, 4).double()(X.double())  # float64: unfused, numba ForgetMult
    assert backends == ["torch", "auto"] and fused_calls == [1]


def test_layers_argument_stacks_prebuilt_layers():
    layers = [QRNNLayer(3, 5, window=2), QRNNLayer(5, 5, output_gate=False)]
    qrnn = QRNN(3, 5, layers=layers)
    assert qrnn.num_layers == 2 and qrnn.layers[1] is layers[1]
    output, h_n = qrnn(torch.randn(4, 2, 3))
    assert output.shape == (4, 2, 5) and h_n.shape == (2, 2, 5)


def test_autocast_runs_the_projection_in_the_autocast_dtype():
    torch.manual_seed(8)
    qrnn = QRNN(8, 8, num_layers=2, window=2)
    X = torch.randn(5, 2, 8)
    expected = qrnn(X)[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = qrnn(X)[0]
    assert output.dtype == torch.bfloat16
    torch.testing.assert_close(output.float(), expected, atol=0.05, rtol=0.05)


def test_save_prev_x_with_a_different_batch_size_says_to_call_reset():
    qrnn = QRNN(3, 4, window=2, save_prev_x=True)
    qrnn(torch.randn(5, 2, 3))
    with pytest.raises(ValueError, match=r"batch size 2 but got batch size 3; call reset\(\)"):
        qrnn(torch.randn(5, 3, 3))
    qrnn.reset()
    assert qrnn(torch.randn(5, 3, 3))[0].shape == (5, 3, 4)


@pytest.mark.parametrize("make_call,message", [
    # 2-D input is nn.GRU's unbatched [T, input_size] (tests/nn/test_rnn_compat.py); 4-D is an error.
    (lambda q: q(torch.randn(5, 3, 2, 1)), r"shape \[T, B, input_size\] \(or unbatched \[T, input_size\]\), got \(5, 3, 2, 1\)"),
    (lambda q: q(torch.randn(5, 2, 4)), r"got shape \(5, 2, 4\)"),
    (lambda q: q(torch.ones(5, 2, 3, dtype=torch.long)), "floating point tensor, got torch.int64"),
    (lambda q: q(torch.randn(5, 2, 3, dtype=torch.float64)), "match the parameters' torch.float32, got torch.float64"),
    (lambda q: q(torch.randn(5, 2, 3), torch.zeros(2, 4)), r"\(2, 2, 4\), got \(2, 4\)"),
    (lambda q: q(torch.randn(5, 2, 3), torch.zeros(2, 3, 4)), r"\(2, 2, 4\), got \(2, 3, 4\)"),
])
def test_bad_inputs_raise_value_errors_naming_expected_and_actual(make_call, message):
    with pytest.raises(ValueError, match=message):
        make_call(QRNN(3, 4, num_layers=2))


def test_bad_layer_arguments_raise_value_errors():
    with pytest.raises(ValueError, match="window must be an integer >= 1, got 0"):
        QRNNLayer(3, window=0)
    with pytest.raises(ValueError, match=r"zoneout must lie in \[0, 1\), got 1"):
        QRNNLayer(3, zoneout=1)
    with pytest.raises(ValueError, match=r"hidden must have shape \[B, hidden_size\] = \(2, 3\), got \(3, 3\)"):
        QRNNLayer(3)(torch.randn(4, 2, 3), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="save_prev_x=True needs a forward layer"):
        QRNNLayer(3, window=2, save_prev_x=True, reverse=True)


@pytest.mark.parametrize("window,reverse,seq_len", [(2, False, 5), (3, False, 2), (3, True, 5), (4, True, 2)])
def test_gradients_equal_those_of_the_concatenated_window(window, reverse, seq_len):
    """The per-block projection's own backward against autograd through cat + Linear."""
    torch.manual_seed(window)
    layer = QRNNLayer(3, 4, window=window, reverse=reverse)
    X, hidden = torch.randn(seq_len, 2, 3, requires_grad=True), torch.randn(2, 4, requires_grad=True)
    upstream = torch.randn(seq_len, 2, 4)
    output, h_n = layer(X, hidden)
    ours = torch.autograd.grad((output * upstream).sum() + h_n.sum(), (X, hidden, *layer.parameters()))
    weight, bias = (p.detach().requires_grad_() for p in (layer.linear.weight, layer.linear.bias))
    output, h_n = original_layer(X, weight, bias, hidden, window=window, reverse=reverse)
    expected = torch.autograd.grad((output * upstream).sum() + h_n.sum(), (X, hidden, weight, bias))
    for got, want in zip(ours, expected):
        torch.testing.assert_close(got, want)


def test_gradients_with_inputs_kept_from_the_previous_chunk():
    """A chunk shorter than the window: the kept inputs feed W's gradient but get none themselves."""
    torch.manual_seed(9)
    layer = QRNNLayer(3, 4, window=4, save_prev_x=True).double()
    first, second = torch.randn(5, 2, 3, dtype=torch.float64), torch.randn(2, 2, 3, dtype=torch.float64)
    layer(first)
    kept = layer.prevX.clone()
    assert torch.equal(kept, first[-3:]) and not kept.requires_grad

    def run(X, weight, bias):
        layer.prevX = kept
        return torch.func.functional_call(layer, {"linear.weight": weight, "linear.bias": bias}, (X,))[0]

    weight, bias = layer.linear.weight.detach().clone(), layer.linear.bias.detach().clone()
    inputs = (second.requires_grad_(), weight.requires_grad_(), bias.requires_grad_())
    assert torch.autograd.gradcheck(lambda X, w, b: run(X, w, b), inputs)
    expected, _ = original_layer(second, weight, bias, window=4, prev=kept)
    torch.testing.assert_close(run(second, weight, bias), expected)


def test_a_weight_parametrization_runs_once_per_call():
    """Weight drop (the language model's DropConnect) must draw one mask per call, not one per read."""
    calls = []

    class CountReads(torch.nn.Module):
        def forward(self, weight):
            calls.append(1)
            return weight

    layer = QRNNLayer(3, 4, window=3)
    torch.nn.utils.parametrize.register_parametrization(layer.linear, "weight", CountReads())
    calls.clear()
    layer(torch.randn(5, 2, 3))
    assert len(calls) == 1


@pytest.mark.parametrize("window", [1, 2])
def test_backward_under_autocast_gives_float32_parameter_gradients(window):
    torch.manual_seed(10)
    qrnn = QRNN(8, 8, num_layers=2, window=window, save_prev_x=True)
    X = torch.randn(5, 2, 8, requires_grad=True)
    for _ in range(2):  # the second call also uses the kept inputs
        with torch.autocast("cpu", dtype=torch.bfloat16):
            output, _ = qrnn(X)
        output.float().square().sum().backward()
    for name, parameter in qrnn.named_parameters():
        assert parameter.grad.dtype == torch.float32 and parameter.grad.abs().sum() > 0, name
    assert X.grad.dtype == torch.float32
