"""``qrnn-lm export``: writes the file, prints the signature, errors are one line with exit 1."""

import pytest
import torch
from typer.testing import CliRunner

from qrnn_lm.cli.commands import app
from qrnn_lm.config import Config, ModelConfig, config_to_dict
from qrnn_lm.models.checkpoint_file import save_checkpoint
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
    assert "input  tokens         int64   [steps, batch]" in result.output
    assert "input  hidden_1       float32 [batch, 4]" in result.output
    assert "output logits         float32 [steps, batch, 5]" in result.output
    assert "output hidden_out_0   float32 [batch, 6]" in result.output


@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_export_of_an_lstm_model_prints_its_h_and_c_states(tmp_path, fmt):
    folder = write_run(tmp_path, rnn="lstm")
    out = folder / f"lm.{fmt}"
    result = runner.invoke(app, ["export", str(folder), "--format", fmt, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_file()
    assert "input  hidden_0       float32 [batch, 12]" in result.output  # h and c of 6 each
    assert "output hidden_out_1   float32 [batch, 8]" in result.output  # the last layer: emb_size 4


def test_export_pt2(run_folder):
    out = run_folder / "lm.pt2"
    result = runner.invoke(app, ["export", str(run_folder / "best.pt"), "--format", "pt2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert torch.export.load(str(out)).module() is not None


def test_export_of_a_missing_checkpoint_is_one_error_line(tmp_path):
    result = runner.invoke(app, ["export", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "x.onnx")])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
