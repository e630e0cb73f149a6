"""The whole GPU verification in one command: ``make gpu-check`` (or ``PYTHONPATH=. python
scripts/gpu_check.py [--out DIR] [--dry-run]``), from a source checkout, no install step.

Shapes: T = time steps, B = batch, H = hidden lanes.

Steps, each in its own try block (a failed step is written to the summary and the next runs):
  1. cuda-tests   every test file of the suite that has a CUDA case, run by pytest (junit XML);
  2. forget-mult  the ForgetMult kernel benchmark (``qrnn_lm.bench.forget_mult``): every GPU
                  backend, fwd and fwd+bwd, GB/s as a fraction of a device-to-device copy timed
                  in the same run, at the paper's LM shapes and long-T/few-lane shapes, with the
                  Triton plan (one launch or chunked) chosen for each shape;
  3. figure4      the paper's Figure 4 (right) grid vs cuDNN nn.LSTM (``qrnn_lm.bench.layer``):
                  hidden 320, inference and training, windows 1 and 2, CSV + heatmap PNG;
  4. lm           LM training throughput QRNN vs LSTM layers with the time split
                  (``qrnn_lm.bench.lm``, the paper's Figure 4 left);
  5. ptb          a short PTB training run of the GPU recipe (configs/ptb.toml) through the CLI:
                  the validation loss must fall below the uniform model's ln(V); tokens/s.
Everything goes to one folder: summary.txt (device, driver, CUDA, torch, triton versions, each
step's result), CSV and PNG files, the logs. Without CUDA (and no --dry-run): one line, exit 1.
``--dry-run`` runs the same code on the CPU with tiny shapes (Triton under TRITON_INTERPRET=1
for the tests' interpreted cases; pytest only collects), so CI keeps this script working.
Exit status: 0 when every step passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import re
import subprocess
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
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
                                    capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError) as error:
            driver = f"unknown ({error})"
        lines.append(f"driver {driver}")
    else:
        lines.append(f"device cpu ({platform.processor() or platform.machine()}), dry run")
    return lines


def cuda_tests(out: Path, dry_run: bool) -> str:
    """pytest on every test file that mentions CUDA; dry run: collect only."""
    files = sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").rglob("test_*.py")
                   if "cuda" in p.read_text())
    command = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
               f"--junitxml={out / 'cuda-tests.xml'}", *files]
    if dry_run:
        command.append("--collect-only")
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=420)
    (out / "cuda-tests.log").write_text(proc.stdout + proc.stderr)
    tail = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
    if proc.returncode != 0:
        raise RuntimeError(f"pytest exit {proc.returncode}: {tail} (see cuda-tests.log)")
    return f"{len(files)} files: {tail}"


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


def ptb(out: Path, dry_run: bool, data_dir: Path | None) -> str:
    """Train through the CLI; the valid losses it prints must fall below ln(V) (uniform model)."""
    if data_dir is None:
        raise RuntimeError("no PTB data: expected ../shared/data/ptb or QRNN_LM_DATA")
    config = "configs/tiny.toml" if dry_run else "configs/ptb.toml"
    limits = ["--max-steps", "20"] if dry_run else ["--set", "train.epochs=3"]
    command = [sys.executable, "-m", "qrnn_lm", "train", "--data", "ptb", "--config", config,
               "--data-dir", str(data_dir), "--out", str(out / "ptb-run"), "--no-progress", *limits]
    start = time.perf_counter()
    try:  # the GPU recipe gets about a minute: 3 epochs, or what finishes within 90 s
        proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=90)
        log, code = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as expired:
        log = (expired.stdout or b"").decode() + (expired.stderr or b"").decode()
        code = "timeout (expected: the run is cut at 90 s)"
    seconds = time.perf_counter() - start
    (out / "ptb-run.log").write_text(log)
    losses = [float(v) for v in re.findall(r"valid loss ([0-9.]+)", log)]
    if not losses:  # a max_steps stop prints the perplexity only
        losses = [math.log(float(v)) for v in re.findall(r"valid ppl ([0-9.]+)", log)]
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="report folder (default gpu-check-<time>)")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes: checks the script")
    args = parser.parse_args(argv)
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("error: no CUDA device (torch.cuda.is_available() is False); use --dry-run to check "
              "the script on a CPU", file=sys.stderr)
        return 1
    device = "cpu" if args.dry_run else "cuda"
    out = args.out or REPO / f"gpu-check-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    lines = ["qrnn-lm gpu-check" + (" (dry run)" if args.dry_run else ""), *_versions(device), ""]
    steps = [("cuda-tests", lambda: cuda_tests(out, args.dry_run)),
             ("forget-mult", lambda: forget_mult(out, args.dry_run, device)),
             ("figure4", lambda: figure4(out, args.dry_run, device)),
             ("lm", lambda: lm(out, args.dry_run, device)),
             ("ptb", lambda: ptb(out, args.dry_run, _data_dir()))]
    failed = []
    for name, step in steps:
        start = time.perf_counter()
        try:
            detail = step()
            result = f"{name}: ok ({time.perf_counter() - start:.0f} s) {detail}"
        except Exception as error:  # report it and carry on with the next step
            failed.append(name)
            (out / f"{name}-error.txt").write_text(traceback.format_exc())
            result = f"{name}: FAILED {type(error).__name__}: {error}"
        lines.append(result)
        print(result, flush=True)
        (out / "summary.txt").write_text("\n".join(lines) + "\n")  # kept current if a step hangs
    lines.append("")
    lines.append(f"failed: {', '.join(failed)}" if failed else "all steps passed")
    (out / "summary.txt").write_text("\n".join(lines) + "\n")
    print(f"report: {out}" + (f" (failed: {', '.join(failed)})" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
