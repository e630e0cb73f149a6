"""QRNN with nn.RNNBase's public surface: what code written for nn.GRU / nn.LSTM touches."""

import copy
import io

import pytest
import torch
from torch import nn

from qrnn_lm import QRNN, QRNNLayer
from qrnn_lm.config import UserError
from qrnn_lm.nn.rnn_compat import RNNCompatError

GRU_ATTRIBUTES = ["input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout", "bidirectional",
                  "proj_size"]
ARGS = dict(input_size=4, hidden_size=5, num_layers=2, bias=False, batch_first=True, dropout=0.25,
            bidirectional=True)


def test_gru_constructor_arguments_and_attributes_carry_over():
    gru, qrnn = nn.GRU(**ARGS), QRNN(**ARGS, device="cpu", dtype=torch.float64, proj_size=0, nonlinearity="tanh")
    for name in GRU_ATTRIBUTES:
        assert getattr(qrnn, name) == getattr(gru, name), name
    assert qrnn.mode == "QRNN" and gru.mode == "GRU"
    assert all(p.dtype == torch.float64 and p.device.type == "cpu" for p in qrnn.parameters())
    assert qrnn.extra_repr() == gru.extra_repr()  # "4, 5, num_layers=2, bias=False, batch_first=True, ..."
    assert QRNN(4, 5).extra_repr() == nn.GRU(4, 5).extra_repr() == "4, 5"


def test_meaningless_arguments_and_states_raise_one_line_naming_the_alternative():
    with pytest.raises(RNNCompatError, match=r"no projections .*use hidden_size=3"):
        QRNN(4, 5, proj_size=3)
    with pytest.raises(RNNCompatError, match="candidate activation is tanh.*nonlinearity='tanh'"):
        QRNN(4, 5, nonlinearity="relu")
    assert issubclass(RNNCompatError, UserError) and issubclass(RNNCompatError, ValueError)
    qrnn = QRNN(4, 5)
    with pytest.raises(ValueError, match=r"one tensor \(1, 2, 5\) like nn.GRU's, not nn.LSTM's \(h_0, c_0\)"):
        qrnn(torch.randn(3, 2, 4), (torch.zeros(1, 2, 5), torch.zeros(1, 2, 5)))


def test_hx_keyword_and_unbatched_input_as_in_gru():
    torch.manual_seed(0)
    for batch_first in (False, True):
        qrnn = QRNN(4, 5, num_layers=2, bidirectional=True, batch_first=batch_first)
        X, h0 = torch.randn(6, 4), torch.randn(4, 5)  # unbatched [T, I], [L*D, H]
        output, h_n = qrnn(X, hx=h0)
        gru_output, gru_h_n = nn.GRU(4, 5, num_layers=2, bidirectional=True, batch_first=batch_first)(X, h0)
        assert output.shape == gru_output.shape == (6, 10) and h_n.shape == gru_h_n.shape == (4, 5)
        batched = X.unsqueeze(0 if batch_first else 1)
        expected, expected_h_n = qrnn(batched, h0.unsqueeze(1))
        torch.testing.assert_close(output, expected.squeeze(0 if batch_first else 1))
        torch.testing.assert_close(h_n, expected_h_n.squeeze(1))
    with pytest.raises(ValueError, match="as hidden or as hx"):
        qrnn(X, h0, hx=h0)
    with pytest.raises(ValueError, match=r"unbatched 2-D input, hx must also be 2-D .* got \(4, 1, 5\)"):
        qrnn(X, h0.unsqueeze(1))


def test_flatten_parameters_is_a_no_op_and_all_weights_lists_each_layers_parameters():
    qrnn = QRNN(4, 5, num_layers=2, bidirectional=True)
    before = {k: v.clone() for k, v in qrnn.state_dict().items()}
    assert qrnn.flatten_parameters() is None
    assert all(torch.equal(v, before[k]) for k, v in qrnn.state_dict().items())
    assert len(qrnn.all_weights) == len(nn.GRU(4, 5, num_layers=2, bidirectional=True).all_weights) == 4
    for weights, layer in zip(qrnn.all_weights, qrnn.layers):
        assert weights[0] is layer.linear.weight and weights[1] is layer.linear.bias


def test_weight_ih_names_alias_the_gate_weights_and_hh_names_say_there_are_none():
    qrnn = QRNN(4, 5, num_layers=2, bidirectional=True)
    assert qrnn.weight_ih_l0 is qrnn.layers[0].linear.weight
    assert qrnn.weight_ih_l1_reverse is qrnn.layers[3].linear.weight
    assert qrnn.bias_ih_l1 is qrnn.layers[2].linear.bias
    assert qrnn.weight_ih_l0.shape == nn.GRU(4, 5).weight_ih_l0.shape  # [3*H, I] at window 1
    assert not hasattr(qrnn, "weight_hh_l0")
    with pytest.raises(AttributeError, match=r"no weight_hh_l0 \(hidden-to-hidden .*weight_ih_l0 = layers\[i\].linear.weight"):
        qrnn.weight_hh_l0
    with pytest.raises(AttributeError, match="has 2 layers"):
        qrnn.weight_ih_l2
    with pytest.raises(AttributeError, match="one direction"):
        QRNN(4, 5).weight_ih_l0_reverse
    with pytest.raises(AttributeError, match="no_such_thing"):
        qrnn.no_such_thing
    nn.init.orthogonal_(qrnn.weight_ih_l0)  # GRU-style initialisation code works on the alias


def test_reset_parameters_reinitialises_like_the_constructor_also_under_weight_drop():
    torch.manual_seed(0)
    qrnn = QRNN(4, 5, num_layers=2, window=2)
    with torch.no_grad():
        for p in qrnn.parameters():
            p.fill_(7.0)
    torch.nn.utils.parametrize.register_parametrization(qrnn.layers[1].linear, "weight", nn.Dropout(0.5))
    qrnn.reset_parameters()
    raw = [qrnn.layers[0].linear.weight, qrnn.layers[1].linear.parametrizations.weight.original]
    for weight, layer in zip(raw, qrnn.layers):
        bound = 1 / layer.linear.in_features ** 0.5
        assert weight.abs().max() <= bound and weight.std() > bound / 4
        assert layer.linear.bias.abs().max() <= bound


def test_argument_checks_behave_like_nn_rnnbase():
    gru, qrnn = nn.GRU(4, 5, num_layers=2), QRNN(4, 5, num_layers=2)
    X = torch.randn(3, 2, 4)
    assert qrnn.get_expected_hidden_size(X, None) == gru.get_expected_hidden_size(X, None) == (2, 2, 5)
    qrnn.check_forward_args(X, torch.zeros(2, 2, 5), None)
    for module in (gru, qrnn):
        with pytest.raises(RuntimeError, match=r"input.size\(-1\) must be equal to input_size. Expected 4, got 3"):
            module.check_input(torch.randn(3, 2, 3), None)
        with pytest.raises(RuntimeError, match=r"Expected hidden size \(2, 2, 5\), got \[2, 3, 5\]"):
            module.check_forward_args(X, torch.zeros(2, 3, 5), None)
    hidden, permutation = torch.randn(2, 3, 5), torch.tensor([2, 0, 1])
    torch.testing.assert_close(qrnn.permute_hidden(hidden, permutation), hidden[:, [2, 0, 1]])
    assert qrnn.permute_hidden(hidden, None) is hidden


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = QRNN(4, 5, num_layers=2, window=2)
        self.head = nn.Linear(5, 3)

    def forward(self, x, hidden=None):
        output, hidden = self.rnn(x, hidden)
        return self.head(output), hidden


def whole_model_round_trip(model):
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    with torch.serialization.safe_globals([Model, QRNN, QRNNLayer, nn.ModuleList, nn.Linear]):
        return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("convert,dtype", [
    (whole_model_round_trip, torch.float32),
    (copy.deepcopy, torch.float32),
    (lambda m: copy.deepcopy(m).half(), torch.float16),
    (lambda m: copy.deepcopy(m).bfloat16(), torch.bfloat16),
    (lambda m: copy.deepcopy(m).double(), torch.float64),
    (lambda m: copy.deepcopy(m).to(torch.device("cpu")), torch.float32),
    (lambda m: torch.compile(copy.deepcopy(m), backend="aot_eager", fullgraph=True), torch.float32),
    (lambda m: nn.DataParallel(m, dim=1), torch.float32),  # time-major: the batch is dim 1
], ids=["save-load", "deepcopy", "half", "bfloat16", "double", "to-device", "compile", "data-parallel"])
def test_whole_model_conversions_give_the_same_outputs(convert, dtype):
    torch.manual_seed(0)
    model = Model().eval()
    X, h0 = torch.randn(6, 3, 4), torch.randn(2, 3, 5)
    expected, expected_hidden = model(X, h0)
    converted = convert(model)
    output, hidden = converted(X.to(dtype), h0.to(dtype))
    assert output.dtype == hidden.dtype == dtype
    tolerance = {torch.float16: 1e-2, torch.bfloat16: 5e-2}.get(dtype, 1e-5)
    torch.testing.assert_close(output.float(), expected, atol=tolerance, rtol=tolerance)
    torch.testing.assert_close(hidden.float(), expected_hidden, atol=tolerance, rtol=tolerance)


def test_whole_model_load_names_a_missing_class_in_the_allow_list():
    buffer = io.BytesIO()
    torch.save(Model(), buffer)
    buffer.seek(0)
    with torch.serialization.safe_globals([Model, QRNN, nn.ModuleList, nn.Linear]):
        with pytest.raises(Exception, match="QRNNLayer"):
            torch.load(buffer, weights_only=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_to_cuda_and_data_parallel_on_gpus():
    torch.manual_seed(0)
    model = Model().eval()
    X, h0 = torch.randn(6, 4, 4), torch.randn(2, 4, 5)
    expected, _ = model(X, h0)
    for converted in (copy.deepcopy(model).to("cuda"), nn.DataParallel(copy.deepcopy(model).cuda(), dim=1)):
        output, hidden = converted(X.cuda(), h0.cuda())
        assert hidden.shape == (2, 4, 5)
        torch.testing.assert_close(output.cpu(), expected, atol=1e-4, rtol=1e-4)
