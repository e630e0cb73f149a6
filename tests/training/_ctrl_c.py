"""Ctrl-C in the middle of a training run, for the resume tests."""

import qrnn_lm.training.trainer as trainer_module


def ctrl_c_at_step(monkeypatch, call: int) -> None:
    """Make the trainer's ``call``-th training step from now raise KeyboardInterrupt (what Ctrl-C
    raises), before it changes anything: the run saves the state after step ``call - 1``."""
    real_step, calls = trainer_module.train_step, []

    def step_then_ctrl_c(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "train_step", step_then_ctrl_c)
