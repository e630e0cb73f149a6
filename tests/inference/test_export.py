"""Export: torch.export programs and ONNX files (run in onnxruntime) give the eager outputs for
several sequence lengths and batch sizes, for QRNN and LSTM language models; an exported language
model fed token by token with its carried state gives one eager forward's logits; a plain
``torch.onnx.export`` works; TorchScript is refused with one clear line."""

import pytest
import torch

from qrnn_lm import QRNN
from qrnn_lm.config import Config, ModelConfig, UserError, config_to_dict
from qrnn_lm.inference.export import (
    LanguageModelForExport,
    export_checkpoint,
    export_onnx,
    export_program,
)
from qrnn_lm.models.checkpoint_file import save_checkpoint
from qrnn_lm.models.language_model import LanguageModel
from qrnn_lm.nn.jit import TorchScriptUnsupported
from qrnn_lm.ops.forget_mult.scan_form import forget_mult_as_scan

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
    """Random tokens, hidden states (an LSTM's: h and c) and kept window inputs."""
    tokens = torch.randint(0, len(WORDS), (steps, batch))
    kept = LanguageModelForExport(model).kept_input_shapes(batch)
    return (tokens, *(torch.randn(batch, size) for size in model.state_sizes()), *(torch.randn(shape) for shape in kept))


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
    kept = ["kept_inputs_0"] if rnn == "qrnn" else []  # the first layer's window 2 reads the last input
    assert names == ["tokens", "hidden_0", "hidden_1"] + kept
    hidden_shapes = [shape for kind, name, shape in signature if name.startswith("hidden")]
    states = [8, 6] if rnn == "qrnn" else [16, 12]  # an LSTM layer's state: h and c
    assert hidden_shapes == [["batch", size] for size in states * 2]
    assert [shape for kind, name, shape in signature if name.startswith("kept")] == [[1, "batch", 6]] * len(kept) * 2
    proto = onnx.load(str(out))
    assert [value.name for value in proto.graph.input] == names
    assert [dim.dim_param for dim in proto.graph.input[0].type.tensor_type.shape.dim] == ["steps", "batch"]
    assert _has_only_standard_ops(proto)[0]
    wrapper = LanguageModelForExport(model)
    for steps, batch in SHAPES:
        inputs = _lm_inputs(model, steps, batch)
        for got, expected in zip(_run_onnx(out, names, inputs), _eager(wrapper, inputs)):
            torch.testing.assert_close(torch.from_numpy(got), expected, rtol=1e-5, atol=1e-5)


# (model.rnn, window of every layer): windows 1, 2 and 3 of a QRNN, and an LSTM (no window).
STREAMED = [("qrnn", 1), ("qrnn", 2), ("qrnn", 3), ("lstm", None)]


def _streamed_checkpoint(tmp_path, rnn, window):
    """A checkpoint whose logits depend strongly on every input of a window (large embeddings)."""
    torch.manual_seed(0)
    windows = {} if rnn == "lstm" else {"first_window": window, "window": window}
    config = ModelConfig(rnn=rnn, emb_size=6, hidden_size=8, num_layers=2, weight_drop=0.2, **windows)
    model = LanguageModel(len(WORDS), config).eval()
    with torch.no_grad():
        model.embedding.weight.normal_(0, 2)
    payload = {"config": config_to_dict(Config(name="unit", model=config)), "vocab": WORDS, "model": model.state_dict()}
    return model, save_checkpoint(tmp_path / "best.pt", payload)


def feed_token_by_token(run, signature, text):
    """Feed ``text`` ``[T, B]`` one token at a time through ``run(inputs) -> outputs`` (lists of
    numpy arrays in the signature's order), carrying every state output to the next call from zeros.
    Returns each step's logits, ``[T, B, V]``."""
    import numpy as np

    batch = text.shape[1]
    states = [np.zeros([batch if dim == "batch" else dim for dim in shape], np.float32)
              for kind, name, shape in signature if kind == "input" and name != "tokens"]
    logits = []
    for step in range(text.shape[0]):
        outputs = run([text[step:step + 1].numpy(), *states])
        logits.append(torch.from_numpy(np.asarray(outputs[0])))  # [1, B, V]
        states = [np.asarray(output) for output in outputs[1:]]
    return torch.cat(logits)


def eager_logits(model, text):
    """One eager forward over the whole ``text`` from zero states and windows."""
    model.reset()
    with torch.no_grad():
        return model(text)[0]  # [T, B, V]


@pytest.mark.parametrize(("rnn", "window"), STREAMED)
@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_exported_model_fed_token_by_token_gives_one_forward_s_logits(tmp_path, fmt, rnn, window):
    model, path = _streamed_checkpoint(tmp_path, rnn, window)
    out = tmp_path / f"lm.{fmt}"
    signature = export_checkpoint(path, out, fmt)
    torch.manual_seed(1)
    text = torch.randint(0, len(WORDS), (9, 2))
    if fmt == "onnx":
        session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        names = [value.name for value in session.get_inputs()]
        run = lambda inputs: session.run(None, dict(zip(names, inputs)))  # noqa: E731
    else:
        program = torch.export.load(str(out)).module()
        run = lambda inputs: [t.detach().numpy() for t in program(*(torch.from_numpy(a) for a in inputs))]  # noqa: E731
    expected = eager_logits(model, text)
    torch.testing.assert_close(feed_token_by_token(run, signature, text), expected, rtol=1e-5, atol=1e-5)


def _steps_and_batch():
    return {0: torch.export.Dim("steps", min=1), 1: torch.export.Dim("batch", min=1)}


def test_plain_torch_onnx_export_of_a_qrnn_runs_in_onnxruntime(tmp_path):
    torch.manual_seed(0)
    model = QRNN(8, 16, num_layers=2, window=2).eval()
    path = tmp_path / "qrnn.onnx"
    torch.onnx.export(model, (torch.randn(5, 3, 8),), str(path), dynamo=True, dynamic_shapes=(_steps_and_batch(),),
                      input_names=["input"], verbose=False)
    for steps, batch in SHAPES:
        inputs = (torch.randn(steps, batch, 8),)
        for got, expected in zip(_run_onnx(path, ["input"], inputs), _eager(model, inputs)):
            torch.testing.assert_close(torch.from_numpy(got), expected, rtol=1e-5, atol=1e-5)


def test_plain_torch_onnx_export_of_the_language_model_ignores_its_saved_inputs(tmp_path):
    model = _language_model()  # first window 2: each layer saves its last input (save_prev_x)
    with torch.no_grad():
        model(torch.randint(0, len(WORDS), (4, 3)))  # fills the saved inputs of batch 3
    saved = model.layers[0].prevX
    path = tmp_path / "lm.onnx"
    torch.onnx.export(model, (torch.randint(0, len(WORDS), (3, 2)),), str(path), dynamo=True,
                      dynamic_shapes=(_steps_and_batch(),), input_names=["tokens"], verbose=False)
    assert model.layers[0].prevX is saved  # the eager model's stream goes on as it was
    for steps, batch in SHAPES:
        tokens = torch.randint(0, len(WORDS), (steps, batch))
        expected = eager_logits(model, tokens)  # from zero windows, as after reset()
        got = _run_onnx(path, ["tokens"], (tokens,))[0]
        torch.testing.assert_close(torch.from_numpy(got), expected, rtol=1e-5, atol=1e-5)


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
