"""``qrnn-lm tune --report``: a study's best trials as a table, and its plots as PNG files.

The plots are Optuna's own (``optuna.visualization.matplotlib``): the optimisation history and the
parameter importances (PED-ANOVA, Optuna's default evaluator, which needs no scikit-learn; at least
two complete trials).
"""

from __future__ import annotations

import math
from pathlib import Path

from ..config import UserError
from .study import import_optuna

__all__ = ["best_trials_table", "write_plots"]


def best_trials_table(study, top: int = 10) -> str:
    """The ``top`` complete trials, best first, then a count of the others: a fixed-width table
    with valid and test perplexity, steps, minutes, the run folder and the sampled values."""
    optuna = import_optuna()
    complete = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                if t.value is not None and math.isfinite(t.value)]
    complete.sort(key=lambda trial: trial.value)
    keys = sorted({key for trial in complete for key in trial.params})
    header = ["trial", "valid ppl", "test ppl", "steps", "min", *keys, "run"]
    rows = [header]
    for trial in complete[:top]:
        attrs = trial.user_attrs
        seconds = attrs.get("seconds")
        rows.append([str(trial.number), f"{trial.value:.2f}", _number(attrs.get("test_ppl"), ".2f"),
                     str(attrs.get("steps", "")), _number(None if seconds is None else seconds / 60, ".1f"),
                     *(_value(trial.params.get(key)) for key in keys), attrs.get("run", "")])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    counts = {}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name.lower()] = counts.get(trial.state.name.lower(), 0) + 1
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    title = f"study {study.study_name}: {summary or 'no trials'}; the best {min(top, len(complete))} complete:"
    return "\n".join([title, *lines]) if complete else f"study {study.study_name}: {summary or 'no trials'}; none complete yet"


def write_plots(study, folder: Path) -> list[Path]:
    """``optimization_history.png`` (with a complete trial) and ``param_importances.png`` (with two
    or more) in ``folder``; the paths written."""
    optuna = import_optuna()
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("the tune report's plots need matplotlib: pip install 'qrnn-lm[tune]'") from None
    from optuna.visualization import matplotlib as optuna_plots

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    plots = [("optimization_history.png", optuna_plots.plot_optimization_history)]
    if len(complete) >= 2:
        plots.append(("param_importances.png", optuna_plots.plot_param_importances))
    for name, plot in plots:
        axes = plot(study)
        figure = axes.figure
        figure.set_size_inches(8, 5)
        figure.tight_layout()
        figure.savefig(folder / name, dpi=120)
        plt.close(figure)
        written.append(folder / name)
    return written


def _number(value, spec: str) -> str:
    return "" if not isinstance(value, (int, float)) else format(value, spec)


def _value(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
