"""``qrnn-lm eval``: a checkpoint's loss and perplexity on a split, optionally with the cache pointer."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..config import check_options
from .options import DataDirOption, DataOption, Device, DeviceOption, ProgressOption, Split, check_data, checkpoint_file, error_exit, user_errors


def eval_command(
    checkpoint: Annotated[Path, typer.Argument(metavar="CHECKPOINT", help="A .pt file, or a run folder (its best.pt).")],
    split: Annotated[Split, typer.Option("--split", help="Which split to score.")] = Split.test,
    data: DataOption = None,
    data_dir: DataDirOption = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Parallel streams: 1 is the exact literature number, more is faster.")] = 1,
    device: DeviceOption = Device.auto,
    progress: ProgressOption = True,
    cache: Annotated[bool, typer.Option("--cache", help="Add the continuous cache pointer (Grave et al. 2017); implied by any --cache-* option.")] = False,
    cache_window: Annotated[Optional[int], typer.Option("--cache-window", metavar="N", help="Cache size in steps (default: 500).")] = None,
    cache_theta: Annotated[Optional[float], typer.Option("--cache-theta", metavar="THETA", help="Flatness of the cache attention (default: 1.0).")] = None,
    cache_lambda: Annotated[Optional[float], typer.Option("--cache-lambda", metavar="LAMBDA", help="Weight of the cache, from 0 to 1 (default: 0.1).")] = None,
    cache_search: Annotated[bool, typer.Option("--cache-search", help="Pick theta and lambda by a grid on valid, then score test.")] = False,
):
    """Print a checkpoint's loss and perplexity on a split (by default of the data it was trained on).

    With the cache pointer (--cache, --cache-*), the split is scored at batch size 1 without and
    with the cache. Example: qrnn-lm eval runs/ptb-small/best.pt --split test
    """
    with user_errors():
        check_options(batch_size=batch_size, cache_window=cache_window, cache_theta=cache_theta, cache_lambda=cache_lambda)
    check_data(data)
    if cache or cache_search or any(v is not None for v in (cache_window, cache_theta, cache_lambda)):
        if batch_size != 1:
            raise error_exit("the cache pointer scores one stream: use --batch-size 1")
        if cache_search and (cache_theta is not None or cache_lambda is not None):
            raise error_exit("--cache-search chooses theta and lambda itself: drop --cache-theta/--cache-lambda")
        with user_errors():
            _evaluate_with_cache(checkpoint_file(checkpoint, "best.pt"), split.value, data, data_dir, device.value,
                                 progress, cache_window, cache_theta, cache_lambda, cache_search)
        return
    with user_errors():
        from ..inference.evaluate import evaluate_checkpoint

        result = evaluate_checkpoint(
            checkpoint_file(checkpoint, "best.pt"),
            split=split.value,
            data=data,
            data_dir=data_dir,
            batch_size=batch_size,
            device=device.value,
            progress=progress,
        )
        units = f"  bpc {result['bpc']:.4f}" if "bpc" in result else ""
        if "word_ppl" in result:
            units = f"  per-word ppl {result['word_ppl']:.2f} ({result['words']:,} words)"
        typer.echo(
            f"{result['dataset']} {result['split']}: loss {result['loss']:.4f}  "
            f"ppl {result['ppl']:.2f}{units}  ({result['tokens']:,} tokens)"
        )
        if result.get("unknown_words"):
            typer.echo(f"note: {result['unknown_words']:,} tokens are not in the checkpoint's vocabulary "
                       "and were scored as its <unk>")


def _evaluate_with_cache(path, split, data, data_dir, device, progress, window, theta, lambd, search) -> None:
    from ..inference.cache import CacheParams, evaluate_cache_checkpoint
    from ..inference.evaluate import perplexity

    defaults = CacheParams()
    params = CacheParams(window=defaults.window if window is None else window,
                         theta=defaults.theta if theta is None else theta,
                         lambd=defaults.lambd if lambd is None else lambd)
    params.check()  # before the slow load
    result = evaluate_cache_checkpoint(path, split=split, params=params, search_grid=search, data=data,
                                       data_dir=data_dir, device=device, progress=progress)
    name, pair = result["dataset"], f"window {result['window']}, theta {result['theta']:g}, lambda {result['lambda']:g}"
    if search:
        typer.echo(f"{name} valid: ppl {perplexity(result['valid_loss']):.2f} -> {perplexity(result['valid_cache_loss']):.2f} "
                   f"with the cache; best of the grid: {pair}")
    typer.echo(f"{name} {result['split']}: ppl {result['ppl']:.2f} -> {result['cache_ppl']:.2f} with the cache "
               f"({pair}; loss {result['loss']:.4f} -> {result['cache_loss']:.4f}; {result['tokens']:,} tokens)")
