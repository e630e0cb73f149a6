"""The steps of ``gpu_check.py`` (see its docstring), one function each; every one returns a line
for the summary, raises to fail or :class:`Skipped` when it cannot run on this machine.

Shapes: T = time steps, B = batch, H = hidden lanes.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = Path(__file__).resolve().parent
# Long-T/few-lane shapes, where the Triton plan chooses the chunked path on a large GPU.
LONG_SHAPES = [(4096, 1, 64), (16384, 1, 8), (4096, 2, 512)]

class Skipped(Exception):
    """A step that cannot run on this machine (said in the summary; not a failure)."""


def cuda_tests(out: Path, dry_run: bool, limit: float, files: list[str] | None = None) -> str:
    """pytest on every test file that mentions CUDA (not this script's own test, whose dry run
    would run this whole script again); dry run: collect only."""
    if files is None:
        files = sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").rglob("test_*.py")
                       if "cuda" in p.read_text() and p.name != "test_gpu_check.py")
    outcomes_file = out / "cuda-tests.json"
    command = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-p", "gpu_check_plugin",
               f"--junitxml={out / 'cuda-tests.xml'}", *files]
    if dry_run:
        command.append("--collect-only")
    env = {**os.environ, "GPU_CHECK_TESTS_JSON": str(outcomes_file),
           "PYTHONPATH": os.pathsep.join([str(SCRIPTS), str(REPO), os.environ.get("PYTHONPATH", "")])}
    try:
        proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=limit - 10)
    except subprocess.TimeoutExpired as expired:
        (out / "cuda-tests.log").write_text(_text(expired.stdout) + _text(expired.stderr))
        raise RuntimeError(f"pytest did not finish within {limit - 10:.0f} s (see cuda-tests.log)") from None
    (out / "cuda-tests.log").write_text(proc.stdout + proc.stderr)
    tail = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
    if proc.returncode != 0:
        raise RuntimeError(f"pytest exit {proc.returncode}: {tail} (see cuda-tests.log)")
    outcomes = json.loads(outcomes_file.read_text())
    return f"{len(files)} files: {tail}; " + judge_gpu_tests(outcomes, on_cuda=not dry_run)


def judge_gpu_tests(outcomes: dict[str, str], on_cuda: bool) -> str:
    """One line on the tests that need CUDA (``{nodeid: outcome}`` from gpu_check_plugin); raise
    RuntimeError when there are none, or on a CUDA machine when none of them ran: a run whose
    GPU cases all skipped (CUDA hidden from pytest, a broken marker) checked nothing on the GPU."""
    if not outcomes:
        raise RuntimeError("no test needs CUDA (none has a skipif reason 'needs ... CUDA/GPU')")
    ran = sum(outcome in ("passed", "failed") for outcome in outcomes.values())
    reasons = sorted({o.removeprefix("skipped: ") for o in outcomes.values() if o.startswith("skipped")})
    line = f"{len(outcomes)} tests need CUDA: {ran} ran, {len(outcomes) - ran} did not"
    line += f" (skip reasons: {'; '.join(reasons)})" if reasons else ""
    if on_cuda and ran == 0:
        raise RuntimeError(f"all of them were skipped on a CUDA machine: {line}")
    return line


def _text(output) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


def forget_mult(out: Path, dry_run: bool, device: str) -> str:
    from qrnn_lm.bench import forget_mult as bench
    from qrnn_lm.ops.forget_mult import triton as triton_backend

    shapes = [(9, 2, 7)] if dry_run else bench.KERNEL_SHAPES + LONG_SHAPES
    import torch

    rows = []
    for dtype in (torch.float32, torch.bfloat16):  # the op accumulates in float32 either way
        rows += bench.run(device=device, repeats=3 if dry_run else 20, quick=dry_run, kernel_shapes=shapes,
                          chunked_shapes=[(16, 1, 4)] if dry_run else None, dtype=dtype)
    num_sms = 132
    if device == "cuda":
        num_sms = torch.cuda.get_device_properties(0).multi_processor_count
    plans = [f"T{t} B{b} H{h}: {triton_backend.plan_scan(t, b * h, num_sms=num_sms)}"
             for t, b, h in shapes]
    _write_csv(rows, out / "forget_mult.csv")
    text = bench.format_table(rows) + "\n\n" + bench.target_summary(rows)
    (out / "forget_mult.txt").write_text(text + "\n\nTriton plans:\n" + "\n".join(plans) + "\n")
    return f"{len(rows)} rows (forget_mult.txt, forget_mult.csv); Triton plans: " + "; ".join(plans)


def figure4(out: Path, dry_run: bool, device: str) -> str:
    from qrnn_lm.bench import layer as bench

    grid = dict(hidden_size=8, batch_sizes=(2, 4), seq_lens=(4,), repeats=1, warmup=1) if dry_run \
        else dict(hidden_size=320, repeats=5, warmup=2)
    rows = bench.run(windows=(1, 2), device=device, **grid)
    text = bench.report(rows, out / "figure4.csv", out / "figure4.png")
    (out / "figure4.txt").write_text(text + "\n")
    return bench.format_summary(rows).replace("\n", "; ")


def lm(out: Path, dry_run: bool, device: str) -> str:
    from qrnn_lm.bench import lm as bench
    from qrnn_lm.bench.lm_config import bench_config
    from qrnn_lm.bench.lm_report import format_report, write_json
    from qrnn_lm.bench.timing import machine_description

    sizes = dict(emb_size=8, hidden_size=12, num_layers=2, bptt=5, batch_size=2) if dry_run else {}
    timing = dict(vocab_size=50, repeats=1, warmup=1, peak_size=64) if dry_run else {}
    report = bench.run(bench_config(None, **sizes), device=device, **timing)
    # The CSV keeps the flat columns; lm.json has everything (the parts' FLOP/s, the matmul peak).
    _write_csv([{key: value for key, value in row.items() if key != "parts"} for row in report["models"]],
               out / "lm.csv")
    write_json(report, out / "lm.json", machine_description(device))
    text = format_report(report)
    (out / "lm.txt").write_text(text + "\n")
    return text.splitlines()[-1]


def ptb(out: Path, dry_run: bool, data_dir: Path | None, limit: float) -> str:
    """Train through the CLI; the valid losses it prints must fall below ln(V) (uniform model)."""
    if data_dir is None:
        raise RuntimeError("no PTB data: expected ../shared/data/ptb or QRNN_LM_DATA")
    config = "configs/tiny.toml" if dry_run else "configs/ptb.toml"
    limits = ["--max-steps", "20"] if dry_run else ["--set", "train.epochs=3"]
    command = [sys.executable, "-m", "qrnn_lm", "train", "--data", "ptb", "--config", config,
               "--data-dir", str(data_dir), "--out", str(out / "ptb-run"), "--no-progress", *limits]
    cut = limit - 15  # the GPU recipe gets about a minute and a half: 3 epochs, or what ends by then
    start = time.perf_counter()
    try:
        proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=cut)
        log, code = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as expired:
        log = _text(expired.stdout) + _text(expired.stderr)
        code = f"timeout (expected: the run is cut at {cut:.0f} s)"
    seconds = time.perf_counter() - start
    (out / "ptb-run.log").write_text(log)
    losses = _valid_losses(log)
    steps = [int(v) for v in re.findall(r"step (\d+)", log)]
    if not losses:
        raise RuntimeError(f"no validation result in {seconds:.0f} s (exit {code}; see ptb-run.log)")
    uniform = math.log(10000)
    tokens_per_s = (max(steps) if steps else 0) * (4 * 10 if dry_run else 20 * 70) / seconds
    summary = (f"valid losses {', '.join(f'{v:.3f}' for v in losses)} (uniform ln V = {uniform:.2f}); "
               f"{tokens_per_s:,.0f} train tokens/s over the whole {seconds:.0f} s, start-up and "
               f"validation included; exit {code}")
    if losses[-1] >= uniform or losses[-1] > losses[0]:
        raise RuntimeError("loss did not fall: " + summary)
    return summary


def ddp(out: Path, dry_run: bool, data_dir: Path | None, limit: float) -> str:
    """``qrnn-lm train --nproc 2`` (torchrun; NCCL, one GPU per process) of the tiny recipe for a
    few steps: both ranks must finish and the validation loss fall below ln(V). Dry run: gloo on
    the CPU. Skipped with fewer than 2 GPUs (two NCCL ranks cannot share one)."""
    import torch

    if not dry_run and torch.cuda.device_count() < 2:
        raise Skipped(f"needs 2 CUDA devices (one per process), this machine has {torch.cuda.device_count()}")
    if data_dir is None:
        raise RuntimeError("no PTB data: expected ../shared/data/ptb or QRNN_LM_DATA")
    command = [sys.executable, "-m", "qrnn_lm", "train", "--nproc", "2", "--device", "cpu" if dry_run else "cuda",
               "--data", "ptb", "--config", "configs/tiny.toml", "--data-dir", str(data_dir),
               "--out", str(out / "ddp-run"), "--no-progress", "--max-steps", "30"]
    try:
        proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=limit - 10)
    except subprocess.TimeoutExpired as expired:
        (out / "ddp-run.log").write_text(_text(expired.stdout) + _text(expired.stderr))
        raise RuntimeError(f"the 2-process run did not end within {limit - 10:.0f} s (see ddp-run.log)") from None
    log = proc.stdout + proc.stderr
    (out / "ddp-run.log").write_text(log)
    losses = _valid_losses(log)
    if proc.returncode != 0 or not losses:
        raise RuntimeError(f"exit {proc.returncode}, valid losses {losses} (see ddp-run.log)")
    uniform = math.log(10000)
    if not losses[-1] < uniform:
        raise RuntimeError(f"valid loss {losses[-1]:.3f} not below the uniform model's {uniform:.2f}")
    backend = "gloo on the CPU" if dry_run else "NCCL, 2 GPUs"
    return f"2 processes ({backend}), 30 steps: valid loss {losses[-1]:.3f} (uniform ln V = {uniform:.2f})"


def _valid_losses(log: str) -> list[float]:
    """The validation losses a training run printed (a max_steps stop prints the perplexity only)."""
    losses = [float(v) for v in re.findall(r"valid loss ([0-9.]+)", log)]
    return losses or [math.log(float(v)) for v in re.findall(r"valid ppl ([0-9.]+)", log)]


def _write_csv(rows: list[dict], path: Path) -> None:
    import csv

    keys = list(dict.fromkeys(key for row in rows for key in row))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


def find_data_dir() -> Path | None:
    for candidate in (os.environ.get("QRNN_LM_DATA"), REPO.parent / "shared" / "data"):
        if candidate and (Path(candidate) / "ptb").is_dir():
            return Path(candidate)
    return None


