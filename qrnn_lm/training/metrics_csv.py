"""``metrics.csv`` in the run folder, beside TensorBoard's ``tb/``: one row per log interval and
one per validation, readable by anything (``qrnn-lm plot`` draws it).

Columns (exactly :data:`COLUMNS`): ``step`` (optimizer steps since the run began), ``epoch`` (the
epoch in progress, 1-based), ``tokens`` (training tokens seen), ``wall_s`` (seconds of training and
validation since the run began, across resumes), ``train_loss`` (mean loss since the previous
log row; empty in validation rows), ``valid_ppl`` (empty in training rows), ``lr`` (the scheduled
learning rate, before SGD's segment-length rescaling).

Each row is written and flushed at once, so a killed run loses nothing it had logged. A resumed
run appends to the file after dropping its rows with a ``step`` beyond the checkpoint it resumes
from: the resumed run logs those steps again, so no step appears twice. A fresh run starts the
file anew. Rank 0 alone writes (the others get a writer that drops rows).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from .state import RunState

__all__ = ["COLUMNS", "MetricsCsv", "read_rows"]

COLUMNS = ("step", "epoch", "tokens", "wall_s", "train_loss", "valid_ppl", "lr")
HEADER = ",".join(COLUMNS)


def read_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a ``metrics.csv`` as dicts of strings (empty string: no value)."""
    with path.open(newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def _kept_lines(text: str, resume_step: int) -> list[str]:
    """The complete data lines of a metrics.csv's ``text`` up to ``resume_step`` ([] when the
    file is not ours). A line cut short by a kill mid-write has too few cells and goes too."""
    lines = text.splitlines()
    if not lines or lines[0] != HEADER:
        return []
    kept = []
    for line in lines[1:]:
        step = line.split(",", 1)[0]
        if line.count(",") == len(COLUMNS) - 1 and step.isdigit() and int(step) <= resume_step:
            kept.append(line)
    return kept


class MetricsCsv:
    """Rows of ``metrics.csv`` at ``path`` (None: a writer that drops everything, off rank 0).

    Args:
        path: the file.
        resume_step: the step of the checkpoint a resumed run continues from (rows after it go);
            None for a fresh run (any old file is replaced).
    """

    def __init__(self, path: Path | None, resume_step: int | None = None):
        self._file = None
        if path is None:
            return
        text = path.read_text(encoding="utf-8") if resume_step is not None and path.is_file() else ""
        content = "\n".join([HEADER, *_kept_lines(text, resume_step)]) + "\n" if text else HEADER + "\n"
        if content != text:  # fresh, or rows to drop: rewrite (atomically: never half of the old rows)
            temp = path.with_name(f".{path.name}.new")
            temp.write_text(content, encoding="utf-8")
            os.replace(temp, path)
        self._file = path.open("a", newline="", encoding="utf-8")

    def row(self, state: RunState, wall_s: float, lr: float, *, train_loss: float | None = None,
            valid_ppl: float | None = None) -> None:
        """Append one row at ``state``'s counters (a training row gives ``train_loss``, a
        validation row ``valid_ppl``)."""
        if self._file is None:
            return
        cells = [str(state.step), str(state.epoch), str(state.tokens), f"{wall_s:.3f}",
                 "" if train_loss is None else f"{train_loss:.6g}",
                 "" if valid_ppl is None else f"{valid_ppl:.6g}", f"{lr:.8g}"]
        self._file.write(",".join(cells) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
