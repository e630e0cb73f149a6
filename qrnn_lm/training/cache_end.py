"""The cache pointer at the end of a run (``train.cache_at_end``): awd-lstm-lm's ``pointer.py``
step, scored on best.pt's model right after the plain test, so every run reports both numbers.

"search" picks theta and lambda on valid from ``qrnn-lm eval --cache-search``'s grid, "fixed"
uses ``train.cache_theta`` / ``train.cache_lambda``; either way test is scored at batch size 1
with ``train.cache_window`` (:func:`qrnn_lm.inference.cache.score_corpus`, the same code as
``eval --cache``, so the numbers equal ``eval``'s on the same best.pt).
"""

from __future__ import annotations

import time
from typing import Any

import torch

from ..config import Config
from ..data import Corpus
from ..inference.cache import CacheParams, score_corpus

__all__ = ["cache_results", "cache_summary"]


def cache_results(config: Config, model: torch.nn.Module, corpus: Corpus, device: torch.device) -> dict[str, Any]:
    """The results.json keys of the cache pointer on test (empty when ``cache_at_end`` is "off"):
    ``cache_base_ppl``, ``test_cache_loss``, ``test_cache_ppl``, ``cache_window``, ``cache_theta``, ``cache_lambda``,
    ``cache_chosen_on`` ("valid" for a search, "config" otherwise) and ``cache_seconds``."""
    train = config.train
    if train.cache_at_end == "off":
        return {}
    started = time.perf_counter()
    params = CacheParams(window=train.cache_window, theta=train.cache_theta, lambd=train.cache_lambda)
    scored = score_corpus(model, corpus, config.data.bptt, device, split="test", params=params,
                          search_grid=train.cache_at_end == "search", dataset=config.data.dataset)
    return {
        "cache_base_ppl": scored["ppl"],  # test without the cache at batch size 1 (= test_ppl at test_batch_size 1)
        "test_cache_loss": scored["cache_loss"],
        "test_cache_ppl": scored["cache_ppl"],
        "cache_window": scored["window"],
        "cache_theta": scored["theta"],
        "cache_lambda": scored["lambda"],
        "cache_chosen_on": "valid" if train.cache_at_end == "search" else "config",
        "cache_seconds": round(time.perf_counter() - started, 1),
    }


def cache_summary(results: dict[str, Any]) -> str:
    """The console line beside the plain test perplexity, from :func:`cache_results`' keys."""
    return (f"test ppl {results['cache_base_ppl']:.2f} -> {results['test_cache_ppl']:.2f} with the cache pointer "
            f"(window {results['cache_window']}, theta {results['cache_theta']:g}, lambda {results['cache_lambda']:g} "
            f"chosen on {results['cache_chosen_on']}; batch size 1; {results['cache_seconds']:.0f} s)")
