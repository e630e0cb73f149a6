"""Checkpoints written by an earlier release still resume bit for bit.

tests/fixtures/checkpoints_v1/ holds ``last.pt`` files of tiny QRNN (Adam, cosine schedule, stopped
in epoch 2) and LSTM (SGD, stopped in epoch 1) runs made by commit 5cac1f0, and the corpus they were
trained on (see make_fixtures.py there). Resuming one to the end of its run must give exactly the
weights, optimiser state, counters, RNG states and test loss of an uninterrupted run of the same
config made by today's code. The checkpoint's optimiser state names the Adam implementation that
wrote it (the for-loop, then torch's default on the CPU) and a resume keeps it, so the uninterrupted
run uses the same one (today's fresh CPU runs use the fused kernel: the same update to within
rounding, not bit for bit).
"""

import shutil
import sys
from pathlib import Path

import pytest
import torch

from qrnn_lm.models.checkpoint_file import load_checkpoint
from qrnn_lm.training import optimizer as optimizer_module, train

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "checkpoints_v1"
sys.path.insert(0, str(FIXTURES))
from make_fixtures import FIXTURES as RUNS, config  # noqa: E402

WALL_CLOCK = {"elapsed_s"}  # a run's wall-clock seconds: never equal between two runs


def assert_same(first, second, where="checkpoint"):
    """Equal nested checkpoint contents, tensors bit for bit, wall-clock seconds left out."""
    if isinstance(first, dict):
        assert isinstance(second, dict) and first.keys() == second.keys(), where
        for key in first:
            if key not in WALL_CLOCK:
                assert_same(first[key], second[key], f"{where}[{key!r}]")
    elif isinstance(first, (list, tuple)):
        assert isinstance(second, (list, tuple)) and len(first) == len(second), where
        for index, (a, b) in enumerate(zip(first, second)):
            assert_same(a, b, f"{where}[{index}]")
    elif isinstance(first, torch.Tensor):
        assert isinstance(second, torch.Tensor) and first.dtype == second.dtype, where
        assert torch.equal(first, second), where
    else:
        assert first == second, where


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A copy of the fixtures' corpus (a run caches its tokens beside the text files)."""
    folder = tmp_path_factory.mktemp("old") / "corpus"
    shutil.copytree(FIXTURES / "corpus", folder)
    return folder


@pytest.mark.parametrize("name", sorted(RUNS))
def test_an_old_checkpoint_resumes_bit_for_bit(name, corpus, tmp_path, monkeypatch):
    # The uninterrupted run with the implementation the old release's Adam had: the for-loop.
    monkeypatch.setattr(optimizer_module, "_adam_implementation", lambda params: {})
    reference = train(config(name, corpus), tmp_path / "reference", device="cpu", progress=False)
    monkeypatch.undo()  # the resume builds today's optimizer; the checkpoint's groups choose the for-loop
    out = tmp_path / "resumed"
    out.mkdir()
    shutil.copy(FIXTURES / f"{name}.pt", out / "last.pt")
    resumed = train(config(name, corpus), out, device="cpu", progress=False, resume=out)
    assert resumed["steps"] == reference["steps"] > RUNS[name][1]
    assert resumed["test_loss"] == reference["test_loss"]
    assert_same(load_checkpoint(out / "last.pt"), load_checkpoint(tmp_path / "reference" / "last.pt"))
