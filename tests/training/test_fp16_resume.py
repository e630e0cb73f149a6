"""An fp16 run resumes exactly: the gradient scaler's state (its scale and growth tracker) is part
of the checkpoint. fp16 trains on CUDA only; here ``torch.amp.GradScaler`` and float16 autocast
run on the CPU (the device check is lifted for the test), which is enough for the scaler's state."""

from pathlib import Path

import pytest
import torch

import qrnn_lm.device as device_module
import qrnn_lm.training.step as step_module
from qrnn_lm.config import load_config
from qrnn_lm.models.checkpoint_file import load_checkpoint
from qrnn_lm.training import train
from _ctrl_c import ctrl_c_at_step  # tests/training/_ctrl_c.py

TINY = Path(__file__).resolve().parents[2] / "configs" / "tiny.toml"


def fp16(corpus):
    # A scale of 2**24 overflows float16 gradients at first: the scaler skips steps and backs off,
    # so its state at the interruption differs from a fresh scaler's.
    return load_config(TINY, [f'data.dataset="{corpus}"', "train.epochs=1", "train.precision=fp16"])


def test_an_fp16_run_interrupted_mid_epoch_resumes_exactly(corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(device_module, "check_precision", lambda precision, device: None)
    monkeypatch.setattr(step_module, "make_scaler", lambda precision, device: torch.amp.GradScaler(
        "cpu", init_scale=2.0 ** 24, growth_interval=3))
    reference = train(fp16(corpus), tmp_path / "reference", device="cpu", progress=False)
    out = tmp_path / "run"
    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        ctrl_c_at_step(patch, 8)
        train(fp16(corpus), out, device="cpu", progress=False)
    saved = load_checkpoint(out / "last.pt")
    assert saved["counters"]["step"] == 7 and saved["scaler"]["scale"] != 2.0 ** 24
    resumed = train(fp16(corpus), out, device="cpu", progress=False, resume=out)
    assert resumed["test_loss"] == reference["test_loss"]
    first, second = load_checkpoint(out / "last.pt"), load_checkpoint(tmp_path / "reference" / "last.pt")
    assert first["scaler"] == second["scaler"]
    for key in first["model"]:
        assert torch.equal(first["model"][key], second["model"][key]), key
