"""The metrics logger writes real TensorBoard scalars that TensorBoard's own reader finds; results.json
is written whole or not at all."""

import json
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from qrnn_lm.training.metrics import NullLogger, make_logger


def test_tensorboard_logger_writes_readable_scalars(tmp_path):
    logger = make_logger(tmp_path / "tb")
    logger.log({"train/loss": 5.0, "lr": 30}, step=1)
    logger.log({"train/loss": 4.5}, step=2)
    logger.close()
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert set(events.Tags()["scalars"]) == {"train/loss", "lr"}
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [(1, 5.0), (2, 4.5)]


def test_null_logger_writes_nothing(tmp_path):
    logger = make_logger(None)
    assert isinstance(logger, NullLogger)
    logger.log({"train/loss": 1.0}, step=1)
    logger.close()


def test_a_stop_signal_during_logging_waits_until_the_writes_are_done(tmp_path, monkeypatch):
    """A stop signal raises Interrupted at any point of the main thread; inside the TensorBoard
    writer it could leave the writer's queue lock held and hang the close (a hung `qrnn-lm tune`
    after SIGTERM). The logger holds the signal until its writes are done, then raises it."""
    import signal

    import pytest

    from qrnn_lm.training.stopping import Interrupted, StopSignals

    logger = make_logger(tmp_path / "tb")
    real_add_scalar = logger._writer.add_scalar
    written = []

    def add_scalar_with_a_signal_in_the_middle(tag, value, global_step):
        if not written:
            signal.raise_signal(signal.SIGTERM)  # its handler runs before this call returns
        real_add_scalar(tag, value, global_step=global_step)
        written.append(tag)

    monkeypatch.setattr(logger._writer, "add_scalar", add_scalar_with_a_signal_in_the_middle)
    with StopSignals(immediate=True), pytest.raises(Interrupted):
        logger.log({"train/loss": 5.0, "lr": 30.0, "grad_norm": 1.0}, step=1)
    assert written == ["train/loss", "lr", "grad_norm"]
    logger.close()
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert set(events.Tags()["scalars"]) == {"train/loss", "lr", "grad_norm"}


def test_results_json_is_whole_or_absent_when_its_write_is_cut(tmp_path, monkeypatch):
    """A run's results.json says it finished: a write cut half-way (a signal, a full disk) must not
    leave half a file behind."""
    from qrnn_lm.training.metrics import write_results

    real_write_text = Path.write_text

    def cut(self, text, *args, **kwargs):
        real_write_text(self, text[: len(text) // 2], *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_text", cut)
    with pytest.raises(KeyboardInterrupt):
        write_results(tmp_path, {"test_ppl": 99.2, "steps": 3486})
    monkeypatch.setattr(Path, "write_text", real_write_text)
    assert not (tmp_path / "results.json").exists()
    assert json.loads(write_results(tmp_path, {"steps": 1}).read_text()) == {"steps": 1}
