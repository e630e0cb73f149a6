"""The machine's matrix-product rate, measured in the same run as the benchmark it scales.

``matmul_spread(m, k, n)`` times ``torch.mm`` of ``[m, k] x [k, n]`` into a preallocated output,
one call per repeat after a warm-up, and returns the rates' spread in GFLOP/s (``2*m*k*n`` FLOPs
per product): ``min``, ``median`` and ``best``. ``matmul_gflops`` is the best of them.
``merge_spreads`` pools two measurements (``bench lm`` takes one before the models and one after).

Why the best and not the median: a rate can only be lowered by what else runs (another process,
a core still clocking up, the kernel's first-call set-up), never raised, so the fastest call is
the closest to what the machine can do. On an idle 2-core Xeon four single medians of the square
product read 2,121, 701, 2,373 and 2,454 GFLOP/s.

``settle_peak`` turns the large square product's spread (the "matmul peak", the yardstick for
the FLOP/s a training step achieves) and the step's own product shapes' rates into the peak the
report divides by: if a step shape ran faster than the square product, the square's measurement
was bad (nothing in the step can beat the machine's best product), so it says so and uses the
higher rate. ``check_achieved`` is the same test against the training step itself: a step or
part that ran faster than the peak means the machine was slower while the peak was measured (a
2-core VM once gave half its rate to the square product, 206-211 GFLOP/s, and its full rate to the
step that followed, 297), and the report says so.
"""

from __future__ import annotations

import statistics
import time

import torch

from .timing import synchronize

__all__ = ["matmul_gflops", "matmul_spread", "merge_spreads", "settle_peak", "check_achieved", "default_peak_size",
           "PEAK_WARMUP", "PEAK_REPEATS"]

# The square product's floor of warm-up calls and timed calls, whatever the bench's --repeats:
# the first calls pay for oneDNN's kernel set-up and the cores' clocks (AMX units power up lazily).
PEAK_WARMUP = 3
PEAK_REPEATS = 10

_clock = time.perf_counter  # module-level so tests can mock the timer


def default_peak_size(device: torch.device | str) -> int:
    """The square product's size for the peak: 2048 on a CPU (a few hundred ms on two cores, and at
    the cores' peak already), 8192 on a GPU (a 2048 product is too short to fill a large one)."""
    return 8192 if torch.device(device).type == "cuda" else 2048


def matmul_spread(m: int, k: int, n: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                  repeats: int = 5, warmup: int = 2, seed: int = 0) -> dict:
    """``{min, median, best, repeats, rates}``: GFLOP/s of each of ``repeats`` timed calls of
    ``torch.mm([m, k], [k, n])`` in ``dtype`` on ``device`` (``rates``, in call order) and their
    spread; at least one warm-up call always runs (the first call pays for the kernel's set-up)."""
    if min(m, k, n) < 1:
        raise ValueError(f"matrix sizes must be >= 1, got {(m, k, n)}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    generator = torch.Generator(device="cpu").manual_seed(seed)
    a = torch.randn(m, k, generator=generator).to(device=device, dtype=dtype)
    b = torch.randn(k, n, generator=generator).to(device=device, dtype=dtype)
    out = torch.empty(m, n, device=device, dtype=dtype)
    for _ in range(max(warmup, 1)):
        torch.mm(a, b, out=out)
    rates = []
    for _ in range(repeats):
        synchronize(device)
        start = _clock()
        torch.mm(a, b, out=out)
        synchronize(device)
        rates.append(2 * m * k * n / max(_clock() - start, 1e-12) / 1e9)
    return _spread(rates)


def _spread(rates: list[float]) -> dict:
    return dict(min=min(rates), median=statistics.median(rates), best=max(rates), repeats=len(rates), rates=rates)


def merge_spreads(*spreads: dict) -> dict:
    """One :func:`matmul_spread` result from the calls of several (of the same product)."""
    return _spread([rate for spread in spreads for rate in spread["rates"]])


def matmul_gflops(m: int, k: int, n: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                  repeats: int = 5, warmup: int = 2, seed: int = 0) -> float:
    """Best GFLOP/s of ``torch.mm([m, k], [k, n])`` over ``repeats`` calls (see ``matmul_spread``)."""
    return matmul_spread(m, k, n, device, dtype, repeats, warmup, seed)["best"]


def settle_peak(size: int, spread: dict, products: list[dict]) -> dict:
    """The report's ``peak``: ``size``, the square product's ``min``/``median``/``best``/``repeats``,
    ``gflops`` (the rate to divide by) and ``bad`` (None, or one line saying the square product's
    best was below a step shape's rate, whose rate is then used).

    ``products``: ``{name, m, k, n, gflops}`` of the step's own shapes, timed in the same run."""
    peak = dict(size=size, **spread, gflops=spread["best"], bad=None)
    fastest = max(products, key=lambda item: item["gflops"], default=None)
    if fastest is not None and fastest["gflops"] > spread["best"]:
        peak["gflops"] = fastest["gflops"]
        peak["bad"] = (f"bad measurement: the {size}^3 product's best ({spread['best']:.1f} GFLOP/s) is below "
                       f"the step's {fastest['name']} shape ({fastest['gflops']:.1f} GFLOP/s); "
                       "using the higher as the peak")
    return peak


def check_achieved(peak: dict, achieved: dict[str, float]) -> dict:
    """``peak`` (a :func:`settle_peak` result) with ``bad`` set, if it was not, when a measured
    step or part ran faster than the peak: ``achieved`` maps what ran (e.g. "qrnn step",
    "qrnn step's recurrent part") to its GFLOP/s. Nothing in the step beats the machine's best product, so the
    peak was measured while the machine was slower, and the % of peak figures mean nothing."""
    name, fastest = max(achieved.items(), key=lambda item: item[1], default=(None, 0.0))
    if peak["bad"] is None and fastest > peak["gflops"]:
        peak = dict(peak, bad=(f"bad measurement: the {name} ran at {fastest:.1f} GFLOP/s, above the peak "
                               f"({peak['gflops']:.1f} GFLOP/s): the machine was slower while the peak was "
                               "measured, so the % of peak figures are not meaningful; run again on an idle machine"))
    return peak
