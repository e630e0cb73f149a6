"""Finetuning, as salesforce/awd-lstm-lm's ``finetune.py``: the best weights of a finished run
continue straight into averaged SGD with the run's recipe, in a run folder of their own.

The :class:`~qrnn_lm.training.trainer.Trainer` does the work; this module holds what differs:

* the start (:func:`start_finetune`): the checkpoint's weights (``best.pt`` holds ASGD's averaged
  weights when the run had switched), a fresh ``torch.optim.ASGD`` at the recipe's ``train.lr``
  (awd's finetune uses ``args.lr``, not a decayed rate), the starting weights validated and tested
  once, written to ``finetune.json`` and saved as this folder's first ``best.pt`` (so the folder is
  self-contained, and best.pt is replaced only by a better validation, as awd's ``stored_loss``);
* the stop (:func:`converged`): awd's finetune ends when the validation loss is worse than the best
  of all but the last ``train.nonmono`` validations (the NT-ASGD trigger), or at ``train.epochs``;
* the comparison: ``results.json`` gains a ``finetune`` entry with the start and the end.

A finetune run resumes like any run (``qrnn-lm train --resume DIR``): ``finetune.json`` in its
folder marks it as one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..config import Config, UserError, config_from_dict, config_to_dict
from ..inference.evaluate import perplexity
from ..models.checkpoint_file import load_checkpoint
from . import distributed
from .optimizer import should_switch_to_asgd

__all__ = ["FINETUNE_FILE", "load_init", "read_finetune", "start_finetune", "converged", "compare", "finetune_vocab", "finetune_summary"]

FINETUNE_FILE = "finetune.json"


def load_init(path: str | Path, config: Config) -> dict[str, Any]:
    """The starting checkpoint's payload (a run folder means its ``best.pt``), checked to hold the
    model ``config`` describes; the finetune reads its data with the payload's ``vocab``."""
    path = Path(path)
    payload = load_checkpoint(path / "best.pt" if path.is_dir() else path)
    saved = config_from_dict(payload["config"])
    if config_to_dict(saved)["model"] != config_to_dict(config)["model"]:
        raise UserError(f"cannot finetune {path}: its [model] section differs from the config's; "
                        "finetuning keeps the model (drop the model.* overrides)")
    return payload


def start_finetune(trainer, init_from: str | Path) -> dict[str, Any]:
    """Score a fresh :class:`~qrnn_lm.training.trainer.Trainer`'s starting weights, record them
    (``finetune.json``, rank 0) and save them as the run's first ``best.pt``: only a better
    validation replaces them, as in awd's finetune. Returns the record."""
    valid_loss = trainer.validate()
    test_loss, _ = trainer.evaluator.test_loss(trainer.model, progress=trainer.console.progress)
    trainer.console.echo(f"finetuning {init_from}: valid ppl {perplexity(valid_loss):.2f}, test ppl {perplexity(test_loss):.2f}")
    trainer.history.best_val_loss = valid_loss
    record = {"init_from": str(init_from), "start_val_loss": valid_loss, "start_test_loss": test_loss}
    if distributed.is_main():
        (trainer.out_dir / FINETUNE_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    trainer.checkpointer.save("best")
    return record


def finetune_vocab(init: dict[str, Any] | None, resumed: dict[str, Any] | None, out_dir: Path) -> list[str] | None:
    """The vocabulary a finetune keeps on any data (words it lacks read as its ``<unk>``): its
    starting checkpoint's (``init``), or a resumed finetune's (``resumed``, the checkpoint of a run
    in ``out_dir`` that holds a finetune record); None for an ordinary run (the text's own)."""
    if init is not None:
        return init["vocab"]
    if resumed is not None and read_finetune(out_dir) is not None:
        return resumed["vocab"]
    return None


def read_finetune(out_dir: Path) -> dict[str, Any] | None:
    """The record of a finetune run's start, or None for an ordinary run."""
    path = out_dir / FINETUNE_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def converged(val_losses: list[float], nonmono: int) -> bool:
    """awd's finetune stop: the last validation is worse than the best but the last ``nonmono``."""
    return len(val_losses) > 1 and should_switch_to_asgd(val_losses[:-1], val_losses[-1], nonmono)


def compare(record: dict[str, Any], results: dict[str, Any]) -> dict[str, Any]:
    """The ``finetune`` entry of results.json: start and end, valid and test."""
    return {
        "init_from": record["init_from"],
        "start_val_ppl": perplexity(record["start_val_loss"]),
        "start_test_ppl": perplexity(record["start_test_loss"]),
        "val_ppl_change": results["best_val_ppl"] - perplexity(record["start_val_loss"]),
        "test_ppl_change": results["test_ppl"] - perplexity(record["start_test_loss"]),
        **record,
    }


def finetune_summary(results: dict[str, Any]) -> str:
    """The console line of a finetune's end, from results.json's keys (``finetune`` from :func:`compare`)."""
    start = results["finetune"]
    return (f"finetune: valid ppl {start['start_val_ppl']:.2f} -> {results['best_val_ppl']:.2f}, "
            f"test ppl {start['start_test_ppl']:.2f} -> {results['test_ppl']:.2f}")
