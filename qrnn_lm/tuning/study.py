"""Opening a tuning study: Optuna's RDB storage, TPE sampler, median pruner and stale-trial retry.

The study lives in a database (SQLite ``sqlite:///RUN/study.db`` by default; any SQLAlchemy URL,
e.g. PostgreSQL, to share it between processes or machines). Each process running ``qrnn-lm tune``
on it adds trials until the study holds the requested number of finished (complete or pruned)
trials: Optuna's ``MaxTrialsCallback``. A trial whose process died (SIGKILL, a lost machine) stops
sending heartbeats; after two heartbeat intervals the next trial to start marks it failed and
Optuna's ``RetryHeartbeatStaleTrialCallback`` queues it again with the same parameters, so a killed
tune resumes by running the same command again.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from ..config import UserError
from .space import Space

__all__ = ["import_optuna", "default_storage", "open_storage", "open_study", "load_study", "finished_states"]

SPACE_ATTR = "qrnn_lm_space"  # the study's user attribute holding Space.fingerprint()


def import_optuna():
    """Optuna, or a UserError saying how to install it."""
    try:
        import optuna
    except ImportError:
        raise UserError("qrnn-lm tune needs Optuna: pip install 'qrnn-lm[tune]'") from None
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own one line per trial instead
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def default_storage(run: Path) -> str:
    """The SQLite URL of the study file in the run folder."""
    return f"sqlite:///{(run / 'study.db').absolute()}"


def open_storage(url: str, heartbeat_seconds: int | None = None):
    """Optuna's RDBStorage at ``url`` (with heartbeats and stale-trial retry when
    ``heartbeat_seconds``); a UserError naming the URL when it cannot be opened."""
    optuna = import_optuna()
    extra: dict[str, Any] = {}
    if heartbeat_seconds:
        extra = {"heartbeat_interval": heartbeat_seconds, "grace_period": 2 * heartbeat_seconds,
                 # inherit the reports, so a retry's validations continue the same numbering
                 "heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(
                     inherit_intermediate_values=True)}
    try:
        return optuna.storages.RDBStorage(url, **extra)
    except Exception as error:  # SQLAlchemy's URL, driver and connection errors, Optuna's schema errors
        reason = " ".join(str(error).split())[:300]
        raise UserError(f"cannot open the study storage {url!r} ({type(error).__name__}: {reason}); "
                        "give a database URL such as sqlite:///path/study.db") from None


def open_study(space: Space, storage_url: str, name: str):
    """Create the study ``name`` in ``storage_url``, or load it when it exists and was created with
    the same space and base config (else a UserError)."""
    optuna = import_optuna()
    options = space.tune
    storage = open_storage(storage_url, options["heartbeat_seconds"])
    sampler = optuna.samplers.TPESampler(seed=options["seed"])
    if options["pruner"] == "median":
        # Reports are numbered from 1 (objective.py) and Optuna prunes at any step >= n_warmup_steps,
        # so the first `warmup_validations` reports are protected by one more.
        pruner = optuna.pruners.MedianPruner(n_startup_trials=options["startup_trials"],
                                             n_warmup_steps=options["warmup_validations"] + 1)
    else:
        pruner = optuna.pruners.NopPruner()
    study = optuna.create_study(storage=storage, study_name=name, sampler=sampler, pruner=pruner,
                                direction="minimize", load_if_exists=True)
    if study.trials:
        # A resumed study: the seed alone would draw the same first (random) samples again as the
        # process that started it; offset it by the trials so far, still reproducible.
        study.sampler = optuna.samplers.TPESampler(seed=options["seed"] + len(study.trials))
    mine = json.loads(json.dumps(space.fingerprint()))  # as it reads back from the database
    stored = study.user_attrs.get(SPACE_ATTR)
    if stored is None and not study.trials:
        study.set_user_attr(SPACE_ATTR, mine)
        for values in space.enqueue:  # only when the study is created, never again on a resume
            study.enqueue_trial(values)
    elif stored != mine:
        what = _first_difference(stored or {}, mine)
        raise UserError(f"study {name!r} in {storage_url} was created with another space (it differs at {what}); "
                        "use another --study name or --out folder, or the space file it was created with")
    return study


def load_study(storage_url: str, name: str | None):
    """An existing study for ``--report``: ``name``, or the only study in the storage."""
    optuna = import_optuna()
    storage = open_storage(storage_url)
    names = optuna.get_all_study_names(storage)
    if name is None:
        if len(names) != 1:
            raise UserError(f"{storage_url} holds {len(names)} studies ({', '.join(names) or 'none'}); "
                            "name one with --study")
        name = names[0]
    elif name not in names:
        raise UserError(f"no study {name!r} in {storage_url}; it holds: {', '.join(names) or 'none'}")
    return optuna.load_study(study_name=name, storage=storage)


def finished_states():
    """The trial states that count towards --trials: complete and pruned (a failed trial is retried)."""
    optuna = import_optuna()
    return (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def _first_difference(old: Any, new: Any, where: str = "") -> str:
    """Where two fingerprints first differ, as a dotted path (e.g. "base.train.max_minutes")."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                return _first_difference(old.get(key), new.get(key), f"{where}.{key}" if where else key)
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for index, (a, b) in enumerate(zip(old, new)):
            if a != b:
                return _first_difference(a, b, f"{where}[{index}]")
    return where or "the top"
