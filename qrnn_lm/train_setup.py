"""Setting a run up (fresh or resumed) and writing its checkpoints.

``setup_run`` loads the data, builds the model, optimiser and BPTT generator from the config and,
when resuming, puts back everything from ``last.pt``: weights, optimiser (ASGD's averages too),
counters, history, RNG states and the carried stream state. ``save_run_checkpoint`` is the one
place that writes ``last.pt``/``best.pt``.

Data parallel (torchrun, see :mod:`qrnn_lm.distributed`): ``data.batch_size`` is the global batch;
``make_stream`` gives each rank its contiguous block of stream columns, the model is wrapped in
DistributedDataParallel for training (``Run.ddp``), and ``save_run_checkpoint`` (called by every
rank at the same point) gathers the ranks' carried stream states and RNG states so that rank 0
writes the state of the global batch: a run resumes with any number of ranks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from . import distributed
from .checkpoint import clean_state_dict, load_checkpoint, save_checkpoint
from .config import Config, ConfigError, UserError, config_from_dict, config_to_dict
from .data import Corpus, Vocab, batchify, prepare_dataset
from .metrics import NullLogger
from .model import QRNNLanguageModel, WeightDrop
from .nt_asgd import make_optimizer
from .train_state import (
    RunState,
    SharedMasks,
    Snapshot,
    capture_rng,
    capture_stream,
    concat_streams,
    restore_rng,
    restore_stream,
    stream_columns,
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
    train_data: torch.Tensor  # [N, batch_size / world_size]: this rank's training streams, on device
    val_data: torch.Tensor  # [N, about eval_batch_size / world_size]: this rank's share, on device
    shared: SharedMasks  # the weight-drop masks' generator, equal on every rank
    ddp: torch.nn.Module  # what training calls: DistributedDataParallel(model), or model itself
    rank: int = 0
    world_size: int = 1
    hidden: list[torch.Tensor] | None = None  # carried across segments, detached
    snapshot: Snapshot | None = None  # state at the start of the step in progress, if any
    logger: Any = field(default_factory=NullLogger)
    meter: Meter = field(default_factory=Meter)
    echo: Callable[[str], None] = print

    @property
    def vocab(self) -> Vocab:
        return self.corpus.vocab

    def batchify(self, ids: torch.Tensor, batch_size: int) -> torch.Tensor:
        """This rank's share of ``batch_size`` evaluation streams (may be uneven, even empty)."""
        return make_stream(ids, batch_size, self.device, self.rank, self.world_size)

    def rng(self) -> dict[str, Any]:
        return capture_rng(self.generator, self.shared.generator)


def make_stream(ids: torch.Tensor, batch_size: int, device: torch.device, rank: int = 0, world_size: int = 1,
                *, even: str | None = None) -> torch.Tensor:
    """``[N]`` token ids -> ``[N // B, B]`` parallel streams cut as in one process, of which this
    rank keeps its contiguous block of columns (``[N // B, B / world_size]`` when even), on
    ``device``: the one place where the training, validation and test streams are cut.

    ``even`` names the config key of ``batch_size`` when every rank must get the same number of
    streams (training: equal token counts make DDP's average the global mean); a batch size that
    the number of processes does not divide is then a UserError.
    """
    if even is not None and batch_size % world_size:
        raise UserError(
            f"{even} = {batch_size} must be divisible by the number of processes ({world_size}): it is the "
            f"global batch, split into equal per-rank blocks; use e.g. --set {even}={batch_size // world_size * world_size or world_size}"
        )
    start, stop = distributed.column_range(batch_size, rank, world_size)
    return batchify(ids, batch_size)[:, start:stop].contiguous().to(device)


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


def _echo(progress: bool, console: bool) -> Callable[[str], None]:
    """Where the run's console lines go: nowhere off rank 0, through tqdm (so they do not break a
    bar) with progress bars, else straight to stdout, flushed so a redirected log shows each line
    as it happens."""
    if not console:
        return lambda message: None
    if not progress:
        return lambda message: print(message, flush=True)
    from tqdm.auto import tqdm

    return tqdm.write


def setup_run(
    config: Config,
    out_dir: Path,
    device: torch.device,
    resume: str | Path | None,
    data_dir: str | Path | None,
    progress: bool,
    console: bool,
) -> Run:
    """The run's state, fresh or from ``resume``. ``progress``: tqdm bars; ``console``: print the
    run's console lines (rank 0 only)."""
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
    if distributed.is_main():
        out_dir.mkdir(parents=True, exist_ok=True)  # rank 0 alone writes into it

    rank, world_size = distributed.get_rank(), distributed.get_world_size()
    torch.manual_seed(config.train.seed)  # parameters (equal on every rank) and dropout masks
    corpus = _load_corpus(config, data_dir, progress)
    if payload is not None:
        _check_same_data(payload, corpus)
    train_data = make_stream(corpus.train, config.data.batch_size, device, rank, world_size, even="data.batch_size")

    model = QRNNLanguageModel(len(corpus.vocab), config.model).to(device)
    generator = torch.Generator().manual_seed(config.train.seed)  # BPTT lengths only: equal on every rank
    weight_drops = [module for module in model.modules() if isinstance(module, WeightDrop)]
    shared = SharedMasks(weight_drops, device, config.train.seed + 1)
    if world_size > 1:
        torch.manual_seed(distributed.rank_seed(config.train.seed, rank))  # this rank's own dropout masks
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
        hidden = _restore_rank_state(payload, model, generator, shared, device, config.train.seed, rank, world_size)

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
        train_data=train_data,
        val_data=make_stream(corpus.valid, config.data.eval_batch_size, device, rank, world_size),
        shared=shared,
        ddp=_wrap_ddp(model, device),
        rank=rank,
        world_size=world_size,
        hidden=hidden,
        echo=_echo(progress, console),
    )
    if payload is not None:
        run.echo(f"resuming {resume}: epoch {state.epoch}, step {state.step}")
    return run


def _load_corpus(config: Config, data_dir: str | Path | None, progress: bool) -> Corpus:
    """Rank 0 prepares (maybe downloads) and tokenises the dataset first, then each other
    machine's first rank, then all the others, which find the files and the token cache ready:
    no two processes download into one folder, nor tokenise a large corpus, at once."""
    rank, local_rank = distributed.get_rank(), distributed.get_local_rank()
    turn = 0 if rank == 0 else 1 if local_rank == 0 else 2
    corpus = None
    for current in range(3 if distributed.get_world_size() > 1 else 1):
        if turn == current:
            corpus = Corpus.load(prepare_dataset(config.data.dataset, data_dir, progress=progress), progress=progress)
        distributed.barrier()
    return corpus


def _wrap_ddp(model: QRNNLanguageModel, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel around ``model`` when there are several ranks.

    The model has no buffers (the saved inputs ``prevX`` and the hidden state are plain per-rank
    tensors, each rank carrying its own streams), so nothing is broadcast at each forward; every
    parameter is used at every step (weight drop's ``parametrizations.weight.original`` included,
    so its gradient is all-reduced like any other); the tied embedding/decoder weight is one
    Parameter, so one gradient.
    """
    if distributed.get_world_size() == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def _restore_rank_state(payload, model, generator, shared, device, seed, rank, world_size):
    """RNG states and this rank's columns of the carried stream state (saved for the global batch,
    so any number of ranks can resume). Returns this rank's hidden state."""
    rng = payload["rng"]
    restore_rng(rng, generator, shared.generator, own_streams=False)  # the generators all ranks share
    saved_ranks = rng.get("ranks")  # every rank's own generators, saved by a distributed run
    if world_size == 1:
        restore_rng(rng, generator, shared.generator)  # rank 0's own streams (or the one process's)
    elif saved_ranks is not None and len(saved_ranks) == world_size:
        restore_rng(saved_ranks[rank], generator, shared.generator)
    else:  # another number of ranks saved this run: seed this rank's own dropout masks afresh
        torch.manual_seed(distributed.rank_seed(seed, rank, int(payload["counters"]["step"])))
    batch = payload["config"]["data"]["batch_size"]
    start, stop = distributed.column_range(batch, rank, world_size)
    return restore_stream(model, stream_columns(payload["stream"], start, stop), device)


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
    given snapshot (default: the live state, which is consistent between steps).

    With several ranks every rank must call it at the same point: the ranks' stream states (their
    columns of the global batch) and RNG states are gathered, and rank 0 alone writes. Returns the
    path (written or not)."""
    if snapshot is None:
        snapshot = Snapshot(run.state, run.rng(), capture_stream(run.model, run.hidden))
    path = run.out_dir / f"{kind}.pt"
    stream, rng = stream_to_cpu(snapshot.stream), snapshot.rng
    if run.world_size > 1:
        rank_states = distributed.gather_objects({"stream": stream, "rng": rng})
        stream = concat_streams([state["stream"] for state in rank_states])
        rng = {**rng, "ranks": [state["rng"] for state in rank_states]}
    if run.rank != 0:
        return path
    payload = {
        "kind": kind,
        "config": config_to_dict(run.config),
        "vocab": run.vocab.to_list(),
        "model": clean_state_dict(run.model.state_dict()),
        "optimizer": {"name": snapshot.state.optimizer, "state": run.optimizer.state_dict()},
        "rng": rng,
        "counters": snapshot.state.counters(),
        "history": snapshot.state.history(),
        "stream": stream,
        "data": {"dataset": run.config.data.dataset, "checksums": dict(run.corpus.checksums)},
    }
    return save_checkpoint(path, payload)
