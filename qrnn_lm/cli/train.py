"""What ``qrnn-lm train`` does once its options are checked and its config resolved: run
``training.train``, print the one-line summary, and on Ctrl-C print the exact command that resumes
the run (with the same device and data location); the exit status is 128 + the signal's number. Rank 0 only prints, in a data-parallel run.
Also ``argv_without_nproc``: the command line the ``--nproc`` launcher hands to every rank.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import typer

EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shell convention (SIGTERM: 143, SIGHUP: 129)


def argv_without_nproc(argv: list[str]) -> list[str]:
    """This command line without ``--nproc N`` / ``--nproc=N``, for the ranks to run."""
    kept, skip_next = [], False
    for arg in argv:
        if skip_next:
            skip_next = False
        elif arg == "--nproc":
            skip_next = True
        elif not arg.startswith("--nproc="):
            kept.append(arg)
    return kept


def _is_rank_zero() -> bool:
    """Only the first process of a data-parallel run prints summaries and hints."""
    return os.environ.get("RANK", "0") == "0"


def run_training(run_config, out: Path, device: str, resume: Path | None, data_dir: Path | None, progress: bool,
                 init_from: Path | None = None) -> None:
    from ..training import train as train_model

    try:
        extra = {"init_from": init_from} if init_from is not None else {}  # finetune only
        results = train_model(run_config, out, device=device, resume=resume, data_dir=data_dir, progress=progress,
                              **extra)
    except KeyboardInterrupt as error:  # Ctrl-C, SIGTERM or SIGHUP (training.interrupts.Interrupted)
        if _is_rank_zero():
            _report_interrupt(out, device, data_dir)
        raise typer.Exit(128 + getattr(error, "signum", 2)) from None
    if _is_rank_zero():
        typer.echo(_format_results(results, out))


def _report_interrupt(out: Path, device: str, data_dir: Path | None) -> None:
    last = out / "last.pt"
    if not last.is_file() and (out / "last.prev.pt").is_file():
        last = out / "last.prev.pt"
    if not last.is_file():
        typer.echo(f"\ninterrupted before the first checkpoint; nothing saved in {out}", err=True)
        return
    command = [*_program(), "train", "--resume", str(out)]
    if device != "auto":
        command += ["--device", device]
    if data_dir is not None:
        command += ["--data-dir", str(data_dir)]
    text = shlex.join(command)
    if data_dir is None and os.environ.get("QRNN_LM_DATA"):  # the resumed run must find the same data
        text = f"QRNN_LM_DATA={shlex.quote(os.environ['QRNN_LM_DATA'])} {text}"
    typer.echo(f"\ninterrupted: the resumable checkpoint is {last}", err=True)
    typer.echo(f"resume with: {text}", err=True)


def _program() -> list[str]:
    """How the user ran us: the script as typed (``.venv/bin/qrnn-lm``), ``python -m qrnn_lm``
    with this interpreter, else plain ``qrnn-lm``."""
    name = Path(sys.argv[0]).name
    if name == "qrnn-lm":
        return [sys.argv[0]]
    if name == "__main__.py" and Path(sys.argv[0]).parent.name == "qrnn_lm":
        return [sys.executable, "-m", "qrnn_lm"]
    return ["qrnn-lm"]


def _format_results(results: dict, out: Path) -> str:
    """One summary line from train()'s results dict (keys as in results.json)."""
    line = f"done ({results.get('status', 'finished')}) after {results.get('steps', '?')} steps"
    if isinstance(results.get("seconds"), (int, float)):
        line += f" in {results['seconds']:.0f} s"
    for key, label in (("best_val_ppl", "best valid ppl"), ("test_ppl", "test ppl")):
        if isinstance(results.get(key), (int, float)):
            line += f", {label} {results[key]:.2f}"
    return f"{line}; run folder {out}"
