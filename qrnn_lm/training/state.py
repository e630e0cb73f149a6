"""What a training run must remember to continue exactly, besides its weights, its optimiser and
the state carried along the training stream (:mod:`.schedule`, :mod:`.data_stream`): its counters
(:class:`Counters`), its validation history (:class:`History`) and its random generators
(:class:`RandomState`). Each has ``state_dict()`` and ``load_state_dict()`` (torchtitan's
``Stateful``); the checkpointer saves and loads them by name, knowing nothing of what is inside.

At the start of every step the trainer takes the state of what a step changes (counters, random
generators, carried stream, clock); a checkpoint written after an interruption in the middle of a
step uses it, so the resumed run replays that step with the same dropout masks and BPTT length.

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

from . import distributed

__all__ = ["Counters", "History", "RandomState", "capture_rng", "restore_rng", "SharedMasks"]


@dataclass
class Counters:
    """Where a run is (stored in checkpoints as ``counters``)."""

    epoch: int = 1  # the epoch in progress, 1-based
    position: int = 0  # next time step of this epoch's training stream (0 = epoch not started)
    step: int = 0  # optimizer steps done since the run began (what train.max_steps counts)
    tokens: int = 0  # training target tokens seen since the run began

    def state_dict(self) -> dict[str, int]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("epoch", "position", "step", "tokens"):
            setattr(self, key, int(state[key]))


@dataclass
class History:
    """The run's validation losses (stored in checkpoints as ``history``): what NT-ASGD and a
    finetune's stop read, and the best one, which ``best.pt`` holds."""

    val_losses: list[float] = field(default_factory=list)  # one per finished epoch
    best_val_loss: float = math.inf

    def state_dict(self) -> dict[str, Any]:
        return {"val_losses": list(self.val_losses), "best_val_loss": self.best_val_loss}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.val_losses = [float(value) for value in state["val_losses"]]
        self.best_val_loss = float(state["best_val_loss"])


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

class RandomState:
    """A run's random generators as one component (see the module docstring): the BPTT generator,
    the shared weight-drop generator and this process's default generators.

    A distributed run saves every rank's own generators (:meth:`merge_ranks`); a run resumed with
    the same number of ranks takes each rank's back, with another number each rank's own generator
    is seeded afresh from the run's seed, its rank and the step it resumes from.
    """

    def __init__(self, bptt: torch.Generator, shared: torch.Generator, seed: int, counters: Counters):
        self.bptt, self.shared, self.seed, self.counters = bptt, shared, seed, counters

    def state_dict(self) -> dict[str, Any]:
        return capture_rng(self.bptt, self.shared)

    def merge_ranks(self, states: list[dict[str, Any]]) -> dict[str, Any]:
        """Every rank's state (in rank order) -> the saved one: rank 0's, plus ``ranks`` when several."""
        return states[0] if len(states) == 1 else {**states[0], "ranks": states}

    def load_state_dict(self, rng: dict[str, Any]) -> None:
        """Put the saved states back (the counters are loaded first: a reseed uses their step)."""
        rank, world_size = distributed.get_rank(), distributed.get_world_size()
        restore_rng(rng, self.bptt, self.shared, own_streams=False)
        saved_ranks = rng.get("ranks")  # every rank's own generators, saved by a distributed run
        if world_size == 1:
            restore_rng(rng, self.bptt, self.shared)  # rank 0's own streams (or the one process's)
        elif saved_ranks is not None and len(saved_ranks) == world_size:
            restore_rng(saved_ranks[rank], self.bptt, self.shared)
        else:
            torch.manual_seed(distributed.rank_seed(self.seed, rank, self.counters.step))


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
