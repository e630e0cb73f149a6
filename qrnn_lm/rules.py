"""The valid values of everything a user sets: the kinds of rule, the allowed-value sets of the
config keys, and the rule of every command option that is not a config key.

Each config field declares its rule beside its default (``qrnn_lm.config``); each command option
has its rule in :data:`OPTIONS` below, keyed by its Python name (``top_p`` is ``--top-p``), so an
option name has one rule in every command that takes it. ``config.validate`` and
``config.check_options`` apply them. A rule checks the range of a value already of the right type
(``config`` checks the declared types; typer checks the options'): ``rule.problem(value)`` says
what is wrong in a few words (``"must be >= 0"``) or returns None.

Standard library only, imports nothing of qrnn_lm (``qrnn-lm --help`` stays instant).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["Rule", "Range", "OneOf", "Ints", "Text", "ANY", "RNNS", "DECODERS", "OPTIMIZERS", "LR_SCHEDULES",
           "SOFTMAX_MODES", "PRECISIONS", "TOKENIZERS", "CACHE_AT_END", "ZeroOrAtLeast", "OPTIONS"]

# Allowed values of the config keys that name a choice; the training code imports these.
RNNS = ("qrnn", "lstm")  # model.rnn
DECODERS = ("softmax", "adaptive")  # model.decoder
OPTIMIZERS = ("sgd", "adam", "adamw")  # train.optimizer (NT-ASGD's "asgd" is reached from "sgd", not chosen)
LR_SCHEDULES = ("constant", "cosine", "linear")  # train.lr_schedule
SOFTMAX_MODES = ("auto", "full", "chunked")  # train.softmax
PRECISIONS = ("fp32", "bf16", "fp16", "auto")  # train.precision
TOKENIZERS = ("word", "char", "byte", "subword")  # data.tokenizer
CACHE_AT_END = ("off", "fixed", "search")  # train.cache_at_end


class Rule:
    """A range check; the base class accepts every value (a bool, whose type says it all)."""

    def problem(self, value: Any) -> str | None:
        return None


ANY = Rule()


@dataclass(frozen=True)
class Range(Rule):
    """A finite number between ``low`` and ``high`` (None: unbounded), each end included unless
    its ``*_open`` flag says otherwise; ``hint`` explains a special value, e.g. "0 = off"."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    hint: str = ""

    def describe(self) -> str:
        if self.high is None:
            text = f"{'>' if self.low_open else '>='} {self.low:g}" if self.low is not None else "a finite number"
        else:
            text = f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        return f"{text} ({self.hint})" if self.hint else text

    def problem(self, value: Any) -> str | None:
        ok = math.isfinite(value)
        if ok and self.low is not None:
            ok = value > self.low if self.low_open else value >= self.low
        if ok and self.high is not None:
            ok = value < self.high if self.high_open else value <= self.high
        return None if ok else f"must be {self.describe()}"


@dataclass(frozen=True)
class ZeroOrAtLeast(Rule):
    """An integer that is 0 (off) or at least ``low``; ``hint`` says why, e.g. what the low end holds."""

    low: int
    hint: str = ""

    def problem(self, value: Any) -> str | None:
        if value == 0 or value >= self.low:
            return None
        return f"must be 0 or >= {self.low}" + (f" ({self.hint})" if self.hint else "")


@dataclass(frozen=True)
class OneOf(Rule):
    """One of a fixed set of names."""

    choices: tuple[str, ...]

    def problem(self, value: Any) -> str | None:
        return None if value in self.choices else f"must be one of {', '.join(map(repr, self.choices))}"


@dataclass(frozen=True)
class Ints(Rule):
    """A list of integers, each ``>= minimum``; ``increasing``: strictly; ``nonempty``: at least one."""

    minimum: int = 0
    increasing: bool = False
    nonempty: bool = False

    def problem(self, value: Any) -> str | None:
        ok = (not self.nonempty or len(value) >= 1) and all(item >= self.minimum for item in value)
        if ok and self.increasing:
            ok = all(a < b for a, b in zip(value, value[1:]))
        if ok:
            return None
        order = "increasing " if self.increasing else ""
        return f"must be a {'non-empty ' if self.nonempty else ''}list of {order}integers >= {self.minimum}"


@dataclass(frozen=True)
class Text(Rule):
    """A string that is not blank; ``name``: also one folder's name, as a run's is (``runs/<name>``):
    no ``/``, ``\\`` or control character, not ``.`` or ``..``."""

    name: bool = False

    def problem(self, value: Any) -> str | None:
        bad = not value.strip()
        if self.name:
            bad = bad or any(char in "/\\" or ord(char) < 0x20 for char in value) or value.strip() in (".", "..")
        if not bad:
            return None
        return "must be a folder name (not blank, no '/', '\\' or control characters)" if self.name else "must not be blank"


# Every command option that is not a config key (those go through --set and the config's rules).
OPTIONS: dict[str, Rule] = {
    # eval
    "batch_size": Range(1),
    "cache_window": Range(1),
    "cache_theta": Range(0),
    "cache_lambda": Range(0, 1),
    # generate
    "tokens": Range(1),
    "temperature": Range(0, low_open=True),
    "top_k": Range(0, hint="0 keeps every token"),
    "top_p": Range(0, 1, low_open=True, hint="1 keeps every token"),
    "seed": Range(0),
    # train
    "nproc": Range(1),
    # bench
    "hidden_size": Range(1),
    "emb_size": Range(1),
    "num_layers": Range(1),
    "vocab_size": Range(1),
    "bptt": Range(1),
    "repeats": Range(1),
    "warmup": Range(0, hint="untimed rounds"),
    "peak_size": Range(1),
}
