"""Export: torch.export programs and ONNX files (run in onnxruntime) give the eager outputs for
several sequence lengths and batch sizes, for QRNN and LSTM language models; TorchScript is
refused with one clear line."""

import pytest
import torch

from qrnn_lm import QRNN
from qrnn_lm.config import Config, ModelConfig, UserError, config_to_dict
from qrnn_lm.inference.export import (
    LanguageModelForExport,
    export_checkpoint,
    export_onnx,
    export_program,
    forget_mult_as_scan,
)
from qrnn_lm.models.checkpoint_file import save_checkpoint
from qrnn_lm.models.language_model import LanguageModel
from qrnn_lm.nn.jit import TorchScriptUnsupported

pytestmark = pytest.mark.slow  # torch.export and ONNX exports: `pytest -m "not slow"` skips it

ort = pytest.importorskip("onnxruntime", reason="pip install 'qrnn-lm[export]'")
onnx = pytest.importorskip("onnx", reason="pip install 'qrnn-lm[export]'")

# (steps, batch) pairs the exported programs are run at, none of them the example's (3, 2).
SHAPES = [(1, 1), (7, 2), (12, 4)]
WORDS = ["<eos>", "the", "cat", "sat", "on", "mat", "a", "dog"]


def _qrnn(**kwargs):
    torch.manual_seed(0)
    return QRNN(5, 6, num_layers=2, window=2, **kwargs).eval()


RNNS = ["qrnn", "lstm"]


def _language_model(rnn="qrnn"):
    torch.manual_seed(0)
    config = ModelConfig(rnn=rnn, emb_size=6, hidden_size=8, num_layers=2, first_window=2, window=1, weight_drop=0.2)
    model = LanguageModel(len(WORDS), config).eval()
    with torch.no_grad():
        model.decoder.bias.normal_()
    return model


def _lm_inputs(model, steps, batch):
    tokens = torch.randint(0, len(WORDS), (steps, batch))
    return (tokens, *(torch.randn(batch, size) for size in model.state_sizes()))  # an LSTM's: h and c


def _eager(module, inputs):
    for layer in module.modules():
        if hasattr(layer, "prevX"):
            layer.reset()
    with torch.no_grad():
        out = module(*inputs)
    return [out[0], out[1]] if isinstance(module, QRNN) else list(out)


def test_scan_forget_mult_matches_the_op_both_directions():
    f, x, h0 = torch.rand(5, 2, 3), torch.randn(5, 2, 3), torch.randn(2, 3)
    for reverse in (False, True):
        expected = torch.ops.qrnn_lm.forget_mult(f, x, h0, None, reverse, "torch")
        torch.testing.assert_close(forget_mult_as_scan(f, x, h0, None, reverse, "auto"), expected)


@pytest.mark.parametrize("batch_first", [False, True])
def test_torch_export_of_qrnn_has_a_dynamic_length_and_batch(batch_first):
    model = _qrnn(batch_first=batch_first)
    example = torch.randn(2, 3, 5) if batch_first else torch.randn(3, 2, 5)
    program = export_program(model, (example, torch.zeros(2, 2, 6)))
    for steps, batch in SHAPES:
        X = torch.randn(batch, steps, 5) if batch_first else torch.randn(steps, batch, 5)
        inputs = (X, torch.randn(2, batch, 6))
        for got, expected in zip(program.module()(*inputs), _eager(model, inputs)):
            torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("rnn", RNNS)
def test_torch_export_of_the_language_model_keeps_its_modes_and_state(rnn):
    model = _language_model(rnn)
    model.layers[0].train()  # a mix of modes, which export must put back as it found them
    wrapper = LanguageModelForExport(model)
    program = export_program(wrapper, wrapper.example_inputs())
    assert model.layers[0].training and not model.decoder.training
    assert all(layer.save_prev_x for layer in model.layers) if rnn == "qrnn" else not hasattr(model.layers[0], "save_prev_x")
    model.eval()
    for steps, batch in SHAPES:
        inputs = _lm_inputs(model, steps, batch)
        for got, expected in zip(program.module()(*inputs), _eager(wrapper, inputs)):
            torch.testing.assert_close(got, expected)


def _has_only_standard_ops(proto):
    def nodes(graph):
        for node in graph.node:
            yield node
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    yield from nodes(attribute.g)
    all_nodes = list(nodes(proto.graph))
    return {node.domain for node in all_nodes} <= {"", "ai.onnx"}, {node.op_type for node in all_nodes}


def _run_onnx(path, names, inputs):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {name: tensor.numpy() for name, tensor in zip(names, inputs)})


def test_onnx_qrnn_uses_a_standard_scan_and_matches_eager(tmp_path):
    model = _qrnn()
    path = tmp_path / "qrnn.onnx"
    proto = export_onnx(model, (torch.randn(3, 2, 5), torch.zeros(2, 2, 6)), path,
                        input_names=["input", "h0"], output_names=["output", "h_n"])
    standard, op_types = _has_only_standard_ops(proto)
    assert standard and "Scan" in op_types and not proto.functions
    for steps, batch in SHAPES:
        inputs = (torch.randn(steps, batch, 5), torch.randn(2, batch, 6))
        for got, expected in zip(_run_onnx(path, ["input", "h0"], inputs), _eager(model, inputs)):
            torch.testing.assert_close(torch.from_numpy(got), expected, rtol=1e-5, atol=1e-5)


def _checkpoint(tmp_path, rnn="qrnn"):
    model = _language_model(rnn)
    config = Config(name="unit", model=model.config)
    payload = {"config": config_to_dict(config), "vocab": WORDS, "model": model.state_dict()}
    return model, save_checkpoint(tmp_path / "best.pt", payload)


@pytest.mark.parametrize("rnn", RNNS)
def test_onnx_of_a_checkpoint_matches_eager_with_named_dims(tmp_path, rnn):
    model, path = _checkpoint(tmp_path, rnn)
    out = tmp_path / "lm.onnx"
    signature = export_checkpoint(path, out, "onnx")
    names = [name for kind, name, _ in signature if kind == "input"]
    assert names == ["tokens", "hidden_0", "hidden_1"]
    hidden_shapes = [shape for kind, name, shape in signature if name.startswith("hidden")]
    states = [8, 6] if rnn == "qrnn" else [16, 12]  # an LSTM layer's state: h and c
    assert hidden_shapes == [["batch", size] for size in states * 2]
    proto = onnx.load(str(out))
    assert [value.name for value in proto.graph.input] == names
    assert [dim.dim_param for dim in proto.graph.input[0].type.tensor_type.shape.dim] == ["steps", "batch"]
    assert _has_only_standard_ops(proto)[0]
    wrapper = LanguageModelForExport(model)
    for steps, batch in SHAPES:
        inputs = _lm_inputs(model, steps, batch)
        for got, expected in zip(_run_onnx(out, names, inputs), _eager(wrapper, inputs)):
            torch.testing.assert_close(torch.from_numpy(got), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rnn", RNNS)
def test_pt2_of_a_checkpoint_loads_and_runs(tmp_path, rnn):
    model, path = _checkpoint(tmp_path, rnn)
    out = tmp_path / "lm.pt2"
    export_checkpoint(path, out, "pt2")
    program = torch.export.load(str(out))
    inputs = _lm_inputs(model, 4, 3)
    for got, expected in zip(program.module()(*inputs), _eager(LanguageModelForExport(model), inputs)):
        torch.testing.assert_close(got, expected)


def test_bad_export_requests_are_one_line_user_errors(tmp_path):
    _, path = _checkpoint(tmp_path)
    with pytest.raises(UserError, match="format must be one of onnx, pt2"):
        export_checkpoint(path, tmp_path / "x", "tflite")
    with pytest.raises(UserError, match="does not exist"):
        export_checkpoint(path, tmp_path / "missing" / "x.onnx", "onnx")


@pytest.mark.parametrize("how", ["trace", "script"])
@pytest.mark.parametrize("which", ["QRNN", "QRNNLayer"])
def test_torchscript_is_refused_with_one_line_naming_torch_export(how, which):
    model = _qrnn() if which == "QRNN" else _qrnn().layers[0]
    with pytest.raises(TorchScriptUnsupported, match="use torch.export") as caught:
        if how == "trace":
            torch.jit.trace(model, torch.randn(3, 2, 5))
        else:
            torch.jit.script(model)
    assert "\n" not in str(caught.value) and f"torch.jit.{how}" in str(caught.value)
    assert str(caught.value).startswith(f"{which}: ") or how == "trace"  # trace stops in the first layer
