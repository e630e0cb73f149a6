"""Training a language model: :func:`train` (below) builds a :class:`~.trainer.Trainer` from the
config, in the data-parallel session torchrun describes, and runs it. The trainer's components each own one job: the training, validation and test streams
(``data_stream.py``), the optimiser (``optimizer.py``) and its learning-rate schedule
(``schedule.py``), checkpoints (``checkpointer.py``), the budget and stop signals
(``stopping.py``), metrics, ``metrics.csv``, console and ``results.json`` (``metrics.py``), in the text's unit
(:class:`~qrnn_lm.data.RunUnits`: bits per character, per-word perplexity);
``step.py`` is one training step (and its mixed precision), ``state.py`` the counters and RNG
states, ``finetune.py`` a finetune's start and end, ``distributed.py`` the data-parallel helpers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import Config, UserError
from ..device import resolve_device
from . import distributed
from .step import TrainingError
from .trainer import Trainer

__all__ = ["train", "Trainer", "TrainingError"]


def train(
    config: Config,
    out_dir: str | Path,
    *,
    device: str = "auto",
    resume: str | Path | None = None,
    data_dir: str | Path | None = None,
    progress: bool = True,
    init_from: str | Path | None = None,
    on_validation: Callable[[int, float], None] | None = None,
    checkpoint: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train ``config`` into ``out_dir`` (checkpoints, ``config.toml``, ``tb/``, ``results.json``).

    Args:
        config: the resolved :class:`~qrnn_lm.config.Config`. With ``resume`` it must match the
            checkpoint's model and data sections; the ``[train]`` section may differ (e.g. more
            epochs or max_steps).
        out_dir: run folder; a fresh run refuses a folder that already holds ``last.pt``.
        device: ``"auto"`` (cuda if available, else cpu), ``"cpu"`` or ``"cuda"``.
        resume: a ``last.pt`` (or a run folder, meaning its ``last.pt``) to continue exactly.
        data_dir: where named datasets live (see :func:`qrnn_lm.data.resolve_data_dir`).
        progress: tqdm bars (on rank 0 only). The console lines (validation results, schedule
            changes, interruptions) are printed on rank 0 either way.
        init_from: finetune: start a fresh run from this checkpoint's weights straight into
            averaged SGD (see :mod:`.finetune`).
        on_validation: ``on_validation(step, valid_ppl)``, called on rank 0 after each validation
            of the run (at the end of each epoch, and when a limit stops it mid-epoch), once that
            validation's ``last.pt`` is saved; ``step`` counts optimizer steps from the start of the
            run. An exception it raises ends the run and propagates out of ``train`` (e.g. a
            hyperparameter search pruning the trial); ``last.pt`` stays resumable.
        checkpoint: the checkpoint ``resume`` names, already loaded (the command line reads it
            once, to check it and resolve the config); read here when None.

    Returns:
        the results dict also written to ``out_dir/results.json``.
    """
    device = resolve_device(device)
    try:
        distributed.check_devices(device)
    except ValueError as error:
        raise UserError(str(error)) from None
    with distributed.session(device) as rank_device:
        trainer = Trainer(config, Path(out_dir), rank_device, resume=resume, data_dir=data_dir, progress=progress,
                          init_from=init_from, on_validation=on_validation, checkpoint=checkpoint)
        try:
            return trainer.run()
        finally:
            trainer.log.close()
