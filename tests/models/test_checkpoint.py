"""Checkpoints: round trip, atomic writes, and one-line CheckpointErrors for bad files."""

import os
import pickle
from pathlib import Path

import pytest
import torch

import qrnn_lm.models.checkpoint_file as checkpoint
from qrnn_lm.models.checkpoint_file import (
    FORMAT_VERSION,
    CheckpointError,
    clean_state_dict,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from qrnn_lm.config import Config, ModelConfig, UserError, config_to_dict
from qrnn_lm.models import LanguageModel, LSTMLayer
from qrnn_lm.nn import QRNNLayer

WORDS = ["<eos>", "<unk>", "the", "cat", "sat", "on", "mat", "dog"]


def make_payload(seed=0, rnn="qrnn"):
    torch.manual_seed(seed)
    config = Config(name="unit", model=ModelConfig(rnn=rnn, emb_size=6, hidden_size=10, num_layers=2, weight_drop=0.2))
    model = LanguageModel(len(WORDS), config.model)
    with torch.no_grad():
        model.decoder.bias.normal_()  # not all-zero, so a lost bias would show
    return model, {"config": config_to_dict(config), "vocab": list(WORDS), "model": model.state_dict()}


@pytest.mark.parametrize("rnn", ["qrnn", "lstm"])
def test_round_trip_gives_identical_logits(tmp_path, rnn):
    model, payload = make_payload(rnn=rnn)
    path = save_checkpoint(tmp_path / "a.pt", payload)
    loaded = load_checkpoint(path)
    assert loaded["format_version"] == FORMAT_VERSION
    assert loaded["config"]["model"]["rnn"] == rnn  # the layer type travels in the stored config
    restored, vocab, config = model_from_checkpoint(loaded)
    assert vocab.to_list() == WORDS and config.model.hidden_size == 10 and config.model.rnn == rnn
    assert all(type(layer) is (LSTMLayer if rnn == "lstm" else QRNNLayer) for layer in restored.layers)
    assert not restored.training
    assert restored.decoder.weight is restored.embedding.weight  # still tied after loading
    ids = torch.tensor([[2, 3], [4, 5], [6, 7], [0, 1]])
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(ids)[0], restored(ids)[0])


def test_a_checkpoint_from_before_model_rnn_loads_as_a_qrnn(tmp_path):
    model, payload = make_payload()
    del payload["config"]["model"]["rnn"]  # written before the key existed
    restored, _, config = model_from_checkpoint(load_checkpoint(save_checkpoint(tmp_path / "old.pt", payload)))
    assert config.model.rnn == "qrnn" and all(type(layer) is QRNNLayer for layer in restored.layers)
    assert torch.equal(restored.decoder.bias, model.decoder.bias)


def test_wrapper_prefixes_are_stripped(tmp_path):
    model, payload = make_payload()
    payload["model"] = {f"module._orig_mod.{key}": value for key, value in model.state_dict().items()}
    assert set(clean_state_dict(payload["model"])) == set(model.state_dict())
    restored, _, _ = model_from_checkpoint(load_checkpoint(save_checkpoint(tmp_path / "p.pt", payload)))
    assert torch.equal(restored.decoder.bias, model.decoder.bias)


def test_atomic_write_keeps_the_old_file_and_leaves_no_partial_file(tmp_path, monkeypatch):
    _, payload = make_payload()
    path = save_checkpoint(tmp_path / "last.pt", payload)
    before = path.read_bytes()

    def failing_save(obj, handle):
        handle.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, payload)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temp file left


def assert_one_line(error: CheckpointError, *fragments):
    message = str(error)
    assert isinstance(error, UserError) and "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "nope.pt")
    assert_one_line(info.value, "does not exist")


def test_folder_instead_of_checkpoint(tmp_path):
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path)
    assert_one_line(info.value, "folder")


def test_truncated_checkpoint(tmp_path):
    _, payload = make_payload()
    path = save_checkpoint(tmp_path / "full.pt", payload)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(cut)
    assert_one_line(info.value, "truncated or not a torch file")


def test_text_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("just some words\nover two lines\n")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert_one_line(info.value, str(path))


def test_foreign_torch_file(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert_one_line(info.value, "not a qrnn-lm checkpoint")


def test_newer_format_is_refused(tmp_path):
    _, payload = make_payload()
    path = tmp_path / "future.pt"
    torch.save({**payload, "format_version": FORMAT_VERSION + 1}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert_one_line(info.value, "newer", "upgrade")


class RunsCode:
    """Unpickling this would create the marker file: a stand-in for arbitrary code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pt"
    _, payload = make_payload()
    torch.save({**payload, "format_version": 1, "extra": RunsCode(marker)}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert_one_line(info.value, "run code")
    assert not marker.exists()
    # Sanity: a plain unpickler would have run it (so the test can fail).
    assert pickle.loads(pickle.dumps(RunsCode(marker))) is None and marker.exists()


def test_weights_that_do_not_fit_the_config(tmp_path):
    _, payload = make_payload()
    payload["config"]["model"]["hidden_size"] = 11
    with pytest.raises(CheckpointError) as info:
        model_from_checkpoint(load_checkpoint(save_checkpoint(tmp_path / "x.pt", payload)))
    assert_one_line(info.value, "do not fit")


def test_invalid_config_in_checkpoint(tmp_path):
    _, payload = make_payload()
    payload["config"]["model"]["bogus"] = 1
    with pytest.raises(CheckpointError) as info:
        model_from_checkpoint(load_checkpoint(save_checkpoint(tmp_path / "y.pt", payload)))
    assert_one_line(info.value, "bogus")


def test_save_creates_the_folder(tmp_path):
    _, payload = make_payload()
    path = save_checkpoint(tmp_path / "deep" / "er" / "c.pt", payload)
    assert path.is_file() and os.listdir(path.parent) == ["c.pt"]
