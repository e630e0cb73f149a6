"""The run's budget: progress as the largest fraction of every limit, the wall clock continued
across resumes and agreed between ranks, and the max_minutes stop on a fake clock (no timing)."""

import json
from pathlib import Path

import pytest
from _fake_clock import clock_per_step

from _metrics_rows import read_rows
from qrnn_lm.config import TrainConfig, load_config
from qrnn_lm.models.checkpoint_file import load_checkpoint
from qrnn_lm.training import distributed, train
from qrnn_lm.training.stopping import Budget
from qrnn_lm.training.schedule import lr_multiplier
from qrnn_lm.training.checkpointer import upgrade

TINY = Path(__file__).resolve().parents[2] / "configs" / "tiny.toml"  # lr 5, 17 steps an epoch


class FakeClock:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


def test_progress_is_the_largest_fraction_of_the_limits():
    clock = FakeClock()
    budget = Budget(TrainConfig(epochs=4), epoch_length=100, clock=clock)
    assert budget.progress(step=3, epoch=1, position=50) == 0.125
    assert budget.progress(step=3, epoch=3, position=25) == pytest.approx(2.25 / 4)
    assert budget.progress(step=3, epoch=4, position=101) == 1.0  # the last segment passes the limit
    steps = Budget(TrainConfig(epochs=100, max_steps=10), epoch_length=100, clock=clock)
    assert steps.progress(step=5, epoch=1, position=10) == 0.5
    timed = Budget(TrainConfig(epochs=100, max_steps=1000, max_minutes=2.0), epoch_length=100, clock=clock)
    timed.start()
    clock.now += 30
    timed.tick()
    assert timed.progress(step=5, epoch=1, position=10) == 0.25  # the clock is furthest along
    clock.now += 300
    assert timed.progress(step=5, epoch=1, position=10) == 0.25  # the step's own reading, until the next tick
    timed.tick()
    assert timed.progress(step=5, epoch=1, position=10) == 1.0


def test_stop_reasons():
    clock = FakeClock()
    budget = Budget(TrainConfig(max_steps=10, max_minutes=1.0), epoch_length=100, clock=clock)
    budget.start()
    assert budget.stop_reason(9) is None
    assert budget.stop_reason(10) == "max_steps"
    clock.now += 59.9
    budget.tick()
    assert budget.stop_reason(3) is None
    clock.now += 0.1
    budget.tick()
    assert budget.stop_reason(3) == "max_minutes"
    assert Budget(TrainConfig(), epoch_length=100, clock=clock).stop_reason(10**9) is None  # no limit but epochs


def test_the_clock_continues_from_the_resumed_seconds():
    clock = FakeClock()
    budget = Budget(TrainConfig(max_minutes=1.0), epoch_length=100, elapsed=50.0, clock=clock)
    clock.now += 1000  # setting up the run (data, model) does not count
    budget.start()
    assert budget.elapsed() == 50.0
    clock.now += 10
    budget.tick()
    assert budget.elapsed() == budget.seconds == 60.0 and budget.stop_reason(0) == "max_minutes"


def test_checkpoints_before_the_time_budget_resume_with_zero_seconds():
    payload = {"config": {"train": {"optimizer": "sgd", "lr": 5.0}},
               "counters": {"epoch": 2, "position": 0, "step": 17, "tokens": 624},
               "history": {"val_losses": [2.8], "best_val_loss": 2.8, "lr": 5.0}, "optimizer": {"name": "sgd", "state": {}}}
    assert upgrade(payload)["budget"] == {"elapsed_s": 0.0}
    payload["history"]["elapsed_s"] = 12.5
    assert upgrade(payload)["budget"] == {"elapsed_s": 12.5}
    budget = Budget(TrainConfig(), epoch_length=100, clock=FakeClock())
    budget.load_state_dict(upgrade(payload)["budget"])
    assert budget.elapsed() == 12.5


def test_ranks_agree_on_the_slowest_clock_only_with_a_time_budget(monkeypatch):
    calls = []
    monkeypatch.setattr(distributed, "get_world_size", lambda: 2)
    monkeypatch.setattr(distributed, "all_reduce_max", lambda values: calls.append(values) or [99.0])
    clock = FakeClock()
    timed = Budget(TrainConfig(max_minutes=1.0), epoch_length=100, clock=clock)
    timed.start()
    clock.now += 5
    timed.tick()
    assert calls == [[5.0]] and timed.seconds == 99.0  # another rank's clock is further: every rank uses it
    untimed = Budget(TrainConfig(), epoch_length=100, clock=clock)
    untimed.tick()
    assert calls == [[5.0]]  # no collective (and nothing read from the clock matters) without max_minutes


# --- the trainer stops on the (fake) clock --------------------------------------------------------


@pytest.fixture
def six_seconds_a_step(monkeypatch):
    """A clock that advances 6 s with each training step's forward and backward."""
    return clock_per_step(monkeypatch, 6.0)


def run(corpus, out, *overrides, **kwargs):
    config = load_config(TINY, [f'data.dataset="{corpus}"', "train.log_interval=1", "train.epochs=50", *overrides])
    return train(config, out, device="cpu", progress=False, **kwargs)


def test_max_minutes_stops_cleanly_with_the_schedule_at_its_floor(corpus, tmp_path, six_seconds_a_step):
    out = tmp_path / "run"
    schedule = ['train.lr_schedule="cosine"', "train.warmup=0.2", "train.lr_floor=0.1"]
    results = run(corpus, out, "train.max_minutes=1", "train.max_steps=1000", *schedule)
    # 10 steps of 6 s use up the minute: the run stops there as a max_steps stop does.
    assert results["status"] == "max_minutes" and results["steps"] == 10 and results["epochs_completed"] == 0
    assert json.loads((out / "results.json").read_text()) == results
    assert 1 < results["test_ppl"] < 100 and (out / "best.pt").is_file()
    last = load_checkpoint(out / "last.pt")
    assert last["counters"]["step"] == 10 and last["budget"]["elapsed_s"] == 60.0
    rows = read_rows(out / "metrics.csv")
    train_rows = [row for row in rows if row["train_loss"]]
    assert [float(row["wall_s"]) for row in train_rows] == [6.0 * k for k in range(1, 11)]
    for k, row in enumerate(train_rows, start=1):  # the time fraction drove the schedule
        assert float(row["lr"]) == pytest.approx(5.0 * lr_multiplier(k / 10, "cosine", 0.2, 0.1), rel=1e-6)
    assert float(train_rows[-1]["lr"]) == pytest.approx(0.5)  # the floor, at the last step
    assert [row["step"] for row in rows if row["valid_ppl"]] == ["10"]  # validated once for best.pt
    # Resumed with more time: it continues from 60 s, not from 0.
    resumed = run(corpus, out, "train.max_minutes=1.5", "train.max_steps=1000", *schedule, resume=out)
    assert resumed["status"] == "max_minutes" and resumed["steps"] == 15


def test_a_cli_run_with_max_minutes_ends_with_the_summary_line(corpus, tmp_path, six_seconds_a_step):
    from typer.testing import CliRunner

    from qrnn_lm.cli.commands import app

    result = CliRunner().invoke(app, ["train", "--config", str(TINY), "--data", str(corpus), "--out",
                                      str(tmp_path / "run"), "--max-minutes", "0.5", "--device", "cpu",
                                      "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "done (max_minutes) after 5 steps" in result.stdout and "test ppl" in result.stdout
