"""``qrnn-lm export``: writes the file, prints the signature, errors are one line with exit 1."""

import pytest
import torch
from typer.testing import CliRunner

from qrnn_lm.cli.commands import app
from qrnn_lm.config import Config, ModelConfig, config_to_dict
from qrnn_lm.models.checkpoint_file import load_checkpoint, model_from_checkpoint, save_checkpoint
from qrnn_lm.models.language_model import LanguageModel

pytestmark = pytest.mark.slow  # torch.export and ONNX exports: `pytest -m "not slow"` skips it

pytest.importorskip("onnxruntime", reason="pip install 'qrnn-lm[export]'")
runner = CliRunner()
WORDS = ["<eos>", "a", "b", "c", "d"]


def write_run(folder, rnn="qrnn"):
    torch.manual_seed(0)
    config = Config(name="unit", model=ModelConfig(rnn=rnn, emb_size=4, hidden_size=6, num_layers=2, first_window=2))
    model = LanguageModel(len(WORDS), config.model)
    save_checkpoint(folder / "best.pt", {"config": config_to_dict(config), "vocab": WORDS, "model": model.state_dict()})
    return folder


@pytest.fixture
def run_folder(tmp_path):
    return write_run(tmp_path)


def test_export_onnx_of_a_run_folder_prints_names_and_shapes(run_folder):
    out = run_folder / "lm.onnx"
    result = runner.invoke(app, ["export", str(run_folder), "--format", "onnx", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_file()
    assert "input  tokens             int64   [steps, batch]" in result.output
    assert "input  hidden_1           float32 [batch, 4]" in result.output
    assert "output logits             float32 [steps, batch, 5]" in result.output
    assert "output hidden_out_0       float32 [batch, 6]" in result.output


@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_export_of_an_lstm_model_prints_its_h_and_c_states(tmp_path, fmt):
    folder = write_run(tmp_path, rnn="lstm")
    out = folder / f"lm.{fmt}"
    result = runner.invoke(app, ["export", str(folder), "--format", fmt, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_file()
    assert "input  hidden_0           float32 [batch, 12]" in result.output  # h and c of 6 each
    assert "output hidden_out_1       float32 [batch, 8]" in result.output  # the last layer: emb_size 4


def test_export_pt2_fed_token_by_token_gives_the_model_s_logits(run_folder):
    out = run_folder / "lm.pt2"
    result = runner.invoke(app, ["export", str(run_folder / "best.pt"), "--format", "pt2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "input  kept_inputs_0      float32 [1, batch, 4]" in result.output  # the first layer's window 2
    program = torch.export.load(str(out)).module()
    model, _, _ = model_from_checkpoint(load_checkpoint(run_folder / "best.pt"), device="cpu")
    text = torch.randint(0, len(WORDS), (6, 2))
    state = [torch.zeros(2, 6), torch.zeros(2, 4), torch.zeros(1, 2, 4)]  # hidden_0, hidden_1, kept_inputs_0
    logits = []
    with torch.no_grad():
        for step in range(text.shape[0]):
            step_logits, *state = program(text[step:step + 1], *state)
            logits.append(step_logits)
        model.eval().reset()
        expected = model(text)[0]  # one forward over the whole text
    torch.testing.assert_close(torch.cat(logits), expected)


def test_export_of_a_missing_checkpoint_is_one_error_line(tmp_path):
    result = runner.invoke(app, ["export", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "x.onnx")])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
