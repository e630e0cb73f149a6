"""Run configuration: typed dataclasses mirrored 1:1 by the TOML recipes in ``configs/``.

Precedence: command line (``--set section.key=value``) > TOML file > the defaults below.
Unknown keys and ill-typed values are errors that name what is valid. Standard library only, so
``qrnn-lm --help`` stays instant (this module is a leaf: it imports nothing else of qrnn_lm).
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


@dataclass
class DataConfig:
    # a known name (ptb, wikitext-2, wikitext-103), a folder with train/valid/test.txt, or one text file
    # (split by lines into train/valid/test, see qrnn_lm/data/single_file.py)
    dataset: str = "ptb"
    batch_size: int = 20  # parallel training streams
    eval_batch_size: int = 10  # streams for validation during training
    test_batch_size: int = 1  # streams for the final test evaluation (1, as in the literature)
    bptt: int = 70  # mean back-propagation-through-time length
    variable_bptt: bool = True  # awd-lstm-lm's random segment lengths (std 5, halved with p = 0.05)
    # what a token is: "word" (whitespace-separated, <eos> per line), "char" (Unicode code points;
    # newlines are tokens), "byte" (UTF-8 bytes) or "subword" (sentencepiece BPE trained on train.txt)
    tokenizer: str = "word"
    max_vocab: int = 0  # word only: keep the most frequent words of train.txt, the rest -> <unk>; 0 = all
    min_count: int = 1  # word only: words seen fewer times in train.txt become <unk>
    vocab_size: int = 8000  # subword only: pieces in the model (256 byte pieces, <unk>, <eos> included)


@dataclass
class ModelConfig:
    # the recurrent layers: "qrnn" (AWD-QRNN) or "lstm" (AWD-LSTM as salesforce/awd-lstm-lm builds it:
    # one single-layer nn.LSTM per layer, weight drop on its hidden-to-hidden weights; see docs/lstm.md).
    # Every other key means the same for both, except first_window, window and zoneout: QRNN only.
    rnn: str = "qrnn"
    emb_size: int = 400  # embedding size; also the last layer's hidden size when weights are tied
    hidden_size: int = 1550  # hidden size of every recurrent layer but the last
    num_layers: int = 4  # recurrent layers
    first_window: int = 2  # QRNN only: convolution window of the first layer (sees x_t and x_{t-1})
    window: int = 1  # QRNN only: convolution window of the other layers
    zoneout: float = 0.0  # QRNN only: probability of keeping a unit's previous state (on the forget gate)
    dropout_emb: float = 0.1  # drops whole words from the embedding matrix (awd "dropoute")
    dropout_input: float = 0.4  # locked dropout on the embedded input (awd "dropouti")
    dropout_hidden: float = 0.3  # locked dropout between recurrent layers (awd "dropouth")
    dropout_output: float = 0.4  # locked dropout on the last layer's output (awd "dropout")
    # DropConnect (awd "wdrop") on the QRNN gate weights, or on each LSTM's hidden-to-hidden weights
    # weight_hh_l0 (as awd-lstm-lm's WeightDrop); a fresh mask per segment, in training only.
    weight_drop: float = 0.1
    tie_weights: bool = True  # share the embedding matrix with the decoder
    # "softmax": a linear decoder (tied when tie_weights) and the exact full softmax, computed whole
    # or in chunks (see train.softmax); "adaptive": torch.nn.AdaptiveLogSoftmaxWithLoss (its own,
    # untied weights; exact log-probabilities of its own factorised distribution).
    decoder: str = "softmax"
    # the adaptive softmax's cluster boundaries: increasing, below the vocabulary size; the default is
    # awd-lstm-lm's WikiText-103 split.
    adaptive_cutoffs: list[int] = field(default_factory=lambda: [2800, 20000, 76000])


@dataclass
class TrainConfig:
    optimizer: str = "sgd"  # "sgd" (switching to averaged SGD by NT-ASGD), "adam" or "adamw" (decoupled weight decay)
    lr: float = 30.0  # learning rate (for SGD, rescaled by each segment's length / bptt)
    weight_decay: float = 1.2e-6  # L2 penalty
    clip: float = 0.25  # gradient-norm clipping threshold; 0 disables
    epochs: int = 550  # passes over the training data
    max_steps: int = 0  # stop after this many optimizer steps; 0 means no limit
    # stop when this many minutes of training and validation have passed (counted across resumes,
    # checked after each step); 0 = no limit. It stops as max_steps does: save last.pt, test
    # best.pt, results.json (status "max_minutes"). A time-limited run is not bit-reproducible:
    # where it stops, and its lr_schedule, depend on the clock.
    max_minutes: float = 0.0
    alpha: float = 2.0  # activation regularisation (AR) on the last layer's dropped output
    beta: float = 1.0  # temporal activation regularisation (TAR) on the last layer's raw output
    asgd: bool = True  # with SGD: switch to averaged SGD when validation stops improving
    nonmono: int = 5  # NT-ASGD's non-monotone interval, in validations
    lr_decay_epochs: list[int] = field(default_factory=list)  # divide the lr by 10 at these epochs
    # A per-step multiplier of the lr, a function of the fraction of the run's budget used (the
    # largest of steps / max_steps, the position in epochs / epochs and minutes / max_minutes, over
    # the whole run, across resumes), so that it reaches its end at the step where the first limit
    # stops the run. It multiplies the lr after lr_decay_epochs and NT-ASGD (and, for SGD, the
    # segment-length rescaling); changing a limit on resume reshapes the rest of the schedule.
    # "constant": 1 (after the warm-up); "cosine" / "linear": decay from lr to lr * lr_floor.
    lr_schedule: str = "constant"
    warmup: float = 0.0  # linear warm-up from 0 to lr over this fraction of the budget, in [0, 1]
    lr_floor: float = 0.0  # where the cosine / linear decay ends, as a fraction of lr, in [0, 1]
    seed: int = 141  # seeds parameters, dropout masks and BPTT lengths
    log_interval: int = 200  # steps between console / TensorBoard log points
    # Periodic last.pt inside an epoch, at the exact position (a hard kill loses at most this much):
    checkpoint_every_steps: int = 0  # every N optimizer steps; 0 = off
    checkpoint_every_minutes: float = 10.0  # when this many minutes passed since the last save; 0 = off
    # how the softmax decoder's loss is computed in training and evaluation: "full" (all [T*B, V]
    # logits at once), "chunked" (exact, a few tokens at a time, never all logits) or "auto"
    # (chunked when one batch's float32 logits would exceed softmax_memory_mb). Same values either way.
    softmax: str = "auto"
    softmax_memory_mb: int = 1024  # the "auto" threshold, in MiB of float32 logits
    # "fp32", "bf16" (autocast; also on CPU), "fp16" (autocast with a gradient scaler; CUDA only) or
    # "auto": bf16 where the device has native bfloat16 products (a recent GPU; a CPU with
    # AVX512-BF16/AMX such as AMD Zen 4/5), else fp32 (emulated bf16 is slower than fp32).
    precision: str = "fp32"
    compile: bool = False  # torch.compile the model for training


@dataclass
class Config:
    name: str = "ptb"  # run name; the default output folder is runs/<name>
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


RNNS = ("qrnn", "lstm")  # the values of model.rnn
TOKENIZERS = ("word", "char", "byte", "subword")  # the values of data.tokenizer
QRNN_ONLY_KEYS = ("first_window", "window", "zoneout")  # [model] keys an LSTM model has no use for


def check_rnn(model: ModelConfig) -> None:
    """model.rnn is known, and an LSTM model sets no QRNN-only key away from its default (it
    would silently mean nothing)."""
    if model.rnn not in RNNS:
        raise ConfigError(f"model.rnn must be one of {', '.join(repr(name) for name in RNNS)}, got {model.rnn!r}")
    if model.rnn == "qrnn":
        return
    defaults = ModelConfig()
    for key in QRNN_ONLY_KEYS:
        value = getattr(model, key)
        if value != getattr(defaults, key):
            raise ConfigError(f"model.{key} = {value!r} is a QRNN setting that model.rnn = \"{model.rnn}\" has no use for; "
                              f"remove it (or --set model.{key}={getattr(defaults, key)!r}), or use model.rnn=\"qrnn\"")


def validate(config: Config) -> None:
    """Range checks that types alone do not catch."""
    check_rnn(config.model)
    checks = [
        (config.data.batch_size >= 1, "data.batch_size must be >= 1"),
        (config.data.eval_batch_size >= 1, "data.eval_batch_size must be >= 1"),
        (config.data.test_batch_size >= 1, "data.test_batch_size must be >= 1"),
        (config.data.bptt >= 1, "data.bptt must be >= 1"),
        (config.data.tokenizer in TOKENIZERS,
         f"data.tokenizer must be one of {', '.join(TOKENIZERS)}, got {config.data.tokenizer!r}"),
        (config.data.max_vocab == 0 or config.data.max_vocab >= 3,
         f"data.max_vocab must be 0 (keep every word) or >= 3 (<eos>, <unk> and a word), got {config.data.max_vocab}"),
        (config.data.min_count >= 1, "data.min_count must be >= 1"),
        (config.data.vocab_size >= 1, "data.vocab_size must be >= 1"),
        (config.data.tokenizer == "word" or (config.data.max_vocab, config.data.min_count) == (0, 1),
         f"data.max_vocab and data.min_count cap a word vocabulary; drop them or use data.tokenizer=\"word\" "
         f"(data.tokenizer is {config.data.tokenizer!r})"),
        (config.model.emb_size >= 1, "model.emb_size must be >= 1"),
        (config.model.hidden_size >= 1, "model.hidden_size must be >= 1"),
        (config.model.num_layers >= 1, "model.num_layers must be >= 1"),
        (config.model.first_window >= 1, "model.first_window must be >= 1"),
        (config.model.window >= 1, "model.window must be >= 1"),
        (config.train.optimizer in ("sgd", "adam", "adamw"), "train.optimizer must be 'sgd', 'adam' or 'adamw'"),
        (config.train.lr > 0, "train.lr must be > 0"),
        (config.train.epochs >= 1, "train.epochs must be >= 1"),
        (config.train.max_steps >= 0, "train.max_steps must be >= 0 (0 means no limit)"),
        (config.train.max_minutes >= 0, "train.max_minutes must be >= 0 (0 means no limit)"),
        (config.train.lr_schedule in ("constant", "cosine", "linear"),
         f"train.lr_schedule must be 'constant', 'cosine' or 'linear', got {config.train.lr_schedule!r}"),
        (0.0 <= config.train.warmup <= 1.0,
         f"train.warmup is a fraction of the run's budget: it must be in [0, 1], got {config.train.warmup}"),
        (0.0 <= config.train.lr_floor <= 1.0,
         f"train.lr_floor is a fraction of train.lr: it must be in [0, 1], got {config.train.lr_floor}"),
        (config.train.lr_floor == 0.0 or config.train.lr_schedule != "constant",
         "train.lr_floor is where a decay ends: set train.lr_schedule to 'cosine' or 'linear', or drop lr_floor"),
        (config.train.nonmono >= 1, "train.nonmono must be >= 1"),
        (config.train.log_interval >= 1, "train.log_interval must be >= 1"),
        (config.train.checkpoint_every_steps >= 0, "train.checkpoint_every_steps must be >= 0 (0 = off)"),
        (config.train.checkpoint_every_minutes >= 0, "train.checkpoint_every_minutes must be >= 0 (0 = off)"),
        (config.model.decoder in ("softmax", "adaptive"),
         f"model.decoder must be 'softmax' or 'adaptive', got {config.model.decoder!r}"),
        (len(config.model.adaptive_cutoffs) >= 1 and config.model.adaptive_cutoffs[0] >= 1
         and all(a < b for a, b in zip(config.model.adaptive_cutoffs, config.model.adaptive_cutoffs[1:])),
         f"model.adaptive_cutoffs must be increasing numbers >= 1, got {config.model.adaptive_cutoffs}"),
        (config.train.softmax in ("auto", "full", "chunked"),
         f"train.softmax must be 'auto', 'full' or 'chunked', got {config.train.softmax!r}"),
        (config.train.softmax_memory_mb >= 0, "train.softmax_memory_mb must be >= 0"),
        (config.train.precision in ("fp32", "bf16", "fp16", "auto"),
         f"train.precision must be 'fp32', 'bf16', 'fp16' or 'auto', got {config.train.precision!r}"),
    ]
    for name in ("zoneout", "dropout_emb", "dropout_input", "dropout_hidden", "dropout_output", "weight_drop"):
        value = getattr(config.model, name)
        checks.append((0.0 <= value < 1.0, f"model.{name} must be in [0, 1), got {value}"))
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


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


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
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
