"""Run configuration: typed dataclasses mirrored 1:1 by the TOML recipes in ``configs/``.

``sections`` holds the dataclasses, ``checks`` the rules applied to them, ``files`` reading and
writing them (dicts, TOML, ``--set`` overrides); everything is imported from here.

Precedence: command line (``--set section.key=value``) > TOML file > the defaults (``sections``).
Unknown keys and ill-typed values are errors that name what is valid. Each field declares its valid
range beside its default (``setting(default, rule)``, the kinds of rule in :mod:`qrnn_lm.rules`);
:func:`validate` applies them, and :func:`check_options` the command options' rules. Standard
library only, so ``qrnn-lm --help`` stays instant (it imports only the leaf ``qrnn_lm.rules``).
"""

from ..rules import LR_SCHEDULES, OPTIMIZERS, TOKENIZERS
from .checks import QRNN_ONLY_KEYS, check_options, check_rnn, check_section, validate
from .files import config_from_dict, config_to_dict, load_config, parse_override, read_toml, to_toml, toml_string
from .sections import Config, ConfigError, DataConfig, ModelConfig, TrainConfig, UserError, setting

__all__ = [
    "Config", "ConfigError", "DataConfig", "ModelConfig", "TrainConfig", "UserError", "setting",
    "QRNN_ONLY_KEYS", "check_options", "check_rnn", "check_section", "validate",
    "config_from_dict", "config_to_dict", "load_config", "parse_override", "read_toml", "to_toml", "toml_string",
    "LR_SCHEDULES", "OPTIMIZERS", "TOKENIZERS",
]
