"""One trial of a tune: sample the space, train an ordinary run in the trial's folder, return its
validation perplexity; and the loop that runs trials until the study holds the requested number.

A trial's folder is ``RUN/trial-NNNN`` (NNNN: the trial's number; a retry of a trial whose process
died continues that trial's folder from its ``last.pt``, as ``qrnn-lm train --resume`` would).
The objective is the run's ``best_val_ppl`` (results.json): the validation perplexity of
``best.pt``, the model the run keeps and tests. Each validation is reported to the pruner through
the trainer's ``on_validation`` hook, numbered 1, 2, ... within the trial (not by optimizer step:
trials with other batch sizes or bptt take other numbers of steps per epoch, and the median
pruner compares trials at equal report numbers, i.e. after equal amounts of training data).

A trial that diverges (non-finite loss, ``TrainingError``) is marked pruned, with the reason in its
``diverged`` attribute: TPE then counts its parameters among the bad ones. A sampled combination
that makes no valid config fails (``invalid`` attribute) and the search goes on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ..config import ConfigError
from ..training import TrainingError, train
from .space import Space
from .study import finished_states, import_optuna

__all__ = ["Objective", "InvalidTrial", "run_trials", "trial_folder"]


class InvalidTrial(Exception):
    """The sampled values make no valid config (the trial fails; the search goes on)."""


def trial_folder(run: Path, trial) -> Path:
    """The run folder of ``trial`` (a FrozenTrial): its own number, or for a retry the number of
    the trial it retries."""
    optuna = import_optuna()
    original = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)
    return run / f"trial-{trial.number if original is None else original:04d}"


class Objective:
    """``objective(trial) -> valid ppl``, training into ``run``'s trial folders."""

    def __init__(self, space: Space, run: Path, device: str = "auto", data_dir: Path | None = None,
                 progress: bool = False):
        self.space, self.run, self.device, self.data_dir, self.progress = space, run, device, data_dir, progress
        self.current: int | None = None  # the number of the trial in progress, for an interrupt

    def sample(self, trial) -> dict[str, Any]:
        """The trial's values {"section.key": value}: model.rnn first (it decides which keys apply)."""
        params = sorted(self.space.params, key=lambda param: param.key != "model.rnn")
        values: dict[str, Any] = {}
        for param in params:
            rnn = values.get("model.rnn", self.space.base.model.rnn)
            if param not in self.space.active(rnn):
                continue
            if param.choices is not None:
                values[param.key] = trial.suggest_categorical(param.key, list(param.choices))
            elif param.is_int:
                values[param.key] = trial.suggest_int(param.key, param.low, param.high, step=param.step or 1,
                                                      log=param.log)
            else:
                values[param.key] = trial.suggest_float(param.key, param.low, param.high, step=param.step,
                                                        log=param.log)
        return values

    def __call__(self, trial) -> float:
        optuna = import_optuna()
        self.current = trial.number
        values = self.sample(trial)
        try:
            config = self.space.trial_config(values)
        except ConfigError as error:
            trial.set_user_attr("invalid", str(error))
            raise InvalidTrial(f"trial {trial.number}: {error}") from None
        frozen = trial.study.get_trials(deepcopy=False)[trial.number]  # trial numbers index the study's trials
        folder = trial_folder(self.run, frozen)
        trial.set_user_attr("run", str(folder))
        resume = folder / "last.pt" if (folder / "last.pt").exists() or (folder / "last.prev.pt").exists() else None
        reports = len(frozen.intermediate_values)  # a retry inherits its attempt's reports: number on after them

        def on_validation(step: int, valid_ppl: float) -> None:
            nonlocal reports
            reports += 1
            trial.report(valid_ppl, reports)
            if trial.should_prune():
                raise optuna.TrialPruned(f"validation {reports} (step {step}): valid ppl {valid_ppl:.2f}")

        try:
            results = train(config, folder, device=self.device, resume=resume, data_dir=self.data_dir,
                            progress=self.progress, on_validation=on_validation)
        except TrainingError as error:
            trial.set_user_attr("diverged", str(error))
            raise optuna.TrialPruned(f"diverged: {error}") from None
        for key in ("test_ppl", "steps", "seconds", "status"):
            trial.set_user_attr(key, results.get(key))
        return results["best_val_ppl"]


def run_trials(space: Space, study, run: Path, trials: int, *, device: str = "auto", data_dir: Path | None = None,
               progress: bool = False, echo: Callable[[str], None] = print) -> int:
    """Run trials until ``study`` holds ``trials`` finished (complete or pruned) ones; returns how
    many this call ran. Ctrl-C / SIGTERM (the trainer saves the trial's ``last.pt`` and raises
    KeyboardInterrupt): the interrupted trial is queued again, to continue from its ``last.pt``
    when the tune is run again, and the KeyboardInterrupt propagates."""
    optuna = import_optuna()
    states = finished_states()
    if len(study.get_trials(deepcopy=False, states=states)) >= trials:
        return 0
    objective = Objective(space, run, device, data_dir, progress)
    ran = 0

    def tell(study, trial) -> None:
        nonlocal ran
        ran += 1
        objective.current = None  # told: an interrupt from here on is between trials
        echo(_trial_line(study, trial))

    try:
        study.optimize(objective, callbacks=[optuna.study.MaxTrialsCallback(trials, states=states), tell],
                       catch=(InvalidTrial,))
    except KeyboardInterrupt:
        if objective.current is not None:
            interrupted = study.get_trials(deepcopy=True)[objective.current]
            if interrupted.state == optuna.trial.TrialState.FAIL:  # as Optuna marks it on an interrupt
                optuna.storages.RetryHeartbeatStaleTrialCallback(inherit_intermediate_values=True)(study, interrupted)
        raise
    return ran


def _trial_line(study, trial) -> str:
    """``trial 3 complete: valid ppl 120.41 (best 98.20, trial 1)`` and the like."""
    state = trial.state.name.lower()
    if trial.user_attrs.get("diverged"):
        what = f"diverged ({trial.user_attrs['diverged']})"
    elif trial.user_attrs.get("invalid"):
        what = f"invalid config ({trial.user_attrs['invalid']})"
    elif trial.value is not None:
        what = f"valid ppl {trial.value:.2f}"
    elif trial.intermediate_values:
        last = max(trial.intermediate_values)
        what = f"at validation {last}: valid ppl {trial.intermediate_values[last]:.2f}"
    else:
        what = "no validation"
    try:
        best = study.best_trial
        tail = f" (best {best.value:.2f}, trial {best.number})"
    except ValueError:  # no complete trial yet
        tail = ""
    return f"trial {trial.number} {state}: {what}{tail}"
