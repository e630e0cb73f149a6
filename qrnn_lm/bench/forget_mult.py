"""Benchmark the ForgetMult kernels against the naive loop and a memory-bandwidth reference.

Shape legend: T = time steps, B = batch, H = hidden lanes; tensors are [T, B, H], float32.

For each shape and pass (forward, forward+backward) it prints the median time of the naive
autograd loop (``naive.py``) and of the kernels (numba on CPU; Triton, and CuPy if installed, on
CUDA), each kernel's speed-up over the naive loop, and its achieved bandwidth: the bytes that
must move (3 tensors forward: f, x read, h written; 9 forward+backward: plus grad_h, f, x, h
read and grad_f, grad_x written) divided by the time, also as a fraction of a reference
measured in the same run, ``torch.add(a, b, out=c)`` over three 64 MB tensors. All candidates
of a shape, the reference included, are timed round-robin (in a rotating order) after a
warm-up, so background load hits them alike (the naive loop, 20-2000x slower, is timed in 3 of the rounds only). A second section compares the numba chunked scan with the sequential kernel
on long sequences with few lanes (what ``cpu.use_chunked`` decides from), calling the
backend's forward/backward directly.

Usage: qrnn-lm bench forget-mult, or python scripts/bench_forget_mult.py [--repeats N] [--quick]
[--device cpu|cuda]. ``run(...)`` returns the rows.
"""

from __future__ import annotations

import argparse
import os
import statistics

import torch

from qrnn_lm.ops.forget_mult import forget_mult
from qrnn_lm.ops.forget_mult.naive import forget_mult_reference

from .timing import machine_description, round_robin_samples

KERNEL_SHAPES = [(70, 20, 1550), (105, 20, 640), (500, 4, 320)]
CHUNKED_SHAPES = [(4096, 1, 64), (4096, 1, 16), (4096, 1, 1), (16384, 1, 8), (4096, 2, 512)]
BANDWIDTH_ELEMENTS = 16 * 1024 * 1024  # 64 MB of float32 per tensor
TENSORS_MOVED = {"fwd": 3, "fwd+bwd": 9}
STRATEGY_ENV = "QRNN_LM_FORGET_MULT_CPU_STRATEGY"


def _bandwidth_candidate(device: torch.device):
    """The reference: c = a + b over three 64 MB tensors moves 3 * 64 MB."""
    a, b, c = (torch.rand(BANDWIDTH_ELEMENTS, device=device) for _ in range(3))
    return (lambda: None), (lambda: torch.add(a, b, out=c)), 3 * a.numel() * a.element_size()


class _Strategy:
    """Set the numba strategy (sequential/chunked/auto) for the duration of a timed call."""

    def __init__(self, strategy: str):
        self.strategy = strategy

    def __call__(self):
        os.environ[STRATEGY_ENV] = self.strategy


def _candidates_for(impl_fns: dict, shape, device, passes, dtype=torch.float32):
    """name -> (setup, fn) for every implementation and pass at one shape.

    An implementation is ``(setup, op)`` with ``op(f, x) -> h`` differentiated by autograd, or
    ``(setup, (forward, backward))``: the backend contract's functions, called directly.
    """
    generator = torch.Generator(device="cpu").manual_seed(0)
    f = torch.rand(shape, generator=generator).to(device, dtype).requires_grad_(True)
    x = torch.randn(shape, generator=generator).to(device, dtype).requires_grad_(True)
    grad_h = torch.randn(shape, generator=generator).to(device, dtype)
    h0 = torch.zeros(shape[1:], device=device, dtype=dtype)
    fd, xd = f.detach(), x.detach()
    candidates = {}
    for impl, (setup, op) in impl_fns.items():
        if isinstance(op, tuple):
            forward, backward = op
            fwd = lambda forward=forward: forward(fd, xd, h0, None, False)
            both = lambda forward=forward, backward=backward: backward(
                grad_h, fd, xd, forward(fd, xd, h0, None, False), h0, None, False
            )
        else:
            fwd = lambda op=op: op(fd, xd)
            both = lambda op=op: torch.autograd.grad(op(f, x), (f, x), grad_h)
        if "fwd" in passes:
            candidates[(impl, "fwd")] = (setup, fwd)
        if "fwd+bwd" in passes:
            candidates[(impl, "fwd+bwd")] = (setup, both)
    return candidates


def _kernel_impls(device: torch.device, include_naive: bool) -> dict:
    """impl name -> (setup, op(f, x) -> h) for the device."""
    impls = {}
    if include_naive:
        impls["naive"] = (lambda: None, lambda f, x: forget_mult_reference(f, x))
    if device.type == "cpu":
        impls["numba"] = (_Strategy("auto"), lambda f, x: forget_mult(f, x, backend="numba"))
    else:
        from qrnn_lm.ops.forget_mult import function

        for name in ("triton", "cupy"):
            if function._load(name)[0] is not None:
                impls[name] = (lambda: None, lambda f, x, name=name: forget_mult(f, x, backend=name))
        impls["torch loop"] = (lambda: None, lambda f, x: forget_mult(f, x, backend="torch"))
    return impls


def _rows_for_shape(section, shape, impls, baseline, device, repeats, warmup, dtype=torch.float32):
    candidates = _candidates_for(impls, shape, device, TENSORS_MOVED, dtype)
    item_bytes = torch.empty((), dtype=dtype).element_size()
    bw_setup, bw_fn, bw_bytes = _bandwidth_candidate(device)
    candidates[("bandwidth reference", "")] = (bw_setup, bw_fn)
    samples = round_robin_samples({name: fn for name, (_, fn) in candidates.items()}, repeats, warmup, device,
                                  setups={name: setup for name, (setup, _) in candidates.items()}, capped=("naive",))
    medians = {name: (statistics.median(values), min(values)) for name, values in samples.items()}
    reference_median, reference_best = medians.pop(("bandwidth reference", ""))
    reference_gbs, reference_best_gbs = bw_bytes / reference_median / 1e9, bw_bytes / reference_best / 1e9
    rows = []
    numel = shape[0] * shape[1] * shape[2]
    for (impl, pass_name), (seconds, best) in medians.items():
        gbs = TENSORS_MOVED[pass_name] * numel * item_bytes / seconds / 1e9
        base = medians.get((baseline, pass_name), (None,))[0]
        rows.append(dict(
            section=section, T=shape[0], B=shape[1], H=shape[2], pass_=pass_name, impl=impl,
            ms=seconds * 1e3, best_ms=best * 1e3, speedup=(base / seconds) if base else None,
            gbs=gbs, bw_fraction=gbs / reference_gbs, reference_gbs=reference_gbs,
            best_bw_fraction=TENSORS_MOVED[pass_name] * numel * item_bytes / best / 1e9 / reference_best_gbs,
        ))
    return rows


def run(
    device: str = "cpu",
    repeats: int = 20,
    quick: bool = False,
    kernel_shapes=None,
    chunked_shapes=None,
    dtype: torch.dtype = torch.float32,
) -> list[dict]:
    """Time everything; returns one dict per (section, shape, pass, implementation).

    Keys: section ("kernels" or "chunked"), T, B, H, pass_ ("fwd"/"fwd+bwd"), impl, ms (median),
    best_ms (fastest call; shows how much of the median is other load on the machine),
    best_bw_fraction (the same fraction from the fastest calls of kernel and reference),
    speedup (vs "naive" in the kernels section, vs "sequential" in the chunked one), gbs,
    bw_fraction (gbs / reference_gbs), reference_gbs (the bandwidth reference of that shape).
    ``dtype``: of the kernels' inputs (bytes moved count its size); other than float32, the
    section names carry it (e.g. "kernels bfloat16") and the chunked CPU section is skipped.
    """
    device = torch.device(device)
    if quick:
        repeats = min(repeats, 5)
    warmup = 2 if quick else 3
    kernel_shapes = KERNEL_SHAPES if kernel_shapes is None else kernel_shapes
    chunked_shapes = CHUNKED_SHAPES if chunked_shapes is None else chunked_shapes
    if quick and chunked_shapes is CHUNKED_SHAPES:
        chunked_shapes = CHUNKED_SHAPES[:2]
    saved_strategy = os.environ.get(STRATEGY_ENV)
    rows = []
    try:
        impls = _kernel_impls(device, include_naive=True)
        suffix = "" if dtype == torch.float32 else f" {str(dtype).removeprefix('torch.')}"
        for shape in kernel_shapes:
            rows += _rows_for_shape("kernels" + suffix, shape, impls, "naive", device, repeats, warmup, dtype)
        if device.type == "cpu" and not suffix:
            from qrnn_lm.ops.forget_mult import cpu

            # Kernel against kernel: the backend's own forward/backward, without the op's
            # fixed per-call cost, which would blur the comparison at these small sizes.
            chunked_impls = {
                name: (_Strategy(name), (cpu.forward, cpu.backward)) for name in ("sequential", "chunked")
            }
            for shape in chunked_shapes:
                rows += _rows_for_shape("chunked", shape, chunked_impls, "sequential", device, repeats, warmup)
    finally:
        if saved_strategy is None:
            os.environ.pop(STRATEGY_ENV, None)
        else:
            os.environ[STRATEGY_ENV] = saved_strategy
    return rows


def format_table(rows: list[dict]) -> str:
    header = f"{'section':<16} {'T':>6} {'B':>3} {'H':>5} {'pass':<8} {'impl':<11} {'median ms':>10} {'best ms':>9} " \
             f"{'speed-up':>9} {'GB/s':>7} {'of ref':>7} {'ref GB/s':>9}"
    lines = [header, "-" * len(header)]
    for r in rows:
        speedup = f"{r['speedup']:.1f}x" if r["speedup"] is not None else ""
        lines.append(
            f"{r['section']:<16} {r['T']:>6} {r['B']:>3} {r['H']:>5} {r['pass_']:<8} {r['impl']:<11} "
            f"{r['ms']:>10.3f} {r['best_ms']:>9.3f} {speedup:>9} {r['gbs']:>7.1f} {r['bw_fraction']:>7.2f} {r['reference_gbs']:>9.1f}"
        )
    return "\n".join(lines)


def target_summary(rows: list[dict]) -> str:
    """The issue's CPU targets, checked on the kernels section."""
    kernel = [r for r in rows if r["section"] == "kernels" and r["impl"] == "numba" and r["pass_"] == "fwd+bwd"]
    if not kernel:
        return ""
    slowest = min(r["speedup"] for r in kernel)
    largest = max(kernel, key=lambda r: r["T"] * r["B"] * r["H"])
    lines = [
        f"target: numba fwd+bwd >= 20x naive at every shape: lowest {slowest:.1f}x -> "
        f"{'met' if slowest >= 20 else 'MISSED'}",
        f"target: numba fwd+bwd >= 0.5 of the bandwidth reference at the largest shape "
        f"{(largest['T'], largest['B'], largest['H'])}: {largest['bw_fraction']:.2f} -> "
        f"{'met' if largest['bw_fraction'] >= 0.5 else 'MISSED'} "
        f"(fastest calls: {largest['best_bw_fraction']:.2f})",
    ]
    from qrnn_lm.ops.forget_mult import cpu

    for r in rows:
        if r["section"] == "chunked" and r["impl"] == "chunked":
            auto = "chunked" if cpu.use_chunked(r["T"], r["B"], r["H"]) else "sequential"
            lines.append(f"chunked {(r['T'], r['B'], r['H'])} {r['pass_']}: {r['speedup']:.2f}x the sequential "
                         f"kernel; auto picks {auto}")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per candidate (median)")
    parser.add_argument("--quick", action="store_true", help="at most 5 repeats, fewer chunked shapes")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    # numba_setup first: numba.get_num_threads() starts numba's threading layer, and the kernels
    # must run under the layer the project chooses, as they do for a user.
    from ..ops.numba_setup import numba

    from ..malloc_tuning import keep_freed_memory

    # Measure under the allocator settings the qrnn-lm application runs with (see malloc_tuning;
    # QRNN_LM_MALLOC_TUNING=0 measures the C library's defaults).
    tuned = keep_freed_memory()
    allocator = "glibc malloc, freed memory kept (qrnn_lm.malloc_tuning)" if tuned else "C library defaults"
    print(f"{machine_description(args.device)}; numba {numba.__version__}, {numba.get_num_threads()} numba threads "
          f"({numba.threading_layer()} layer); "
          f"allocator: {allocator}")
    rows = run(device=args.device, repeats=args.repeats, quick=args.quick)
    print(format_table(rows))
    print(target_summary(rows))


if __name__ == "__main__":
    main()
