"""The metrics logger writes real TensorBoard scalars that TensorBoard's own reader finds."""

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
