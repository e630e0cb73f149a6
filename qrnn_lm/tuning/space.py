"""A search space file for ``qrnn-lm tune``: what every trial starts from, what varies, how to search.

The file (TOML; example: ``configs/tune-ptb-cpu.toml``)::

    base = "ptb-cpu.toml"          # the recipe every trial starts from (beside this file, else configs/)

    [fixed]                        # the same for every trial: the proxy budget, e.g.
    train.max_minutes = 4.0

    [space]                        # what the sampler chooses, any config key
    train.lr = { low = 3e-4, high = 1e-2, log = true }       # a float range (log: sampled in log space)
    model.num_layers = { low = 1, high = 4 }                 # ints when both bounds are ints
    model.hidden_size = { low = 200, high = 1200, step = 50 }
    train.lr_schedule = { choices = ["cosine", "linear"] }

    [tune]                         # the search itself (all optional)
    seed = 0                       # TPE sampler seed
    pruner = "median"              # "median" (MedianPruner) or "none"
    startup_trials = 4             # trials finished before the pruner prunes anything
    warmup_validations = 1         # validations of a trial before it may be pruned
    heartbeat_seconds = 60         # a trial silent for 2x this is taken as dead and retried

    [[enqueue]]                    # trials to run first (e.g. the current recipe), keys of [space]
    train.lr = 3e-3

Keys are ``section.key`` as in ``--set``. The QRNN-only keys (``config.QRNN_ONLY_KEYS``) are
sampled only for a trial whose ``model.rnn`` is "qrnn"; an LSTM trial keeps their defaults. This
module only reads and checks the file (no Optuna); :mod:`.objective` samples it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import (QRNN_ONLY_KEYS, Config, ConfigError, UserError, config_from_dict, config_to_dict, load_config,
                      parse_override, read_toml)

__all__ = ["Param", "Space", "read_space"]

_TOP = {"base", "fixed", "space", "tune", "enqueue"}
_TUNE_DEFAULTS = {"seed": 0, "pruner": "median", "startup_trials": 4, "warmup_validations": 1,
                  "heartbeat_seconds": 60}
_PRUNERS = ("median", "none")


@dataclass(frozen=True)
class Param:
    """One searched key: a range (``low``..``high``, ints when both are ints, ``log``, ``step``)
    or a list of ``choices``."""

    key: str  # "section.key"
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple | None = None

    @property
    def is_int(self) -> bool:
        return self.choices is None and all(isinstance(v, int) and not isinstance(v, bool)
                                            for v in (self.low, self.high))

    def values_to_check(self) -> list[Any]:
        """The values that must each make a valid config: both bounds, or every choice."""
        return list(self.choices) if self.choices is not None else [self.low, self.high]

    def as_dict(self) -> dict[str, Any]:
        """A JSON-able form, what a study records to recognise its space."""
        return {name: (list(value) if isinstance(value, tuple) else value)
                for name, value in dataclasses.asdict(self).items()
                if name != "key" and value is not None and value is not False}


@dataclass
class Space:
    """A read and checked space file."""

    path: Path
    base: Config  # the base recipe with [fixed] and the command line's --set applied
    params: list[Param]
    tune: dict[str, Any] = field(default_factory=lambda: dict(_TUNE_DEFAULTS))
    enqueue: list[dict[str, Any]] = field(default_factory=list)

    def active(self, rnn: str) -> list[Param]:
        """The params a trial of model type ``rnn`` samples (QRNN-only keys for "qrnn" only)."""
        return [param for param in self.params if rnn == "qrnn" or not _qrnn_only(param.key)]

    def fingerprint(self) -> dict[str, Any]:
        """What a study is created with and must be resumed with: the searched params and the base."""
        return {"params": {param.key: param.as_dict() for param in self.params}, "base": config_to_dict(self.base)}

    def trial_config(self, values: dict[str, Any]) -> Config:
        """The base with ``values`` ({"section.key": value}) applied, validated."""
        return _with_values(self.base, values)


def read_space(path: str | Path, overrides: list[str] = ()) -> Space:
    """Read and check the space file ``path``; ``overrides`` (``--set`` texts) apply to the base
    after ``[fixed]``. Raises UserError (one line) on anything wrong: an unknown key, an empty range,
    a value that makes no valid config."""
    path = Path(path)
    raw = read_toml(path, "space file", "see configs/tune-ptb-cpu.toml for an example")
    unknown = sorted(set(raw) - _TOP)
    if unknown:
        raise UserError(f"{path}: unknown entry {unknown[0]!r}; a space file holds {', '.join(sorted(_TOP))}")
    base = _base_config(path, raw, list(overrides))
    params = [_param(path, key, spec) for key, spec in _flatten(_table(path, raw, "space")).items()]
    if not params:
        raise UserError(f"{path}: [space] is empty; add a key to search, e.g. train.lr = {{ low = 1e-4, high = 1e-2, log = true }}")
    for param in params:
        for value in param.values_to_check():
            values = {param.key: value}
            if _qrnn_only(param.key):
                values["model.rnn"] = "qrnn"  # sampled for QRNN trials only
            try:
                _with_values(base, values)
            except ConfigError as error:
                raise UserError(f"{path}: [space] {param.key} = {value!r} makes no valid config: {error}") from None
    tune = _tune_options(path, _table(path, raw, "tune"))
    enqueue = _enqueue(path, raw.get("enqueue", []), {param.key for param in params})
    return Space(path, base, params, tune, enqueue)


def _with_values(base: Config, values: dict[str, Any]) -> Config:
    """``base`` with ``{"section.key": value}`` set, validated (ConfigError names a bad key)."""
    tree = config_to_dict(base)
    for key, value in values.items():
        section, _, name = key.rpartition(".")
        if section and section not in tree or not section and name != "name":
            raise ConfigError(f"unknown config key '{key}'; keys are section.key with section data, model or train")
        table = tree[section] if section else tree
        if name not in table:
            valid = ", ".join(sorted(table))
            raise ConfigError(f"unknown config key '{key}'; valid keys in [{section}]: {valid}")
        table[name] = value
    return config_from_dict(tree)


def _qrnn_only(key: str) -> bool:
    return key in {f"model.{name}" for name in QRNN_ONLY_KEYS}


def _table(path: Path, raw: dict, name: str) -> dict:
    table = raw.get(name, {})
    if not isinstance(table, dict):
        raise UserError(f"{path}: {name} must be a table ([{name}])")
    return table


def _flatten(table: dict, prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": spec}} -> {"train.lr": spec}; a spec is a value, or a table holding
    low/high or choices."""
    flat = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and not ({"low", "high", "choices"} & set(value)):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _base_config(path: Path, raw: dict, overrides: list[str]) -> Config:
    """The recipe ``base`` (beside the space file; the defaults when absent), then [fixed], then
    the ``--set`` overrides."""
    base = raw.get("base")
    if base is not None and not isinstance(base, str):
        raise UserError(f"{path}: base must be a recipe file name, e.g. base = \"ptb-cpu.toml\"")
    recipe = path.parent / base if base is not None else None
    if recipe is not None and not recipe.is_file():
        raise UserError(f"{path}: base recipe {recipe} does not exist; base is a file name beside the space file")
    try:
        config = _with_values(load_config(recipe), _flatten(_table(path, raw, "fixed")))
        return _apply_overrides(config, overrides)
    except ConfigError as error:
        raise UserError(f"{path}: the base config is invalid: {error}") from None


def _apply_overrides(config: Config, overrides: list[str]) -> Config:
    """``config`` with ``--set section.key=value`` texts applied."""
    values = {}
    for text in overrides:
        section, key, value = parse_override(text)
        values[f"{section}.{key}" if section else key] = value
    return _with_values(config, values)


def _param(path: Path, key: str, spec: Any) -> Param:
    """One [space] entry as a Param; an empty or reversed range, a bad step, no choices: UserError."""
    where = f"{path}: [space] {key}"
    if not isinstance(spec, dict):
        raise UserError(f"{where} must be {{ low = .., high = .. }} (log, step optional) or {{ choices = [..] }}, got {spec!r}")
    extra = sorted(set(spec) - {"low", "high", "log", "step", "choices"})
    if extra:
        raise UserError(f"{where}: unknown field {extra[0]!r}; use low, high, log, step or choices")
    if "choices" in spec:
        choices = spec["choices"]
        if set(spec) != {"choices"}:
            raise UserError(f"{where}: choices stands alone (no low/high/log/step beside it)")
        if not isinstance(choices, list) or not choices:
            raise UserError(f"{where}: choices must be a non-empty list")
        if any(isinstance(c, (list, dict)) for c in choices):
            raise UserError(f"{where}: choices must be plain values (numbers, strings, true/false)")
        return Param(key, choices=tuple(choices))
    if "low" not in spec or "high" not in spec:
        raise UserError(f"{where}: a range needs both low and high")
    low, high, log, step = spec["low"], spec["high"], spec.get("log", False), spec.get("step")
    numbers = [v for v in (low, high, step) if v is not None]
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in numbers):
        raise UserError(f"{where}: low, high and step must be numbers")
    if not isinstance(log, bool):
        raise UserError(f"{where}: log must be true or false")
    if not low < high:
        raise UserError(f"{where}: the range [{low}, {high}] is empty; low must be below high")
    if log and low <= 0:
        raise UserError(f"{where}: a log range needs low > 0, got {low}")
    if step is not None and (step <= 0 or log):
        raise UserError(f"{where}: step must be > 0 and cannot go with log")
    return Param(key, low=low, high=high, log=log, step=step)


def _tune_options(path: Path, table: dict) -> dict[str, Any]:
    unknown = sorted(set(table) - set(_TUNE_DEFAULTS))
    if unknown:
        raise UserError(f"{path}: unknown [tune] key {unknown[0]!r}; valid: {', '.join(sorted(_TUNE_DEFAULTS))}")
    options = {**_TUNE_DEFAULTS, **table}
    if options["pruner"] not in _PRUNERS:
        raise UserError(f"{path}: [tune] pruner must be {' or '.join(repr(p) for p in _PRUNERS)}, got {options['pruner']!r}")
    for key in ("seed", "startup_trials", "warmup_validations", "heartbeat_seconds"):
        value = options[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < (1 if key == "heartbeat_seconds" else 0):
            raise UserError(f"{path}: [tune] {key} must be a whole number >= "
                            f"{1 if key == 'heartbeat_seconds' else 0}, got {value!r}")
    return options


def _enqueue(path: Path, entries: Any, keys: set[str]) -> list[dict[str, Any]]:
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise UserError(f"{path}: enqueue must be a list of tables ([[enqueue]])")
    result = []
    for entry in entries:
        flat = _flatten(entry)
        unknown = sorted(set(flat) - keys)
        if unknown:
            raise UserError(f"{path}: [[enqueue]] {unknown[0]} is not a key of [space]")
        result.append(flat)
    return result
