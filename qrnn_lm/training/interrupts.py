"""Keeping an interruption from landing half-way through an update.

:func:`sigint_deferred` wraps the few lines that change the weights and the counters together
(optimizer step, counter update, a checkpoint's bookkeeping), so that Ctrl-C never leaves them
half-updated: the signal is held until the block ends, then raised as KeyboardInterrupt.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["sigint_deferred"]


@contextmanager
def sigint_deferred() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) until the block ends, then raise KeyboardInterrupt.

    Outside the main thread it does nothing (signal handlers can only be installed there).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt
