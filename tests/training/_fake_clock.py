"""A fake wall clock for the training tests (max_minutes, wall_s) that needs no timing."""

import qrnn_lm.training.stopping as budget_module
import qrnn_lm.training.trainer as train_module


def clock_per_step(monkeypatch, seconds: float) -> list:
    """Make the budget's clock advance ``seconds`` with each training step (a fake wall clock for
    max_minutes and wall_s, with no timing in the test); returns the list of steps done."""
    done = []
    real_step = train_module.train_step

    def train_step(*args):
        done.append(1)
        return real_step(*args)

    monkeypatch.setattr(train_module, "train_step", train_step)
    monkeypatch.setattr(budget_module, "wall_clock", lambda: seconds * len(done))
    return done
