"""``qrnn-lm export``: writes the file, prints the signature, errors are one line with exit 1."""

import pytest
import torch
from typer.testing import CliRunner

from qrnn_lm.cli.commands import app
from qrnn_lm.config import Config, ModelConfig, config_to_dict
from qrnn_lm.models.checkpoint import save_checkpoint
from qrnn_lm.models.language_model import QRNNLanguageModel

pytest.importorskip("onnxruntime", reason="pip install 'qrnn-lm[export]'")
runner = CliRunner()
WORDS = ["<eos>", "a", "b", "c", "d"]


@pytest.fixture
def run_folder(tmp_path):
    torch.manual_seed(0)
    config = Config(name="unit", model=ModelConfig(emb_size=4, hidden_size=6, num_layers=2, first_window=2))
    model = QRNNLanguageModel(len(WORDS), config.model)
    save_checkpoint(tmp_path / "best.pt", {"config": config_to_dict(config), "vocab": WORDS, "model": model.state_dict()})
    return tmp_path


def test_export_onnx_of_a_run_folder_prints_names_and_shapes(run_folder):
    out = run_folder / "lm.onnx"
    result = runner.invoke(app, ["export", str(run_folder), "--format", "onnx", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_file()
    assert "input  tokens         int64   [steps, batch]" in result.output
    assert "input  hidden_1       float32 [batch, 4]" in result.output
    assert "output logits         float32 [steps, batch, 5]" in result.output
    assert "output hidden_out_0   float32 [batch, 6]" in result.output


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
