"""The rules between and within config values: :func:`validate` applies every field's declared rule
and the rules between keys; :func:`check_options` applies the command options' rules.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..rules import OPTIONS, RNNS, OneOf, Rule
from .sections import _SECTIONS, Config, ConfigError, ModelConfig

QRNN_ONLY_KEYS = ("first_window", "window", "zoneout")  # [model] keys an LSTM model has no use for


def _check_field(where: str, rule: Rule, value: Any) -> None:
    problem = rule.problem(value)
    if problem is not None:
        raise ConfigError(f"{where} {problem}, got {value!r}")


def check_section(section: str, values: Any) -> None:
    """Every field of one section (a DataConfig, ModelConfig or TrainConfig) obeys its rule."""
    for item in dataclasses.fields(values):
        _check_field(f"{section}.{item.name}", item.metadata["rule"], getattr(values, item.name))


def check_rnn(model: ModelConfig) -> None:
    """model.rnn is known, and an LSTM model sets no QRNN-only key away from its default (it
    would silently mean nothing)."""
    _check_field("model.rnn", OneOf(RNNS), model.rnn)
    if model.rnn == "qrnn":
        return
    defaults = ModelConfig()
    for key in QRNN_ONLY_KEYS:
        value = getattr(model, key)
        if value != getattr(defaults, key):
            raise ConfigError(f"model.{key} = {value!r} is a QRNN setting that model.rnn = \"{model.rnn}\" has no use for; "
                              f"remove it (or --set model.{key}={getattr(defaults, key)!r}), or use model.rnn=\"qrnn\"")


def validate(config: Config) -> None:
    """Every key obeys the rule its field declares, then the rules between keys."""
    _check_field("name", dataclasses.fields(Config)[0].metadata["rule"], config.name)
    for section in _SECTIONS:
        check_section(section, getattr(config, section))
    check_rnn(config.model)
    if config.train.lr_floor != 0.0 and config.train.lr_schedule == "constant":
        raise ConfigError("train.lr_floor is where a decay ends: set train.lr_schedule to 'cosine' or 'linear', "
                          "or drop lr_floor")
    if config.data.tokenizer != "word" and (config.data.max_vocab, config.data.min_count) != (0, 1):
        raise ConfigError("data.max_vocab and data.min_count cap a word vocabulary; drop them or use "
                          f"data.tokenizer=\"word\" (data.tokenizer is {config.data.tokenizer!r})")


def check_options(**values: Any) -> None:
    """ConfigError for a command option out of its range (:data:`qrnn_lm.rules.OPTIONS`), named as
    on the command line (``top_p`` is ``--top-p``); None means not given."""
    for name, value in values.items():
        if value is not None:
            _check_field(f"--{name.replace('_', '-')}", OPTIONS[name], value)
