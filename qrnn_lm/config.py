"""Run configuration: typed dataclasses mirrored 1:1 by the TOML recipes in ``configs/``.

Precedence: command line (``--set section.key=value``) > TOML file > the defaults below.
Unknown keys and ill-typed values are errors that name what is valid. Each field declares its valid
range beside its default (``setting(default, rule)``, the kinds of rule in :mod:`qrnn_lm.rules`);
:func:`validate` applies them, and :func:`check_options` the command options' rules. Standard
library only, so ``qrnn-lm --help`` stays instant (it imports only the leaf ``qrnn_lm.rules``).
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .rules import (
    ANY,
    DECODERS,
    LR_SCHEDULES,
    OPTIMIZERS,
    OPTIONS,
    PRECISIONS,
    RNNS,
    SOFTMAX_MODES,
    Ints,
    OneOf,
    Range,
    Rule,
    TOKENIZERS,
    Text,
    ZeroOrAtLeast,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib


class UserError(Exception):
    """A problem the user can fix; ``str(error)`` is one line saying what to do.

    The CLI prints it and exits with code 1, never a traceback. Every module's user-facing
    error (data, config, checkpoint, training) derives from it.
    """


class ConfigError(UserError):
    """A bad recipe file, key or value."""


def setting(default: Any = None, rule: Rule = ANY, *, factory: Any = None) -> Any:
    """A config field: its default (or ``factory`` for a list) and the rule its values obey."""
    if factory is not None:
        return field(default_factory=factory, metadata={"rule": rule})
    return field(default=default, metadata={"rule": rule})


_PROBABILITY = Range(0, 1, high_open=True)  # a dropout or zoneout probability


@dataclass
class DataConfig:
    # a known name (ptb, wikitext-2, wikitext-103, ...), a folder with train/valid/test.txt, or one text file
    # (split by lines into train/valid/test, see qrnn_lm/data/single_file.py)
    dataset: str = setting("ptb", Text())
    batch_size: int = setting(20, Range(1))  # parallel training streams
    eval_batch_size: int = setting(10, Range(1))  # streams for validation during training
    test_batch_size: int = setting(1, Range(1))  # streams for the final test evaluation (1, as in the literature)
    bptt: int = setting(70, Range(1))  # mean back-propagation-through-time length
    variable_bptt: bool = setting(True)  # awd-lstm-lm's random segment lengths (std 5, halved with p = 0.05)
    # what a token is: "word" (whitespace-separated, <eos> per line), "char" (Unicode code points;
    # newlines are tokens), "byte" (UTF-8 bytes) or "subword" (sentencepiece BPE trained on train.txt)
    tokenizer: str = setting("word", OneOf(TOKENIZERS))
    # word only: keep the most frequent words of train.txt, the rest -> <unk>; 0 = all
    max_vocab: int = setting(0, ZeroOrAtLeast(3, hint="<eos>, <unk> and a word; 0 = every word"))
    min_count: int = setting(1, Range(1))  # word only: words seen fewer times in train.txt become <unk>
    vocab_size: int = setting(8000, Range(1))  # subword only: pieces in the model (256 byte pieces, <unk>, <eos> included)


@dataclass
class ModelConfig:
    # the recurrent layers: "qrnn" (AWD-QRNN) or "lstm" (AWD-LSTM as salesforce/awd-lstm-lm builds it:
    # one single-layer nn.LSTM per layer, weight drop on its hidden-to-hidden weights; see docs/lstm.md).
    # Every other key means the same for both, except first_window, window and zoneout: QRNN only.
    rnn: str = setting("qrnn", OneOf(RNNS))
    emb_size: int = setting(400, Range(1))  # embedding size; also the last layer's hidden size when weights are tied
    hidden_size: int = setting(1550, Range(1))  # hidden size of every recurrent layer but the last
    num_layers: int = setting(4, Range(1))  # recurrent layers
    first_window: int = setting(2, Range(1))  # QRNN only: convolution window of the first layer (sees x_t and x_{t-1})
    window: int = setting(1, Range(1))  # QRNN only: convolution window of the other layers
    # QRNN only: probability of keeping a unit's previous state (on the forget gate)
    zoneout: float = setting(0.0, _PROBABILITY)
    dropout_emb: float = setting(0.1, _PROBABILITY)  # drops whole words from the embedding matrix (awd "dropoute")
    dropout_input: float = setting(0.4, _PROBABILITY)  # locked dropout on the embedded input (awd "dropouti")
    dropout_hidden: float = setting(0.3, _PROBABILITY)  # locked dropout between recurrent layers (awd "dropouth")
    dropout_output: float = setting(0.4, _PROBABILITY)  # locked dropout on the last layer's output (awd "dropout")
    # DropConnect (awd "wdrop") on the QRNN gate weights, or on each LSTM's hidden-to-hidden weights
    # weight_hh_l0 (as awd-lstm-lm's WeightDrop); a fresh mask per segment, in training only.
    weight_drop: float = setting(0.1, _PROBABILITY)
    tie_weights: bool = setting(True)  # share the embedding matrix with the decoder
    # "softmax": a linear decoder (tied when tie_weights) and the exact full softmax, computed whole
    # or in chunks (see train.softmax); "adaptive": torch.nn.AdaptiveLogSoftmaxWithLoss (its own,
    # untied weights; exact log-probabilities of its own factorised distribution).
    decoder: str = setting("softmax", OneOf(DECODERS))
    # the adaptive softmax's cluster boundaries: increasing, below the vocabulary size; the default is
    # awd-lstm-lm's WikiText-103 split.
    adaptive_cutoffs: list[int] = setting(factory=lambda: [2800, 20000, 76000],
                                          rule=Ints(1, increasing=True, nonempty=True))


@dataclass
class TrainConfig:
    # "sgd" (switching to averaged SGD by NT-ASGD), "adam" or "adamw" (decoupled weight decay)
    optimizer: str = setting("sgd", OneOf(OPTIMIZERS))
    # learning rate (for SGD, rescaled by each segment's length / bptt)
    lr: float = setting(30.0, Range(0, low_open=True))
    weight_decay: float = setting(1.2e-6, Range(0))  # L2 penalty
    clip: float = setting(0.25, Range(0, hint="0 disables clipping"))  # gradient-norm clipping threshold
    epochs: int = setting(550, Range(1))  # passes over the training data
    # stop after this many optimizer steps
    max_steps: int = setting(0, Range(0, hint="0 means no limit"))
    # stop when this many minutes of training and validation have passed (counted across resumes,
    # checked after each step); 0 = no limit. It stops as max_steps does: save last.pt, test
    # best.pt, results.json (status "max_minutes"). A time-limited run is not bit-reproducible:
    # where it stops, and its lr_schedule, depend on the clock.
    max_minutes: float = setting(0.0, Range(0, hint="0 means no limit"))
    # activation regularisation (AR) on the last layer's dropped output
    alpha: float = setting(2.0, Range(0, hint="0 turns AR off"))
    # temporal activation regularisation (TAR) on the last layer's raw output
    beta: float = setting(1.0, Range(0, hint="0 turns TAR off"))
    asgd: bool = setting(True)  # with SGD: switch to averaged SGD when validation stops improving
    nonmono: int = setting(5, Range(1))  # NT-ASGD's non-monotone interval, in validations
    lr_decay_epochs: list[int] = setting(factory=list, rule=Ints(1))  # divide the lr by 10 at these epochs
    # A per-step multiplier of the lr, a function of the fraction of the run's budget used (the
    # largest of steps / max_steps, the position in epochs / epochs and minutes / max_minutes, over
    # the whole run, across resumes), so that it reaches its end at the step where the first limit
    # stops the run. It multiplies the lr after lr_decay_epochs and NT-ASGD (and, for SGD, the
    # segment-length rescaling); changing a limit on resume reshapes the rest of the schedule.
    # "constant": 1 (after the warm-up); "cosine" / "linear": decay from lr to lr * lr_floor.
    lr_schedule: str = setting("constant", OneOf(LR_SCHEDULES))
    # linear warm-up from 0 to lr over this fraction of the budget, in [0, 1]
    warmup: float = setting(0.0, Range(0, 1, hint="a fraction of the run's budget"))
    # where the cosine / linear decay ends, as a fraction of lr, in [0, 1]
    lr_floor: float = setting(0.0, Range(0, 1, hint="a fraction of train.lr"))
    seed: int = setting(141, Range(0))  # seeds parameters, dropout masks and BPTT lengths
    log_interval: int = setting(200, Range(1))  # steps between console / TensorBoard log points
    # Periodic last.pt inside an epoch, at the exact position (a hard kill loses at most this much):
    checkpoint_every_steps: int = setting(0, Range(0, hint="0 = off"))  # every N optimizer steps
    # when this many minutes passed since the last save
    checkpoint_every_minutes: float = setting(10.0, Range(0, hint="0 = off"))
    # how the softmax decoder's loss is computed in training and evaluation: "full" (all [T*B, V]
    # logits at once), "chunked" (exact, a few tokens at a time, never all logits) or "auto"
    # (chunked when one batch's float32 logits would exceed softmax_memory_mb). Same values either way.
    softmax: str = setting("auto", OneOf(SOFTMAX_MODES))
    softmax_memory_mb: int = setting(1024, Range(0))  # the "auto" threshold, in MiB of float32 logits
    # "fp32", "bf16" (autocast; also on CPU), "fp16" (autocast with a gradient scaler; CUDA only) or
    # "auto": bf16 where the device has native bfloat16 products (a recent GPU; a CPU with
    # AVX512-BF16/AMX such as AMD Zen 4/5), else fp32 (emulated bf16 is slower than fp32).
    precision: str = setting("fp32", OneOf(PRECISIONS))
    compile: bool = setting(False)  # torch.compile the model for training


@dataclass
class Config:
    name: str = setting("ptb", Text(name=True))  # run name; the default output folder is runs/<name>
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}


def _type_name(tp: Any) -> str:
    return tp if isinstance(tp, str) else getattr(tp, "__name__", str(tp))


def _coerce(where: str, declared: str, value: Any) -> Any:
    """Check ``value`` against the dataclass field's declared type (a string under
    ``from __future__ import annotations``); ints are accepted where floats are expected."""
    if declared == "bool":
        ok = isinstance(value, bool)
    elif declared == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif declared == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            value = float(value)
            ok = math.isfinite(value)
    elif declared == "str":
        ok = isinstance(value, str)
    elif declared == "list[int]":
        ok = isinstance(value, list) and all(
            isinstance(item, int) and not isinstance(item, bool) for item in value
        )
    else:  # pragma: no cover - a new field type must be added above
        raise TypeError(f"unsupported config field type {declared} for {where}")
    if not ok:
        raise ConfigError(f"config key '{where}' must be {declared}, got {value!r}")
    return value


def _section_from_dict(section: str, cls: type, values: Any) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"config section [{section}] must be a table, got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            valid = ", ".join(sorted(fields))
            raise ConfigError(f"unknown config key '{section}.{key}'; valid keys in [{section}]: {valid}")
        kwargs[key] = _coerce(f"{section}.{key}", _type_name(fields[key].type), value)
    return cls(**kwargs)


def config_from_dict(values: dict) -> Config:
    """Build a Config from nested dicts (a parsed TOML file); unknown keys raise ConfigError."""
    if not isinstance(values, dict):
        raise ConfigError(f"a config must be a table of sections, got {values!r}")
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key == "name":
            kwargs["name"] = _coerce("name", "str", value)
        elif key in _SECTIONS:
            kwargs[key] = _section_from_dict(key, _SECTIONS[key], value)
        else:
            valid = ", ".join(["name", *(f"[{s}]" for s in _SECTIONS)])
            raise ConfigError(f"unknown config key '{key}'; valid top-level keys: {valid}")
    config = Config(**kwargs)
    validate(config)
    return config


def config_to_dict(config: Config) -> dict:
    """Nested plain dicts (the form stored in checkpoints and written as TOML)."""
    return dataclasses.asdict(config)


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


def parse_override(text: str) -> tuple[str, str, Any]:
    """Split ``section.key=value``; the value is read as a TOML literal (``3``, ``0.5``,
    ``true``, ``[1, 2]``, ``"text"``), falling back to a bare string (``--set data.dataset=ptb``)."""
    target, sep, raw = text.partition("=")
    if not sep or not target.strip():
        raise ConfigError(f"--set expects section.key=value, got {text!r}")
    target, raw = target.strip(), raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    if target == "name":
        return "", "name", value
    section, dot, key = target.partition(".")
    if not dot or not key:
        raise ConfigError(f"--set expects section.key=value (e.g. train.lr=10), got {text!r}")
    return section, key, value


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Read a TOML recipe (or the defaults when ``path`` is None) and apply ``--set`` overrides."""
    values: dict = {}
    if path is not None:
        path = Path(path)
        try:
            values = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist; pick one from configs/") from None
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
            raise ConfigError(f"config file {path} is not valid TOML: {error}") from None
    for text in overrides:
        section, key, value = parse_override(text)
        if section:
            table = values.setdefault(section, {})
            if not isinstance(table, dict):
                raise ConfigError(f"config section [{section}] must be a table")
            table[key] = value
        else:
            values[key] = value
    return config_from_dict(values)


def toml_string(text: str) -> str:
    """``text`` as a TOML basic string literal (as written in recipes and read by ``--set``)."""
    escaped = "".join(_TOML_ESCAPES.get(char, f"\\u{ord(char):04x}" if ord(char) < 0x20 or char == "\x7f" else char)
                      for char in text)
    return f'"{escaped}"'


_TOML_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r", "\b": "\\b", "\f": "\\f"}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def to_toml(config: Config) -> str:
    """The resolved config as a TOML recipe that ``load_config`` reads back to an equal Config."""
    data = config_to_dict(config)
    lines = [f"name = {_toml_value(data.pop('name'))}"]
    for section, values in data.items():
        lines.append(f"\n[{section}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in values.items())
    return "\n".join(lines) + "\n"
