"""Stopping a run cleanly on Ctrl-C (SIGINT), SIGTERM and SIGHUP.

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
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["Interrupted", "StopSignals", "STOP_SIGNALS", "sigint_deferred"]

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
