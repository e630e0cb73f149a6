"""The machine's matrix-product rate, measured in the same run as the benchmark it scales.

``matmul_gflops(m, k, n)`` times ``torch.mm`` of ``[m, k] x [k, n]`` into a preallocated output
(median over repeats after a warm-up) and returns GFLOP/s (``2*m*k*n`` FLOPs per product). A large
square product is the "matmul peak": what this device reaches in this dtype with the library's
best kernel, which is the yardstick for the FLOP/s a training step achieves.
"""

from __future__ import annotations

import torch

from .timing import time_round_robin

__all__ = ["matmul_gflops", "default_peak_size"]


def default_peak_size(device: torch.device | str) -> int:
    """The square product's size for the peak: 2048 on a CPU (a few hundred ms on two cores, and at
    the cores' peak already), 8192 on a GPU (a 2048 product is too short to fill a large one)."""
    return 8192 if torch.device(device).type == "cuda" else 2048


def matmul_gflops(m: int, k: int, n: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                  repeats: int = 5, warmup: int = 2, seed: int = 0) -> float:
    """Median GFLOP/s of ``torch.mm([m, k], [k, n])`` in ``dtype`` on ``device``; at least one
    warm-up call always runs (the first call pays for the kernel's set-up)."""
    if min(m, k, n) < 1:
        raise ValueError(f"matrix sizes must be >= 1, got {(m, k, n)}")
    generator = torch.Generator(device="cpu").manual_seed(seed)
    a = torch.randn(m, k, generator=generator).to(device=device, dtype=dtype)
    b = torch.randn(k, n, generator=generator).to(device=device, dtype=dtype)
    out = torch.empty(m, n, device=device, dtype=dtype)
    seconds = time_round_robin({"mm": lambda: torch.mm(a, b, out=out)}, repeats, max(warmup, 1), device)["mm"]
    return 2 * m * k * n / max(seconds, 1e-12) / 1e9
