"""What a run saves and puts back: ``last.pt`` (resumable) and ``best.pt`` (best validation).

The file format (atomic write, safe read) is :mod:`qrnn_lm.models.checkpoint_file`; this module
names every key a training checkpoint holds and decides how a run saves and resumes:

* each training component with state (the model's weights, the optimiser and its schedule, the
  counters, the validation history, the budget's clock, the random generators, the carried
  stream, the fp16 gradient scaler) has ``state_dict()`` and ``load_state_dict()``, as torchtitan's
  ``Stateful``; :func:`components` names them, and :class:`Checkpointer` saves
  ``{name: component.state_dict()}`` and loads it back with one loop each way, knowing nothing of
  what is inside;
* :func:`read_resume_point` checks the checkpoint a run resumes from (its config must match the
  run's model and stream keys, it must hold training state), or refuses a fresh run into a folder
  that already holds one; the command line hands it the checkpoint it has read, so ``last.pt`` is
  read once;
* :func:`upgrade` turns a checkpoint of the earlier layout (before ``state_version`` 2: the base
  rate and the clock in ``history``) into today's, so it resumes bit for bit.

Distributed details: :meth:`Checkpointer.save` is called by every rank at the same point. A
component whose state is per rank (the carried stream: this rank's columns; the random
generators) has ``merge_ranks``: the ranks' states are gathered and merged, and rank 0 alone
writes, so a run resumes with any number of ranks (each component takes its part back).
``best.pt`` is read by rank 0 and its weights broadcast.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from ..config import Config, ConfigError, UserError, config_from_dict, config_to_dict
from ..data import Corpus
from ..models import LanguageModel
from ..models.checkpoint_file import CheckpointError, clean_state_dict, load_checkpoint, model_from_checkpoint, save_checkpoint
from . import distributed
from .stopping import sigint_deferred

__all__ = ["PREVIOUS", "STATE_VERSION", "Stateful", "components", "upgrade", "to_cpu", "ResumePoint", "read_resume_point",
           "resume_checkpoint", "resume_config_check", "check_same_data", "Checkpointer"]

PREVIOUS = "last.prev.pt"  # the training state before the newest last.pt, kept beside it

# The keys of a training checkpoint. The file's own (format_version, config, vocab, tokenizer, model) are
# what inference reads (qrnn_lm.models.checkpoint_file); the rest is the trainer's.
STATE_VERSION = 2  # 2: every component's state under its name (1: base rate and clock in "history")
KIND, CONFIG, VOCAB, DATA, VERSION = "kind", "config", "vocab", "data", "state_version"
TOKENIZER = "tokenizer"  # plain data (qrnn_lm.data.Tokenizer.state()); absent in older files: word
MODEL, OPTIMIZER, COUNTERS, HISTORY = "model", "optimizer", "counters", "history"
BUDGET, RNG, STREAM, SCALER = "budget", "rng", "stream", "scaler"
# What a step changes before its weight update: taken at the start of every step, so that a
# checkpoint written by an interruption mid-step holds the state the step started from.
STEP_STATE = (COUNTERS, HISTORY, BUDGET, RNG, STREAM)


class Stateful(Protocol):
    """A component a checkpoint saves (torchtitan's ``Stateful``); one whose state differs per rank
    also has ``merge_ranks(states: list) -> state``, the global state from every rank's."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class ModelWeights:
    """The model's weights as a component (key ``model``), without ``module.``/``_orig_mod.``."""

    def __init__(self, model: torch.nn.Module):
        self.model = model

    def state_dict(self) -> dict[str, torch.Tensor]:
        return clean_state_dict(self.model.state_dict())

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(clean_state_dict(state))


def components(*, model: torch.nn.Module, optimizer: Stateful, counters: Stateful, history: Stateful,
               budget: Stateful, rng: Stateful, stream: Stateful, scaler: Stateful | None = None) -> dict[str, Stateful]:
    """A run's components by checkpoint key, in loading order (the counters before the random
    generators, which may reseed from the step); ``scaler``: fp16's GradScaler, or None."""
    named = {MODEL: ModelWeights(model), OPTIMIZER: optimizer, COUNTERS: counters, HISTORY: history,
             BUDGET: budget, RNG: rng, STREAM: stream}
    if scaler is not None:
        named[SCALER] = scaler
    return named


def upgrade(payload: dict[str, Any]) -> dict[str, Any]:
    """A training checkpoint in today's layout: one of ``state_version`` 1 (written before the
    components owned their state) is converted, one of today's returned as it is."""
    if payload.get(VERSION, 1) >= STATE_VERSION or COUNTERS not in payload:
        return payload
    history, optimizer, train = payload[HISTORY], payload[OPTIMIZER], payload[CONFIG]["train"]
    return {
        **payload,
        VERSION: STATE_VERSION,
        OPTIMIZER: {"name": optimizer["name"], "lr": history["lr"], "state": optimizer["state"],
                    "recipe": {"optimizer": train["optimizer"], "lr": train["lr"]}},
        HISTORY: {"val_losses": history["val_losses"], "best_val_loss": history["best_val_loss"]},
        BUDGET: {"elapsed_s": history.get("elapsed_s", 0.0)},  # absent before max_minutes existed
    }


def to_cpu(state: Any) -> Any:
    """Copies of every tensor in ``state`` on the CPU (to gather across ranks and to save)."""
    if isinstance(state, torch.Tensor):
        return state.detach().cpu().clone()
    if isinstance(state, dict):
        return {key: to_cpu(value) for key, value in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(to_cpu(value) for value in state)
    return state

# Keys that must not change on resume: they define the weights' shapes or the training stream.
_FIXED_ON_RESUME = ("batch_size", "bptt", "variable_bptt")


@dataclass
class ResumePoint:
    """A loaded ``last.pt`` to continue from (in today's layout, see :func:`upgrade`), with its parsed config."""

    path: Path
    payload: dict[str, Any]
    config: Config


def resume_config_check(config: Config, saved: Config) -> None:
    """Raise UserError when ``config`` cannot continue a run trained with ``saved``: the
    ``[model]`` section and data.batch_size/bptt/variable_bptt must be equal."""
    changed = [f"model.{key}" for key, value in vars(config.model).items() if getattr(saved.model, key) != value]
    changed += [f"data.{key}" for key in _FIXED_ON_RESUME if getattr(config.data, key) != getattr(saved.data, key)]
    if changed:
        raise UserError(
            f"cannot resume: {', '.join(changed)} differ from the checkpoint's config; "
            "resume with the checkpoint's values or start a new run with --out NEW_DIR"
        )


def read_resume_point(resume: str | Path | None, config: Config, out_dir: Path,
                      payload: dict[str, Any] | None = None) -> ResumePoint | None:
    """The checkpoint to resume from (a run folder means its ``last.pt``), checked against
    ``config``; None for a fresh run, which refuses a folder that already holds ``last.pt``.
    ``payload``: the checkpoint ``resume`` names, already read (by the command line), else read here."""
    if resume is None:
        if (out_dir / "last.pt").exists() or (out_dir / PREVIOUS).exists():
            raise UserError(
                f"{out_dir} already holds a run (last.pt); continue it with --resume {out_dir} "
                "or choose another --out folder"
            )
        return None
    if payload is None:
        path, payload = resume_checkpoint(Path(resume))
    else:
        path = Path(resume)
    try:
        saved_config = config_from_dict(payload["config"])
    except ConfigError as error:
        raise UserError(f"cannot resume from {path}: its config is invalid ({error})") from None
    resume_config_check(config, saved_config)
    if COUNTERS not in payload:
        raise UserError(f"{path} holds no training state to resume; pass the run's last.pt")
    return ResumePoint(path, upgrade(payload), saved_config)


def resume_checkpoint(resume: Path, take_previous: bool = False) -> tuple[Path, dict[str, Any]]:
    """The checkpoint ``--resume RESUME`` continues from, loaded once: ``(path, payload)``: a run folder (or its ``last.pt``) means
    ``last.pt``, or the earlier ``last.prev.pt`` when ``last.pt`` is missing (a kill between the
    two renames where hard links are refused), or damaged and ``take_previous``. A damaged
    ``last.pt`` without ``take_previous`` is a UserError that offers the earlier file; a folder
    without either says there is nothing to resume."""
    folder = resume if resume.is_dir() else resume.parent
    if not resume.is_dir() and resume.name != "last.pt":
        return resume, load_checkpoint(resume)  # an explicit file: loading it says what is wrong
    last, previous = folder / "last.pt", folder / PREVIOUS
    if not last.exists():
        if previous.exists():
            return previous, load_checkpoint(previous)
        if resume.is_dir() or folder.is_dir():
            raise UserError(
                f"nothing to resume in {folder}: the run stopped before its first checkpoint; start it "
                f"again with the same command and --out {folder} instead of --resume"
            )
        return last, load_checkpoint(last)  # which says it does not exist
    try:
        return last, load_checkpoint(last)
    except CheckpointError as error:
        if not previous.exists():
            raise
        try:
            earlier = load_checkpoint(previous)
        except CheckpointError:
            raise error from None
        if take_previous:
            return previous, earlier
        counters = earlier.get(COUNTERS, {})
        raise UserError(
            f"{last} is damaged ({error}); the earlier {previous} (epoch {counters.get('epoch', '?')}, "
            f"step {counters.get('step', '?')}) is readable: add --resume-previous to continue from it"
        ) from None


def check_same_data(payload: dict[str, Any], corpus: Corpus) -> None:
    """Refuse to resume on other data files or another vocabulary than the checkpoint's."""
    saved = payload.get(DATA, {}).get("checksums", {})
    differing = sorted(name for name in set(saved) | set(corpus.checksums) if saved.get(name) != corpus.checksums.get(name))
    if differing or payload[VOCAB] != corpus.vocab.to_list():
        what = ", ".join(differing) if differing else "the vocabulary"
        raise UserError(
            f"cannot resume: the checkpoint was trained on other data ({what} differ); resume with "
            "the same dataset files or start a new run with --out NEW_DIR"
        )


class Checkpointer:
    """Writes a run's checkpoints into ``out_dir`` from its ``components`` (see :func:`components`),
    loads a resumed run's back, and reads ``best.pt`` back for the final test."""

    def __init__(self, out_dir: Path, config: Config, corpus: Corpus, components: dict[str, Stateful], warn=print):
        self.out_dir, self.config, self.corpus, self.warn = out_dir, config, corpus, warn
        self.components = components
        self.last_counters: dict[str, int] | None = None  # the counters last.pt holds (None: none written yet)
        self.last_saved = time.monotonic()  # when last.pt was last written, for timed checkpoints
        if distributed.is_main():
            # A kill during a write leaves its temp file (and a kill while keeping the previous
            # last.pt, its link); the run that continues owns the folder, so they go.
            for stale in [*out_dir.glob(".*.pt.*.tmp"), *out_dir.glob(".*.pt.link")]:
                stale.unlink(missing_ok=True)

    def load(self, payload: dict[str, Any]) -> None:
        """Put every component's saved state back (a resumed run's checkpoint, in today's layout);
        a component the checkpoint lacks (the fp16 scaler of an fp32 run) keeps its fresh state."""
        for name, component in self.components.items():
            if name in payload:
                component.load_state_dict(payload[name])
        self.last_counters = payload[COUNTERS]

    def load_weights(self, payload: dict[str, Any]) -> None:
        """Only the model's weights from ``payload`` (a finetune's starting checkpoint)."""
        self.components[MODEL].load_state_dict(payload[MODEL])

    def capture(self) -> dict[str, Any]:
        """The state of what a step changes (:data:`STEP_STATE`), to save if it is interrupted."""
        return {name: self.components[name].state_dict() for name in STEP_STATE}

    def save(self, kind: str, step_state: dict[str, Any] | None = None) -> Path | None:
        """Write ``<out>/<kind>.pt`` (kind "last" or "best") from every component's state now, or
        for those in ``step_state`` (:meth:`capture`) that state; a new ``last.pt`` keeps the one
        before as ``last.prev.pt``. Every rank calls it at the same point; rank 0 writes. Returns
        the path (written or not), or None when writing failed (disk full, permission): the
        previous file stays intact, one warning line says so, and training goes on."""
        path = self.out_dir / f"{kind}.pt"
        states = {name: component.state_dict() for name, component in self.components.items()
                  if step_state is None or name not in step_state}
        states.update(step_state or {})
        if kind == "last" and states[COUNTERS] == self.last_counters:
            # last.pt holds this very state already; writing it again would push the earlier
            # state out of last.prev.pt. (The same decision on every rank: equal counters.)
            return path
        if kind == "last":
            self.last_saved, self.last_counters = time.monotonic(), states[COUNTERS]
        per_rank = [name for name, component in self.components.items() if hasattr(component, "merge_ranks")]
        gathered = distributed.gather_objects({name: to_cpu(states[name]) for name in per_rank})
        for name in per_rank:
            states[name] = self.components[name].merge_ranks([rank[name] for rank in gathered])
        written = self._write(kind, path, states) if distributed.is_main() else path
        if kind == "last" and not distributed.broadcast_object(written is not None):
            # Nothing new on disk: the next save of this very state (the run's end, an interrupt)
            # must write it rather than count it as done. Every rank learns it from rank 0.
            self.last_counters = None
        return written

    def _write(self, kind: str, path: Path, states: dict[str, Any]) -> Path | None:
        """Rank 0's write of ``path`` (see :meth:`save`); None when it failed."""
        payload = {KIND: kind, CONFIG: config_to_dict(self.config), VOCAB: self.corpus.vocab.to_list(),
                   TOKENIZER: self.corpus.tokenizer.state(),
                   DATA: {"dataset": self.config.data.dataset, "checksums": dict(self.corpus.checksums)},
                   VERSION: STATE_VERSION, **states}
        try:
            # A stop signal waits for the write (then ends the run as it would have): raised inside
            # torch.save it tore the zip writer, which replaced it with a RuntimeError traceback.
            with sigint_deferred():
                return save_checkpoint(path, payload, previous=self.out_dir / PREVIOUS if kind == "last" else None)
        except OSError as error:
            reason = error.strerror or str(error)
            self.warn(f"warning: could not write {path} ({reason}); the previous {path.name} is kept, "
                      "training goes on")
            return None

    def minutes_since_last(self) -> float:
        return (time.monotonic() - self.last_saved) / 60

    def has_best(self) -> bool:
        """Whether rank 0's folder holds ``best.pt`` (the same answer on every rank)."""
        return distributed.broadcast_object((self.out_dir / "best.pt").exists())

    def load_best(self, device: torch.device) -> tuple[LanguageModel, float]:
        """The model of ``best.pt`` in eval mode and its validation loss: read by rank 0, its
        weights broadcast to the other ranks."""
        model, best_val = None, None
        if distributed.is_main():
            best = load_checkpoint(self.out_dir / "best.pt", map_location="cpu")
            model, _, _ = model_from_checkpoint(best, device)
            best_val = float(best[HISTORY]["best_val_loss"])
        if distributed.get_world_size() > 1:
            if model is None:
                model = LanguageModel(len(self.corpus.vocab), self.config.model).to(device).eval()
            distributed.broadcast_tensors(list(model.state_dict().values()))
            best_val = distributed.broadcast_object(best_val)
        return model, best_val
