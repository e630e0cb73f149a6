"""The ``qrnn-lm`` command line: ``train``, ``eval``, ``generate``, ``export``, ``plot`` and ``bench``.

A thin typer app: each command parses and checks its options, then calls one library function
(``training.train``, ``inference.evaluate.evaluate_checkpoint``, ``inference.generate.generate``). torch and the engine are
imported inside the commands, so ``qrnn-lm --help`` is instant.

Exit codes: 0 success; 1 a problem the user can fix (any ``qrnn_lm.config.UserError``), printed as
one ``error: ...`` line on stderr, never a traceback; 2 a malformed command line (typer's usage
message, e.g. ``--tokens abc``); 128 + signum when a run is stopped (130 Ctrl-C, 143 SIGTERM, 129
SIGHUP; the shell convention).
This module holds the app, ``train`` and ``finetune``; the other commands live one per module
(``evaluate.py``, ``generate.py``, ``export.py``, ``plot.py``) and the options they share in
``options.py``. The ``bench`` sub-app (``qrnn_lm.cli.bench``) is mounted with ``app.add_typer``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..config import check_options
from .bench import bench_app
from .evaluate import eval_command
from .export import export_command
from .generate import generate_command
from .help_text import PROGRAM, readable_help
from .options import (EXIT_INTERRUPTED, EXIT_USER_ERROR, DataDirOption, DataOption, Dataset, Device, DeviceOption,
                      ProgressOption, check_data, checkpoint_file, error_exit, user_errors)
from .plot import plot_command
from .recipes import resolve_train_config
from .train import argv_without_nproc, run_training
from .tune import tune_command

__all__ = ["app", "main", "Dataset", "EXIT_INTERRUPTED", "EXIT_USER_ERROR"]

app = typer.Typer(
    name=PROGRAM,
    no_args_is_help=True,
    help="Train, evaluate and sample QRNN language models (Penn Treebank, WikiText or your own text).",
)


@app.command()
def train(
    data: DataOption = None,
    config: Annotated[
        Optional[Path],
        typer.Option("--config", "-c", metavar="FILE", help="TOML recipe (default: configs/<data>.toml when it exists)."),
    ] = None,
    set_: Annotated[
        Optional[list[str]],
        typer.Option("--set", "-s", metavar="SECTION.KEY=VALUE", help="Override one config value (repeatable), e.g. --set train.lr=10."),
    ] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", metavar="DIR", help="Where to write: the run folder (default: runs/<name>; a resumed run keeps its folder).")] = None,
    device: DeviceOption = Device.auto,
    resume: Annotated[
        Optional[Path],
        typer.Option("--resume", metavar="DIR|CHECKPOINT", help="Continue an interrupted run (a run folder means its last.pt)."),
    ] = None,
    resume_previous: Annotated[
        bool,
        typer.Option("--resume-previous", help="With --resume DIR: when its last.pt is damaged, continue from the earlier last.prev.pt."),
    ] = False,
    max_steps: Annotated[Optional[int], typer.Option("--max-steps", help="Stop after N optimizer steps (= --set train.max_steps=N).")] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Train for N epochs (= --set train.epochs=N).")] = None,
    max_minutes: Annotated[Optional[float], typer.Option("--max-minutes", metavar="M", help="Stop after M minutes of training and validation, counted across resumes (= --set train.max_minutes=M).")] = None,
    data_dir: DataDirOption = None,
    progress: ProgressOption = True,
    nproc: Annotated[
        int,
        typer.Option(
            "--nproc",
            help="Data-parallel processes on this machine (torchrun's machinery): one GPU each, or gloo "
            "on the CPU. data.batch_size stays the global batch.",
        ),
    ] = 1,
):
    """Train a QRNN language model; checkpoints, TensorBoard logs and results.json go to the run folder.

    Example: qrnn-lm train --data ptb --config configs/ptb-small.toml
    (add --set model.rnn=lstm for the same recipe with AWD-LSTM layers)
    """
    if nproc > 1:
        from .train import launch_local  # looked up here: tests replace it

        # Each rank runs this same command line without --nproc, under torchrun's agent.
        raise typer.Exit(launch_local(nproc, argv_without_nproc(sys.argv[1:])))
    overrides = list(set_ or [])
    if max_steps is not None:
        overrides.append(f"train.max_steps={max_steps}")
    if epochs is not None:
        overrides.append(f"train.epochs={epochs}")
    if max_minutes is not None:
        overrides.append(f"train.max_minutes={max_minutes!r}")
    if data is None and config is None and resume is None:
        raise error_exit("say what to train on: --data ptb|wikitext-2|wikitext-103|PATH, or --config FILE, or --resume DIR")
    check_data(data)
    with user_errors():
        check_options(nproc=nproc)
        resumed, payload = None, None
        if resume is not None:
            from ..training.checkpointer import resume_checkpoint

            resume, payload = resume_checkpoint(resume, take_previous=resume_previous)  # fails early on a bad one
            resumed = payload["config"]
        run_config = resolve_train_config(data, config, overrides, resumed, [d.value for d in Dataset])
        out = out if out is not None else resume.parent if resume is not None else Path("runs") / run_config.name
        run_training(run_config, out, device.value, resume, data_dir, progress, checkpoint=payload)


@app.command()
def finetune(
    checkpoint: Annotated[Path, typer.Argument(metavar="CHECKPOINT", help="A finished run's best.pt, or its run folder.")],
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Train for N epochs (at most; = --set train.epochs=N; default: the recipe's).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", metavar="DIR", help="Where to write: the run folder (default: runs/<name>-finetune).")] = None,
    set_: Annotated[
        Optional[list[str]],
        typer.Option("--set", "-s", metavar="SECTION.KEY=VALUE", help="Override one config value (of the run's recipe; repeatable), e.g. --set train.lr=10."),
    ] = None,
    max_steps: Annotated[Optional[int], typer.Option("--max-steps", help="Stop after N optimizer steps (= --set train.max_steps=N).")] = None,
    data: DataOption = None,
    device: DeviceOption = Device.auto,
    data_dir: DataDirOption = None,
    progress: ProgressOption = True,
):
    """Continue a finished run's best weights in averaged SGD, as awd-lstm-lm's finetune.py.

    The run's recipe (stored in the checkpoint) applies unless overridden; the finetune stops at
    train.epochs or when validation is worse than the best but the last train.nonmono. Its own run
    folder resumes like any run (qrnn-lm train --resume DIR); results.json compares it with the start.
    --data finetunes on another corpus, read with the checkpoint's vocabulary (words it lacks as its <unk>).

    Example: qrnn-lm finetune runs/ptb-small --epochs 50
    """
    overrides = list(set_ or [])
    if epochs is not None:
        overrides.append(f"train.epochs={epochs}")
    if max_steps is not None:
        overrides.append(f"train.max_steps={max_steps}")
    check_data(data)
    with user_errors():
        from ..models.checkpoint_file import load_checkpoint

        checkpoint = checkpoint_file(checkpoint, "best.pt")
        stored = load_checkpoint(checkpoint)["config"]  # fails early on a bad checkpoint
        run_config = resolve_train_config(data, None, overrides, stored, [d.value for d in Dataset])
        if "name" not in {text.split("=", 1)[0].strip() for text in overrides}:
            run_config.name = f"{run_config.name}-finetune"
        out = out if out is not None else Path("runs") / run_config.name
        run_training(run_config, out, device.value, None, data_dir, progress, init_from=checkpoint)


app.command("eval")(eval_command)  # qrnn_lm.cli.evaluate
app.command("generate")(generate_command)  # qrnn_lm.cli.generate
app.add_typer(bench_app, name="bench")  # torch loads inside its commands too
app.command("export")(export_command)  # qrnn_lm.cli.export; torch loads inside it
app.command("plot")(plot_command)  # qrnn_lm.cli.plot; matplotlib loads inside it
app.command("tune")(tune_command)  # qrnn_lm.cli.tune; Optuna and torch load inside it
readable_help(app)
readable_help(bench_app)


def main() -> None:
    """Entry point of the ``qrnn-lm`` script and ``python -m qrnn_lm``."""
    from ..malloc_tuning import keep_freed_memory

    keep_freed_memory()  # reuse freed tensor memory instead of page-faulting on every step
    try:
        app(prog_name=PROGRAM)
    except SystemExit as stop:
        # distributed.launched_by_torchrun's test, read here without importing torch (--help).
        if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            raise
        from ..training.distributed import exit_rank

        exit_rank(stop.code)  # a torchrun rank: skip the library teardown that can abort (see exit_rank)
