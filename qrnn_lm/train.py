"""The training engine: AWD-style training of the QRNN language model, resumable to the step.

One run, as salesforce/awd-lstm-lm's main.py: for each epoch, walk the batchified training stream
in segments of random length (variable BPTT, from a dedicated ``torch.Generator``), carrying the
hidden state across segments (detached); loss = cross-entropy + AR + TAR; clip the gradient norm;
step SGD / averaged SGD / Adam with the learning rate rescaled by ``segment length / bptt``. After
each epoch: validate (with ASGD's averaged weights once NT-ASGD has switched), save ``best.pt`` on
improvement, maybe switch to ASGD, apply ``lr_decay_epochs``, save ``last.pt``. At the end, the best
checkpoint is evaluated on test and ``results.json`` written.

Stopping and resuming:
* ``train.max_steps`` and ``train.epochs`` count from the start of the run, across resumes: a run
  stopped by ``max_steps=100`` and resumed with ``max_steps=300`` does 200 more steps. When
  ``max_steps`` stops a run mid-epoch, ``last.pt`` holds the exact position; the final test still
  runs (on ``best.pt``; when no epoch has finished yet, the current weights are validated once and
  saved as ``best.pt`` first, without entering the NT-ASGD history).
* Ctrl-C saves ``last.pt`` at the exact position (the start of the interrupted step) and re-raises
  KeyboardInterrupt for the caller (the CLI prints the resume command).
* A non-finite loss or gradient norm raises :class:`TrainingError`; no checkpoint is written, so
  the last good ``last.pt`` stays.

Data parallel: started by torchrun (``torchrun --nproc_per_node N -m qrnn_lm train ...``), ``train``
joins the process group (:func:`qrnn_lm.distributed.session`) and each rank trains its block of
the global batch's streams through DistributedDataParallel, which makes N ranks train the same
model as one process with the whole batch (see ``train_setup`` and ``train_step``). Rank 0 alone
writes ``config.toml``, TensorBoard, checkpoints, ``results.json`` and console output; validation
and test are exact token-weighted means over the ranks' shares. A Ctrl-C in a distributed run
saves nothing mid-epoch (the ranks are interrupted at different points): resume from the last
``last.pt`` written at an epoch end or at ``max_steps``.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from . import distributed
from .checkpoint import load_checkpoint, model_from_checkpoint
from .config import UserError, to_toml
from .evaluate import loss_sum, resolve_device
from .metrics import NullLogger, make_logger
from .model import QRNNLanguageModel
from .nt_asgd import averaged_weights, should_switch_to_asgd, switch_to_asgd
from .train_setup import Run, TrainingError, resume_config_check, save_run_checkpoint, setup_run
from .train_state import Snapshot, capture_stream, sigint_deferred
from .train_step import next_segment, train_step

__all__ = ["train", "TrainingError", "resume_config_check"]


def train(
    config,
    out_dir: str | Path,
    *,
    device: str = "auto",
    resume: str | Path | None = None,
    data_dir: str | Path | None = None,
    progress: bool = True,
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

    Returns:
        the results dict also written to ``out_dir/results.json``.
    """
    out_dir = Path(out_dir)
    device = resolve_device(device)
    try:
        distributed.check_devices(device)
    except ValueError as error:
        raise UserError(str(error)) from None
    with distributed.session(device) as rank_device:
        main = distributed.is_main()
        run = setup_run(config, out_dir, rank_device, resume, data_dir, progress and main, console=main)
        if main:
            (out_dir / "config.toml").write_text(to_toml(run.config), encoding="utf-8")
        run.logger = make_logger(out_dir / "tb") if main else NullLogger()
        started = time.perf_counter()
        try:
            status = _train_loop(run)
            results = _finish(run, status, time.perf_counter() - started)
        finally:
            run.logger.close()
    return results


def _train_loop(run: Run) -> str:
    """Epochs until ``train.epochs`` or ``train.max_steps``; returns "completed" or "max_steps"."""
    cfg = run.config.train
    limit = run.train_data.size(0) - 2  # awd: stop when fewer than 2 steps are left
    while run.state.epoch <= cfg.epochs:
        if run.state.position == 0:
            run.model.reset()  # a new pass over the stream: no saved inputs, zero hidden
            run.hidden = None
        bar = _epoch_bar(run, limit)
        try:
            while run.state.position < limit:
                if cfg.max_steps and run.state.step >= cfg.max_steps:
                    return "max_steps"
                _one_step(run, bar)
        except KeyboardInterrupt:
            _save_interrupted(run)
            raise
        finally:
            if bar is not None:
                bar.close()
        try:
            _end_of_epoch(run)
        except KeyboardInterrupt:
            _save_interrupted(run)
            raise
    return "completed"


def _one_step(run: Run, bar) -> None:
    cfg = run.config
    # Everything a replay of this step needs, taken before any randomness is drawn.
    run.snapshot = Snapshot(run.state.copy(), run.rng(), capture_stream(run.model, run.hidden))
    inputs, targets = next_segment(run.train_data, run.state.position, cfg.data, run.generator)  # [L, B]
    where = f"at epoch {run.state.epoch}, step {run.state.step + 1}"
    result = train_step(run.ddp, run.optimizer, inputs, targets, run.hidden, cfg.train, where)
    seq_len = inputs.size(0)
    with sigint_deferred():
        # awd-lstm-lm rescales the learning rate by the segment's length for every optimiser.
        for group in run.optimizer.param_groups:
            group["lr"] = run.state.lr * seq_len / cfg.data.bptt
        run.optimizer.step()
        for group in run.optimizer.param_groups:
            group["lr"] = run.state.lr
        run.hidden = result.hidden
        run.state.position += seq_len
        run.state.step += 1
        run.state.tokens += targets.numel() * run.world_size  # every rank's tokens
        run.snapshot = None
    run.meter.add(result.loss, result.grad_norm, targets.numel() * run.world_size)
    if bar is not None:
        bar.update(seq_len)
    if run.state.step % cfg.train.log_interval == 0:
        metrics = run.meter.flush(run.state.lr)
        run.logger.log(metrics, run.state.step)
        if bar is not None:
            bar.set_postfix(loss=f"{metrics['train/loss']:.3f}", ppl=f"{metrics['train/ppl']:.1f}",
                            tok_s=f"{metrics['tokens_per_s']:.0f}")


def validate(run: Run) -> float:
    """Validation loss of the current model (averaged weights when ASGD is active): the exact
    per-token mean over every rank's share of the validation streams."""
    with averaged_weights(run.model, run.optimizer):
        return _exact_mean(run.model, run.val_data, run.config.data.bptt)


def _exact_mean(model, source, bptt: int, progress: bool = False) -> float:
    total, count = distributed.all_reduce_sum(loss_sum(model, source, bptt, progress=progress))
    return total / count


def _end_of_epoch(run: Run) -> None:
    cfg, state = run.config.train, run.state
    val_loss = validate(run)
    run.logger.log({"val/loss": val_loss, "val/ppl": _ppl(val_loss)}, state.step)
    run.echo(f"epoch {state.epoch:3d} | step {state.step} | valid loss {val_loss:.3f} | valid ppl {_ppl(val_loss):.2f}"
             + (" | averaged" if state.optimizer == "asgd" else ""))
    with sigint_deferred():
        if val_loss < state.best_val_loss:
            state.best_val_loss = val_loss
            with averaged_weights(run.model, run.optimizer):
                save_run_checkpoint(run, "best")
        if (state.optimizer == "sgd" and cfg.asgd
                and should_switch_to_asgd(state.val_losses, val_loss, cfg.nonmono)):
            run.echo(f"switching to averaged SGD (NT-ASGD) after epoch {state.epoch}")
            run.optimizer = switch_to_asgd(run.model, state.lr, cfg.weight_decay)
            state.optimizer = "asgd"
        state.val_losses.append(val_loss)
        if state.epoch in cfg.lr_decay_epochs:
            state.lr /= 10.0
            for group in run.optimizer.param_groups:
                group["lr"] = state.lr
            run.echo(f"learning rate divided by 10: {state.lr:g}")
        state.epoch += 1
        state.position = 0
        run.hidden = None
        save_run_checkpoint(run, "last")


def _save_interrupted(run: Run) -> None:
    """Ctrl-C: write last.pt at the start of the interrupted step (or the current boundary)."""
    if run.world_size > 1:
        # Saving gathers from every rank, which Ctrl-C reached at different points: it could hang.
        run.echo(f"interrupted: nothing saved mid-epoch in a distributed run; resume from {run.out_dir / 'last.pt'}")
        return
    path = save_run_checkpoint(run, "last", run.snapshot)
    run.echo(f"interrupted at epoch {run.state.epoch}, step {run.state.step}: saved {path}")


def _finish(run: Run, status: str, seconds: float) -> dict[str, Any]:
    state, out_dir = run.state, run.out_dir
    if status == "max_steps":
        save_run_checkpoint(run, "last")
        if not distributed.broadcast_object((out_dir / "best.pt").exists()):  # rank 0's folder
            # No epoch finished yet: validate once so there is a best.pt to test, eval and sample.
            val_loss = validate(run)
            run.echo(f"stopped at step {state.step} (max_steps): valid ppl {_ppl(val_loss):.2f}")
            best_state = state.copy()
            best_state.best_val_loss = val_loss
            with averaged_weights(run.model, run.optimizer):
                save_run_checkpoint(run, "best", Snapshot(best_state, run.rng(), capture_stream(run.model, run.hidden)))
    model, best_val = _best_model(run)
    test_data = run.batchify(run.corpus.test, run.config.data.test_batch_size)  # this rank's share
    test_loss = _exact_mean(model, test_data, run.config.data.bptt, progress=run.progress)
    results = {
        "name": run.config.name,
        "dataset": run.config.data.dataset,
        "status": status,
        "epochs_completed": state.epoch - 1,
        "steps": state.step,
        "train_tokens": state.tokens,
        "optimizer": state.optimizer,
        "best_val_loss": best_val,
        "best_val_ppl": _ppl(best_val),
        "test_loss": test_loss,
        "test_ppl": _ppl(test_loss),
        "test_tokens": (test_data.size(0) - 1) * run.config.data.test_batch_size,
        "test_batch_size": run.config.data.test_batch_size,
        "checkpoint": str(out_dir / "best.pt"),
        "seconds": round(seconds, 1),
    }
    if run.rank == 0:
        (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    run.logger.log({"test/loss": test_loss, "test/ppl": _ppl(test_loss)}, state.step)
    run.echo(f"test loss {test_loss:.3f} | test ppl {_ppl(test_loss):.2f} (best.pt, batch size "
             f"{run.config.data.test_batch_size})")
    return results


def _best_model(run: Run) -> tuple[QRNNLanguageModel, float]:
    """The model of ``best.pt`` (read by rank 0, its weights broadcast to the other ranks) in eval
    mode, and its validation loss."""
    model, best_val = None, None
    if run.rank == 0:
        best = load_checkpoint(run.out_dir / "best.pt", map_location="cpu")
        model, _, _ = model_from_checkpoint(best, run.device)
        best_val = float(best["history"]["best_val_loss"])
    if run.world_size > 1:
        if model is None:
            model = QRNNLanguageModel(len(run.vocab), run.config.model).to(run.device).eval()
        distributed.broadcast_tensors(list(model.state_dict().values()))
        best_val = distributed.broadcast_object(best_val)
    return model, best_val


def _epoch_bar(run: Run, limit: int):
    if not run.progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=limit, initial=min(run.state.position, limit), unit="tok", unit_scale=run.config.data.batch_size,
                desc=f"epoch {run.state.epoch}/{run.config.train.epochs}", dynamic_ncols=True, leave=False)


def _ppl(loss: float) -> float:
    return math.exp(min(loss, 700.0))  # beyond exp(700) a float overflows
