"""What a training run must remember to continue exactly: counters, history and RNG states (the
state carried along the training stream is :mod:`qrnn_lm.training.data_stream`'s).

The trainer keeps a :class:`RunState` and, at the start of every step, a :class:`Snapshot` of the
random and carried state; a checkpoint written after an interruption in the middle of a step uses
the snapshot, so the resumed run replays that step with the same dropout masks and BPTT length.

Randomness comes from three sources: the BPTT generator (segment lengths; equal on every rank),
the *shared* generator of :class:`SharedMasks` (weight-drop masks: one model, so one mask per step
on every rank), and the device's default generator (the per-stream masks: locked dropout, zoneout,
embedding dropout; each rank of a distributed run has its own stream).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ["RunState", "Snapshot", "capture_rng", "restore_rng", "SharedMasks"]


@dataclass
class RunState:
    """Counters and history of a run (stored in checkpoints as ``counters`` and ``history``)."""

    epoch: int = 1  # the epoch in progress, 1-based
    position: int = 0  # next time step of this epoch's training stream (0 = epoch not started)
    step: int = 0  # optimizer steps done since the run began (what train.max_steps counts)
    tokens: int = 0  # training target tokens seen since the run began
    val_losses: list[float] = field(default_factory=list)  # validation losses, for NT-ASGD
    best_val_loss: float = math.inf  # best validation loss so far (the one in best.pt)
    lr: float = 0.0  # base learning rate (after lr_decay_epochs), before the length rescaling
    optimizer: str = "sgd"  # "sgd", "asgd" (after the NT-ASGD switch), "adam" or "adamw"
    # wall-clock seconds of training and validation since the run began, across resumes (what
    # train.max_minutes and metrics.csv's wall_s count); set when a checkpoint's state is taken
    elapsed: float = 0.0

    def counters(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "step": self.step, "tokens": self.tokens}

    def history(self) -> dict[str, Any]:
        return {"val_losses": list(self.val_losses), "best_val_loss": self.best_val_loss, "lr": self.lr,
                "elapsed_s": self.elapsed}

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> RunState:
        counters, history = payload["counters"], payload["history"]
        return cls(
            epoch=int(counters["epoch"]),
            position=int(counters["position"]),
            step=int(counters["step"]),
            tokens=int(counters["tokens"]),
            val_losses=[float(v) for v in history["val_losses"]],
            best_val_loss=float(history["best_val_loss"]),
            lr=float(history["lr"]),
            optimizer=str(payload["optimizer"]["name"]),
            elapsed=float(history.get("elapsed_s", 0.0)),  # absent from checkpoints before max_minutes
        )

    def copy(self) -> RunState:
        return RunState(**{**asdict(self), "val_losses": list(self.val_losses)})


def capture_rng(generator: torch.Generator, shared: torch.Generator | None = None) -> dict[str, Any]:
    """The torch CPU RNG, every CUDA device's RNG (when CUDA is initialised), the BPTT generator
    and the shared weight-drop generator (when given)."""
    state = {"torch": torch.get_rng_state(), "bptt": generator.get_state(), "cuda": []}
    if shared is not None:
        state["shared"] = shared.get_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], generator: torch.Generator, shared: torch.Generator | None = None,
                *, own_streams: bool = True) -> None:
    """Put saved states back. ``own_streams=False`` leaves the default CPU/CUDA generators alone
    (a distributed rank whose own stream was not saved seeds it instead)."""
    generator.set_state(state["bptt"])
    if shared is not None and "shared" in state:
        try:
            shared.set_state(state["shared"])
        except RuntimeError:  # saved on another device type: keep the fresh seeding
            pass
    if not own_streams:
        return
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


class SharedMasks:
    """Draws every weight-drop mask from one seeded generator, the same on every rank.

    Weight drop masks the *model's* weights, so all ranks of a data-parallel run must use the same
    mask at a step, exactly as one process with the whole batch would. ``F.dropout`` has no
    generator argument, so hooks around each given parametrization module swap the device's
    default generator state with this generator's for the duration of the call.
    """

    def __init__(self, modules: list[nn.Module], device: torch.device, seed: int):
        self.generator = torch.Generator(device=device).manual_seed(seed)
        if device.type == "cuda":
            self._default = torch.cuda.default_generators[device.index if device.index is not None else 0]
        else:
            self._default = torch.default_generator
        self._saved: list[torch.Tensor] = []
        self.handles = []
        for module in modules:
            self.handles.append(module.register_forward_pre_hook(self._enter))
            self.handles.append(module.register_forward_hook(self._leave))

    def _enter(self, module, args):
        self._saved.append(self._default.get_state())
        self._default.set_state(self.generator.get_state())

    def _leave(self, module, args, output):
        self.generator.set_state(self._default.get_state())
        self._default.set_state(self._saved.pop())


@dataclass
class Snapshot:
    """State at a step boundary: what a checkpoint holds besides weights and optimizer."""

    state: RunState
    rng: dict[str, Any]
    stream: dict[str, Any]
