"""What a run reports: TensorBoard scalars, ``metrics.csv``, console lines and ``results.json``.

Training metrics: a :class:`Meter` averages them between two log points; logging goes through a
two-method interface, ``log(metrics, step)`` and ``close()``: TensorBoard when a log folder is given (and on rank 0 only: the caller decides), a no-op
otherwise. Tags are slash-named: ``train/loss``, ``val/ppl``, ``lr``. TensorBoard is imported
only when a TensorBoard logger is made, so importing this module stays cheap.

``metrics.csv`` in the run folder, beside TensorBoard's ``tb/``: one row per log interval and
one per validation, readable by anything (``qrnn-lm plot`` draws it).

Columns (exactly :data:`COLUMNS`): ``step`` (optimizer steps since the run began), ``epoch`` (the
epoch in progress, 1-based), ``tokens`` (training tokens seen), ``wall_s`` (seconds of training and
validation since the run began, across resumes), ``train_loss`` (mean loss since the previous
log row; empty in validation rows), ``valid_ppl`` (empty in training rows), ``lr`` (the scheduled
learning rate, before SGD's segment-length rescaling); then, for a run with a unit
(:class:`~qrnn_lm.data.RunUnits`), ``valid_bpc`` (character and byte models) or ``valid_word_ppl`` (subword
models), empty in training rows. A word run's file has exactly :data:`COLUMNS`.

Each row is written and flushed at once, so a killed run loses nothing it had logged. A resumed
run appends to the file after dropping its rows with a ``step`` beyond the checkpoint it resumes
from: the resumed run logs those steps again, so no step appears twice. A fresh run starts the
file anew. Rank 0 alone writes (the others get a writer that drops rows).

:class:`Console`: what a run prints, its console lines and the epoch's progress bar, on rank 0 only.

:func:`run_results`: a finished run's ``results.json``, what it reached, on what, in how long.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Protocol

from ..config import Config
from ..data import RunUnits
from ..inference.evaluate import perplexity
from .state import Counters
from .stopping import sigint_deferred

__all__ = ["MetricsLogger", "NullLogger", "TensorBoardLogger", "make_logger", "Meter", "COLUMNS", "columns", "MetricsCsv", "RunLog", "Console", "run_results", "write_results"]


class MetricsLogger(Protocol):
    def log(self, metrics: dict[str, float], step: int) -> None: ...

    def close(self) -> None: ...


class NullLogger:
    """Drops everything: used on non-zero ranks and when logging is off."""

    def log(self, metrics: dict[str, float], step: int) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardLogger:
    """Writes scalars to ``log_dir`` as TensorBoard event files.

    The writer hands events to its own thread through a queue. A stop signal's exception
    (:class:`~.stopping.Interrupted`, raised at any point of the main thread) could fire while the
    main thread holds that queue's lock and leave it held; the close that follows then waited
    forever (seen as a hung ``qrnn-lm tune`` after SIGTERM). So the writes and the close hold stop
    signals until they are done (:func:`~.stopping.sigint_deferred`).
    """

    def __init__(self, log_dir: str | Path):
        from torch.utils.tensorboard import SummaryWriter  # heavy: imported only when used

        self._writer = SummaryWriter(log_dir=str(log_dir))

    def log(self, metrics: dict[str, float], step: int) -> None:
        with sigint_deferred():
            for tag, value in metrics.items():
                self._writer.add_scalar(tag, float(value), global_step=step)

    def close(self) -> None:
        with sigint_deferred():
            self._writer.flush()
            self._writer.close()


def make_logger(log_dir: str | Path | None) -> MetricsLogger:
    """A TensorBoard logger writing to ``log_dir``, or a no-op logger when it is None."""
    return NullLogger() if log_dir is None else TensorBoardLogger(log_dir)


class Meter:
    """Averages of the training metrics between two log points."""

    def __init__(self):
        self._reset()

    def _reset(self) -> None:
        self.loss_sum = 0.0
        self.grad_norm_sum = 0.0
        self.steps = 0
        self.tokens = 0
        self.started = time.perf_counter()

    def add(self, loss: float, grad_norm: float, tokens: int) -> None:
        self.loss_sum += loss * tokens
        self.grad_norm_sum += grad_norm
        self.steps += 1
        self.tokens += tokens

    def flush(self, lr: float) -> dict[str, float]:
        """``train/loss``, ``train/ppl``, ``lr``, ``grad_norm``, ``tokens_per_s`` since the last flush."""
        loss = self.loss_sum / max(self.tokens, 1)
        seconds = max(time.perf_counter() - self.started, 1e-9)
        metrics = {
            "train/loss": loss,
            "train/ppl": perplexity(loss),
            "lr": lr,
            "grad_norm": self.grad_norm_sum / max(self.steps, 1),
            "tokens_per_s": self.tokens / seconds,
        }
        self._reset()
        return metrics


COLUMNS = ("step", "epoch", "tokens", "wall_s", "train_loss", "valid_ppl", "lr")
HEADER = ",".join(COLUMNS)


def columns(unit: str | None = None) -> tuple[str, ...]:
    """The columns of a run's ``metrics.csv``: :data:`COLUMNS`, then ``valid_<unit>`` when it has one."""
    return COLUMNS if unit is None else (*COLUMNS, f"valid_{unit}")


def _kept_lines(text: str, resume_step: int, header: str) -> list[str]:
    """The complete data lines of a metrics.csv's ``text`` up to ``resume_step``, in the columns of
    ``header`` ([] when the file is not ours). A line cut short by a kill mid-write has too few cells
    and goes too. A file written before the unit column (:data:`HEADER` alone) keeps its lines, each
    with an empty unit cell."""
    lines = text.splitlines()
    if not lines or lines[0] not in (header, HEADER):
        return []
    cells = lines[0].count(",")
    pad = "," * (header.count(",") - cells)
    kept = []
    for line in lines[1:]:
        step = line.split(",", 1)[0]
        if line.count(",") == cells and step.isdigit() and int(step) <= resume_step:
            kept.append(line + pad)
    return kept


class MetricsCsv:
    """Rows of ``metrics.csv`` at ``path`` (None: a writer that drops everything, off rank 0).

    Args:
        path: the file.
        resume_step: the step of the checkpoint a resumed run continues from (rows after it go);
            None for a fresh run (any old file is replaced).
        unit: the run's unit ("bpc", "word_ppl"), whose column ``valid_<unit>`` ends each row;
            None: a word run, :data:`COLUMNS` alone.
    """

    def __init__(self, path: Path | None, resume_step: int | None = None, unit: str | None = None):
        self._file = None
        self._unit = unit
        if path is None:
            return
        header = ",".join(columns(unit))
        text = path.read_text(encoding="utf-8") if resume_step is not None and path.is_file() else ""
        content = "\n".join([header, *_kept_lines(text, resume_step, header)]) + "\n" if text else header + "\n"
        if content != text:  # fresh, or rows to drop: rewrite (atomically: never half of the old rows)
            temp = path.with_name(f".{path.name}.new")
            temp.write_text(content, encoding="utf-8")
            os.replace(temp, path)
        self._file = path.open("a", newline="", encoding="utf-8")

    def row(self, state: Counters, wall_s: float, lr: float, *, train_loss: float | None = None,
            valid_ppl: float | None = None, valid_unit: float | None = None) -> None:
        """Append one row at ``state``'s counters (a training row gives ``train_loss``, a
        validation row ``valid_ppl`` and, in a run with a unit, ``valid_unit``)."""
        if self._file is None:
            return
        cells = [str(state.step), str(state.epoch), str(state.tokens), f"{wall_s:.3f}",
                 "" if train_loss is None else f"{train_loss:.6g}",
                 "" if valid_ppl is None else f"{valid_ppl:.6g}", f"{lr:.8g}"]
        if self._unit is not None:
            cells.append("" if valid_unit is None else f"{valid_unit:.6g}")
        self._file.write(",".join(cells) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class RunLog:
    """A run's logs: TensorBoard scalars (``tb/``) and ``metrics.csv`` in ``out_dir`` (on rank 0;
    ``out_dir`` None elsewhere: nothing is written), the training metrics averaged by a
    :class:`Meter` between two log points. ``resume_step``: the step a resumed run continues from;
    ``units``: the run's unit beside perplexity (None: none, as a word run)."""

    def __init__(self, out_dir: Path | None, resume_step: int | None = None, units: RunUnits | None = None):
        self.units = units
        unit = None if units is None else units.unit
        self.logger = make_logger(out_dir / "tb" if out_dir is not None else None)
        self.csv = MetricsCsv(out_dir / "metrics.csv" if out_dir is not None else None, resume_step, unit)
        self.meter = Meter()

    def step(self, loss: float, grad_norm: float, tokens: int, counters: Counters, wall_s: float, lr: float,
             log_interval: int) -> dict[str, float] | None:
        """Add one step; every ``log_interval`` steps log the averages and return them."""
        self.meter.add(loss, grad_norm, tokens)
        if counters.step % log_interval:
            return None
        metrics = self.meter.flush(lr)
        self.logger.log(metrics, counters.step)
        self.csv.row(counters, wall_s, metrics["lr"], train_loss=metrics["train/loss"])
        return metrics

    def _scalars(self, loss: float, split: str, prefix: str) -> dict[str, float]:
        """``{prefix}/loss``, ``{prefix}/ppl`` and, in a run with a unit, ``{prefix}/bpc`` or ``{prefix}/word_ppl``."""
        scalars = {f"{prefix}/loss": loss, f"{prefix}/ppl": perplexity(loss)}
        value = None if self.units is None else self.units.value(loss, split)
        if value is not None:
            scalars[f"{prefix}/{self.units.unit}"] = value
        return scalars

    def validation(self, val_loss: float, counters: Counters, wall_s: float, lr: float) -> None:
        scalars = self._scalars(val_loss, "valid", "val")
        self.logger.log(scalars, counters.step)
        unit = None if self.units is None else self.units.unit
        self.csv.row(counters, wall_s, lr, valid_ppl=scalars["val/ppl"], valid_unit=scalars.get(f"val/{unit}"))

    def test(self, test_loss: float, step: int) -> None:
        self.logger.log(self._scalars(test_loss, "test", "test"), step)

    def close(self) -> None:
        self.logger.close()
        self.csv.close()


class Console:
    """Console lines and progress bars of a run.

    Args:
        progress: show tqdm bars (the lines then go through ``tqdm.write`` so a bar is not broken).
        enabled: print at all (False off rank 0). Without bars, each line is printed and flushed,
            so a redirected log shows it as it happens.
    """

    def __init__(self, progress: bool, enabled: bool):
        self.progress = progress and enabled
        self.echo: Callable[[str], None] = _echo(self.progress, enabled)

    def epoch_bar(self, epoch: int, epochs: int, position: int, limit: int, batch_size: int):
        """A tqdm bar over this epoch's time steps (counted in tokens), or None without bars."""
        if not self.progress:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=limit, initial=min(position, limit), unit="tok", unit_scale=batch_size,
                    desc=f"epoch {epoch}/{epochs}", dynamic_ncols=True, leave=False)


def _echo(progress: bool, enabled: bool) -> Callable[[str], None]:
    if not enabled:
        return lambda message: None
    if not progress:
        return lambda message: print(message, flush=True)
    from tqdm.auto import tqdm

    return tqdm.write


def run_results(config: Config, state: Counters, optimizer: str, status: str, best_val: float, test_loss: float,
                test_tokens: int, out_dir: Path, seconds: float, units: RunUnits | None = None) -> dict[str, Any]:
    """The results dict (the keys of ``results.json``) of a run that ended with ``status``; a run
    with ``units`` also gets their keys (:meth:`RunUnits.results`) at the end."""
    return {
        "name": config.name,
        "dataset": config.data.dataset,
        "status": status,
        "epochs_completed": state.epoch - 1,
        "steps": state.step,
        "train_tokens": state.tokens,
        "optimizer": optimizer,
        "best_val_loss": best_val,
        "best_val_ppl": perplexity(best_val),
        "test_loss": test_loss,
        "test_ppl": perplexity(test_loss),
        "test_tokens": test_tokens,
        "test_batch_size": config.data.test_batch_size,
        "checkpoint": str(out_dir / "best.pt"),
        "seconds": round(seconds, 1),
        **({} if units is None else units.results(best_val, test_loss)),
    }


def write_results(out_dir: Path, results: dict[str, Any]) -> Path:
    """``<out_dir>/results.json``, whole or not at all: written beside it, then renamed (its
    presence says the run finished, so a signal must not leave half of it)."""
    path = out_dir / "results.json"
    temporary = out_dir / ".results.json.tmp"
    temporary.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)
    return path
