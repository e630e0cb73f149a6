"""Which Config a ``qrnn-lm train`` run uses: the ``--config`` file, the checkpoint's own config
when resuming, or the recipe ``configs/<dataset>.toml``, then ``--data`` and each ``--set``.
"""

from __future__ import annotations

import copy
from pathlib import Path

from ..config import Config, config_from_dict, load_config, parse_override, toml_string

__all__ = ["resolve_train_config", "recipe_dir", "make_train_recipe"]


def make_train_recipe(cuda_available: bool | None = None, cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """The recipe (a name in ``configs/``) that ``make train`` runs on this machine.

    ``"ptb"`` (AWD-QRNN) on a GPU. On a CPU the 20-minute recipes, which differ because the same
    wall clock buys about three times the tokens where the CPU has native bfloat16:
    ``"ptb-cpu-bf16"`` (3 x 1000 QRNN, test 94.0 on a Zen 5) there, else ``"ptb-cpu"`` (the
    1-layer QRNN the tuner found on an fp32 Zen 3, test 127.2 there, where the 3 x 1000 one gives
    143.0). ``cuda_available`` defaults to ``torch.cuda.is_available()``.
    """
    from ..device import cpu_recipe  # imports torch: kept out of the CLI's start-up

    if cuda_available is None:
        import torch

        cuda_available = torch.cuda.is_available()
    if cuda_available:
        return "ptb"
    return cpu_recipe(cpuinfo)


def recipe_dir() -> Path | None:
    """The recipes folder: ``qrnn_lm/configs`` when shipped inside the package, else ``configs/``
    beside the package in a source checkout (where ``pip install -e .`` leaves it)."""
    here = Path(__file__).resolve().parents[1]  # the qrnn_lm package
    for folder in (here / "configs", here.parent / "configs"):
        if folder.is_dir():
            return folder
    return None


def resolve_train_config(data: str | None, config_file: Path | None, overrides: list[str], resumed: dict | None,
                         dataset_names: list[str]) -> Config:
    """Resolve the run's Config.

    Base: the ``--config`` file; else, when resuming, the checkpoint's own config (so a resumed run
    continues exactly); else the recipe ``configs/<data>.toml`` for a named dataset; else the
    defaults (named after the data). On top: ``--data``, then each ``--set`` in order.
    ``dataset_names``: the named datasets (others are folders).
    """
    overrides, named = list(overrides), set(dataset_names)
    if data is not None and data not in named:
        data = str(Path(data).expanduser().absolute())  # the checkpoint's data stays findable from any folder
    if data is not None:
        overrides.insert(0, f"data.dataset={toml_string(data)}")
    if config_file is None and resumed is not None:
        return _config_with_overrides(resumed, overrides)
    if config_file is None and data is not None:
        recipes = recipe_dir()
        recipe = recipes / f"{data}.toml" if recipes is not None and data in named else None
        if recipe is not None and recipe.is_file():
            config_file = recipe
        else:
            overrides.insert(0, f"name={toml_string(Path(data).name or data)}")
    return load_config(config_file, overrides)


def _config_with_overrides(values: dict, overrides: list[str]) -> Config:
    """Apply ``section.key=value`` overrides to a config dict (a checkpoint's) and validate it."""
    values = copy.deepcopy(values)
    for text in overrides:
        section, key, value = parse_override(text)
        table = values.setdefault(section, {}) if section else values
        table[key] = value
    return config_from_dict(values)
