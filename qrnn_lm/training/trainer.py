"""The training engine: AWD-style training of the QRNN language model, resumable to the step.

One run, as salesforce/awd-lstm-lm's main.py: for each epoch, walk the batchified training stream
in segments of random length (variable BPTT), carrying the hidden state across segments
(detached); loss = cross-entropy + AR + TAR; clip the gradient norm; step SGD / averaged SGD /
Adam with the learning rate rescaled by ``segment length / bptt``. After each epoch: validate
(with ASGD's averaged weights once NT-ASGD has switched), save ``best.pt`` on improvement, maybe
switch to ASGD, apply ``lr_decay_epochs``, save ``last.pt``. At the end, the best checkpoint is
evaluated on test and ``results.json`` written.

A :class:`Trainer` is built once from the config and holds one component per job, each with its
own distributed details and, where it has state, its own ``state_dict``: the streams
(:mod:`.data_stream`), the optimiser and its schedule (:mod:`.schedule`), the counters, history
and random generators (:mod:`.state`), the budget and stop signals (:mod:`.stopping`), the logs
and the console (:mod:`.metrics`); the checkpointer (:mod:`.checkpointer`) saves and loads the
components by name. Its loop reads top to bottom: ``run`` -> epochs -> steps -> end of epoch -> finish.

Stopping and resuming (details: docs/application.md, :mod:`.stopping`): a run stopped by a limit
(``max_steps``, ``max_minutes``, counted across resumes) mid-epoch saves the exact position and
still tests ``best.pt`` (validating the current weights once when no epoch has finished); Ctrl-C,
SIGTERM and SIGHUP save ``last.pt`` at the exact position and raise
:class:`~qrnn_lm.training.stopping.Interrupted`; ``last.pt`` is also written every
``train.checkpoint_every_steps`` / ``_minutes``. A non-finite loss or gradient norm raises
:class:`TrainingError`; ``last.pt`` stays as it was.

Data parallel (torchrun): each rank trains its block of the global batch's streams through
DistributedDataParallel, as one process with the whole batch would; rank 0 alone writes files and
console output. After every step the ranks agree on a stop signal and a checkpoint due by the clock
(:meth:`~.stopping.StopSignals.agreed`), so every rank stops, or checkpoints, at the same step.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import torch

from ..config import Config, to_toml
from ..data import RunUnits
from ..inference.cache import cache_results, cache_summary
from ..inference.evaluate import perplexity
from ..models import LanguageModel, WeightDrop
from . import distributed
from .checkpointer import Checkpointer, check_same_data, components, read_resume_point
from .data_stream import Evaluator, TrainingStream, load_corpus, restore_stream
from .finetune import compare, converged, finetune_summary, finetune_vocab, load_init, read_finetune, start_finetune
from .metrics import Console, RunLog, run_results, write_results
from .overview import run_overview
from .schedule import Schedule
from .state import Counters, History, RandomState, SharedMasks
from .step import precision_context, step_settings, train_step
from .stopping import Budget, Interrupted, StopSignals, sigint_deferred

__all__ = ["Trainer"]


class Trainer:
    """One training run, fresh or resumed from ``resume`` (see :func:`qrnn_lm.training.train` for
    the arguments; ``device`` is this rank's resolved device)."""

    def __init__(self, config: Config, out_dir: Path, device: torch.device, *, resume: str | Path | None = None,
                 data_dir: str | Path | None = None, progress: bool = True, init_from: str | Path | None = None,
                 on_validation: Callable[[int, float], None] | None = None,
                 checkpoint: dict[str, Any] | None = None):
        if init_from is not None and resume is not None:
            raise ValueError("init_from starts a fresh run; resume continues one: pass one of them")
        self.config, self.out_dir, self.device = config, out_dir, device
        self.on_validation = on_validation if distributed.is_main() else None
        self.world_size = distributed.get_world_size()
        main = distributed.is_main()
        seed = config.train.seed
        self.console = Console(progress, enabled=main)
        resumed = read_resume_point(resume, config, out_dir, checkpoint)
        if main:
            out_dir.mkdir(parents=True, exist_ok=True)  # rank 0 alone writes into it

        torch.manual_seed(seed)  # parameters (equal on every rank) and dropout masks
        init = load_init(init_from, config) if init_from is not None else None
        vocab = finetune_vocab(init, None if resumed is None else resumed.payload, out_dir)  # None: the text's own
        self.corpus = load_corpus(config, data_dir, self.console.progress, vocab)
        if resumed is not None:
            check_same_data(resumed.payload, self.corpus)
        self.model = LanguageModel(len(self.corpus.vocab), config.model, config.train.softmax,
                                   config.train.softmax_memory_mb).to(device)
        self.stream = TrainingStream(self.corpus.train, config.data, device, seed, self.model)
        weight_drops = [module for module in self.model.modules() if isinstance(module, WeightDrop)]
        self.shared = SharedMasks(weight_drops, device, seed + 1)  # weight-drop masks, equal on every rank
        if self.world_size > 1:
            torch.manual_seed(distributed.rank_seed(seed, distributed.get_rank()))  # this rank's own masks
        # The components with state; a resumed run's are loaded below, in one loop.
        self.state, self.history = Counters(), History()
        # A finetune goes straight into averaged SGD from the starting checkpoint's weights.
        self.schedule = Schedule(self.model, config.train, self.history, "asgd" if init_from else None)
        self.budget = Budget(config.train, self.stream.limit)
        self.step_config, self.scaler = step_settings(config.train, device)  # "auto" precision decided
        for line in run_overview(config, len(self.corpus.vocab), self.corpus.train.numel(), self.model,
                                 self.step_config.precision, device, self.world_size, out_dir):
            self.console.echo(line)
        if config.train.precision == "auto":
            self.console.echo(f"precision auto: {self.step_config.precision} on {device.type}")
        rng = RandomState(self.stream.generator, self.shared.generator, seed, self.state)
        self.checkpointer = Checkpointer(out_dir, config, self.corpus, components(
            model=self.model, optimizer=self.schedule, counters=self.state, history=self.history,
            budget=self.budget, rng=rng, stream=self.stream, scaler=self.scaler), warn=self.console.echo)
        if resumed is not None:
            self.checkpointer.load(resumed.payload)
        elif init_from is not None:
            self.checkpointer.load_weights(init)
        self.evaluator = Evaluator(self.corpus, config.data, device)
        # torch.compile'd for training only: validation, test and checkpoints use the eager model.
        trained = torch.compile(self.model) if config.train.compile else self.model
        self.ddp = distributed.wrap_ddp(trained, device)  # what training calls
        self.signals = StopSignals(immediate=self.world_size == 1)
        self.step_state: dict[str, Any] | None = None  # the state a step in progress started from
        if main:
            (out_dir / "config.toml").write_text(to_toml(config), encoding="utf-8")
        self.units = RunUnits(self.corpus)  # bits per character, per-word perplexity, or none (words)
        self.log = RunLog(out_dir if main else None, None if resumed is None else self.state.step, self.units)
        if resumed is not None:
            self.console.echo(f"resuming {resume}: epoch {self.state.epoch}, step {self.state.step}")
        self.finetune = read_finetune(out_dir) if resumed is not None else None  # a finetune run's start
        if init_from is not None:
            self.finetune = start_finetune(self, init_from)

    # -- the loop, top to bottom -------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Train until ``train.epochs``, ``max_steps`` or ``max_minutes``, then test ``best.pt``."""
        started = time.perf_counter()
        self.budget.start()
        with self.signals:  # the final test too: a signal there ends the run, last.pt is complete
            status = self._train()
            return self._finish(status, time.perf_counter() - started)

    def _train(self) -> str:
        """Epochs until a limit; returns "completed", "max_steps", "max_minutes" or "converged"."""
        while self.state.epoch <= self.config.train.epochs:
            try:
                stop = self._epoch()
                if stop is not None:
                    return stop
                self._end_of_epoch()
                if self.finetune is not None and converged(self.history.val_losses, self.config.train.nonmono):
                    self.console.echo("finetune converged (validation worse than the best but the last "
                                      f"{self.config.train.nonmono}): stopping")
                    return "converged"
            except KeyboardInterrupt as error:
                if not getattr(error, "saved", False):
                    self._save_interrupted()
                raise
        return "completed"

    def _epoch(self) -> str | None:
        """The rest of the current epoch's steps; the limit that stopped it ("max_steps",
        "max_minutes"), or None when the epoch is complete."""
        state = self.state
        if state.position == 0:
            self.stream.start_epoch()
        bar = self.console.epoch_bar(state.epoch, self.config.train.epochs, state.position, self.stream.limit,
                                     self.config.data.batch_size)
        try:
            while state.position < self.stream.limit:
                stop = self.budget.stop_reason(state.step)
                if stop is not None:
                    return stop
                self._step(bar)
                self._after_step()
        finally:
            if bar is not None:
                bar.close()
        return None

    def _step(self, bar) -> None:
        state = self.state
        # Everything a replay of this step needs, taken before any randomness is drawn.
        self.step_state = self.checkpointer.capture()
        inputs, targets = self.stream.next_segment(state.position)  # [L, B / ranks]
        where = f"at epoch {state.epoch}, step {state.step + 1}"
        result = train_step(self.ddp, self.schedule.optimizer, inputs, targets, self.stream.hidden,
                            self.step_config, where, self.scaler)
        seq_len, tokens = inputs.size(0), targets.numel() * self.world_size  # every rank's tokens
        self.budget.tick()  # the clock for this step's schedule and the stop after it
        progress = self.budget.progress(state.step + 1, state.epoch, state.position + seq_len)
        with sigint_deferred():
            # awd-lstm-lm rescales the learning rate by the segment's length for every optimiser.
            self.schedule.step(seq_len / self.config.data.bptt, progress)
            self.stream.hidden = result.hidden
            state.position += seq_len
            state.step += 1
            state.tokens += tokens
            self.step_state = None
        metrics = self.log.step(result.loss, result.grad_norm, tokens, state, self.budget.elapsed(), self.schedule.lr,
                                self.config.train.log_interval)
        if bar is not None:
            bar.update(seq_len)
            if metrics is not None:
                bar.set_postfix(loss=f"{metrics['train/loss']:.3f}", ppl=f"{metrics['train/ppl']:.1f}",
                                tok_s=f"{metrics['tokens_per_s']:.0f}")

    def _after_step(self) -> None:
        """Between two steps (a consistent state): stop on a signal, or write a periodic last.pt
        (both decisions agreed by every rank: :meth:`~.stopping.StopSignals.agreed`)."""
        train, state = self.config.train, self.state
        due = bool(train.checkpoint_every_steps) and state.step % train.checkpoint_every_steps == 0
        minutes = train.checkpoint_every_minutes
        signum, timed = self.signals.agreed(bool(minutes) and self.checkpointer.minutes_since_last() >= minutes)
        if signum:
            path = self.checkpointer.save("last")
            self.console.echo(f"interrupted at epoch {state.epoch}, step {state.step}: "
                              + (f"saved {path}" if path is not None else "nothing new saved"))
            raise Interrupted(signum, saved=True)
        if (due or timed) and state.position < self.stream.limit:  # the epoch's end saves anyway
            self.checkpointer.save("last")

    def _end_of_epoch(self) -> None:
        state = self.state
        val_loss = self.validate()
        self._log_validation(val_loss)
        self.console.echo(f"epoch {state.epoch:3d} | step {state.step} | valid loss {val_loss:.3f} | "
                          f"valid ppl {perplexity(val_loss):.2f}" + self.units.text(val_loss, "valid", "valid")
                          + (" | averaged" if self.schedule.name == "asgd" else ""))
        with sigint_deferred():
            if val_loss < self.history.best_val_loss:
                self.history.best_val_loss = val_loss
                with self.schedule.averaged():
                    self.checkpointer.save("best")
            self.schedule.end_of_epoch(state.epoch, val_loss, self.console.echo)
            state.epoch += 1
            state.position = 0
            self.stream.hidden = None
            self.checkpointer.save("last")
        self._validated(val_loss)

    def _finish(self, status: str, seconds: float) -> dict[str, Any]:
        state, config = self.state, self.config
        if status in ("max_steps", "max_minutes"):
            val_loss = None
            with sigint_deferred():  # a stop signal waits for the validation and last.pt both
                if state.position > 0 or not self.checkpointer.has_best():
                    val_loss = self._validate_at_stop(status)
                # After the validation: with the best_val_loss a resumed run compares with.
                self.checkpointer.save("last")
            if val_loss is not None:
                self._validated(val_loss)
        model, best_val = self.checkpointer.load_best(self.device)
        test_loss, test_tokens = self.evaluator.test_loss(model, progress=self.console.progress)
        results = run_results(config, state, self.schedule.name, status, best_val, test_loss, test_tokens, self.out_dir,
                              seconds, self.units)
        if self.finetune is not None:
            results["finetune"] = compare(self.finetune, results)
            self.console.echo(finetune_summary(results))
        if distributed.is_main():
            results.update(cache_results(config.train, model, self.corpus, config.data.bptt, self.device,
                                         config.data.dataset))  # {} when cache_at_end is off
            write_results(self.out_dir, results)
        self.log.test(test_loss, state.step)
        self.console.echo(f"test loss {test_loss:.3f} | test ppl {perplexity(test_loss):.2f}"
                          + self.units.text(test_loss, "test", "test")
                          + f" (best.pt, batch size {config.data.test_batch_size})")
        if "test_cache_ppl" in results:
            self.console.echo(cache_summary(results))
        return results

    def _validate_at_stop(self, status: str) -> float:
        """A limit cut the epoch: validate the steps since the last validation (a schedule's last,
        lowest-rate steps are usually its best) and keep them as best.pt when they are better, or
        when no epoch finished and there is no best.pt yet to test, eval and sample."""
        state = self.state
        with sigint_deferred():  # a few seconds
            carried = self.stream.state_dict()
            val_loss = self.validate()
            restore_stream(self.model, carried, self.device)  # evaluation reset the layers' saved inputs
            self._log_validation(val_loss)
            self.console.echo(f"stopped at step {state.step} ({status}): valid ppl {perplexity(val_loss):.2f}"
                              + self.units.text(val_loss, "valid", "valid"))
            if val_loss < self.history.best_val_loss or not self.checkpointer.has_best():
                self.history.best_val_loss = val_loss
                with self.schedule.averaged():
                    self.checkpointer.save("best")
        return val_loss

    # -- the pieces the loop calls -----------------------------------------------------------------

    def validate(self) -> float:
        """Validation loss of the current model (averaged weights when ASGD is active), under the
        training steps' precision, as Lightning's and Hugging Face's trainers validate: bf16
        halves its time on a CPU with bf16 (9.4 -> 5.2 s for PTB's valid at batch 20 on a Zen 4,
        five of them in `make train`'s 18.5 minutes) and moved valid ppl by 0.005% (104.672 ->
        104.677). The final test stays float32."""
        with self.schedule.averaged(), precision_context(self.device, self.step_config.precision):
            return self.evaluator.valid_loss(self.model)

    def _validated(self, val_loss: float) -> None:
        """A validation and its checkpoint are done: tell ``on_validation`` (rank 0 only). Stop
        signals wait until it returns: a search's hook writes to a database shared with other
        threads, and an Interrupted raised inside it could leave a lock held."""
        if self.on_validation is not None:
            with sigint_deferred():
                self.on_validation(self.state.step, perplexity(val_loss))

    def _log_validation(self, val_loss: float) -> None:
        self.log.validation(val_loss, self.state, self.budget.elapsed(), self.schedule.lr)

    def _save_interrupted(self) -> None:
        """Ctrl-C: write last.pt at the start of the interrupted step (or the current boundary)."""
        if self.world_size > 1:
            # Saving gathers from every rank, which Ctrl-C reached at different points: it could hang.
            self.console.echo("interrupted: nothing saved mid-epoch in a distributed run; resume from "
                              f"{self.out_dir / 'last.pt'}")
            return
        path = self.checkpointer.save("last", self.step_state)
        if path is not None:
            self.console.echo(f"interrupted at epoch {self.state.epoch}, step {self.state.step}: saved {path}")
