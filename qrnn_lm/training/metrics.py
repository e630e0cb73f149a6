"""Training metrics: a :class:`Meter` that averages them between two log points, and logging
behind a two-method interface, ``log(metrics, step)`` and ``close()``.

TensorBoard when a log folder is given (and on rank 0 only: the caller decides), a no-op
otherwise. Tags are slash-named: ``train/loss``, ``val/ppl``, ``lr``. TensorBoard is imported
only when a TensorBoard logger is made, so importing this module stays cheap.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Protocol


class MetricsLogger(Protocol):
    def log(self, metrics: dict[str, float], step: int) -> None: ...

    def close(self) -> None: ...


class NullLogger:
    """Drops everything: used on non-zero ranks and when logging is off."""

    def log(self, metrics: dict[str, float], step: int) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardLogger:
    """Writes scalars to ``log_dir`` as TensorBoard event files."""

    def __init__(self, log_dir: str | Path):
        from torch.utils.tensorboard import SummaryWriter  # heavy: imported only when used

        self._writer = SummaryWriter(log_dir=str(log_dir))

    def log(self, metrics: dict[str, float], step: int) -> None:
        for tag, value in metrics.items():
            self._writer.add_scalar(tag, float(value), global_step=step)

    def close(self) -> None:
        self._writer.flush()
        self._writer.close()


def make_logger(log_dir: str | Path | None) -> MetricsLogger:
    """A TensorBoard logger writing to ``log_dir``, or a no-op logger when it is None."""
    return NullLogger() if log_dir is None else TensorBoardLogger(log_dir)


class Meter:
    """Averages of the training metrics between two log points."""

    def __init__(self):
        self._reset()

    def _reset(self) -> None:
        self.loss_sum = 0.0
        self.grad_norm_sum = 0.0
        self.steps = 0
        self.tokens = 0
        self.started = time.perf_counter()

    def add(self, loss: float, grad_norm: float, tokens: int) -> None:
        self.loss_sum += loss * tokens
        self.grad_norm_sum += grad_norm
        self.steps += 1
        self.tokens += tokens

    def flush(self, lr: float) -> dict[str, float]:
        """``train/loss``, ``train/ppl``, ``lr``, ``grad_norm``, ``tokens_per_s`` since the last flush."""
        loss = self.loss_sum / max(self.tokens, 1)
        seconds = max(time.perf_counter() - self.started, 1e-9)
        metrics = {
            "train/loss": loss,
            "train/ppl": math.exp(min(loss, 700.0)),
            "lr": lr,
            "grad_norm": self.grad_norm_sum / max(self.steps, 1),
            "tokens_per_s": self.tokens / seconds,
        }
        self._reset()
        return metrics
