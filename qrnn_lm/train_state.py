"""What a training run must remember to continue exactly: counters, history, RNG states and the
state carried along the training stream (hidden states and the QRNN layers' saved inputs).

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
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = [
    "RunState",
    "Snapshot",
    "capture_rng",
    "restore_rng",
    "capture_stream",
    "restore_stream",
    "sigint_deferred",
    "SharedMasks",
    "stream_columns",
    "concat_streams",
]


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
    optimizer: str = "sgd"  # "sgd", "asgd" (after the NT-ASGD switch) or "adam"

    def counters(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "step": self.step, "tokens": self.tokens}

    def history(self) -> dict[str, Any]:
        return {"val_losses": list(self.val_losses), "best_val_loss": self.best_val_loss, "lr": self.lr}

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


def capture_stream(model: nn.Module, hidden: list[torch.Tensor] | None) -> dict[str, Any]:
    """The state carried from one segment to the next: hidden ``[B, H]`` per layer and each layer's
    saved inputs ``prevX`` (``[window - 1, B, I]`` or None). References, not copies: the model
    replaces these tensors rather than writing into them."""
    return {
        "hidden": None if hidden is None else [h.detach() for h in hidden],
        "prev_x": [getattr(layer, "prevX", None) for layer in model.layers],
    }


def restore_stream(model: nn.Module, stream: dict[str, Any], device: torch.device) -> list[torch.Tensor] | None:
    """Put the saved inputs back into the layers; return the hidden state (on ``device``)."""
    for layer, prev in zip(model.layers, stream["prev_x"]):
        layer.prevX = None if prev is None else prev.to(device)
    hidden = stream["hidden"]
    return None if hidden is None else [h.to(device) for h in hidden]


def stream_to_cpu(stream: dict[str, Any]) -> dict[str, Any]:
    """Copies on the CPU, for a checkpoint."""
    def cpu(tensor):
        return None if tensor is None else tensor.detach().cpu().clone()

    return {
        "hidden": None if stream["hidden"] is None else [cpu(h) for h in stream["hidden"]],
        "prev_x": [cpu(p) for p in stream["prev_x"]],
    }


def stream_columns(stream: dict[str, Any], start: int, stop: int) -> dict[str, Any]:
    """The carried state of streams ``start:stop`` (hidden ``[B, H]`` rows, prev_x ``[w-1, B, I]``
    columns) of a stream state saved for the global batch."""
    return {
        "hidden": None if stream["hidden"] is None else [h[start:stop] for h in stream["hidden"]],
        "prev_x": [None if p is None else p[:, start:stop] for p in stream["prev_x"]],
    }


def concat_streams(streams: list[dict[str, Any]]) -> dict[str, Any]:
    """Join the ranks' stream states (in rank order) into the state of the global batch."""
    first = streams[0]
    hidden = None
    if first["hidden"] is not None:
        hidden = [torch.cat(parts, dim=0) for parts in zip(*(s["hidden"] for s in streams))]
    prev_x = [None if parts[0] is None else torch.cat(parts, dim=1) for parts in zip(*(s["prev_x"] for s in streams))]
    return {"hidden": hidden, "prev_x": prev_x}


@dataclass
class Snapshot:
    """State at a step boundary: what a checkpoint holds besides weights and optimizer."""

    state: RunState
    rng: dict[str, Any]
    stream: dict[str, Any]


@contextmanager
def sigint_deferred() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) until the block ends, then raise KeyboardInterrupt.

    Wraps the few lines that change weights and counters together (optimizer step, counter update),
    so an interruption never leaves them half-updated. Outside the main thread it does nothing
    (signal handlers can only be installed there).
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
