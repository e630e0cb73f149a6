"""The per-step learning-rate multiplier (``train.lr_schedule``, ``warmup``, ``lr_floor``): a pure
function of ``progress``, the fraction of the run's budget used (see :mod:`.budget`).

Defined on the fraction of the budget rather than on steps, so that whichever limit ends the run
(``max_steps``, ``epochs`` or ``max_minutes``) the decay ends exactly there, never cut off half-way.
"""

from __future__ import annotations

import math

from ..config import LR_SCHEDULES as SCHEDULES

__all__ = ["SCHEDULES", "lr_multiplier"]


def lr_multiplier(progress: float, schedule: str = "constant", warmup: float = 0.0, floor: float = 0.0) -> float:
    """The factor on the base learning rate at ``progress`` in [0, 1] (clamped to it).

    * warm-up: ``progress / warmup`` while ``progress < warmup`` (0 at the start, 1 at its end);
    * then ``"constant"``: 1; ``"linear"``: from 1 down to ``floor`` along a line; ``"cosine"``:
      ``floor + (1 - floor) * (1 + cos(pi * d)) / 2``, d going from 0 to 1 over the rest of the
      budget (halfway between 1 and ``floor`` at its middle). Both reach ``floor`` at progress 1.

    ``"constant"`` without warm-up is exactly 1.0, so the default schedule changes no bit.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    progress = min(max(progress, 0.0), 1.0)
    if progress < warmup:
        return progress / warmup
    if schedule == "constant" or warmup >= 1.0:
        return 1.0
    decayed = (progress - warmup) / (1.0 - warmup)  # 0 at the peak, 1 at the end of the budget
    shape = 1.0 - decayed if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * decayed))
    return floor + (1.0 - floor) * shape
