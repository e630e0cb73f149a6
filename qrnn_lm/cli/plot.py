"""``qrnn-lm plot``: the validation perplexity of one or more runs against wall-clock minutes and
against training tokens, one line per run, from each run folder's ``metrics.csv`` and
``config.toml``. Character and byte runs are drawn in bits per character (the ``valid_bpc`` column;
in files written before it, ``log2(valid_ppl)``), subword runs in per-word perplexity
(``valid_word_ppl``), so they sit on one axis with word runs; bits and perplexities never share one.

A reader of run folders: standard library only, and matplotlib (the optional ``plot`` extra),
imported inside the command. It does not import torch, so it starts at once.
"""

from __future__ import annotations

import csv
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from ..config import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

INSTALL = "pip install 'qrnn-lm[plot]'"


@dataclass
class Curve:
    """One run's validation points: its label, wall-clock minutes, tokens seen, and values in
    ``unit``: "bpc", "word_ppl" (a subword run's per-word perplexity) or "ppl" (a word run's, or
    the per-token perplexity of a subword run written before ``valid_word_ppl``)."""

    label: str
    minutes: list[float]
    tokens: list[int]
    values: list[float]
    unit: str = "ppl"


def _config(folder: Path) -> dict[str, Any]:
    """The run's raw ``config.toml`` ({} without the file)."""
    path = folder / "config.toml"
    if not path.is_file():
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise UserError(f"{path} is not valid TOML ({error}); pass run folders written by qrnn-lm train") from None


def _section(values: dict[str, Any], name: str) -> dict[str, Any]:
    section = values.get(name, {})
    return section if isinstance(section, dict) else {}


def run_label(folder: Path) -> str:
    """``"<name> (<model type>)"`` from the run's ``config.toml`` (the raw TOML: ``model.rnn``
    defaults to "qrnn"; without the file, the folder's name)."""
    values = _config(folder)
    return f"{values.get('name', folder.name)} ({_section(values, 'model').get('rnn', 'qrnn')})"


def _column(fields: list[str], tokenizer: Any) -> tuple[str, str]:
    """``(column, unit)``: the column of ``metrics.csv`` to plot and the curve's unit."""
    for unit in ("bpc", "word_ppl"):
        if f"valid_{unit}" in fields:
            return f"valid_{unit}", unit
    return "valid_ppl", "bpc" if tokenizer in ("char", "byte") else "ppl"


def _value(row: dict[str, str], column: str, unit: str) -> float | None:
    """A validation row's value in ``unit``; None for a subword row without its per-word cell."""
    if column != "valid_ppl" and row.get(column):
        return float(row[column])
    # a row written before the unit columns (an old file, or the rows an old run resumed with):
    # a character run's bpc is log2 of its perplexity; a subword run's words are not in the file
    if unit == "bpc":
        return math.log2(float(row["valid_ppl"]))
    return float(row["valid_ppl"]) if unit == "ppl" else None


def read_curve(folder: Path) -> Curve:
    """The validation rows of ``folder/metrics.csv`` (UserError naming the folder when it has none)."""
    if not folder.is_dir():
        raise UserError(f"{folder} is not a run folder; pass folders written by qrnn-lm train (e.g. runs/ptb-small)")
    path = folder / "metrics.csv"
    if not path.is_file():
        raise UserError(f"{folder} holds no metrics.csv: plot needs a run trained by a qrnn-lm that writes it "
                        "(train or resume it once)")
    curve = Curve(run_label(folder), [], [], [])
    tokenizer = _section(_config(folder), "data").get("tokenizer", "word")
    with path.open(newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        column, curve.unit = _column(reader.fieldnames or [], tokenizer)
        for row in reader:
            if not row.get("valid_ppl"):
                continue  # a training row
            try:
                minutes, tokens, value = float(row["wall_s"]) / 60, int(row["tokens"]), _value(row, column, curve.unit)
            except (TypeError, ValueError):
                raise UserError(f"{path} has a damaged row ({row}); delete that line and plot again") from None
            if value is None:
                continue
            curve.minutes.append(minutes)
            curve.tokens.append(tokens)
            curve.values.append(value)
    if curve.unit == "ppl" and tokenizer == "subword":
        curve.label += " per token"  # not per word: not comparable with a word run
    if not curve.values:
        raise UserError(f"{folder}/metrics.csv has no validation rows yet: plot it after its first validation "
                        "(the end of an epoch)")
    return curve


def _figure_class() -> Any:
    """matplotlib's Figure (no pyplot: no GUI backend, no global state), or a one-line UserError."""
    try:
        import matplotlib  # noqa: F401 - first: a missing package fails here, even with submodules cached
        from matplotlib.figure import Figure
    except ImportError:
        raise UserError(f"qrnn-lm plot draws with matplotlib, which is not installed: {INSTALL}") from None
    return Figure


def _y_label(curves: list[Curve]) -> str:
    """The y axis of ``curves``: bits per character or perplexity (UserError when they mix)."""
    bits = [curve.label for curve in curves if curve.unit == "bpc"]
    others = [curve.label for curve in curves if curve.unit != "bpc"]
    if bits and others:
        raise UserError(f"cannot draw bits per character ({bits[0]}) and perplexity ({others[0]}) on one axis; "
                        "plot the character and byte runs apart from the word and subword runs")
    if bits:
        return "validation bits per character"
    return "validation perplexity per word" if any(c.unit == "word_ppl" for c in curves) else "validation perplexity"


# Round numbers for a log axis, coarse to fine: multiples of powers of ten.
_LOG_TICK_MULTIPLES = ((1,), (1, 2, 5), (1, 1.5, 2, 3, 5, 7), (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8))


def log_ticks(low: float, high: float, most: int = 8) -> list[float]:
    """Ticks for a log axis from ``low`` to ``high`` (> 0): the finest of
    :data:`_LOG_TICK_MULTIPLES` that gives at most ``most`` (100, 120, 150, 200 for 96 to 205,
    where matplotlib's own log ticks label only 100 and 200), or the coarsest when even that
    gives more."""
    chosen: list[float] = []
    first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
    for multiples in _LOG_TICK_MULTIPLES:
        ticks = [m * 10.0 ** e for e in range(first, last + 1) for m in multiples]
        ticks = [round(t, 12) for t in ticks if low <= t <= high]
        if len(ticks) > most and chosen:
            break
        chosen = ticks
    # A span between two neighbours of the finest multiples (101 to 119): its ends.
    return chosen or [float(f"{low:.3g}"), float(f"{high:.3g}")]


def plot_curves(curves: list[Curve], out: Path) -> Any:
    """Draw ``curves`` into ``out`` (format from its suffix: .png, .pdf, .svg); returns the Figure."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    ylabel = _y_label(curves)
    figure = _figure_class()(figsize=(11, 4.5), layout="constrained")
    by_time, by_tokens = figure.subplots(1, 2, sharey=True)
    for curve in curves:
        by_time.plot(curve.minutes, curve.values, marker="o", markersize=3, label=curve.label)
        by_tokens.plot(curve.tokens, curve.values, marker="o", markersize=3, label=curve.label)
    for axes, xlabel in ((by_time, "wall-clock minutes"), (by_tokens, "training tokens seen")):
        axes.set_xlabel(xlabel)
        if "perplexity" in ylabel:  # bits per character: a linear axis, as the field's tables
            axes.set_yscale("log")
        axes.grid(True, alpha=0.3)
    if "perplexity" in ylabel:
        ticks = log_ticks(*by_time.get_ylim())
        for axes in (by_time, by_tokens):
            axes.yaxis.set_major_locator(FixedLocator(ticks))
            axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))  # 150, not 1.5 x 10^2
            axes.yaxis.set_minor_locator(NullLocator())
    by_time.set_ylabel(ylabel)
    by_tokens.legend()
    try:
        figure.savefig(out, dpi=120)
    except ValueError as error:  # an unknown format
        raise UserError(f"cannot write {out}: {error}; use a .png, .pdf or .svg file") from None
    except OSError as error:
        raise UserError(f"cannot write {out}: {error.strerror or error}") from None
    return figure


def plot_command(
    runs: Annotated[list[Path], typer.Argument(metavar="RUN...", help="Run folders (each with metrics.csv).")],
    out: Annotated[Path, typer.Option("--out", "-o", metavar="FILE", help="Where to write: the image (.png, .pdf, .svg).")],
):
    """Plot validation perplexity against wall-clock minutes (left) and tokens seen (right), one line per run.

    Character and byte runs are drawn in bits per character, subword runs in perplexity per word.

    Needs matplotlib (pip install 'qrnn-lm[plot]'). Example:
    qrnn-lm plot runs/ptb-small runs/ptb-small-lstm --out ptb.png
    """
    try:
        _figure_class()  # before reading anything: say at once what to install
        curves = [read_curve(folder) for folder in runs]
        labels = [curve.label for curve in curves]
        for curve, folder in zip(curves, runs):
            if labels.count(curve.label) > 1:  # two runs of one recipe: tell them apart
                curve.label = f"{curve.label} {folder}"
        plot_curves(curves, out)
    except UserError as error:
        message = " ".join(part.strip() for part in str(error).splitlines() if part.strip())
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"wrote {out} ({len(curves)} run{'s' if len(curves) != 1 else ''})")
