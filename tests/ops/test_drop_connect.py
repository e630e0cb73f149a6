"""The CPU DropConnect op (qrnn_lm/ops/drop_connect.py): its mask against an independent
reference of the hash, the mask's statistics, the rounding of its bfloat16 output, its gradient,
and the generator that governs it."""

import numpy as np
import pytest
import torch

from qrnn_lm.ops import drop_connect as op
from qrnn_lm.ops import numba_setup
from qrnn_lm.ops.drop_connect import drop_connect

# Larger than a block and than PARALLEL_MIN_ELEMENTS (the parallel kernel), and not a multiple of
# the block; the small shape runs the serial kernel.
LARGE = (613, 500)
SMALL = (37, 11)


def reference_kept(seed: int, count: int, p: float) -> np.ndarray:
    """Element i is kept when the top 32 bits of SplitMix64's output function of
    ``seed + i * 0x9E3779B97F4A7C15`` are at least round(p * 2^32): numpy's uint64 arithmetic,
    written from the algorithm's description, not from the kernel."""
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + np.arange(count, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(32)) >= np.uint64(round(p * 2**32))


def seed_of_next_call(generator_seed: int) -> int:
    """The 64-bit seed drop_connect draws after ``torch.manual_seed(generator_seed)``."""
    torch.manual_seed(generator_seed)
    return int(torch.empty((), dtype=torch.int64).random_(-2**63, None)) & (2**64 - 1)


@pytest.mark.parametrize("shape", [LARGE, SMALL])
@pytest.mark.parametrize("out_dtype", [torch.float32, torch.bfloat16])
def test_mask_and_values_match_the_reference(shape, out_dtype):
    weight = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    p = 0.3
    expected_kept = torch.from_numpy(reference_kept(seed_of_next_call(7), weight.numel(), p)).view(shape)
    torch.manual_seed(7)
    out = drop_connect(weight, p, out_dtype)
    assert out.dtype == out_dtype and out.shape == weight.shape
    scaled = (weight * torch.tensor(1 / (1 - p), dtype=torch.float32)).to(out_dtype)  # rounded as a cast would
    assert torch.equal(out, torch.where(expected_kept, scaled, torch.zeros((), dtype=out_dtype)))


def test_serial_and_parallel_kernels_draw_the_same_mask(monkeypatch):
    """The decision depends on the element's index only, not on the blocks or the threads (a
    forked child, which runs the serial kernel, masks as its parent would)."""
    weight = torch.randn(LARGE)
    torch.manual_seed(3)
    parallel = drop_connect(weight, 0.2)
    monkeypatch.setattr(numba_setup, "parallel_launch_safe", lambda: False)
    monkeypatch.setattr(op, "_masked_parallel", None)  # a forked child must not launch it
    torch.manual_seed(3)
    assert torch.equal(drop_connect(weight, 0.2), parallel)


@pytest.mark.parametrize("p", [0.1, 0.2, 0.7])
def test_drop_rate_and_independent_neighbours(p):
    """Every position drops at rate p, and neighbours independently (P(both) = p^2), including
    across the kernel's block boundaries."""
    torch.manual_seed(0)
    dropped = drop_connect(torch.ones(1000, 400), p) == 0  # 400k decisions: sd of a rate about 0.0008
    assert abs(dropped.float().mean().item() - p) < 0.004
    flat = dropped.view(-1)
    assert abs((flat[:-1] & flat[1:]).float().mean().item() - p * p) < 0.004
    columns = dropped.view(-1, 4)  # every position of a group of four on its own
    for position in range(4):
        assert abs(columns[:, position].float().mean().item() - p) < 0.006, position
    at_block_ends = flat[op.BLOCK - 1::op.BLOCK]
    assert 0 < at_block_ends.float().mean().item() < 1  # the blocks' last elements are not all alike


@pytest.mark.parametrize("out_dtype", [torch.float32, torch.bfloat16])
def test_gradient_is_the_incoming_gradient_through_the_same_mask(out_dtype):
    weight = torch.randn(LARGE, requires_grad=True)
    torch.manual_seed(11)
    out = drop_connect(weight, 0.4, out_dtype)
    grad_out = torch.randn(LARGE).to(out_dtype)
    (grad,) = torch.autograd.grad(out, weight, grad_out)
    assert grad.dtype == torch.float32  # the weight's dtype, whatever the result's
    scale = torch.tensor(1 / 0.6, dtype=torch.float32)
    expected = torch.where(out != 0, grad_out.float() * scale, torch.zeros(()))
    assert torch.equal(grad, expected)
    assert (grad != 0).float().mean().item() == pytest.approx(0.6, abs=0.01)


def test_the_default_generator_decides_the_mask_and_each_call_draws_a_new_one():
    weight = torch.randn(SMALL)
    torch.manual_seed(5)
    first = drop_connect(weight, 0.3)
    torch.manual_seed(5)
    assert torch.equal(drop_connect(weight, 0.3), first)  # manual_seed and saved states decide it
    assert not torch.equal(drop_connect(weight, 0.3), first)


def test_bfloat16_weight_in_and_out():
    weight = torch.randn(SMALL).bfloat16().requires_grad_()
    torch.manual_seed(1)
    out = drop_connect(weight, 0.5)
    assert out.dtype == torch.bfloat16
    kept = out != 0
    torch.testing.assert_close(out[kept], (weight.detach().float()[kept] * 2).bfloat16(), rtol=0, atol=0)
    (grad,) = torch.autograd.grad(out.float().sum(), weight)
    assert grad.dtype == torch.bfloat16 and torch.equal(grad != 0, kept)


def test_other_dtypes_take_torch_dropout():
    weight = torch.ones(200, 200, dtype=torch.float64)
    torch.manual_seed(0)
    out = drop_connect(weight, 0.25)
    assert out.dtype == torch.float64
    assert abs((out == 0).double().mean().item() - 0.25) < 0.01
    assert torch.equal(out[out != 0], torch.full_like(out[out != 0], 1 / 0.75))


@pytest.mark.parametrize("p", [-0.1, 1.0])
def test_rejects_a_probability_outside_zero_to_one(p):
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\)"):
        drop_connect(torch.ones(3), p)


def test_runs_under_the_profiler_recording_shapes():
    # The profiler records an autograd Function's Python arguments as C++ int64: a seed drawn as an
    # unsigned 64-bit integer (half the draws above 2^63 - 1) made `record_shapes=True` fail.
    torch.manual_seed(0)
    weight = torch.randn(64, 32, requires_grad=True)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True):
        for _ in range(16):  # each draw above 2^63 with probability 1/2
            drop_connect(weight, 0.3).sum().backward()
