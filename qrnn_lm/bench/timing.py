"""Timing helpers shared by the benchmarks: medians over repeats after a warm-up, interleaved.

Every comparison in a benchmark is a ratio of two medians measured in the same run, with the
candidates timed round-robin in a rotating order (A, B, C, B, C, A, C, A, B, ...), so background
load on a shared machine hits them alike.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

__all__ = ["synchronize", "round_robin_samples", "time_round_robin", "machine_description"]


def synchronize(device: torch.device | str) -> None:
    """Wait for the device's queued work (a no-op on CPU), so a timer sees finished work."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def round_robin_samples(candidates: dict[str, Callable[[], object]], repeats: int, warmup: int,
                        device: torch.device | str = "cpu", setups: dict | None = None,
                        capped: tuple[str, ...] = (), cap: int = 3) -> dict[str, list[float]]:
    """Seconds of every timed call of each ``name -> fn`` (``repeats`` values, fewer when capped).

    Runs ``warmup`` untimed rounds, then ``repeats`` timed rounds; in every round each candidate
    runs once, round r starting with candidate r (mod their number). ``setups``: name -> a
    function run untimed right before that candidate's call. Candidates whose name contains an
    entry of ``capped`` (a naive loop 20-2000x slower) run in the first warm-up round and in only
    ``cap`` timed rounds, spread evenly over the run. Raises ValueError for ``repeats < 1`` or
    ``warmup < 0``.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    setups = setups or {}
    times: dict[str, list[float]] = {name: [] for name in candidates}
    names = list(candidates)
    capped_rounds = {0} | {warmup + (i * repeats) // cap for i in range(min(cap, repeats))}
    for round_index in range(warmup + repeats):
        # Rotate who goes first: a candidate can run slower right after another one (threads
        # still spinning, caches), so no candidate always follows the same one.
        shift = round_index % max(len(names), 1)
        for name in names[shift:] + names[:shift]:
            if any(part in str(name) for part in capped) and round_index not in capped_rounds:
                continue
            if name in setups:
                setups[name]()
            synchronize(device)
            start = time.perf_counter()
            candidates[name]()
            synchronize(device)
            if round_index >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def time_round_robin(candidates: dict[str, Callable[[], object]], repeats: int, warmup: int,
                     device: torch.device | str = "cpu") -> dict[str, float]:
    """Median seconds per call of each ``name -> fn``, timed by :func:`round_robin_samples`."""
    samples = round_robin_samples(candidates, repeats, warmup, device)
    return {name: statistics.median(values) for name, values in samples.items()}


def machine_description(device: torch.device | str = "cpu") -> str:
    """One line naming where the numbers come from: the device (CPU model, family/model numbers
    and vector extensions from /proc/cpuinfo, or the CUDA device), cores, threads, torch version."""
    device = torch.device(device)
    if device.type == "cuda":
        name = f"CUDA {torch.cuda.get_device_name(device)}"
    else:
        name = f"CPU {_cpu_name()}"
    return (f"{name}; {os.cpu_count()} cores visible, {torch.get_num_threads()} torch threads; "
            f"torch {torch.__version__}")


def _cpu_name() -> str:
    """'AMD EPYC (family 25, model 17, AVX-512)' from /proc/cpuinfo, or the platform's name."""
    try:
        fields = {}
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
            if not line.strip():
                break  # the first processor's block is enough
    except OSError:
        import platform
        return platform.processor() or platform.machine()
    flags = fields.get("flags", "").split()
    vector = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return (f"{fields.get('model name', 'unknown')} (family {fields.get('cpu family', '?')}, "
            f"model {fields.get('model', '?')}, {vector})")
