"""The learning-rate multiplier's values: warm-up from 0, peak at its end, floor at the end of the
budget, the cosine's midpoint, and the constant default that is exactly 1."""

import math

import pytest

from qrnn_lm.training.lr_schedule import lr_multiplier


@pytest.mark.parametrize("schedule", ["constant", "cosine", "linear"])
def test_warmup_rises_linearly_from_zero_to_the_peak(schedule):
    assert lr_multiplier(0.0, schedule, warmup=0.2, floor=0.1) == 0.0
    assert lr_multiplier(0.05, schedule, warmup=0.2, floor=0.1) == pytest.approx(0.25)
    assert lr_multiplier(0.1, schedule, warmup=0.2, floor=0.1) == pytest.approx(0.5)
    assert lr_multiplier(0.2, schedule, warmup=0.2, floor=0.1) == 1.0  # the peak, at the warm-up's end


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
@pytest.mark.parametrize("warmup", [0.0, 0.3])
def test_decays_end_at_the_floor_at_the_end_of_the_budget(schedule, warmup):
    assert lr_multiplier(1.0, schedule, warmup=warmup, floor=0.1) == pytest.approx(0.1, abs=1e-12)
    assert lr_multiplier(1.0, schedule, warmup=warmup) == pytest.approx(0.0, abs=1e-12)
    assert lr_multiplier(1.5, schedule, warmup=warmup, floor=0.1) == pytest.approx(0.1, abs=1e-12)  # clamped
    values = [lr_multiplier(p / 20, schedule, warmup=warmup, floor=0.1) for p in range(20 * 3 // 10 + 1, 21)]
    assert all(a > b for a, b in zip(values, values[1:]))  # decreasing after the peak


def test_cosine_midpoint_and_linear_values():
    assert lr_multiplier(0.5, "cosine") == pytest.approx(0.5)
    assert lr_multiplier(0.5, "cosine", floor=0.2) == pytest.approx(0.6)
    assert lr_multiplier(0.25, "cosine") == pytest.approx((1 + math.cos(math.pi / 4)) / 2)
    assert lr_multiplier(0.6, "cosine", warmup=0.2, floor=0.0) == pytest.approx(0.5)  # midpoint of the decay
    assert lr_multiplier(0.25, "linear", floor=0.2) == pytest.approx(0.8)
    assert lr_multiplier(0.6, "linear", warmup=0.2) == pytest.approx(0.5)


def test_constant_is_exactly_one():
    for progress in (0.0, 1e-9, 0.37, 1.0):
        assert lr_multiplier(progress) == 1.0
        assert lr_multiplier(progress, "constant") == 1.0
    assert lr_multiplier(0.5, "cosine", warmup=1.0) == 0.5  # all warm-up: no decay left
    assert lr_multiplier(1.0, "cosine", warmup=1.0) == 1.0


def test_unknown_schedule_is_refused():
    with pytest.raises(ValueError, match="schedule must be one of"):
        lr_multiplier(0.5, "step")
