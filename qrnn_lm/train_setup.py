"""Setting a run up (fresh or resumed) and writing its checkpoints.

``setup_run`` loads the data, builds the model, optimiser and BPTT generator from the config and,
when resuming, puts back everything from ``last.pt``: weights, optimiser (ASGD's averages too),
counters, history, RNG states and the carried stream state. ``save_run_checkpoint`` is the one
place that writes ``last.pt``/``best.pt`` (a distributed trainer calls it on rank 0 only).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from .checkpoint import clean_state_dict, load_checkpoint, save_checkpoint
from .config import Config, ConfigError, UserError, config_from_dict, config_to_dict
from .data import Corpus, Vocab, batchify, prepare_dataset
from .metrics import NullLogger
from .model import QRNNLanguageModel
from .nt_asgd import make_optimizer
from .train_state import (
    RunState,
    Snapshot,
    capture_rng,
    capture_stream,
    restore_rng,
    restore_stream,
    stream_to_cpu,
)
from .train_step import Meter, TrainingError

__all__ = ["Run", "TrainingError", "setup_run", "make_stream", "save_run_checkpoint", "resume_config_check"]

# Keys that must not change on resume: they define the weights' shapes or the training stream.
_FIXED_ON_RESUME = ("batch_size", "bptt", "variable_bptt")


@dataclass
class Run:
    """Everything the training loop works on."""

    config: Config
    out_dir: Path
    device: torch.device
    progress: bool
    corpus: Corpus
    model: QRNNLanguageModel
    optimizer: torch.optim.Optimizer
    generator: torch.Generator  # draws the BPTT lengths, nothing else
    state: RunState
    train_data: torch.Tensor  # [N, batch_size] on device
    val_data: torch.Tensor  # [N, eval_batch_size] on device
    hidden: list[torch.Tensor] | None = None  # carried across segments, detached
    snapshot: Snapshot | None = None  # state at the start of the step in progress, if any
    logger: Any = field(default_factory=NullLogger)
    meter: Meter = field(default_factory=Meter)
    echo: Callable[[str], None] = print

    @property
    def vocab(self) -> Vocab:
        return self.corpus.vocab

    def batchify(self, ids: torch.Tensor, batch_size: int) -> torch.Tensor:
        return make_stream(ids, batch_size, self.device)


def make_stream(ids: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    """``[N]`` token ids -> ``[N // B, B]`` parallel streams on ``device``: the one place where the
    training, validation and test streams are cut (a distributed run would take its columns here)."""
    return batchify(ids, batch_size).to(device)


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


def _echo(progress: bool) -> Callable[[str], None]:
    if not progress:
        return lambda message: None
    from tqdm.auto import tqdm

    return tqdm.write


def setup_run(
    config: Config,
    out_dir: Path,
    device: torch.device,
    resume: str | Path | None,
    data_dir: str | Path | None,
    progress: bool,
) -> Run:
    payload = None
    if resume is not None:
        path = Path(resume)
        payload = load_checkpoint(path / "last.pt" if path.is_dir() else path)
        try:
            saved_config = config_from_dict(payload["config"])
        except ConfigError as error:
            raise UserError(f"cannot resume from {path}: its config is invalid ({error})") from None
        resume_config_check(config, saved_config)
        if "counters" not in payload:
            raise UserError(f"{path} holds no training state to resume; pass the run's last.pt")
    elif (out_dir / "last.pt").exists():
        raise UserError(
            f"{out_dir} already holds a run (last.pt); continue it with --resume {out_dir} "
            "or choose another --out folder"
        )
    out_dir.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(config.train.seed)  # parameters and dropout masks
    folder = prepare_dataset(config.data.dataset, data_dir, progress=progress)
    corpus = Corpus.load(folder, progress=progress)
    if payload is not None:
        _check_same_data(payload, corpus)

    model = QRNNLanguageModel(len(corpus.vocab), config.model).to(device)
    generator = torch.Generator().manual_seed(config.train.seed)  # BPTT lengths only
    state = RunState(lr=config.train.lr, optimizer=config.train.optimizer)
    hidden = None
    if payload is not None:
        model.load_state_dict(clean_state_dict(payload["model"]))
        state = RunState.from_payload(payload)
    if payload is not None and config.train.lr != saved_config.train.lr:
        state.lr = config.train.lr  # an explicit new learning rate wins over the saved (decayed) one
    fresh_optimizer = payload is None or config.train.optimizer != saved_config.train.optimizer
    if payload is not None and fresh_optimizer:
        state.optimizer = config.train.optimizer  # the user switched optimiser: start it afresh
    optimizer = make_optimizer(state.optimizer, model, state.lr, config.train.weight_decay)
    if not fresh_optimizer:
        optimizer.load_state_dict(payload["optimizer"]["state"])
        for group in optimizer.param_groups:  # the config's values, not the saved ones
            group["lr"] = state.lr
            group["weight_decay"] = config.train.weight_decay
    if payload is not None:
        restore_rng(payload["rng"], generator)
        hidden = restore_stream(model, payload["stream"], device)

    run = Run(
        config=config,
        out_dir=out_dir,
        device=device,
        progress=progress,
        corpus=corpus,
        model=model,
        optimizer=optimizer,
        generator=generator,
        state=state,
        train_data=make_stream(corpus.train, config.data.batch_size, device),
        val_data=make_stream(corpus.valid, config.data.eval_batch_size, device),
        hidden=hidden,
        echo=_echo(progress),
    )
    if payload is not None:
        run.echo(f"resuming {resume}: epoch {state.epoch}, step {state.step}")
    return run


def _check_same_data(payload: dict[str, Any], corpus: Corpus) -> None:
    saved = payload.get("data", {}).get("checksums", {})
    differing = sorted(name for name in set(saved) | set(corpus.checksums) if saved.get(name) != corpus.checksums.get(name))
    if differing or payload["vocab"] != corpus.vocab.to_list():
        what = ", ".join(differing) if differing else "the vocabulary"
        raise UserError(
            f"cannot resume: the checkpoint was trained on other data ({what} differ); resume with "
            "the same dataset files or start a new run with --out NEW_DIR"
        )


def save_run_checkpoint(run: Run, kind: str, snapshot: Snapshot | None = None) -> Path:
    """Write ``<out>/<kind>.pt`` (kind "last" or "best") from the model's current weights and the
    given snapshot (default: the live state, which is consistent between steps)."""
    if snapshot is None:
        snapshot = Snapshot(run.state, capture_rng(run.generator), capture_stream(run.model, run.hidden))
    payload = {
        "kind": kind,
        "config": config_to_dict(run.config),
        "vocab": run.vocab.to_list(),
        "model": clean_state_dict(run.model.state_dict()),
        "optimizer": {"name": snapshot.state.optimizer, "state": run.optimizer.state_dict()},
        "rng": snapshot.rng,
        "counters": snapshot.state.counters(),
        "history": snapshot.state.history(),
        "stream": stream_to_cpu(snapshot.stream),
        "data": {"dataset": run.config.data.dataset, "checksums": dict(run.corpus.checksums)},
    }
    return save_checkpoint(run.out_dir / f"{kind}.pt", payload)
