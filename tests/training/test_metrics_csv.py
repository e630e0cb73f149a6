"""metrics.csv: its exact columns, one row per log interval and per validation, flushed at once,
and a resumed run that continues the file (one header, no step twice, wall_s going on)."""

import math
from pathlib import Path

import pytest
from _fake_clock import clock_per_step

from _metrics_rows import read_rows
import qrnn_lm.training.trainer as train_module
from qrnn_lm.config import load_config
from qrnn_lm.models.checkpoint_file import load_checkpoint
from qrnn_lm.training import train
from qrnn_lm.training.metrics import COLUMNS, MetricsCsv
from qrnn_lm.training.state import Counters

TINY = Path(__file__).resolve().parents[2] / "configs" / "tiny.toml"  # 17 steps an epoch
HEADER = "step,epoch,tokens,wall_s,train_loss,valid_ppl,lr"


def test_rows_are_written_and_flushed_one_at_a_time(tmp_path):
    path = tmp_path / "metrics.csv"
    csv = MetricsCsv(path)
    csv.row(Counters(step=10, epoch=1, tokens=400), 1.25, 5.0, train_loss=4.5)
    assert path.read_text() == f"{HEADER}\n10,1,400,1.250,4.5,,5\n"  # on disk before close: a kill keeps it
    csv.row(Counters(step=17, epoch=1, tokens=624), 2.5, 2.5, valid_ppl=123.4)
    csv.close()
    assert path.read_text().splitlines()[2] == "17,1,624,2.500,,123.4,2.5"
    assert tuple(read_rows(path)[0]) == COLUMNS


def test_a_resume_keeps_the_rows_up_to_its_step_and_a_fresh_run_starts_anew(tmp_path):
    path = tmp_path / "metrics.csv"
    csv = MetricsCsv(path)
    for step in (5, 10, 15):
        csv.row(Counters(step=step), float(step), 1.0, train_loss=2.0)
    csv.close()
    resumed = MetricsCsv(path, resume_step=10)  # the checkpoint was at step 10; step 15 comes again
    resumed.row(Counters(step=15), 16.0, 1.0, train_loss=1.5)
    resumed.close()
    assert path.read_text().count("step,") == 1
    assert [(row["step"], row["wall_s"]) for row in read_rows(path)] == [("5", "5.000"), ("10", "10.000"),
                                                                        ("15", "16.000")]
    MetricsCsv(path).close()
    assert path.read_text() == HEADER + "\n"
    MetricsCsv(None).row(Counters(), 0.0, 1.0, train_loss=1.0)  # off rank 0: nothing at all
    assert not (tmp_path / "None").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv"]


@pytest.fixture
def three_seconds_a_step(monkeypatch):
    return clock_per_step(monkeypatch, 3.0)


def run(corpus, out, *overrides, **kwargs):
    config = load_config(TINY, [f'data.dataset="{corpus}"', *overrides])
    return train(config, out, device="cpu", progress=False, **kwargs)


def test_a_run_logs_a_row_per_interval_and_per_validation(corpus, tmp_path):
    results = run(corpus, tmp_path / "run", "train.epochs=2", "train.log_interval=5")
    path = tmp_path / "run" / "metrics.csv"
    assert path.read_text().splitlines()[0] == HEADER
    rows = read_rows(path)
    train_rows = [row for row in rows if row["train_loss"]]
    valid_rows = [row for row in rows if row["valid_ppl"]]
    assert [int(row["step"]) for row in train_rows] == list(range(5, results["steps"] + 1, 5))
    assert all(row["valid_ppl"] == "" for row in train_rows) and all(row["train_loss"] == "" for row in valid_rows)
    assert [row["epoch"] for row in valid_rows] == ["1", "2"] and len(rows) == len(train_rows) + 2
    assert int(valid_rows[-1]["step"]) == results["steps"] and int(valid_rows[-1]["tokens"]) == results["train_tokens"]
    assert float(valid_rows[-1]["valid_ppl"]) == pytest.approx(results["best_val_ppl"], rel=1e-5)
    walls = [float(row["wall_s"]) for row in rows]
    assert walls == sorted(walls) and walls[0] > 0
    assert all(float(row["lr"]) == 5.0 for row in rows)


def test_a_resumed_run_continues_the_file_and_its_wall_clock(corpus, tmp_path, three_seconds_a_step):
    out = tmp_path / "run"
    run(corpus, out, "train.epochs=2", "train.log_interval=1", "train.max_steps=7")
    path = out / "metrics.csv"
    before = read_rows(path)
    assert [row["step"] for row in before] == [str(k) for k in range(1, 8)] + ["7"]  # + validation for best.pt
    with path.open("a") as file:  # rows a killed run logged after its last checkpoint (at step 7)
        file.write("8,1,999,999.000,9.9,,5\n9,1,999,999.000,9.9,,5\n")
    results = run(corpus, out, "train.epochs=2", "train.log_interval=1", resume=out)
    text = path.read_text()
    assert text.count(HEADER) == 1 and "999" not in text
    rows = read_rows(path)
    assert rows[: len(before)] == before
    train_steps = [int(row["step"]) for row in rows if row["train_loss"]]
    assert train_steps == list(range(1, results["steps"] + 1))  # every step once
    resumed_first = float(rows[len(before)]["wall_s"])
    assert resumed_first >= float(before[-1]["wall_s"])
    assert resumed_first == 3.0 * 8  # the 8th step of the run, 3 s each: the clock went on from step 7


def test_a_row_cut_short_by_a_kill_is_dropped_on_resume(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text(f"{HEADER}\n5,1,200,1.000,2.5,,5\n6,1,24")  # killed in the middle of writing step 6
    csv = MetricsCsv(path, resume_step=6)
    csv.row(Counters(step=7), 2.0, 5.0, train_loss=2.0)
    csv.close()
    assert [row["step"] for row in read_rows(path)] == ["5", "7"]
    unchanged = path.read_text()
    MetricsCsv(path, resume_step=7).close()  # nothing to drop: the file is left as it is
    assert path.read_text() == unchanged and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv"]


@pytest.mark.parametrize("losses, best_step", [((3.0, 2.0), 30), ((2.0, 3.0), 17)])
def test_a_limit_inside_an_epoch_validates_the_steps_since_the_last_validation(corpus, tmp_path, monkeypatch,
                                                                                losses, best_step):
    """tiny has 17 steps an epoch: a stop at step 30 validates epoch 2's first 13 steps too, and keeps
    them as best.pt when they are better (a schedule's last steps are usually its best)."""
    given = iter(losses)
    monkeypatch.setattr(train_module.Trainer, "validate", lambda self: next(given))
    results = run(corpus, tmp_path / "run", "train.epochs=3", "train.max_steps=30")
    valid_rows = [row for row in read_rows(tmp_path / "run" / "metrics.csv") if row["valid_ppl"]]
    assert [row["step"] for row in valid_rows] == ["17", "30"]
    assert results["best_val_ppl"] == pytest.approx(math.exp(min(losses)))
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    assert best["counters"]["step"] == best_step
    assert last["history"]["best_val_loss"] == min(losses)  # what a resumed run compares with
