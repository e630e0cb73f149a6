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

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import Config, ConfigError, UserError, config_from_dict, config_to_dict
from ..data import Corpus
from ..models import QRNNLanguageModel
from ..models.checkpoint import clean_state_dict, load_checkpoint, model_from_checkpoint, save_checkpoint
from . import distributed
from .state import Snapshot, restore_rng
from .stream import concat_streams, stream_to_cpu

__all__ = ["ResumePoint", "read_resume_point", "resume_config_check", "check_same_data", "restore_rng_states",
           "Checkpointer"]

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
        if (out_dir / "last.pt").exists():
            raise UserError(
                f"{out_dir} already holds a run (last.pt); continue it with --resume {out_dir} "
                "or choose another --out folder"
            )
        return None
    path = Path(resume)
    payload = load_checkpoint(path / "last.pt" if path.is_dir() else path)
    try:
        saved_config = config_from_dict(payload["config"])
    except ConfigError as error:
        raise UserError(f"cannot resume from {path}: its config is invalid ({error})") from None
    resume_config_check(config, saved_config)
    if "counters" not in payload:
        raise UserError(f"{path} holds no training state to resume; pass the run's last.pt")
    return ResumePoint(path, payload, saved_config)


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

    def __init__(self, out_dir: Path, config: Config, corpus: Corpus):
        self.out_dir, self.config, self.corpus = out_dir, config, corpus

    def save(self, kind: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer, snapshot: Snapshot) -> Path:
        """Write ``<out>/<kind>.pt`` (kind "last" or "best") from the model's current weights, the
        optimiser and ``snapshot``. Every rank calls it at the same point; rank 0 writes. Returns
        the path (written or not)."""
        path = self.out_dir / f"{kind}.pt"
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
            "model": clean_state_dict(model.state_dict()),
            "optimizer": {"name": snapshot.state.optimizer, "state": optimizer.state_dict()},
            "rng": rng,
            "counters": snapshot.state.counters(),
            "history": snapshot.state.history(),
            "stream": stream,
            "data": {"dataset": self.config.data.dataset, "checksums": dict(self.corpus.checksums)},
        }
        return save_checkpoint(path, payload)

    def has_best(self) -> bool:
        """Whether rank 0's folder holds ``best.pt`` (the same answer on every rank)."""
        return distributed.broadcast_object((self.out_dir / "best.pt").exists())

    def load_best(self, device: torch.device) -> tuple[QRNNLanguageModel, float]:
        """The model of ``best.pt`` in eval mode and its validation loss: read by rank 0, its
        weights broadcast to the other ranks."""
        model, best_val = None, None
        if distributed.is_main():
            best = load_checkpoint(self.out_dir / "best.pt", map_location="cpu")
            model, _, _ = model_from_checkpoint(best, device)
            best_val = float(best["history"]["best_val_loss"])
        if distributed.get_world_size() > 1:
            if model is None:
                model = QRNNLanguageModel(len(self.corpus.vocab), self.config.model).to(device).eval()
            distributed.broadcast_tensors(list(model.state_dict().values()))
            best_val = distributed.broadcast_object(best_val)
        return model, best_val
