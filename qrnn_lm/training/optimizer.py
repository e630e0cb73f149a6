"""The optimiser and its learning-rate schedule: SGD with the non-monotonically triggered switch to
averaged SGD (NT-ASGD, Merity et al. 2017), and Adam/AdamW (torch's fused kernel on the CPU);
:class:`~.schedule.Schedule` owns them for a run.

NT-ASGD as salesforce/awd-lstm-lm's main.py: train with plain SGD; after each validation, if the
validation loss is worse than the best of all validations except the last ``nonmono`` ones, replace
SGD by ``torch.optim.ASGD(t0=0, lambd=0)``, which keeps a running average of every parameter in
``state[p]["ax"]``. From then on validation, ``best.pt`` and the final test use the averaged
weights; training continues on the raw ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ..config import OPTIMIZERS as CONFIG_OPTIMIZERS


__all__ = ["make_optimizer", "switch_to_asgd", "should_switch_to_asgd", "averaged_weights", "OPTIMIZERS"]

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
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, **_adam_implementation(params))
    if name == "adamw":  # decoupled weight decay (Loshchilov & Hutter): train.weight_decay is AdamW's
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, **_adam_implementation(params))
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


def _adam_implementation(params: list[nn.Parameter]) -> dict:
    """``fused=True`` when every parameter is on the CPU, else torch's default (foreach on CUDA).

    On the CPU torch's default is the per-parameter for-loop; the fused kernel gives the same
    update to within rounding (max |difference| 3e-8 after 5 steps at ptb-cpu-bf16's 10.6M parameters,
    ``scripts/bench_optimizer.py``) several times faster (docs/performance.md). A checkpoint keeps
    the implementation in its param groups, so a resumed run steps exactly like the run that wrote
    it, old for-loop checkpoints included."""
    return dict(fused=True) if params and all(p.device.type == "cpu" for p in params) else {}


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
