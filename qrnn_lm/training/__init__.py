"""Training a language model: :func:`train` builds a :class:`~.trainer.Trainer` from the config
and runs it. The trainer's components each own one job: the data stream (``stream.py``), the
optimiser and schedule (``optimizer.py``), validation and test (``evaluator.py``), checkpoints
(``checkpointer.py``), the limits and the progress the lr schedule reads (``budget.py``,
``lr_schedule.py``), metrics (``metrics.py``, ``metrics_csv.py``) and console output
(``console.py``); ``step.py`` is one training step, ``state.py`` the counters and RNG states, ``interrupts.py`` the Ctrl-C guard,
``distributed.py`` the data-parallel helpers."""

from .step import TrainingError
from .trainer import Trainer, train

__all__ = ["train", "Trainer", "TrainingError"]
