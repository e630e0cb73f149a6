"""Checkpoints written by an earlier release still resume bit for bit.

tests/fixtures/checkpoints_v1/ holds ``last.pt`` files of tiny QRNN (Adam, cosine schedule, stopped
in epoch 2) and LSTM (SGD, stopped in epoch 1) runs made by commit 5cac1f0, and the corpus they were
trained on (see make_fixtures.py there). Resuming one to the end of its run must give exactly the
weights, optimiser state, counters, RNG states and test loss of an uninterrupted run of the same
config made by today's code. The checkpoint's optimiser state names the Adam implementation that
wrote it (the for-loop, then torch's default on the CPU) and a resume keeps it, so the uninterrupted
run uses the same one (today's fresh CPU runs use the fused kernel: the same update to within
rounding, not bit for bit).

The fixtures' first steps ran on the CPU that wrote them; on a CPU with another instruction set
(AVX2 vs AVX-512) the matrix kernels round differently, so an uninterrupted run made here agrees
with a resumed one only to rounding. The bit-for-bit property is therefore checked on this CPU
alone: the old checkpoint resumed straight to the end must equal the old checkpoint resumed,
interrupted again (Ctrl-C), saved in today's format and resumed to the end.

The fixtures' weight-drop masks were drawn with ``F.dropout``; these runs draw them that way too
(``drop_connect`` draws other masks from the same generator state, so a fresh run today follows
another trajectory from step 1).
"""

import math
import shutil
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from qrnn_lm.models import WeightDrop
from qrnn_lm.models.checkpoint_file import load_checkpoint
from qrnn_lm.training import optimizer as optimizer_module, train

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "checkpoints_v1"
sys.path.insert(0, str(FIXTURES))
from make_fixtures import FIXTURES as RUNS, config  # noqa: E402
from _ctrl_c import ctrl_c_at_step  # noqa: E402  tests/training/_ctrl_c.py

WALL_CLOCK = {"elapsed_s"}  # a run's wall-clock seconds: never equal between two runs


def assert_same(first, second, where="checkpoint", exact=True):
    """Equal nested checkpoint contents, wall-clock seconds left out: bit for bit, or with
    ``exact=False`` floating-point values to within rounding (everything else still equal)."""
    if isinstance(first, dict):
        assert isinstance(second, dict) and first.keys() == second.keys(), where
        for key in first:
            if key not in WALL_CLOCK:
                assert_same(first[key], second[key], f"{where}[{key!r}]", exact)
    elif isinstance(first, (list, tuple)):
        assert isinstance(second, (list, tuple)) and len(first) == len(second), where
        for index, (a, b) in enumerate(zip(first, second)):
            assert_same(a, b, f"{where}[{index}]", exact)
    elif isinstance(first, torch.Tensor):
        assert isinstance(second, torch.Tensor) and first.dtype == second.dtype, where
        if exact or not first.is_floating_point():
            assert torch.equal(first, second), where
        else:
            torch.testing.assert_close(first, second, rtol=1e-4, atol=1e-6, msg=where)
    elif isinstance(first, float) and not exact:
        assert math.isclose(first, second, rel_tol=1e-5, abs_tol=1e-9), where
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
    # The fixtures' weight-drop masks were drawn by F.dropout (today's drop_connect on the CPU draws
    # other ones from the same generator): every run here draws them that way too.
    monkeypatch.setattr(WeightDrop, "forward", lambda self, weight: F.dropout(weight, self.p, self.training))
    # The uninterrupted run with the implementation the old release's Adam had: the for-loop.
    with monkeypatch.context() as patch:
        patch.setattr(optimizer_module, "_adam_implementation", lambda params: {})
        reference = train(config(name, corpus), tmp_path / "reference", device="cpu", progress=False)
    # The resume builds today's optimizer; the checkpoint's groups choose the for-loop.
    out = tmp_path / "resumed"
    out.mkdir()
    shutil.copy(FIXTURES / f"{name}.pt", out / "last.pt")
    resumed = train(config(name, corpus), out, device="cpu", progress=False, resume=out)
    assert resumed["steps"] == reference["steps"] > RUNS[name][1]
    assert math.isclose(resumed["test_loss"], reference["test_loss"], rel_tol=1e-6)
    assert_same(load_checkpoint(out / "last.pt"), load_checkpoint(tmp_path / "reference" / "last.pt"), exact=False)

    # Bit for bit on this CPU: resumed, interrupted 3 steps later, resumed again to the end.
    twice = tmp_path / "twice"
    twice.mkdir()
    shutil.copy(FIXTURES / f"{name}.pt", twice / "last.pt")
    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        ctrl_c_at_step(patch, 4)
        train(config(name, corpus), twice, device="cpu", progress=False, resume=twice)
    assert not torch.equal(load_checkpoint(twice / "last.pt")["model"]["embedding.weight"],
                           load_checkpoint(FIXTURES / f"{name}.pt")["model"]["embedding.weight"])
    again = train(config(name, corpus), twice, device="cpu", progress=False, resume=twice)
    assert again["steps"] == resumed["steps"]
    assert again["test_loss"] == resumed["test_loss"]
    assert_same(load_checkpoint(twice / "last.pt"), load_checkpoint(out / "last.pt"))
