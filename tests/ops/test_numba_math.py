"""The vectorisable float32 exp of numba kernels (qrnn_lm/ops/numba_math.py) against float64, and
the order keys that make a float32 max an integer max."""

import numpy as np
import pytest
import torch
from numba import njit

from qrnn_lm.ops.numba_math import exp, from_order_key, order_key


@njit
def exp_all(values, out):
    for i in range(values.shape[0]):
        out[i] = exp(values[i])


def numba_exp(values: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(values)
    exp_all(values.numpy(), out.numpy())
    return out


def test_within_two_float32_ulps_over_the_normal_range():
    """Every float32 result from the smallest normal number to the largest, and a dense sample
    around 0, within 2e-7 relative of the float64 value (torch.exp's float32 is within 6e-8)."""
    values = torch.cat([torch.linspace(-87.33, 88.72, 1 << 20), torch.linspace(-1, 1, 1 << 16),
                        -torch.rand(1 << 16, generator=torch.Generator().manual_seed(0)) * 20])
    expected = torch.exp(values.double())
    relative = ((numba_exp(values).double() - expected).abs() / expected).max().item()
    assert relative < 2e-7


@pytest.mark.parametrize("value, expected", [
    (0.0, 1.0), (-0.0, 1.0), (-100.0, 0.0), (-float("inf"), 0.0), (89.0, float("inf")),
    (float("inf"), float("inf")),
])
def test_edges(value, expected):
    assert numba_exp(torch.tensor([value])).item() == expected


def test_nan_stays_nan_in_the_vectorised_loop():
    values = torch.randn(1000)
    values[::7] = float("nan")
    out = numba_exp(values)
    assert out[::7].isnan().all() and out[1::7].isfinite().all()


@njit
def keys_of(values, out):
    for i in range(values.shape[0]):
        out[i] = order_key(values[i])


@njit
def max_by_keys(values):
    top = np.int32(-2147483648)
    for i in range(values.shape[0]):
        top = max(top, order_key(values[i]))
    return from_order_key(top)


SPECIAL = [-float("inf"), -3e38, -1.5, -1e-38, -1e-45, -0.0, 0.0, 1e-45, 1e-38, 1.5, 3e38, float("inf")]


def test_order_keys_sort_floats_in_their_order():
    """Ascending floats (negatives, subnormals, signed zeros, infinities) give strictly ascending keys."""
    values = torch.tensor(SPECIAL + torch.randn(1000).tolist()).sort().values.unique_consecutive()
    values = torch.cat([values[values < 0], torch.tensor([-0.0, 0.0]), values[values > 0]])
    keys = torch.empty(values.shape[0], dtype=torch.int32)
    keys_of(values.numpy(), keys.numpy())
    assert bool((keys[1:] > keys[:-1]).all())


@pytest.mark.parametrize("scale", [1.0, 1e-40, 1e30])
@pytest.mark.parametrize("shift", [0.0, -1e4])
def test_max_by_keys_is_the_max(scale, shift):
    values = torch.randn(1003, generator=torch.Generator().manual_seed(1)) * scale + shift
    assert max_by_keys(values.numpy()) == values.max().item()


@pytest.mark.parametrize("nan", [float("nan"), -float("nan")])
def test_a_nan_of_either_sign_is_above_infinity(nan):
    values = torch.tensor([1.0, float("inf"), nan, -2.0])
    assert np.isnan(max_by_keys(values.numpy()))
    assert np.isnan(from_order_key(order_key(np.float32(nan))))
