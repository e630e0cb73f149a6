"""train(..., on_validation=...): the hook a hyperparameter search prunes with."""

from pathlib import Path

import pytest

from _metrics_rows import read_rows
from qrnn_lm.config import load_config
from qrnn_lm.models.checkpoint_file import load_checkpoint
from qrnn_lm.training import train

TINY = Path(__file__).resolve().parents[2] / "configs" / "tiny.toml"


def tiny(corpus, *overrides):
    return load_config(TINY, [f'data.dataset="{corpus}"', "train.epochs=2", *overrides])


def test_called_after_each_validation_once_its_checkpoint_is_saved(corpus, tmp_path):
    out, calls = tmp_path / "run", []

    def hook(step, valid_ppl):
        saved = load_checkpoint(out / "last.pt")["counters"]
        calls.append((step, valid_ppl, saved["step"], saved["position"]))

    # 2 epochs, then resumed with max_steps inside a third one: a stop validation too.
    train(tiny(corpus), out, device="cpu", progress=False, on_validation=hook)
    steps = calls[-1][0]
    train(tiny(corpus, "train.epochs=3", f"train.max_steps={steps + 3}"), out, device="cpu", progress=False,
          resume=out, on_validation=hook)
    assert len(calls) == 3 and 0 < calls[0][0] < steps and calls[2][0] == steps + 3
    assert all(step == saved_step for step, _, saved_step, _ in calls)  # last.pt written before the call
    assert [position for *_, position in calls] == [0, 0, calls[2][3]] and calls[2][3] > 0
    valid = [float(row["valid_ppl"]) for row in read_rows(out / "metrics.csv") if row["valid_ppl"]]
    assert [ppl for _, ppl, _, _ in calls] == pytest.approx(valid, rel=1e-3)  # the csv rounds


def test_an_exception_in_the_hook_ends_the_run_and_propagates(corpus, tmp_path):
    class Pruned(Exception):
        pass

    def prune(step, valid_ppl):
        raise Pruned(step)

    out = tmp_path / "run"
    with pytest.raises(Pruned):
        train(tiny(corpus), out, device="cpu", progress=False, on_validation=prune)
    assert load_checkpoint(out / "last.pt")["counters"]["epoch"] == 2  # stopped after the first epoch
    assert not (out / "results.json").exists()
    results = train(tiny(corpus), out, device="cpu", progress=False, resume=out)  # still resumable
    assert results["epochs_completed"] == 2


def test_a_stop_signal_during_the_hook_waits_until_it_returns(corpus, tmp_path):
    """The hook of a search writes to a database shared with other threads: a stop signal must
    not raise inside it (a lock left held hung `qrnn-lm tune`), but as soon as it returns."""
    import signal

    from qrnn_lm.training.stopping import Interrupted

    out, finished = tmp_path / "run", []

    def hook(step, valid_ppl):
        signal.raise_signal(signal.SIGTERM)  # its handler runs before this call returns
        finished.append(step)

    with pytest.raises(Interrupted):
        train(tiny(corpus), out, device="cpu", progress=False, on_validation=hook)
    assert len(finished) == 1
    assert (out / "last.pt").exists() and not (out / "results.json").exists()
