"""Data-parallel helpers on PyTorch's own engine (``torch.distributed``, launched by ``torchrun``).

A leaf module: it imports nothing of qrnn_lm, so the trainer, the CLI and tests can all use it.

* :func:`session` starts the process group from torchrun's environment variables (``RANK``,
  ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``): NCCL for CUDA devices (one
  device per local rank), gloo for the CPU. Without those variables it is a no-op: one process.
* :func:`get_rank`, :func:`get_world_size`, :func:`is_main` answer for the current process
  (0 and 1 when not distributed), so callers never branch on "is there a process group".
* Collectives that are no-ops in one process: :func:`all_reduce_sum`, :func:`all_reduce_max`,
  :func:`all_gather_floats`,
  :func:`gather_objects`,
  :func:`broadcast_object`, :func:`broadcast_tensors`, :func:`barrier`.
* :func:`wrap_ddp` wraps a model in DistributedDataParallel when there are several ranks.
* :func:`column_range` says which contiguous block of the batch's streams a rank owns.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "session",
    "launched_by_torchrun",
    "check_devices",
    "get_rank",
    "get_local_rank",
    "get_world_size",
    "is_main",
    "barrier",
    "all_reduce_sum",
    "all_reduce_max",
    "all_gather_floats",
    "gather_objects",
    "broadcast_object",
    "broadcast_tensors",
    "wrap_ddp",
    "column_range",
    "rank_seed",
]


def launched_by_torchrun() -> bool:
    """True when torchrun (or ``qrnn_lm.cli.train.launch_local``) started this process as one of several ranks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def exit_rank(code: Any) -> None:
    """End this rank's process now with exit status ``code`` (a ``SystemExit`` code): flush the
    standard streams, then ``os._exit``, skipping the C/C++ libraries' teardown.

    Why: a gloo rank on the CPU sometimes aborts *after* its work is done, while the interpreter
    shuts down ("terminate called without an active exception", SIGABRT, no Python frame; both
    ranks had written their results). Seen about once in 20 launches under load, with the process
    group already destroyed. The abort turned a finished run into "rank N failed". Checkpoints
    and logs are closed before this point (checkpoints are written atomically with fsync).
    """
    if isinstance(code, str):
        print(code, file=sys.stderr)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0 if code is None else int(code))


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """This process's global rank (0 without a process group)."""
    return dist.get_rank() if _active() else 0


def get_world_size() -> int:
    """Number of processes in the run (1 without a process group)."""
    return dist.get_world_size() if _active() else 1


def get_local_rank() -> int:
    """Rank on this machine (torchrun's ``LOCAL_RANK``; 0 without a process group)."""
    return int(os.environ.get("LOCAL_RANK", "0")) if _active() else 0


def is_main() -> bool:
    """Rank 0: the one process that writes logs, checkpoints and console output."""
    return get_rank() == 0


@contextmanager
def session(device: torch.device) -> Iterator[torch.device]:
    """Join the process group described by torchrun's environment for the block; yield the device
    this rank computes on.

    ``device`` is the resolved device type of the run: for CUDA each rank gets
    ``cuda:LOCAL_RANK`` and the NCCL backend; for the CPU the gloo backend. Not started by
    torchrun (or a group already exists, e.g. made by a test): nothing is initialised here and
    ``device`` is yielded unchanged. The group is destroyed on exit only when made here.
    """
    if _active() or not launched_by_torchrun():
        if _active() and device.type == "cuda" and device.index is None:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        yield device
        return
    check_devices(device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")
    try:
        yield device
    finally:
        dist.destroy_process_group()


def check_devices(device: torch.device) -> None:
    """Raise ValueError when torchrun started more CUDA ranks on this machine than it has GPUs
    (each rank needs its own device)."""
    if device.type != "cuda" or not launched_by_torchrun():
        return
    wanted, count = int(os.environ.get("LOCAL_WORLD_SIZE", "1")), torch.cuda.device_count()
    if wanted > count:
        raise ValueError(
            f"{wanted} processes on this machine need {wanted} CUDA devices (one each), but it has {count}; "
            f"start at most {count} processes per node, or train on the CPU with --device cpu"
        )


def barrier() -> None:
    """Wait for every rank (no-op in one process)."""
    if _active():
        dist.barrier()


def _collective_device() -> torch.device:
    """Where collective tensors must live: the current CUDA device for NCCL, else the CPU."""
    if _active() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(values: Sequence[float]) -> list[float]:
    """Element-wise sum over all ranks of a few numbers (in float64); the values themselves in one
    process. Used for token-weighted means: ``[loss_sum, token_count]``."""
    if not _active():
        return [float(v) for v in values]
    tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def all_reduce_max(values: Sequence[float]) -> list[float]:
    """Element-wise maximum over all ranks of a few numbers (in float64); the values themselves in
    one process. Used for the wall-clock budget: every rank acts on the slowest rank's clock."""
    if not _active():
        return [float(v) for v in values]
    tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor.tolist()


def all_gather_floats(values: Sequence[float]) -> list[list[float]]:
    """Every rank's few numbers, in rank order, on every rank (float64): ``[values]`` in one
    process. One small collective, cheap enough for every training step."""
    row = [float(v) for v in values]
    if not _active():
        return [row]
    tensor = torch.tensor(row, dtype=torch.float64, device=_collective_device())
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor)
    return [part.tolist() for part in parts]


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable; tensors should be on the CPU), in rank order, on every rank:
    ``[obj]`` in one process."""
    if not _active():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (``obj`` itself in one process)."""
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def broadcast_tensors(tensors: Sequence[torch.Tensor], src: int = 0) -> None:
    """Overwrite ``tensors`` in place on every rank with rank ``src``'s values (e.g. weights that
    only rank 0 read from a checkpoint). No-op in one process."""
    if not _active():
        return
    with torch.no_grad():
        for tensor in tensors:
            dist.broadcast(tensor, src=src)


def wrap_ddp(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel around ``model`` when there are several ranks, else ``model``.

    For the language models: they have no buffers (the saved inputs ``prevX`` and the hidden
    state are plain per-rank tensors, each rank carrying its own streams), so nothing is broadcast at each forward; every
    parameter is used at every step (weight drop's ``parametrizations.weight.original``, or an LSTM
    layer's ``parametrizations.weight_hh_l0.original``, included, so its gradient is all-reduced
    like any other); the tied embedding/decoder weight is one
    Parameter, so one gradient.
    """
    if get_world_size() == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def column_range(total: int, rank: int, world_size: int) -> tuple[int, int]:
    """The contiguous block ``[start, stop)`` of ``total`` streams owned by ``rank``.

    Blocks are as equal as possible (the first ``total % world_size`` ranks get one more stream,
    like ``torch.tensor_split``); a rank may get none when ``total < world_size``.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    base, extra = divmod(total, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def rank_seed(seed: int, rank: int, step: int = 0) -> int:
    """A 63-bit seed for rank ``rank``'s own random stream (its dropout masks), derived from the
    run's ``seed`` and the optimizer ``step`` it starts from: distinct per rank, reproducible."""
    digest = hashlib.sha256(f"qrnn-lm/{seed}/{rank}/{step}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1
