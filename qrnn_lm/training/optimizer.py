"""The optimiser and its learning-rate schedule: SGD with the non-monotonically triggered switch to
averaged SGD (NT-ASGD, Merity et al. 2017), and Adam; :class:`Schedule` owns them for a run.

NT-ASGD as salesforce/awd-lstm-lm's main.py: train with plain SGD; after each validation, if the
validation loss is worse than the best of all validations except the last ``nonmono`` ones, replace
SGD by ``torch.optim.ASGD(t0=0, lambd=0)``, which keeps a running average of every parameter in
``state[p]["ax"]``. From then on validation, ``best.pt`` and the final test use the averaged
weights; training continues on the raw ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ..config import OPTIMIZERS as CONFIG_OPTIMIZERS
from ..config import TrainConfig
from .lr_schedule import lr_multiplier
from .state import RunState

__all__ = ["make_optimizer", "switch_to_asgd", "should_switch_to_asgd", "averaged_weights", "OPTIMIZERS", "Schedule"]

OPTIMIZERS = (*CONFIG_OPTIMIZERS, "asgd")  # the names stored in checkpoints: train.optimizer's, and NT-ASGD's


def make_optimizer(name: str, model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """A fresh optimiser over ``model.parameters()``; ``name`` in :data:`OPTIMIZERS`."""
    params = list(model.parameters())
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
    if name == "asgd":
        # t0=0: average from the first step after the switch; lambd=0: no lr decay.
        return torch.optim.ASGD(params, lr=lr, t0=0, lambd=0.0, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":  # decoupled weight decay (Loshchilov & Hutter): train.weight_decay is AdamW's
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


def should_switch_to_asgd(val_losses: list[float], val_loss: float, nonmono: int) -> bool:
    """awd-lstm-lm's trigger: more than ``nonmono`` earlier validations, and ``val_loss`` is worse
    than the best of them excluding the last ``nonmono``. ``val_losses`` excludes ``val_loss``."""
    return len(val_losses) > nonmono and val_loss > min(val_losses[:-nonmono])


def switch_to_asgd(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """The averaged-SGD optimiser that replaces SGD when NT-ASGD triggers."""
    return make_optimizer("asgd", model, lr, weight_decay)


@contextmanager
def averaged_weights(model: nn.Module, optimizer: torch.optim.Optimizer) -> Iterator[bool]:
    """Inside the block the model holds ASGD's averaged weights (when ``optimizer`` is ASGD and has
    stepped); the raw weights are put back on exit, also on errors. Yields whether it swapped."""
    if not isinstance(optimizer, torch.optim.ASGD):
        yield False
        return
    saved = []
    for param in model.parameters():
        state = optimizer.state.get(param, {})
        if "ax" in state:
            saved.append((param, param.detach().clone()))
            param.data.copy_(state["ax"])
    try:
        yield bool(saved)
    finally:
        with torch.no_grad():
            for param, raw in saved:
                param.copy_(raw)


class Schedule:
    """A run's optimiser and learning rate, as awd-lstm-lm schedules them.

    * every step's learning rate is the base rate times the schedule's multiplier at the budget's
      progress (``train.lr_schedule``, :func:`~.lr_schedule.lr_multiplier`; 1 by default) times
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
        self.optimizer = make_optimizer(state.optimizer, model, state.lr, train.weight_decay)
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
        """Context: the model holds ASGD's averaged weights inside (see :func:`averaged_weights`)."""
        return averaged_weights(self.model, self.optimizer)

    def end_of_epoch(self, val_loss: float, echo: Callable[[str], None]) -> None:
        """After the validation of epoch ``state.epoch``: maybe switch to ASGD, record
        ``val_loss`` in the history NT-ASGD reads, maybe divide the base rate by 10."""
        state = self.state
        if (state.optimizer == "sgd" and self.train.asgd
                and should_switch_to_asgd(state.val_losses, val_loss, self.train.nonmono)):
            echo(f"switching to averaged SGD (NT-ASGD) after epoch {state.epoch}")
            self.optimizer = switch_to_asgd(self.model, state.lr, self.train.weight_decay)
            state.optimizer = "asgd"
        state.val_losses.append(val_loss)
        if state.epoch in self.train.lr_decay_epochs:
            state.lr /= 10.0
            self._set("lr", state.lr)
            echo(f"learning rate divided by 10: {state.lr:g}")
