"""Continuous cache pointer evaluation (Grave et al. 2017, "Improving Neural Language Models with a
Continuous Cache"; salesforce/awd-lstm-lm's ``pointer.py``).

At step ``t`` the cache holds the pairs ``(h_j, w_{j+1})`` of the last ``window`` steps ``j < t``:
the final layer's output ``h_j`` (what the decoder reads) and the word that followed it. The
next-word distribution mixes the model's softmax with a softmax over the cache::

    p_cache(w) = sum_j [w_{j+1} = w] * softmax_j(theta * h_t . h_j)
    p(w)       = (1 - lambda) * p_model(w) + lambda * p_cache(w)

Only the target's probability is needed, so everything is computed in log space
(``logsumexp`` over the matching cache entries), which is exact when no entry matches (``log 0``);
``lambda = 0`` gives plain eval's number bit for bit. The first token
scored has an empty cache and gets ``p_model``. Unlike awd's ``pointer.py``, which uses the cache
only once ``window`` steps have been seen, the cache is used as soon as it holds one entry.

Batch size 1 only: one stream over the whole split, as the literature reports it. The model runs
once per split (segments of ``bptt``, state carried); ``collect`` keeps the hidden states and the
model's log-probabilities, so a grid over theta and lambda costs no further model passes.

:func:`cache_results` is the same scoring at the end of a training run (``train.cache_at_end``,
awd-lstm-lm's ``pointer.py`` step on best.pt's model right after the plain test, so every run
reports both numbers): "search" picks theta and lambda on valid from ``eval --cache-search``'s grid,
"fixed" uses ``train.cache_theta`` / ``train.cache_lambda``; test is scored at batch size 1 with
``train.cache_window`` through :func:`score_corpus`, so the numbers equal ``eval``'s on best.pt.

Shapes: N = number of scored tokens, E = final layer size, W = window, L = block of tokens.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..config import TrainConfig, UserError, check_options
from ..data import batchify, get_batch

__all__ = ["CacheParams", "Collected", "collect", "cache_log_probs", "mixed_loss", "search", "evaluate_cache_checkpoint", "score_corpus", "cache_results", "cache_summary", "THETAS", "LAMBDAS"]

THETAS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5)  # the --cache-search grid (awd's PTB/WT2 picks lie inside)
LAMBDAS = (0.05, 0.1, 0.15, 0.2, 0.3)


@dataclass(frozen=True)
class CacheParams:
    window: int = 500  # cache size W in steps (awd-lstm-lm's PTB command)
    theta: float = 1.0  # flatness of the cache's softmax over h_t . h_j
    lambd: float = 0.1  # weight of the cache in the mixture

    def check(self) -> None:
        """ConfigError (a UserError) for a value out of ``qrnn-lm eval``'s option ranges."""
        check_options(cache_window=self.window, cache_theta=self.theta, cache_lambda=self.lambd)


@dataclass
class Collected:
    """One pass of the model over a split (batch size 1)."""

    hidden: torch.Tensor  # [N, E] final-layer output at each scored step (float32)
    targets: torch.Tensor  # [N] the word that follows each step
    model_log_probs: torch.Tensor  # [N] log p_model(target)
    bptt: int  # segment length used
    segment_losses: torch.Tensor | None = None  # [segments] float64: plain eval's own sums, for lambda = 0


@torch.no_grad()
def collect(model: torch.nn.Module, source: torch.Tensor, bptt: int) -> Collected:
    """Run ``model`` over ``source`` ``[N + 1, 1]`` in segments of ``bptt`` (as plain eval does)."""
    if source.dim() != 2 or source.size(1) != 1 or source.size(0) < 2:
        raise ValueError(f"source must be [N, 1] with N >= 2 (batch size 1), got {tuple(source.shape)}")
    was_training = model.training
    model.eval()
    model.reset()
    hidden = model.init_hidden(1)
    states, targets_all, log_probs, sums = [], [], [], []
    for start in range(0, source.size(0) - 1, bptt):
        inputs, targets = get_batch(source, start, bptt)  # [L, 1] each
        logits, hidden, raw_output, _ = model(inputs, hidden)  # [L, 1, V], ..., [L, 1, E]
        flat = logits.reshape(-1, logits.size(-1)).float()  # [L, V]
        losses = F.cross_entropy(flat, targets.reshape(-1), reduction="none")  # [L]
        log_probs.append(-losses)
        # plain eval's sum, the same call in the same order: lambda = 0 reproduces it bit for bit
        sums.append(F.cross_entropy(flat, targets.reshape(-1), reduction="sum").double())
        states.append(raw_output.reshape(-1, raw_output.size(-1)).float())  # [L, E]
        targets_all.append(targets.reshape(-1))
    model.reset()
    model.train(was_training)
    return Collected(torch.cat(states), torch.cat(targets_all), torch.cat(log_probs), bptt, torch.stack(sums))


def cache_log_probs(collected: Collected, window: int, thetas: list[float], block: int = 256) -> torch.Tensor:
    """``log p_cache(target_t)`` for each theta: ``[len(thetas), N]``; ``-inf`` where no cache
    entry holds the target, ``nan`` at ``t = 0`` (empty cache). The dot products are computed once
    per block of L tokens against its ``W + L`` preceding states and reused for every theta."""
    hidden, targets = collected.hidden, collected.targets
    count = hidden.size(0)
    out = torch.empty(len(thetas), count, dtype=torch.float64, device=hidden.device)
    theta = torch.tensor(thetas, dtype=torch.float64, device=hidden.device).view(-1, 1, 1)  # [K, 1, 1]
    for start in range(0, count, block):
        stop = min(start + block, count)
        first = max(0, start - window)
        dots = (hidden[start:stop] @ hidden[first:stop].T).double()  # [L, W + L]
        rows = torch.arange(start, stop, device=hidden.device).view(-1, 1)  # t
        cols = torch.arange(first, stop, device=hidden.device).view(1, -1)  # j
        in_window = (cols < rows) & (cols >= rows - window)  # [L, W + L]: j in [t - W, t - 1]
        match = in_window & (targets[first:stop].view(1, -1) == targets[start:stop].view(-1, 1))
        scores = theta * dots  # [K, L, W + L]
        neg_inf = torch.tensor(-math.inf, dtype=scores.dtype, device=scores.device)
        total = torch.where(in_window, scores, neg_inf).logsumexp(-1)  # [K, L]
        hits = torch.where(match, scores, neg_inf).logsumexp(-1)  # [K, L]
        out[:, start:stop] = hits - total  # -inf - -inf = nan only for the empty cache at t = 0
    return out


def mixed_loss(collected: Collected, log_p_cache: torch.Tensor, lambd: float) -> float:
    """Mean ``-log((1 - lambda) p_model + lambda p_cache)`` over the N targets, in nats.

    ``lambda = 0`` is the model alone: plain eval's own per-segment sums when ``collect`` kept them
    (the same number as :func:`~qrnn_lm.inference.evaluate.evaluate`, to the bit)."""
    log_p_model = collected.model_log_probs.double()
    if lambd == 0.0:
        if collected.segment_losses is not None:
            return collected.segment_losses.sum().item() / log_p_model.numel()
        return (-log_p_model).sum().item() / log_p_model.numel()
    model_term = log_p_model + math.log1p(-lambd) if lambd < 1 else torch.full_like(log_p_model, -math.inf)
    mixed = torch.logaddexp(model_term, log_p_cache + math.log(lambd))
    mixed = torch.where(torch.isnan(log_p_cache), log_p_model, mixed)  # empty cache: the model alone
    return (-mixed).sum().item() / mixed.numel()


def search(valid: Collected, window: int, thetas=THETAS, lambdas=LAMBDAS) -> tuple[float, float, float, dict]:
    """The grid over theta x lambda on ``valid``: ``(best theta, best lambda, its loss, {(theta,
    lambda): loss})``."""
    log_p_cache = cache_log_probs(valid, window, list(thetas))
    grid = {(theta, lambd): mixed_loss(valid, log_p_cache[index], lambd)
            for index, theta in enumerate(thetas) for lambd in lambdas}
    (theta, lambd), loss = min(grid.items(), key=lambda item: item[1])
    return theta, lambd, loss, grid


def evaluate_cache_checkpoint(checkpoint, *, split: str = "test", params: CacheParams = CacheParams(),
                              search_grid: bool = False, data=None, data_dir=None, device: str = "auto",
                              progress: bool = True) -> dict:
    """Cache-pointer evaluation of a checkpoint (a path or a loaded payload) at batch size 1.

    Without ``search_grid``: ``split`` scored without and with the cache at ``params``. With it:
    the grid over :data:`THETAS` x :data:`LAMBDAS` on valid picks the pair, then test is scored
    with it (``split`` is ignored). Returns a dict with ``loss``/``ppl`` (plain) and
    ``cache_loss``/``cache_ppl`` for the split scored, plus ``theta``, ``lambda``, ``window``,
    ``tokens``, ``split``, ``dataset`` (and ``valid_loss``/``valid_cache_loss`` with a search).
    """
    from ..device import resolve_device
    from ..models.checkpoint_file import load_checkpoint, model_from_checkpoint
    from .checkpoint_data import checkpoint_corpus
    from .evaluate import SPLITS

    params.check()
    if split not in SPLITS:
        raise UserError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    payload = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
    torch_device = resolve_device(device)
    model, _, config = model_from_checkpoint(payload, torch_device)
    dataset = str(data) if data is not None else config.data.dataset
    corpus, _ = checkpoint_corpus(payload, dataset, data_dir, progress=progress)
    return score_corpus(model, corpus, config.data.bptt, torch_device, split=split, params=params,
                        search_grid=search_grid, dataset=dataset)


def score_corpus(model: torch.nn.Module, corpus, bptt: int, device: torch.device, *, split: str = "test",
                 params: CacheParams = CacheParams(), search_grid: bool = False, dataset: str = "") -> dict:
    """The scoring of :func:`evaluate_cache_checkpoint` on a model and corpus already loaded (the
    trainer's ``train.cache_at_end`` calls it on best.pt's model): the same dict."""
    from .evaluate import perplexity

    def run(name: str) -> Collected:
        if getattr(corpus, name).numel() < 2:
            raise UserError(f"the {name} split of {dataset} holds fewer than 2 tokens: nothing to score")
        return collect(model, batchify(getattr(corpus, name), 1).to(device), bptt)

    result = {"dataset": dataset, "window": params.window, "batch_size": 1}
    theta, lambd = params.theta, params.lambd
    if search_grid:
        valid = run("valid")
        theta, lambd, valid_cache_loss, grid = search(valid, params.window)
        result.update(valid_loss=mixed_loss(valid, torch.empty(0), 0.0), valid_cache_loss=valid_cache_loss,
                      grid={f"{t:g},{l:g}": loss for (t, l), loss in grid.items()})
        split = "test"
    scored = run(split)
    log_p_cache = cache_log_probs(scored, params.window, [theta])[0]
    loss, cache_loss = mixed_loss(scored, log_p_cache, 0.0), mixed_loss(scored, log_p_cache, lambd)
    result.update(split=split, theta=theta, **{"lambda": lambd}, tokens=scored.targets.numel(), loss=loss,
                  ppl=perplexity(loss), cache_loss=cache_loss, cache_ppl=perplexity(cache_loss))
    return result


def cache_results(train: TrainConfig, model: torch.nn.Module, corpus, bptt: int, device: torch.device,
                  dataset: str) -> dict[str, Any]:
    """The results.json keys of the cache pointer on test after a run (empty when
    ``train.cache_at_end`` is "off"); ``bptt`` and ``dataset`` are the run's ``data`` section's:
    ``cache_base_ppl``, ``test_cache_loss``, ``test_cache_ppl``, ``cache_window``, ``cache_theta``, ``cache_lambda``,
    ``cache_chosen_on`` ("valid" for a search, "config" otherwise) and ``cache_seconds``."""
    if train.cache_at_end == "off":
        return {}
    started = time.perf_counter()
    params = CacheParams(window=train.cache_window, theta=train.cache_theta, lambd=train.cache_lambda)
    scored = score_corpus(model, corpus, bptt, device, split="test", params=params,
                          search_grid=train.cache_at_end == "search", dataset=dataset)
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
