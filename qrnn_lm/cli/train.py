"""What ``qrnn-lm train`` does once its options are checked and its config resolved: run
``training.train``, print the one-line summary, and on Ctrl-C print the exact command that resumes
the run (with the same device and data location); the exit status is 128 + the signal's number. Rank 0 only prints, in a data-parallel run.
Also the ``--nproc N`` shortcut: :func:`launch_local` runs torchrun's machinery
(``torch.distributed.run``) on this machine, handing every rank the command line without
``--nproc`` (:func:`argv_without_nproc`).
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer


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
                 init_from: Path | None = None, checkpoint: dict | None = None) -> None:
    """Train; ``checkpoint``: the loaded checkpoint ``resume`` names (read once, here in the CLI)."""
    from ..training import train as train_model

    try:
        extra = {"init_from": init_from} if init_from is not None else {}  # finetune only
        if checkpoint is not None:
            extra["checkpoint"] = checkpoint  # a resume: last.pt was read once, by the command
        results = train_model(run_config, out, device=device, resume=resume, data_dir=data_dir, progress=progress,
                              **extra)
    except KeyboardInterrupt as error:  # Ctrl-C, SIGTERM or SIGHUP (training.stopping.Interrupted)
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
    for key, label, digits in (("best_val_ppl", "best valid ppl", 2), ("test_ppl", "test ppl", 2),
                               ("best_val_bpc", "best valid bpc", 4), ("test_bpc", "test bpc", 4),
                               ("test_word_ppl", "test word ppl", 2), ("test_cache_ppl", "with the cache pointer", 2)):
        if isinstance(results.get(key), (int, float)):
            line += f", {label} {results[key]:.{digits}f}"
    return f"{line}; run folder {out}"


def launch_local(nproc: int, argv: Sequence[str], *, module: str = "qrnn_lm") -> int:
    """Run ``python -m <module> <argv>`` as ``nproc`` ranks on this machine with torchrun's
    machinery (``torch.distributed.run --standalone``: a local rendezvous on a free port, no
    restarts). Returns 0 when every rank succeeded, else the first failed rank's exit code (also
    printed as one line on stderr; the ranks' own output, e.g. rank 0's error line, comes before);
    128 + signum when interrupted (Ctrl-C, SIGTERM, SIGHUP: torchrun passes it on to every rank,
    whose trainers agree on a step, save and stop).

    Equivalent to ``torchrun --standalone --nproc_per_node <nproc> -m <module> <argv>``.
    """
    if not isinstance(nproc, int) or isinstance(nproc, bool) or nproc < 1:
        raise ValueError(f"nproc must be a positive int, got {nproc!r}")
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun_main

    args = ["--standalone", f"--nproc-per-node={nproc}", "--max-restarts=0", "-m", module, *argv]
    # torchrun would set OMP_NUM_THREADS=1 with a warning; share the machine's cores between the
    # ranks instead, for PyTorch's threads and for numba's (whose pool would otherwise take every
    # core in every rank).
    cores_per_rank = str(max(1, (os.cpu_count() or 1) // nproc))
    for variable in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS"):
        if variable not in os.environ:
            os.environ[variable] = cores_per_rank
    try:
        torchrun_main(args)
    except ChildFailedError as error:
        rank, failure = error.get_first_failure()
        code = failure.exitcode if failure.exitcode and failure.exitcode > 0 else 1
        if code - 128 in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", -1)):
            # A stop signal sent to the ranks themselves: they agreed on a step and rank 0 saved.
            print(f"\ninterrupted ({signal_name(code - 128)} reached rank {rank}): every rank stopped at the "
                  "same step", file=sys.stderr)
            return code
        print(f"error: rank {rank} of {nproc} failed (exit code {failure.exitcode}); every rank was stopped",
              file=sys.stderr)
        return code
    except SignalException as error:
        print(f"\ninterrupted ({signal_name(error.sigval)}): every rank was stopped", file=sys.stderr)
        return 128 + int(error.sigval)  # the shell's convention: 130 for Ctrl-C, 143 for SIGTERM
    return 0


def signal_name(sigval: Any) -> str:
    try:
        return signal.Signals(sigval).name
    except ValueError:
        return str(sigval)
