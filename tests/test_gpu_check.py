"""scripts/gpu_check.py: the dry run (CPU, tiny shapes) goes through every step and writes the
report; without CUDA the real run refuses in one line."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_check.py"


def _tiny_ptb(root: Path) -> Path:
    """A PTB-shaped folder small enough that a tiny training run and its evaluation take a second."""
    words = " ".join(f"w{i % 37}" for i in range(400))
    (root / "ptb").mkdir(parents=True)
    for split in ("train", "valid", "test"):
        (root / "ptb" / f"{split}.txt").write_text("\n".join([words] * (8 if split == "train" else 1)) + "\n")
    return root


def _run(args, env_extra):
    env = dict(__import__("os").environ, PYTHONPATH=str(REPO), **env_extra)
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow  # the whole GPU check script, dry
def test_dry_run_runs_every_step_and_writes_the_report(tmp_path):
    data = _tiny_ptb(tmp_path / "data")
    proc = _run(["--dry-run", "--out", str(tmp_path / "report")], {"QRNN_LM_DATA": str(data)})
    summary = (tmp_path / "report" / "summary.txt").read_text()
    assert proc.returncode == 0, summary + proc.stderr[-2000:]
    for step in ("cuda-tests: ok", "forget-mult: ok", "figure4: ok", "lm: ok", "ptb: ok"):
        assert step in summary
    assert "torch " in summary and "triton" in summary and "all steps passed" in summary
    for name in ("forget_mult.csv", "figure4.csv", "lm.csv", "cuda-tests.xml"):
        assert (tmp_path / "report" / name).stat().st_size > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_without_cuda_one_line_and_exit_1(tmp_path):
    proc = _run(["--out", str(tmp_path / "report")], {})
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: no CUDA device")
    assert not (tmp_path / "report").exists()
