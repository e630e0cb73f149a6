"""The learning-rate multiplier's values (warm-up from 0, peak at its end, floor at the end of the
budget, the cosine's midpoint, the constant default exactly 1), and the trainer stepping every
optimiser at the scheduled rate, reaching the floor at the last step of a max_steps or epochs run."""

import math
from pathlib import Path

import pytest

from _metrics_rows import read_rows
import qrnn_lm.training.optimizer as optimizer_module
import qrnn_lm.training.trainer as train_module
from qrnn_lm.config import load_config
from qrnn_lm.training import train
from qrnn_lm.training.schedule import lr_multiplier


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


# --- the trainer applies it -------------------------------------------------------------------------

TINY = Path(__file__).resolve().parents[2] / "configs" / "tiny.toml"  # lr 5, bptt 10, 17 steps an epoch


def run(corpus, out, *overrides):
    config = load_config(TINY, [f'data.dataset="{corpus}"', "train.log_interval=1", *overrides])
    return train(config, out, device="cpu", progress=False)


@pytest.fixture
def steps(monkeypatch):
    """Every optimizer step's (optimizer class, its lr, the segment length), as the step sees them."""
    seen, lengths = [], []
    real_make, real_step = optimizer_module.make_optimizer, train_module.train_step

    def make(*args, **kwargs):
        optimizer = real_make(*args, **kwargs)
        step = optimizer.step

        def recorded(*a, **k):
            seen.append((type(optimizer).__name__, optimizer.param_groups[0]["lr"], lengths[-1]))
            return step(*a, **k)

        optimizer.step = recorded
        return optimizer

    def train_step(model, optimizer, inputs, *args):
        lengths.append(inputs.size(0))
        return real_step(model, optimizer, inputs, *args)

    monkeypatch.setattr(optimizer_module, "make_optimizer", make)
    monkeypatch.setattr(train_module, "train_step", train_step)
    return seen


def test_the_default_constant_schedule_keeps_the_rate_bit_for_bit(corpus, tmp_path, steps):
    run(corpus, tmp_path / "run", "train.max_steps=12")
    assert len(steps) == 12
    for _, lr, length in steps:
        assert lr == 5.0 * length / 10  # exactly awd's base rate * segment length / bptt, as before
    assert {row["lr"] for row in read_rows(tmp_path / "run" / "metrics.csv")} == {"5"}


@pytest.mark.parametrize("optimizer, lr", [("sgd", 5.0), ("asgd", 5.0), ("adam", 0.01), ("adamw", 0.01)])
def test_every_optimizer_steps_at_the_scheduled_rate(corpus, tmp_path, steps, monkeypatch, optimizer, lr):
    if optimizer == "asgd":  # reached by NT-ASGD's switch after the first epoch: force it
        monkeypatch.setattr(optimizer_module, "should_switch_to_asgd", lambda *args: True)
    name = "sgd" if optimizer == "asgd" else optimizer
    total = 24  # more than one epoch; max_steps ends the run long before the 20 epochs
    run(corpus, tmp_path / "run", f'train.optimizer="{name}"', f"train.lr={lr}", "train.epochs=20",
        f"train.max_steps={total}", 'train.lr_schedule="cosine"', "train.warmup=0.25", "train.lr_floor=0.1")
    assert len(steps) == total
    if optimizer == "asgd":
        assert steps[0][0] == "SGD" and steps[-1][0] == "ASGD"
    for k, (_, seen, length) in enumerate(steps, start=1):
        assert seen == pytest.approx(lr * lr_multiplier(k / total, "cosine", 0.25, 0.1) * length / 10, rel=1e-12)
    assert steps[0][1] == pytest.approx(lr * (1 / 24 / 0.25) * steps[0][2] / 10)  # warming up: 1/6 of the rate
    assert steps[5][1] == pytest.approx(lr * steps[5][2] / 10)  # the peak at step 6 = 0.25 of 24
    assert steps[-1][1] == pytest.approx(lr * 0.1 * steps[-1][2] / 10)  # the floor at the very last step


def test_an_epochs_run_reaches_the_floor_at_its_last_step(corpus, tmp_path):
    results = run(corpus, tmp_path / "run", "train.epochs=2", 'train.lr_schedule="linear"', "train.lr_floor=0.1")
    rows = [row for row in read_rows(tmp_path / "run" / "metrics.csv") if row["train_loss"]]
    assert results["status"] == "completed" and len(rows) == results["steps"]
    first_epoch = [row for row in rows if row["epoch"] == "1"]
    assert float(first_epoch[-1]["lr"]) == pytest.approx(5.0 * 0.55)  # half the budget: halfway to the floor
    assert float(rows[-1]["lr"]) == pytest.approx(5.0 * 0.1)  # progress 1 at the final step
    rates = [float(row["lr"]) for row in rows]
    assert all(a > b for a, b in zip(rates, rates[1:]))
