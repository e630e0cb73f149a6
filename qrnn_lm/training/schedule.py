"""A run's learning-rate schedule: :class:`Schedule` owns the optimiser (:mod:`.optimizer`) and
sets every step's rate; :func:`lr_multiplier` is the per-step factor (``train.lr_schedule``,
``warmup``, ``lr_floor``), a pure function of ``progress``, the fraction of the run's budget used
(see :mod:`.stopping`).

The multiplier is defined on the fraction of the budget rather than on steps, so that whichever limit ends the run
(``max_steps``, ``epochs`` or ``max_minutes``) the decay ends exactly there, never cut off half-way.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from torch import nn

from ..config import TrainConfig
from . import optimizer as optim
from .state import RunState

__all__ = ["SCHEDULES", "lr_multiplier", "Schedule"]

SCHEDULES = ("constant", "cosine", "linear")


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


class Schedule:
    """A run's optimiser and learning rate, as awd-lstm-lm schedules them.

    * every step's learning rate is the base rate times the schedule's multiplier at the budget's
      progress (``train.lr_schedule``, :func:`lr_multiplier`; 1 by default) times
      ``segment length / bptt``;
    * after each validation, NT-ASGD may replace SGD by averaged SGD (``train.asgd``, ``nonmono``);
    * after the epochs in ``train.lr_decay_epochs`` the base rate is divided by 10.

    The base rate and the optimiser's name live in the run's :class:`RunState` (``state.lr``,
    ``state.optimizer``), so checkpoints and snapshots carry them.

    Args:
        model: the parameters' owner.
        train: the ``[train]`` section.
        state: the run's counters; on resume, already read from the checkpoint.
        saved: on resume, ``(the checkpoint's payload, its [train] section)``. An explicit new
            ``train.lr`` wins over the saved (decayed) rate; another ``train.optimizer`` than the
            saved one starts that optimiser afresh; otherwise the optimiser's state is put back.
    """

    def __init__(self, model: nn.Module, train: TrainConfig, state: RunState,
                 saved: tuple[dict[str, Any], TrainConfig] | None = None):
        self.model, self.train, self.state = model, train, state
        self.multiplier = 1.0  # the schedule's factor at the last step
        fresh = saved is None or train.optimizer != saved[1].optimizer
        if saved is not None and train.lr != saved[1].lr:
            state.lr = train.lr
        if saved is not None and fresh:
            state.optimizer = train.optimizer  # the user switched optimiser: start it afresh
        self.optimizer = optim.make_optimizer(state.optimizer, model, state.lr, train.weight_decay)
        if not fresh:
            self.optimizer.load_state_dict(saved[0]["optimizer"]["state"])
            self._set("lr", state.lr)  # the config's values, not the saved ones
            self._set("weight_decay", train.weight_decay)

    def _set(self, key: str, value: float) -> None:
        for group in self.optimizer.param_groups:
            group[key] = value

    @property
    def lr(self) -> float:
        """The scheduled rate of the last step (before the segment-length rescaling): what is logged."""
        return self.state.lr * self.multiplier

    def step(self, length_ratio: float, progress: float) -> None:
        """The optimiser step at ``state.lr * multiplier(progress) * length_ratio`` (the segment's
        length over bptt); ``progress``: the budget's fraction used once this step is done."""
        train = self.train
        self.multiplier = lr_multiplier(progress, train.lr_schedule, train.warmup, train.lr_floor)
        self._set("lr", self.state.lr * self.multiplier * length_ratio)
        self.optimizer.step()
        self._set("lr", self.state.lr)

    def averaged(self):
        """Context: the model holds ASGD's averaged weights inside (see :func:`.optimizer.averaged_weights`)."""
        return optim.averaged_weights(self.model, self.optimizer)

    def end_of_epoch(self, val_loss: float, echo: Callable[[str], None]) -> None:
        """After the validation of epoch ``state.epoch``: maybe switch to ASGD, record
        ``val_loss`` in the history NT-ASGD reads, maybe divide the base rate by 10."""
        state = self.state
        if (state.optimizer == "sgd" and self.train.asgd
                and optim.should_switch_to_asgd(state.val_losses, val_loss, self.train.nonmono)):
            echo(f"switching to averaged SGD (NT-ASGD) after epoch {state.epoch}")
            self.optimizer = optim.switch_to_asgd(self.model, state.lr, self.train.weight_decay)
            state.optimizer = "asgd"
        state.val_losses.append(val_loss)
        if state.epoch in self.train.lr_decay_epochs:
            state.lr /= 10.0
            self._set("lr", state.lr)
            echo(f"learning rate divided by 10: {state.lr:g}")
