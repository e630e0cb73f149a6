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

from ..config import LR_SCHEDULES as SCHEDULES
from ..config import TrainConfig
from . import optimizer as optim
from .state import History

__all__ = ["SCHEDULES", "lr_multiplier", "Schedule"]



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

    It owns the optimiser's name (``name``: "sgd", "asgd" after the NT-ASGD switch, "adam",
    "adamw"), the base rate (``base_lr``, after ``lr_decay_epochs``) and the optimiser's state:
    :meth:`state_dict` / :meth:`load_state_dict` save and put them back (checkpoint key
    ``optimizer``).

    Args:
        model: the parameters' owner.
        train: the ``[train]`` section.
        history: the run's validation history, which NT-ASGD reads and each validation extends.
        name: the optimiser to start with (default ``train.optimizer``; a finetune starts in "asgd").
    """

    def __init__(self, model: nn.Module, train: TrainConfig, history: History, name: str | None = None):
        self.model, self.train, self.history = model, train, history
        self.name = name if name is not None else train.optimizer
        self.base_lr = train.lr
        self.multiplier = 1.0  # the schedule's factor at the last step
        self.optimizer = optim.make_optimizer(self.name, model, self.base_lr, train.weight_decay)

    def state_dict(self) -> dict[str, Any]:
        """The optimiser's name, state and base rate, and the recipe's optimiser and rate (so that
        a resumed run sees which of them its own recipe changed)."""
        return {"name": self.name, "lr": self.base_lr, "state": self.optimizer.state_dict(),
                "recipe": {"optimizer": self.train.optimizer, "lr": self.train.lr}}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """Continue the saved optimiser. A new ``train.lr`` in the recipe wins over the saved
        (decayed) rate; another ``train.optimizer`` than the saved recipe's starts that optimiser
        afresh; otherwise the optimiser's state is put back, with the recipe's weight decay."""
        train, recipe = self.train, saved["recipe"]
        self.base_lr = train.lr if train.lr != recipe["lr"] else float(saved["lr"])
        fresh = train.optimizer != recipe["optimizer"]
        self.name = train.optimizer if fresh else str(saved["name"])
        self.optimizer = optim.make_optimizer(self.name, self.model, self.base_lr, train.weight_decay)
        if not fresh:
            self.optimizer.load_state_dict(saved["state"])
            self._set("lr", self.base_lr)  # the config's values, not the saved ones
            self._set("weight_decay", train.weight_decay)

    def _set(self, key: str, value: float) -> None:
        for group in self.optimizer.param_groups:
            group[key] = value

    @property
    def lr(self) -> float:
        """The scheduled rate of the last step (before the segment-length rescaling): what is logged."""
        return self.base_lr * self.multiplier

    def step(self, length_ratio: float, progress: float) -> None:
        """The optimiser step at ``base_lr * multiplier(progress) * length_ratio`` (the segment's
        length over bptt); ``progress``: the budget's fraction used once this step is done."""
        train = self.train
        self.multiplier = lr_multiplier(progress, train.lr_schedule, train.warmup, train.lr_floor)
        self._set("lr", self.base_lr * self.multiplier * length_ratio)
        self.optimizer.step()
        self._set("lr", self.base_lr)

    def averaged(self):
        """Context: the model holds ASGD's averaged weights inside (see :func:`.optimizer.averaged_weights`)."""
        return optim.averaged_weights(self.model, self.optimizer)

    def end_of_epoch(self, epoch: int, val_loss: float, echo: Callable[[str], None]) -> None:
        """After the validation of epoch ``epoch``: maybe switch to ASGD, record ``val_loss`` in
        the history NT-ASGD reads, maybe divide the base rate by 10."""
        history = self.history
        if (self.name == "sgd" and self.train.asgd
                and optim.should_switch_to_asgd(history.val_losses, val_loss, self.train.nonmono)):
            echo(f"switching to averaged SGD (NT-ASGD) after epoch {epoch}")
            self.optimizer = optim.switch_to_asgd(self.model, self.base_lr, self.train.weight_decay)
            self.name = "asgd"
        history.val_losses.append(val_loss)
        if epoch in self.train.lr_decay_epochs:
            self.base_lr /= 10.0
            self._set("lr", self.base_lr)
            echo(f"learning rate divided by 10: {self.base_lr:g}")
