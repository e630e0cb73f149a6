"""The run configuration's sections: typed dataclasses mirrored 1:1 by the TOML recipes in
``configs/``. Each field declares its default and its valid range (``setting(default, rule)``, the
kinds of rule in :mod:`qrnn_lm.rules`), with a comment saying what it means.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..rules import (
    ANY,
    CACHE_AT_END,
    DECODERS,
    LR_SCHEDULES,
    OPTIMIZERS,
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
    # After the final test of best.pt, also score test with the continuous cache pointer (as
    # `qrnn-lm eval --cache`, batch size 1; results.json's test_cache_ppl): "off", "fixed" (at
    # cache_theta and cache_lambda) or "search" (the pair chosen on valid, as `eval --cache-search`).
    cache_at_end: str = setting("off", OneOf(CACHE_AT_END))
    cache_window: int = setting(500, Range(1))  # cache size in steps (awd-lstm-lm's PTB command)
    cache_theta: float = setting(1.0, Range(0))  # "fixed": flatness of the cache's attention
    cache_lambda: float = setting(0.1, Range(0, 1))  # "fixed": weight of the cache in the mixture


@dataclass
class Config:
    name: str = setting("ptb", Text(name=True))  # run name; the default output folder is runs/<name>
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}
