"""Training a language model: :func:`train` builds a :class:`~.trainer.Trainer` from the config
and runs it. The trainer's components each own one job: the training, validation and test streams
(``data_stream.py``), the optimiser (``optimizer.py``) and its learning-rate schedule
(``schedule.py``), checkpoints (``checkpointer.py``), the budget and stop signals
(``stopping.py``), metrics, ``metrics.csv``, console and ``results.json`` (``metrics.py``);
``step.py`` is one training step (and its mixed precision), ``state.py`` the counters and RNG
states, ``finetune.py`` a finetune's start and end, ``distributed.py`` the data-parallel helpers."""

from .step import TrainingError
from .trainer import Trainer, train

__all__ = ["train", "Trainer", "TrainingError"]
