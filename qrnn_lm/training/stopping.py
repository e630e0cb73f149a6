"""When a run stops: on a signal (Ctrl-C, SIGTERM, SIGHUP), or when its budget is used.

Signals: stopping a run cleanly on Ctrl-C (SIGINT), SIGTERM and SIGHUP.

A scheduler, a container runtime or a preempting cloud sends SIGTERM first; a closed terminal
sends SIGHUP. :class:`StopSignals`, installed for a run, handles all three like Ctrl-C:

* one process (``immediate=True``): the handler raises :class:`Interrupted` at once (a
  KeyboardInterrupt carrying the signal number), so the trainer saves the start of the step in
  progress;
* data parallel (``immediate=False``): the handler only records the signal; the trainer asks every
  rank after each step (one tiny all-gather) and all ranks stop at the same step. Raising inside a
  collective would leave the other ranks waiting in it.

:func:`sigint_deferred` wraps the few lines that change the weights and the counters together
(optimizer step, counter update, a checkpoint's bookkeeping), so that an interruption never leaves
them half-updated: the signal is held until the block ends, then raised as :class:`Interrupted`.

The budget: a run's limits (``train.epochs``, ``max_steps``, ``max_minutes``), how much of them
is used (``progress``, what the learning-rate schedule reads) and when to stop.

* ``progress`` is the largest of the fractions of every limit the run has: steps done / max_steps,
  the position in the epochs ((completed epochs + position / epoch length) / epochs) and elapsed
  seconds / (max_minutes * 60), clamped to 1. Whichever limit ends the run, progress reaches 1
  at its last step, so a schedule defined on it ends exactly there.
* The elapsed time is the wall-clock seconds of training and validation since the run began,
  across resumes: a resumed run starts from the seconds its checkpoint holds (:meth:`Budget.state_dict`,
  checkpoint key ``budget``; 0 for checkpoints written before it existed).
* The clock is read at every step (:meth:`Budget.tick`, before the optimizer step, so the step's
  learning rate and the stop decision use the same reading). In a data-parallel run with
  ``max_minutes`` every rank takes the largest of the ranks' clocks, so all ranks use the same
  progress and stop at the same step. Runs without ``max_minutes`` never let the clock change what
  they compute: they stay bit-reproducible.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ..config import TrainConfig
from . import distributed

__all__ = ["Interrupted", "StopSignals", "STOP_SIGNALS", "sigint_deferred", "Budget", "wall_clock"]


# What ends a run cleanly; SIGHUP does not exist on Windows.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class Interrupted(KeyboardInterrupt):
    """A stop signal reached the run. ``signum``: which one (the CLI exits with 128 + signum);
    ``saved``: the trainer already wrote ``last.pt`` for it."""

    def __init__(self, signum: int = signal.SIGINT, saved: bool = False):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.saved = int(signum), saved


_installed: StopSignals | None = None  # the handlers of the run in progress, if any


class StopSignals:
    """Handlers for :data:`STOP_SIGNALS` for the ``with`` block (main thread only; elsewhere a no-op).

    ``pending`` is the first signal received (None before), kept for the trainer to act on.
    """

    def __init__(self, immediate: bool = True):
        self.immediate = immediate
        self.pending: int | None = None
        self._deferring = 0  # depth of sigint_deferred blocks
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        global _installed
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
            _installed = self
        return self

    def __exit__(self, *exc) -> None:
        global _installed
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
        if _installed is self:
            _installed = None

    def agreed(self, timed: bool) -> tuple[int, bool]:
        """After a step, what every rank acts on: ``(signal, timed)``, the first rank's pending
        signal (0: none) and whether any rank's clock says a checkpoint is due (``timed``: this
        rank's). One process: its own; data parallel: one tiny all-gather, so all ranks agree."""
        signum = self.pending or 0
        if distributed.get_world_size() > 1:
            rows = distributed.all_gather_floats([signum, timed])
            signum = next((int(row[0]) for row in rows if row[0]), 0)
            timed = any(row[1] for row in rows)
        return signum, bool(timed)

    def _handle(self, signum, frame) -> None:
        if self.pending is None:
            self.pending = signum
        if self.immediate and not self._deferring:
            raise Interrupted(signum)


@contextmanager
def sigint_deferred() -> Iterator[None]:
    """Hold stop signals until the block ends, then raise :class:`Interrupted` (in a data-parallel
    run the signal stays pending for the trainer's next agreement instead).

    Without :class:`StopSignals` installed, Ctrl-C alone is held. Outside the main thread it does
    nothing (signal handlers can only be installed there).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handlers = _installed
    if handlers is not None:
        handlers._deferring += 1
        try:
            yield
        finally:
            handlers._deferring -= 1
        if handlers.immediate and not handlers._deferring and handlers.pending is not None:
            raise Interrupted(handlers.pending)
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise Interrupted(signal.SIGINT)


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

    def state_dict(self) -> dict[str, float]:
        return {"elapsed_s": self.elapsed()}

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Continue from the seconds a checkpoint holds."""
        elapsed = float(state["elapsed_s"])
        self.base, self.origin, self.seconds = elapsed, self.clock() - elapsed, elapsed

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
