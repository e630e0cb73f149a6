"""The whole GPU verification in one command: ``make gpu-check`` (or ``PYTHONPATH=. python
scripts/gpu_check.py [--out DIR] [--dry-run]``), from a source checkout, no install step.

Steps (``gpu_check_steps.py``), each in its own process under its own time limit (``LIMITS``; they add up to under 8
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
import os
import platform
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

from gpu_check_steps import Skipped, cuda_tests, ddp, figure4, find_data_dir, forget_mult, lm, ptb  # scripts/ is on sys.path

REPO = Path(__file__).resolve().parents[1]
# Each step's time limit in seconds (the step's own process, start-up included). With the header's
# nvidia-smi call they add up to under 8 minutes.
LIMITS = {"cuda-tests": 150, "forget-mult": 60, "figure4": 60, "lm": 45, "ptb": 100, "ddp": 45}
HEADER_LIMIT = 10
DRY_RUN_LIMIT = 600


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
        except BaseException:  # Ctrl-C reaches this process only (the step has its own session)
            os.killpg(proc.pid, signal.SIGKILL)
            raise
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
             "ptb": lambda: ptb(out, dry_run, find_data_dir(), limit),
             "ddp": lambda: ddp(out, dry_run, find_data_dir(), limit)}
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
