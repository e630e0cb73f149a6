"""Run the Triton ForgetMult kernels under TRITON_INTERPRET=1 against the reference (a subprocess).

Shapes: T = time steps, B = batch, H = hidden lanes.

``tests/ops/test_forget_mult_triton.py`` runs this file as a script, because TRITON_INTERPRET must
be set before ``@triton.jit`` decorates the kernels, i.e. before their module is imported, and
pytest's own process has imported it already. Each case prints one JSON line
``{"name": ..., "ok": ..., "detail": ...}``; the test turns every line into one test result.
Importing this module (to list the case names) runs nothing and imports only the stdlib.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
import zlib

# Per dtype: tolerance of the kernel's result against a float32 reference run on the same
# (rounded) inputs. fp16/bf16 grads also carry the rounding of the saved h (used as h_prev).
TOLERANCE = {"float32": 1e-5, "float16": 1e-2, "bfloat16": 6e-2}


def _lengths_for(seq_len: int, batch_size: int) -> list[int]:
    """Ragged lengths with a 0 when the batch allows it: [T, 0, ceil(T/2), T-1, 1, T, ...] or
    [T-1]. Past B = 3 each batch element differs from its neighbours, so a lane block that looks
    up another element's length (``lanes // H`` off in a later block) shows up."""
    if batch_size == 1:
        return [seq_len - 1]
    cycle = [seq_len, 0, (seq_len + 1) // 2, max(seq_len - 1, 0), min(1, seq_len)]
    return [cycle[b % len(cycle)] for b in range(batch_size)]


def cases() -> list[dict]:
    """Every case: shape, direction, ragged or not, dtype and (chunk_len, block_t) plan override."""
    out = []

    def add(seq_len, batch_size, hidden_size, reverse, ragged, dtype, chunk_len=None, block_t=16):
        path = "seq" if chunk_len is None else f"chunk{chunk_len}"
        name = (f"T{seq_len}-B{batch_size}-H{hidden_size}-{'rev' if reverse else 'fwd'}-"
                f"{'ragged' if ragged else 'full'}-{dtype}-{path}-bt{block_t}")
        out.append(dict(name=name, T=seq_len, B=batch_size, H=hidden_size, reverse=reverse,
                        ragged=ragged, dtype=dtype, chunk_len=chunk_len, block_t=block_t))

    directions_and_lengths = [(r, g) for r in (False, True) for g in (False, True)]
    # One-launch path, fp32: every small shape, each with two of the four direction/lengths
    # variants (alternating, so every variant meets every T), and all four at T=9, B=3, H=7.
    shapes = [(t, b, h) for t in (1, 2, 9) for b in (1, 3) for h in (1, 7)]
    for index, shape in enumerate(shapes):
        variants = directions_and_lengths[index % 2::2]  # (fwd, full), (rev, full) | ragged
        if index % 4 >= 2:
            variants = [(not reverse, ragged) for reverse, ragged in variants]
        if shape == (9, 3, 7):
            variants = directions_and_lengths
        for reverse, ragged in variants:
            add(*shape, reverse, ragged, "float32")
    # Chunked path forced on tiny shapes: one step per chunk, chunks of several tiles with a
    # ragged last chunk, chunks shorter than a tile; and tiles smaller than T on the one-launch path.
    for reverse, ragged in directions_and_lengths:
        add(2, 3, 7, reverse, ragged, "float32", chunk_len=1, block_t=2)
        add(9, 3, 7, reverse, ragged, "float32", chunk_len=4, block_t=2)
        add(9, 3, 7, reverse, ragged, "float32", chunk_len=3, block_t=4)
        add(9, 1, 7, reverse, ragged, "float32", block_t=4)
    # Several lane blocks: B * H = 305 lanes > MAX_BLOCK_N = 128, so three programs along the
    # lane axis, whose blocks start mid-sequence (128 = 2 * 61 + 6); one launch and chunked.
    for reverse, ragged in directions_and_lengths:
        add(3, 5, 61, reverse, ragged, "float32")
        add(9, 5, 61, reverse, ragged, "float32", chunk_len=4, block_t=2)
    # Half precisions (they change only loads and stores) on both paths and directions.
    for dtype in ("float16", "bfloat16"):
        for reverse in (False, True):
            add(9, 3, 7, reverse, True, dtype)
            add(9, 3, 7, reverse, True, dtype, chunk_len=4, block_t=2)
        add(2, 1, 7, True, False, dtype)
    return out


def _run_case(case: dict) -> str:
    """Compare h and (grad_f, grad_x, grad_h0) with the reference; raise AssertionError if off."""
    import torch

    from qrnn_lm.ops.forget_mult import triton as backend
    from qrnn_lm.ops.forget_mult.naive import forget_mult_reference

    dtype = getattr(torch, case["dtype"])
    seq_len, batch_size, hidden_size = case["T"], case["B"], case["H"]
    generator = torch.Generator().manual_seed(zlib.crc32(case["name"].encode()))
    shape = (seq_len, batch_size, hidden_size)
    f = torch.rand(shape, generator=generator).to(dtype)
    x = torch.randn(shape, generator=generator).to(dtype)
    h0 = torch.randn(shape[1:], generator=generator).to(dtype)
    grad_h = torch.randn(shape, generator=generator).to(dtype)
    lengths = torch.tensor(_lengths_for(seq_len, batch_size)) if case["ragged"] else None
    reverse = case["reverse"]

    # Reference in float32 on the same rounded inputs, gradients by autograd.
    f_ref, x_ref, h0_ref = (t.float().requires_grad_() for t in (f, x, h0))
    h_ref = forget_mult_reference(f_ref, x_ref, h0_ref, reverse=reverse, lengths=lengths)
    h_ref.backward(grad_h.float())

    # Kernels, writing into NaN-poisoned outputs: a missed element stays NaN and fails below.
    plan = dict(chunk_len=case["chunk_len"], block_t=case["block_t"])
    block_n = backend.plan_scan(seq_len, batch_size * hidden_size, **plan).block_n
    lane_blocks = -(-batch_size * hidden_size // block_n)
    if hidden_size == 61:  # the several-lane-block cases must really launch several blocks
        assert lane_blocks >= 3, f"expected >= 3 lane blocks, the plan gives {lane_blocks}"
    h = torch.full(shape, float("nan"), dtype=dtype)
    backend.forward_into(h, f, x, h0, lengths, reverse, **plan)
    grads = (torch.full(shape, float("nan"), dtype=dtype),
             torch.full(shape, float("nan"), dtype=dtype),
             torch.full(shape[1:], float("nan"), dtype=dtype))
    backend.backward_into(*grads, grad_h, f, x, h, h0, lengths, reverse, **plan)

    tol = TOLERANCE[case["dtype"]]
    expected = (h_ref, f_ref.grad, x_ref.grad, h0_ref.grad)
    for label, got, want in zip(("h", "grad_f", "grad_x", "grad_h0"), (h, *grads), expected):
        assert got.dtype == dtype, f"{label}: expected dtype {dtype}, got {got.dtype}"
        assert not got.isnan().any(), f"{label}: the kernel left NaN (unwritten) elements"
        torch.testing.assert_close(got.float(), want.detach(), rtol=tol, atol=tol, msg=label)
    return "outputs and grads match"


def _run_public_entry_points() -> str:
    """forward/backward (the contract API) choose the chunked path by themselves at long T."""
    import torch

    from qrnn_lm.ops.forget_mult import triton as backend
    from qrnn_lm.ops.forget_mult.naive import forget_mult_reference

    seq_len, batch_size, hidden_size = 129, 2, 3
    plan = backend.plan_scan(seq_len, batch_size * hidden_size)
    assert plan.num_chunks > 1, f"expected the chunked path at T={seq_len}, got {plan}"
    generator = torch.Generator().manual_seed(0)
    shape = (seq_len, batch_size, hidden_size)
    f = torch.rand(shape, generator=generator)
    x = torch.randn(shape, generator=generator)
    h0 = torch.randn(shape[1:], generator=generator)
    grad_h = torch.randn(shape, generator=generator)
    lengths = torch.tensor([seq_len, 77])  # 77: a ragged sequence spanning both chunks
    f_ref, x_ref, h0_ref = (t.clone().requires_grad_() for t in (f, x, h0))
    h_ref = forget_mult_reference(f_ref, x_ref, h0_ref, reverse=True, lengths=lengths)
    h_ref.backward(grad_h)
    h = backend.forward(f, x, h0, lengths, True)
    grads = backend.backward(grad_h, f, x, h, h0, lengths, True)
    for got, want in zip((h, *grads), (h_ref, f_ref.grad, x_ref.grad, h0_ref.grad)):
        torch.testing.assert_close(got, want.detach(), rtol=1e-5, atol=1e-5)
    return f"auto plan {plan} matches"


def _run_half_precision(dtype_name: str, reverse: bool, one_launch: bool) -> str:
    """The half-accumulation check of ``_half_precision.py`` (beside this file) on Triton."""
    import torch

    import _half_precision
    from qrnn_lm.ops.forget_mult import triton as backend

    dtype = getattr(torch, dtype_name)
    seq_len, batch_size, hidden_size = _half_precision.SHAPE
    plan = dict(chunk_len=seq_len if one_launch else None)
    chosen = backend.plan_scan(seq_len, batch_size * hidden_size, **plan)
    assert (chosen.num_chunks == 1) == one_launch, f"plan {chosen} is not the path under test"

    def forward(f, x, h0, lengths, reverse):
        h = torch.empty_like(x)
        backend.forward_into(h, f, x, h0, lengths, reverse, **plan)
        return h

    def backward(grad_h, f, x, h, h0, lengths, reverse):
        grads = (torch.empty_like(x), torch.empty_like(x), torch.empty_like(h0))
        backend.backward_into(*grads, grad_h, f, x, h, h0, lengths, reverse, **plan)
        return grads

    # The reference rounds the way this Triton stores float32 as bfloat16 (see round_to).
    rounding = _bfloat16_rounding(forward) if dtype == torch.bfloat16 else "nearest"
    return _half_precision.check(forward, backward, dtype, reverse, rounding) + f", {rounding}"


def _bfloat16_rounding(forward) -> str:
    """"nearest" or "toward_zero": one step with f = 0.75, x = 1 + 2**-7, h0 = 1 gives
    h = 1 + 0.75 * 2**-7 in float32, stored as 1 + 2**-7 (nearest) or 1 (toward zero)."""
    import torch

    def full(value, *shape):
        return torch.full(shape, value, dtype=torch.bfloat16)

    stored = float(forward(full(0.75, 1, 1, 1), full(1 + 2**-7, 1, 1, 1), full(1.0, 1, 1), None,
                           False))
    assert stored in (1.0, 1 + 2**-7), f"unexpected bfloat16 store {stored!r}"
    return "nearest" if stored != 1.0 else "toward_zero"


def half_precision_cases() -> list[tuple[str, tuple]]:
    """(name, args of _run_half_precision): fp16/bf16, both directions, both paths."""
    return [(f"half-accumulation-{dtype}-{'rev' if reverse else 'fwd'}-{'seq' if one else 'chunked'}",
             (dtype, reverse, one))
            for dtype in ("float16", "bfloat16") for reverse in (False, True) for one in (True, False)]


def main() -> int:
    os.environ["TRITON_INTERPRET"] = "1"  # before the kernels' module is imported
    from triton.runtime.interpreter import InterpretedFunction

    from qrnn_lm.ops.forget_mult import triton_scan

    if not isinstance(triton_scan.forget_mult_fwd_scan_kernel, InterpretedFunction):
        print("the kernels were not built for the interpreter", file=sys.stderr)
        return 2
    wanted = sys.argv[1:]  # optional substrings: run only the cases whose name has one (debugging)
    jobs = [(case["name"], lambda case=case: _run_case(case)) for case in cases()
            if not wanted or any(part in case["name"] for part in wanted)]
    jobs += [(name, lambda args=args: _run_half_precision(*args))
             for name, args in half_precision_cases()
             if not wanted or any(part in name for part in wanted)]
    jobs.append(("public-entry-points-auto-chunked", _run_public_entry_points))
    for name, job in jobs:
        try:
            result = dict(name=name, ok=True, detail=job())
        except Exception:  # report every failure, keep running the other cases
            result = dict(name=name, ok=False, detail=traceback.format_exc())
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
