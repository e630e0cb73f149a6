"""Code written for nn.GRU runs unchanged with QRNN in its place (the class name swapped)."""

import sys
import types
from pathlib import Path

import pytest

from qrnn_lm import QRNN

CLIENT = (Path(__file__).parent / "word_language_model_client.py").read_text(encoding="utf-8")


def run_client(source, name, tmp_path, monkeypatch):
    """Run ``source`` as an importable module (pickle finds classes by module and name)."""
    module = types.ModuleType(name)
    monkeypatch.setitem(sys.modules, name, module)
    exec(compile(source, f"{name}.py", "exec"), module.__dict__)
    return module.main(tmp_path / "model.pt")


@pytest.mark.parametrize("name", ["GRU", "QRNN"])
def test_word_language_model_client_trains_saves_reloads_evaluates_and_generates(name, tmp_path, monkeypatch):
    assert CLIENT.count("nn.GRU(") == 1
    source = CLIENT if name == "GRU" else CLIENT.replace("nn.GRU(", "QRNN(")
    result = run_client(source, f"word_language_model_client_{name}", tmp_path, monkeypatch)
    assert type(result["model"].rnn).__name__ == name
    if name == "QRNN":
        assert isinstance(result["model"].rnn, QRNN)
    # It learns: the validation loss falls well below the uniform guess it starts near.
    assert result["val_loss_before"] > 0.9 * result["uniform_loss"]
    assert result["val_loss_after"] < 0.25 * result["val_loss_before"], (result["val_loss_before"], result["val_loss_after"])
    assert len(result["words"]) == 20
