"""``qrnn-lm tune``: hyperparameter search on Optuna (docs/tuning.md), and ``--report`` on a study.

Thin: reads the options, then calls :mod:`qrnn_lm.tuning` (Optuna and torch load inside). Errors
are one ``error: ...`` line and exit 1; Ctrl-C / SIGTERM exit 128 + the signal's number after the
trial in progress saved its ``last.pt`` (running the same command again continues it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..config import UserError, toml_string
from .options import DataDirOption, DataOption, Device, DeviceOption, ProgressOption, check_data


def tune_command(
    space: Annotated[Optional[Path], typer.Argument(metavar="SPACE.toml", help="The search space file (e.g. configs/tune-ptb-cpu.toml).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", metavar="RUN", help="Where to write: the tune's folder (trial-NNNN run folders, study.db, report plots).")] = None,
    trials: Annotated[Optional[int], typer.Option("--trials", min=1, help="Finished (complete or pruned) trials the study should hold; a resumed tune runs only the rest.")] = None,
    storage: Annotated[Optional[str], typer.Option("--storage", metavar="URL", help="The study's database (default: sqlite:///RUN/study.db); share one URL to tune from several processes.")] = None,
    study: Annotated[Optional[str], typer.Option("--study", metavar="NAME", help="The study's name (default: the space file's name).")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", "-s", metavar="SECTION.KEY=VALUE", help="Override one config value (of every trial's base; repeatable), e.g. --set model.rnn=lstm.")] = None,
    report: Annotated[Optional[str], typer.Option("--report", metavar="RUN|URL", help="Instead of tuning: print the best trials of the study in RUN (or at URL) and write its plots (to --out, default RUN).")] = None,
    device: DeviceOption = Device.auto,
    data: DataOption = None,
    data_dir: DataDirOption = None,
    progress: ProgressOption = False,
):
    """Search hyperparameters with Optuna: each trial is a training run, the objective its validation perplexity.

    Interrupted (Ctrl-C, a kill)? Run the same command again: finished trials stay, the one in
    progress continues from its last.pt. --data trains every trial on that corpus. Examples:
    qrnn-lm tune configs/tune-ptb-cpu.toml --out runs/tune-qrnn --trials 8
    qrnn-lm tune --report runs/tune-qrnn
    """
    try:
        if report is not None:
            _report(report, out, study)
            return
        if space is None or out is None or trials is None:
            raise UserError("tune needs SPACE.toml, --out RUN and --trials N (or --report RUN)")
        check_data(data)
        overrides = ([f"data.dataset={toml_string(data)}"] if data is not None else []) + list(set_ or [])
        _tune(space, out, trials, storage, study, overrides, device.value, data_dir, progress)
    except UserError as error:
        message = " ".join(part.strip() for part in str(error).splitlines() if part.strip())
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt as error:  # the trainer saved the trial's last.pt; the trial is queued again
        typer.echo(f"\ninterrupted: run the same command again to continue ({out})", err=True)
        raise typer.Exit(128 + getattr(error, "signum", 2)) from None


def _tune(space_path: Path, out: Path, trials: int, storage: str | None, name: str | None, overrides: list[str],
          device: str, data_dir: Path | None, progress: bool) -> None:
    from ..tuning.objective import run_trials
    from ..tuning.space import read_space
    from ..tuning.study import default_storage, finished_states, open_study

    space = read_space(space_path, overrides)
    out.mkdir(parents=True, exist_ok=True)
    url = storage or default_storage(out)
    study = open_study(space, url, name or space_path.stem)
    before = len(study.get_trials(deepcopy=False, states=finished_states()))
    typer.echo(f"study {study.study_name} in {url}: {before} of {trials} trials finished")
    run_trials(space, study, out, trials, device=device, data_dir=data_dir, progress=progress, echo=typer.echo)
    try:
        best = study.best_trial
        again = f"qrnn-lm train --config {Path(best.user_attrs.get('run', '')) / 'config.toml'}"
        again += f" --data-dir {data_dir}" if data_dir is not None else ""
        typer.echo(f"best: trial {best.number}, valid ppl {best.value:.2f}, run folder {best.user_attrs.get('run')}; "
                   f"retrain it with: {again}")
    except ValueError:
        typer.echo("no trial completed")


def _report(target: str, out: Path | None, name: str | None) -> None:
    from ..tuning.report import best_trials_table, write_plots
    from ..tuning.study import default_storage, load_study

    if "://" in target:
        url, folder = target, out
        if folder is None:
            raise UserError("with a database URL, say where the plots go: --out DIR")
    else:
        run = Path(target)
        if not (run / "study.db").is_file():
            raise UserError(f"{run} holds no study.db; pass the --out folder of a qrnn-lm tune, or its --storage URL")
        url, folder = default_storage(run), out or run
    study = load_study(url, name)
    typer.echo(best_trials_table(study))
    for path in write_plots(study, folder):
        typer.echo(f"wrote {path}")
