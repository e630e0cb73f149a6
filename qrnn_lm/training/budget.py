"""A run's budget: its limits (``train.epochs``, ``max_steps``, ``max_minutes``), how much of them
is used (``progress``, what the learning-rate schedule reads) and when to stop.

* ``progress`` is the largest of the fractions of every limit the run has: steps done / max_steps,
  the position in the epochs ((completed epochs + position / epoch length) / epochs) and elapsed
  seconds / (max_minutes * 60), clamped to 1. Whichever limit ends the run, progress reaches 1
  at its last step, so a schedule defined on it ends exactly there.
* The elapsed time is the wall-clock seconds of training and validation since the run began,
  across resumes: a resumed run starts from the seconds its checkpoint holds
  (``RunState.elapsed``; 0 for checkpoints written before it existed).
* The clock is read at every step (:meth:`Budget.tick`, before the optimizer step, so the step's
  learning rate and the stop decision use the same reading). In a data-parallel run with
  ``max_minutes`` every rank takes the largest of the ranks' clocks, so all ranks use the same
  progress and stop at the same step. Runs without ``max_minutes`` never let the clock change what
  they compute: they stay bit-reproducible.
"""

from __future__ import annotations

import time
from typing import Callable

from ..config import TrainConfig
from . import distributed

__all__ = ["Budget", "wall_clock"]


def wall_clock() -> float:
    """Seconds on the monotonic clock (the budget's default clock; tests pass a fake one)."""
    return time.monotonic()


class Budget:
    """The limits of one run and the part of them used.

    Args:
        train: the ``[train]`` section (epochs, max_steps, max_minutes).
        epoch_length: time steps of one epoch (the training stream's ``limit``).
        elapsed: seconds already used by the run before this process (from its checkpoint).
        clock: a function returning seconds (default :func:`wall_clock`).
    """

    def __init__(self, train: TrainConfig, epoch_length: int, elapsed: float = 0.0,
                 clock: Callable[[], float] | None = None):
        self.train, self.epoch_length = train, max(epoch_length, 1)
        self.clock = clock if clock is not None else wall_clock
        self.base = elapsed  # seconds before this process
        self.origin = self.clock() - elapsed
        self.seconds = elapsed  # the elapsed seconds agreed at the last tick

    def start(self) -> None:
        """The run's loop begins now: the clock counts from ``elapsed`` from here on."""
        self.origin = self.clock() - self.base

    def elapsed(self) -> float:
        """Seconds of the run so far (for logs and checkpoints): this rank's clock, and never less
        than the ranks agreed at the last tick, so a checkpoint resumes at least where the last
        stop decision was taken."""
        return max(self.clock() - self.origin, self.seconds)

    def tick(self) -> None:
        """Read the clock for the step in progress (every rank agrees on the largest reading when
        the run has ``max_minutes``: one tiny all-reduce)."""
        seconds = self.clock() - self.origin
        if self.train.max_minutes and distributed.get_world_size() > 1:
            seconds = distributed.all_reduce_max([seconds])[0]
        self.seconds = seconds

    def progress(self, step: int, epoch: int, position: int) -> float:
        """The fraction of the budget used once the optimizer has done ``step`` steps and the
        stream of epoch ``epoch`` (1-based) reached ``position``, with the last tick's seconds."""
        train = self.train
        done_epochs = epoch - 1 + min(position, self.epoch_length) / self.epoch_length
        fractions = [done_epochs / train.epochs]
        if train.max_steps:
            fractions.append(step / train.max_steps)
        if train.max_minutes:
            fractions.append(self.seconds / (60.0 * train.max_minutes))
        return min(1.0, max(fractions))

    def stop_reason(self, step: int) -> str | None:
        """``"max_steps"`` or ``"max_minutes"`` when that limit is used up after ``step`` steps
        (the time as of the last tick, the same on every rank), else None."""
        train = self.train
        if train.max_steps and step >= train.max_steps:
            return "max_steps"
        if train.max_minutes and self.seconds >= 60.0 * train.max_minutes:
            return "max_minutes"
        return None
