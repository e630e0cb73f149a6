"""The vectorisable float32 exp of numba kernels (qrnn_lm/ops/numba_math.py) against float64."""

import pytest
import torch
from numba import njit

from qrnn_lm.ops.numba_math import exp


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
