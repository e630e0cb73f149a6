"""What a run saves and puts back: ``last.pt`` (resumable) and ``best.pt`` (best validation).

The file format (atomic write, safe read) is :mod:`qrnn_lm.models.checkpoint`; this module decides
what a training run puts in it and how a resumed run takes it back:

* :func:`read_resume_point` reads and checks the checkpoint a run resumes from (its config must
  match the run's model and stream keys, it must hold training state), or refuses a fresh run
  into a folder that already holds one;
* :class:`Checkpointer` writes ``<out>/<kind>.pt`` from the model, the optimiser and a
  :class:`~qrnn_lm.training.state.Snapshot`, and reads ``best.pt`` back for the final test.

Distributed details: :meth:`Checkpointer.save` is called by every rank at the same point; the
ranks' carried stream states (their columns of the global batch) and own RNG states are gathered
and rank 0 alone writes, so a run resumes with any number of ranks (:func:`restore_rng_states`
picks each rank's own generators back when the number of ranks is the same, else reseeds them).
``best.pt`` is read by rank 0 and its weights broadcast.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import Config, ConfigError, UserError, config_from_dict, config_to_dict
from ..data import Corpus
from ..models import LanguageModel
from ..models.checkpoint import CheckpointError, clean_state_dict, load_checkpoint, model_from_checkpoint, save_checkpoint
from . import distributed
from .state import Snapshot, restore_rng
from .stream import concat_streams, stream_to_cpu

__all__ = ["PREVIOUS", "ResumePoint", "read_resume_point", "choose_resume_file", "resume_checkpoint", "resume_config_check", "check_same_data", "restore_rng_states",
           "Checkpointer"]

PREVIOUS = "last.prev.pt"  # the training state before the newest last.pt, kept beside it

# Keys that must not change on resume: they define the weights' shapes or the training stream.
_FIXED_ON_RESUME = ("batch_size", "bptt", "variable_bptt")


@dataclass
class ResumePoint:
    """A loaded ``last.pt`` to continue from, with its parsed config."""

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


def read_resume_point(resume: str | Path | None, config: Config, out_dir: Path) -> ResumePoint | None:
    """The checkpoint to resume from (a run folder means its ``last.pt``), checked against
    ``config``; None for a fresh run, which refuses a folder that already holds ``last.pt``."""
    if resume is None:
        if (out_dir / "last.pt").exists() or (out_dir / PREVIOUS).exists():
            raise UserError(
                f"{out_dir} already holds a run (last.pt); continue it with --resume {out_dir} "
                "or choose another --out folder"
            )
        return None
    path, payload = resume_checkpoint(Path(resume))
    try:
        saved_config = config_from_dict(payload["config"])
    except ConfigError as error:
        raise UserError(f"cannot resume from {path}: its config is invalid ({error})") from None
    resume_config_check(config, saved_config)
    if "counters" not in payload:
        raise UserError(f"{path} holds no training state to resume; pass the run's last.pt")
    return ResumePoint(path, payload, saved_config)


def choose_resume_file(resume: Path, take_previous: bool = False) -> Path:
    """The file of :func:`resume_checkpoint`."""
    return resume_checkpoint(resume, take_previous)[0]


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
        counters = earlier.get("counters", {})
        raise UserError(
            f"{last} is damaged ({error}); the earlier {previous} (epoch {counters.get('epoch', '?')}, "
            f"step {counters.get('step', '?')}) is readable: add --resume-previous to continue from it"
        ) from None


def check_same_data(payload: dict[str, Any], corpus: Corpus) -> None:
    """Refuse to resume on other data files or another vocabulary than the checkpoint's."""
    saved = payload.get("data", {}).get("checksums", {})
    differing = sorted(name for name in set(saved) | set(corpus.checksums) if saved.get(name) != corpus.checksums.get(name))
    if differing or payload["vocab"] != corpus.vocab.to_list():
        what = ", ".join(differing) if differing else "the vocabulary"
        raise UserError(
            f"cannot resume: the checkpoint was trained on other data ({what} differ); resume with "
            "the same dataset files or start a new run with --out NEW_DIR"
        )


def restore_rng_states(payload: dict[str, Any], generator: torch.Generator, shared: torch.Generator, seed: int) -> None:
    """Put the saved RNG states back: the generators every rank shares (BPTT lengths, weight-drop
    masks), and this rank's own (its dropout masks) when the same number of ranks saved the run;
    with another number of ranks, this rank's own generator is seeded afresh from the step."""
    rank, world_size = distributed.get_rank(), distributed.get_world_size()
    rng = payload["rng"]
    restore_rng(rng, generator, shared, own_streams=False)
    saved_ranks = rng.get("ranks")  # every rank's own generators, saved by a distributed run
    if world_size == 1:
        restore_rng(rng, generator, shared)  # rank 0's own streams (or the one process's)
    elif saved_ranks is not None and len(saved_ranks) == world_size:
        restore_rng(saved_ranks[rank], generator, shared)
    else:
        torch.manual_seed(distributed.rank_seed(seed, rank, int(payload["counters"]["step"])))


class Checkpointer:
    """Writes a run's checkpoints into ``out_dir`` and reads its ``best.pt`` back."""

    def __init__(self, out_dir: Path, config: Config, corpus: Corpus, warn=print,
                 resumed_counters: dict[str, int] | None = None):
        self.out_dir, self.config, self.corpus, self.warn = out_dir, config, corpus, warn
        self.last_counters = resumed_counters  # the counters last.pt holds (None: none written yet)
        self.last_saved = time.monotonic()  # when last.pt was last written, for timed checkpoints
        if distributed.is_main():
            # A kill during a write leaves its temp file (and a kill while keeping the previous
            # last.pt, its link); the run that continues owns the folder, so they go.
            for stale in [*out_dir.glob(".*.pt.*.tmp"), *out_dir.glob(".*.pt.link")]:
                stale.unlink(missing_ok=True)

    def save(self, kind: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             snapshot: Snapshot) -> Path | None:
        """Write ``<out>/<kind>.pt`` (kind "last" or "best") from the model's current weights, the
        optimiser and ``snapshot``; a new ``last.pt`` keeps the one before as ``last.prev.pt``.
        Every rank calls it at the same point; rank 0 writes. Returns the path (written or not), or
        None when writing failed (disk full, permission): the previous file stays intact, one
        warning line says so, and training goes on."""
        path = self.out_dir / f"{kind}.pt"
        counters = snapshot.state.counters()
        if kind == "last" and counters == self.last_counters:
            # last.pt holds this very state already; writing it again would push the earlier
            # state out of last.prev.pt. (The same decision on every rank: equal counters.)
            return path
        if kind == "last":
            self.last_saved, self.last_counters = time.monotonic(), counters
        stream, rng = stream_to_cpu(snapshot.stream), snapshot.rng
        if distributed.get_world_size() > 1:
            rank_states = distributed.gather_objects({"stream": stream, "rng": rng})
            stream = concat_streams([state["stream"] for state in rank_states])
            rng = {**rng, "ranks": [state["rng"] for state in rank_states]}
        if not distributed.is_main():
            return path
        payload = {
            "kind": kind,
            "config": config_to_dict(self.config),
            "vocab": self.corpus.vocab.to_list(),
            "tokenizer": self.corpus.tokenizer.state(),
            "model": clean_state_dict(model.state_dict()),
            "optimizer": {"name": snapshot.state.optimizer, "state": optimizer.state_dict()},
            "rng": rng,
            "counters": snapshot.state.counters(),
            "history": snapshot.state.history(),
            "stream": stream,
            "data": {"dataset": self.config.data.dataset, "checksums": dict(self.corpus.checksums)},
        }
        try:
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
            best_val = float(best["history"]["best_val_loss"])
        if distributed.get_world_size() > 1:
            if model is None:
                model = LanguageModel(len(self.corpus.vocab), self.config.model).to(device).eval()
            distributed.broadcast_tensors(list(model.state_dict().values()))
            best_val = distributed.broadcast_object(best_val)
        return model, best_val
