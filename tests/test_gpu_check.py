"""scripts/gpu_check.py: the dry run (CPU, tiny shapes) goes through every step and writes the
report; without CUDA the real run refuses in one line, without torch too; the logic that judges
a real run (GPU tests all skipped, a step over its time limit) is checked with stand-ins."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_check.py"
sys.path.insert(0, str(SCRIPT.parent))
import gpu_check  # noqa: E402
import gpu_check_steps  # noqa: E402


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
    for step in ("cuda-tests: ok", "forget-mult: ok", "figure4: ok", "lm: ok", "ptb: ok", "ddp: ok"):
        assert step in summary
    assert "torch " in summary and "triton" in summary and "all steps passed" in summary
    for name in ("forget_mult.csv", "figure4.csv", "lm.csv", "cuda-tests.xml"):
        assert (tmp_path / "report" / name).stat().st_size > 0
    collected = (tmp_path / "report" / "cuda-tests.log").read_text()
    assert "test_forget_mult_triton.py" in collected and "test_gpu_check.py" not in collected  # not itself
    assert "2 processes (gloo on the CPU)" in summary


def test_the_step_limits_fit_in_8_minutes():
    assert set(gpu_check.LIMITS) == {"cuda-tests", "forget-mult", "figure4", "lm", "ptb", "ddp"}
    assert sum(gpu_check.LIMITS.values()) + gpu_check.HEADER_LIMIT <= 8 * 60


def test_a_step_over_its_limit_fails_and_its_children_are_stopped(tmp_path):
    """A step that hangs (here: it starts a child, as pytest and torchrun do, and sleeps) is cut
    at its limit with everything it started."""
    pid_file = tmp_path / "child.pid"
    hang = ("import subprocess, sys, time; child = subprocess.Popen([sys.executable, '-c', 'import time; "
            f"time.sleep(60)']); open({str(pid_file)!r}, 'w').write(str(child.pid)); time.sleep(60)")
    status, detail = gpu_check.run_step("ptb", tmp_path, False, limit=5, command=[sys.executable, "-c", hang])
    assert status == "FAILED" and "timed out" in detail and "5 s" in detail
    child = int(pid_file.read_text())
    for _ in range(50):  # the killed grandchild is reaped by init shortly after
        if not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]:
            break
        __import__("time").sleep(0.1)
    else:
        pytest.fail("the step's child process survived its limit")


GPU_AND_CPU_TESTS = """import pytest

@pytest.mark.skipif({condition}, reason="needs a CUDA device")
def test_on_the_gpu():
    pass

def test_on_the_cpu():
    pass
"""


@pytest.mark.parametrize("gpu_test_skipped", [True, False])
def test_cuda_tests_fail_when_every_gpu_test_was_skipped(tmp_path, gpu_test_skipped):
    """The real (not dry) cuda-tests step on a stand-in test file: the plugin finds the test that
    needs CUDA by its skipif reason; all such tests skipped on a CUDA machine is a failure."""
    tests = tmp_path / "test_stand_in.py"
    tests.write_text(GPU_AND_CPU_TESTS.format(condition=gpu_test_skipped))
    out = tmp_path / "report"
    out.mkdir()
    if gpu_test_skipped:
        with pytest.raises(RuntimeError, match="all of them were skipped on a CUDA machine: 1 tests need CUDA: 0 ran"):
            gpu_check_steps.cuda_tests(out, dry_run=False, limit=120, files=[str(tests)])
    else:
        detail = gpu_check_steps.cuda_tests(out, dry_run=False, limit=120, files=[str(tests)])
        assert "2 passed" in detail and "1 tests need CUDA: 1 ran, 0 did not" in detail


def test_judging_the_gpu_tests():
    two = {"a": "passed", "b": "skipped: needs 2 CUDA devices"}
    assert gpu_check_steps.judge_gpu_tests(two, on_cuda=True) == \
        "2 tests need CUDA: 1 ran, 1 did not (skip reasons: needs 2 CUDA devices)"
    with pytest.raises(RuntimeError, match="all of them were skipped"):
        gpu_check_steps.judge_gpu_tests({"a": "skipped: needs a CUDA device"}, on_cuda=True)
    assert "0 ran" in gpu_check_steps.judge_gpu_tests({"a": "collected"}, on_cuda=False)  # the dry run
    with pytest.raises(RuntimeError, match="no test needs CUDA"):
        gpu_check_steps.judge_gpu_tests({}, on_cuda=False)


def test_a_python_without_torch_gets_one_line_naming_the_python_to_use(tmp_path):
    # As `python scripts/gpu_check.py` runs it (scripts/ first on sys.path), with torch not importable.
    no_torch = ("import runpy, sys; sys.modules['torch'] = None; sys.argv = [sys.argv[1], '--dry-run']; "
                "sys.path.insert(0, sys.argv[0].rsplit('/', 1)[0]); runpy.run_path(sys.argv[0], run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", no_torch, str(SCRIPT)], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "make gpu-check PYTHON=.venv/bin/python" in proc.stderr
    assert sys.executable in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.skipif(shutil.which("make") is None or subprocess.run(
    ["python3", "-c", "import torch"], capture_output=True).returncode == 0,
    reason="needs make and a python3 on PATH without torch")
def test_make_gpu_check_with_the_system_python_without_torch():
    proc = subprocess.run(["make", "-s", "gpu-check"], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in os.environ.items() if k != "PYTHON"})
    assert "make gpu-check PYTHON=.venv/bin/python" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.returncode != 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_without_cuda_one_line_and_exit_1(tmp_path):
    proc = _run(["--out", str(tmp_path / "report")], {})
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: no CUDA device")
    assert not (tmp_path / "report").exists()
