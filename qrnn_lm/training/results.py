"""A finished run's ``results.json``: what it reached, on what, in how long."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..config import Config
from .state import RunState

__all__ = ["ppl", "run_results", "write_results"]


def ppl(loss: float) -> float:
    """Perplexity of a mean loss in nats."""
    return math.exp(min(loss, 700.0))  # beyond exp(700) a float overflows


def run_results(config: Config, state: RunState, status: str, best_val: float, test_loss: float,
                test_tokens: int, out_dir: Path, seconds: float) -> dict[str, Any]:
    """The results dict (the keys of ``results.json``) of a run that ended with ``status``."""
    return {
        "name": config.name,
        "dataset": config.data.dataset,
        "status": status,
        "epochs_completed": state.epoch - 1,
        "steps": state.step,
        "train_tokens": state.tokens,
        "optimizer": state.optimizer,
        "best_val_loss": best_val,
        "best_val_ppl": ppl(best_val),
        "test_loss": test_loss,
        "test_ppl": ppl(test_loss),
        "test_tokens": test_tokens,
        "test_batch_size": config.data.test_batch_size,
        "checkpoint": str(out_dir / "best.pt"),
        "seconds": round(seconds, 1),
    }


def write_results(out_dir: Path, results: dict[str, Any]) -> Path:
    path = out_dir / "results.json"
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return path
