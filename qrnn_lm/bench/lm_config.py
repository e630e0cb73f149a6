"""Which shape ``qrnn-lm bench lm`` times: a recipe (``--config FILE``, else the defaults of
``qrnn_lm/config/sections.py``, which are PTB's AWD-QRNN), then each ``--set section.key=value``, then the
explicit size options (``--emb-size``, ``--hidden-size``, ``--num-layers``, ``--bptt``,
``--batch-size``), which win over both.

From the recipe the bench takes the model (sizes, windows, dropouts, zoneout, tying, decoder and its
cutoffs), ``data.bptt`` and ``data.batch_size``, and from ``[train]`` the optimizer (its kind, lr,
weight decay), clipping, AR/TAR, ``softmax`` and ``precision``. The rest (dataset, epochs, ...)
is read and checked but plays no part.
"""

from __future__ import annotations

from pathlib import Path

from ..config import Config, ConfigError, load_config

__all__ = ["bench_config", "check_bench_precision", "OPTION_KEYS", "PRECISIONS"]

# The size options and the config keys they set.
OPTION_KEYS = {
    "emb_size": "model.emb_size",
    "hidden_size": "model.hidden_size",
    "num_layers": "model.num_layers",
    "bptt": "data.bptt",
    "batch_size": "data.batch_size",
}
PRECISIONS = ("fp32", "bf16")  # fp16 would need the trainer's gradient scaler: not benchmarked


def bench_config(config_file: str | Path | None = None, sets: list[str] = (), **options: int | None) -> Config:
    """The resolved Config: ``config_file`` (None: the defaults), then ``sets`` (``section.key=value``
    strings, as ``qrnn-lm train --set``), then ``options`` (the keys of :data:`OPTION_KEYS`; None
    means not given). Raises ConfigError (one line) for a missing or bad file or value."""
    unknown = set(options) - set(OPTION_KEYS)
    if unknown:
        raise TypeError(f"unknown size options {sorted(unknown)}; expected some of {sorted(OPTION_KEYS)}")
    overrides = list(sets) + [f"{OPTION_KEYS[name]}={value}" for name, value in options.items() if value is not None]
    config = load_config(config_file, overrides)
    if config.train.precision != "auto":  # "auto" is resolved for the device when the bench runs
        check_bench_precision(config.train.precision)
    return config


def check_bench_precision(precision: str) -> None:
    """ConfigError unless the bench can time ``precision`` (fp32 or bf16; "auto" is resolved for
    the device before this check)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"qrnn-lm bench lm times train.precision 'fp32' or 'bf16', got {precision!r}; "
                          "use --set train.precision=bf16")
