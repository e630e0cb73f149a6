"""The whole GPU verification in one command: ``make gpu-check`` (or ``PYTHONPATH=. python
scripts/gpu_check.py [--out DIR] [--dry-run]``), from a source checkout, no install step.

Shapes: T = time steps, B = batch, H = hidden lanes.

Steps, each in its own process under its own time limit (``LIMITS``; they add up to under 8
minutes, so the whole check does too); a failed or timed-out step is written to the summary and
the next runs:
  1. cuda-tests   every test file of the suite that has a CUDA case (this script's own test left
                  out), run by pytest (junit XML); on a CUDA machine it fails when every test that
                  needs CUDA was skipped (``gpu_check_plugin.py`` lists them);
  2. forget-mult  the ForgetMult kernel benchmark (``qrnn_lm.bench.forget_mult``): every GPU
                  backend, fwd and fwd+bwd, GB/s as a fraction of a device-to-device copy timed
                  in the same run, at the paper's LM shapes and long-T/few-lane shapes, with the
                  Triton plan (one launch or chunked) chosen for each shape;
  3. figure4      the paper's Figure 4 (right) grid vs cuDNN nn.LSTM (``qrnn_lm.bench.layer``):
                  hidden 320, inference and training, windows 1 and 2, CSV + heatmap PNG;
  4. lm           LM training throughput QRNN vs LSTM layers with the time split
                  (``qrnn_lm.bench.lm``, the paper's Figure 4 left);
  5. ptb          a short PTB training run of the GPU recipe (configs/ptb.toml) through the CLI:
                  the validation loss must fall below the uniform model's ln(V); tokens/s;
  6. ddp          two-process training (``qrnn-lm train --nproc 2``: torchrun, NCCL, one GPU per
                  process) of the tiny recipe; skipped, and said so, with fewer than 2 GPUs.
Everything goes to one folder: summary.txt (device, driver, CUDA, torch, triton versions, each
step's result), CSV and PNG files, the logs. Without CUDA (and no --dry-run): one line, exit 1;
with a Python that has no torch: one line naming the Python to use, exit 1.
``--dry-run`` runs the same code on the CPU with tiny shapes (Triton under TRITON_INTERPRET=1
for the tests' interpreted cases; pytest only collects; ddp on gloo), so CI keeps this script
working; its steps get ``DRY_RUN_LIMIT`` each, as a shared CPU is slow and the timing is not
what a dry run checks.
Exit status: 0 when every step passed or was skipped, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = Path(__file__).resolve().parent
# Each step's time limit in seconds (the step's own process, start-up included). With the header's
# nvidia-smi call they add up to under 8 minutes.
LIMITS = {"cuda-tests": 150, "forget-mult": 60, "figure4": 60, "lm": 45, "ptb": 100, "ddp": 45}
HEADER_LIMIT = 10
DRY_RUN_LIMIT = 600
# Long-T/few-lane shapes, where the Triton plan chooses the chunked path on a large GPU.
LONG_SHAPES = [(4096, 1, 64), (16384, 1, 8), (4096, 2, 512)]


def _versions(device: str) -> list[str]:
    import torch

    lines = [f"python {platform.python_version()}, torch {torch.__version__}, "
             f"CUDA (torch build) {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}"]
    try:
        import triton

        lines.append(f"triton {triton.__version__}")
    except ImportError as error:
        lines.append(f"triton: not importable ({error})")
    if device == "cuda":
        lines.append(f"device {torch.cuda.get_device_name(0)}, "
                     f"{torch.cuda.get_device_properties(0).multi_processor_count} SMs")
        try:
            driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                    capture_output=True, text=True, timeout=HEADER_LIMIT).stdout.strip()
        except (OSError, subprocess.SubprocessError) as error:
            driver = f"unknown ({error})"
        lines.append(f"driver {driver}")
    else:
        lines.append(f"device cpu ({platform.processor() or platform.machine()}), dry run")
    return lines


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


def _data_dir() -> Path | None:
    for candidate in (os.environ.get("QRNN_LM_DATA"), REPO.parent / "shared" / "data"):
        if candidate and (Path(candidate) / "ptb").is_dir():
            return Path(candidate)
    return None


def run_step(name: str, out: Path, dry_run: bool, limit: float, command: list[str] | None = None) -> tuple[str, str]:
    """Run step ``name`` in its own process (its own session, so pytest, torchrun and their
    children go with it) for at most ``limit`` seconds. Returns (status, detail), status one of
    "ok", "skipped", "FAILED". ``command`` replaces the step's command line (tests)."""
    result_file = out / f"{name}.result.json"
    result_file.unlink(missing_ok=True)
    command = command or [sys.executable, str(Path(__file__).resolve()), "--step", name, "--out", str(out),
                          "--limit", str(limit), *(["--dry-run"] if dry_run else [])]
    with open(out / f"{name}.step.log", "w") as log:
        proc = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return "FAILED", f"timed out: the step's limit is {limit:.0f} s (see {name}.step.log)"
    if not result_file.exists():
        return "FAILED", f"the step's process ended (exit {code}) without a result (see {name}.step.log)"
    result = json.loads(result_file.read_text())
    return result["status"], result["detail"]


def _step_in_this_process(name: str, out: Path, dry_run: bool, limit: float) -> int:
    """The body of one step's process: run it, write {status, detail} for the parent."""
    device = "cpu" if dry_run else "cuda"
    steps = {"cuda-tests": lambda: cuda_tests(out, dry_run, limit),
             "forget-mult": lambda: forget_mult(out, dry_run, device),
             "figure4": lambda: figure4(out, dry_run, device),
             "lm": lambda: lm(out, dry_run, device),
             "ptb": lambda: ptb(out, dry_run, _data_dir(), limit),
             "ddp": lambda: ddp(out, dry_run, _data_dir(), limit)}
    try:
        status, detail = "ok", steps[name]()
    except Skipped as skipped:
        status, detail = "skipped", str(skipped)
    except Exception as error:
        (out / f"{name}-error.txt").write_text(traceback.format_exc())
        status, detail = "FAILED", f"{type(error).__name__}: {error}"
    (out / f"{name}.result.json").write_text(json.dumps({"status": status, "detail": detail}))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="report folder (default gpu-check-<time>)")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes: checks the script")
    parser.add_argument("--step", choices=list(LIMITS), help=argparse.SUPPRESS)  # one step's own process
    parser.add_argument("--limit", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        import torch
    except ImportError:
        print(f"error: this Python ({sys.executable}) has no torch; run make gpu-check PYTHON=.venv/bin/python "
              "(make install creates .venv) or give PYTHON= a Python that has torch", file=sys.stderr)
        return 1
    if args.step:
        return _step_in_this_process(args.step, args.out, args.dry_run, args.limit)
    if not args.dry_run and not torch.cuda.is_available():
        print("error: no CUDA device (torch.cuda.is_available() is False); use --dry-run to check "
              "the script on a CPU", file=sys.stderr)
        return 1
    device = "cpu" if args.dry_run else "cuda"
    out = (args.out or REPO / f"gpu-check-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    lines = ["qrnn-lm gpu-check" + (" (dry run)" if args.dry_run else ""), *_versions(device), ""]
    failed, skipped = [], []
    for name, limit in LIMITS.items():
        start = time.perf_counter()
        status, detail = run_step(name, out, args.dry_run, DRY_RUN_LIMIT if args.dry_run else limit)
        (failed if status == "FAILED" else skipped if status == "skipped" else []).append(name)
        result = f"{name}: {status} ({time.perf_counter() - start:.0f} s) {detail}"
        lines.append(result)
        print(result, flush=True)
        (out / "summary.txt").write_text("\n".join(lines) + "\n")  # kept current if a step hangs
    lines.append("")
    lines.append(f"failed: {', '.join(failed)}" if failed else
                 "all steps passed" + (f" (skipped: {', '.join(skipped)})" if skipped else ""))
    (out / "summary.txt").write_text("\n".join(lines) + "\n")
    print(f"report: {out}" + (f" (failed: {', '.join(failed)})" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
