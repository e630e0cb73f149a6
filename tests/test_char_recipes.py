"""configs/ptb-char.toml and configs/enwik8.toml carry awd-lstm-lm's published character commands
(salesforce/awd-lstm-lm README; the other values are main.py's defaults), with QRNN layers."""

from pathlib import Path

import pytest

from qrnn_lm.config import config_to_dict, load_config
from qrnn_lm.data import DATASETS

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

AWD_CHAR = {
    # --epochs 500 --nlayers 3 --emsize 200 --nhid 1000 --alpha 0 --beta 0 --dropoute 0 --dropouth 0.25
    # --dropouti 0.1 --dropout 0.1 --wdrop 0.5 --wdecay 1.2e-6 --bptt 150 --batch_size 128 --optimizer adam
    # --lr 2e-3 --when 300 400
    "ptb-char": {
        "data": {"batch_size": 128, "bptt": 150, "eval_batch_size": 10, "test_batch_size": 1},
        "model": {"num_layers": 3, "emb_size": 200, "hidden_size": 1000, "dropout_emb": 0.0, "dropout_hidden": 0.25,
                  "dropout_input": 0.1, "dropout_output": 0.1, "weight_drop": 0.5, "tie_weights": True},
        "train": {"epochs": 500, "alpha": 0.0, "beta": 0.0, "weight_decay": 1.2e-6, "optimizer": "adam", "lr": 2e-3,
                  "lr_decay_epochs": [300, 400], "clip": 0.25, "seed": 1111},
    },
    # --epochs 50 --nlayers 3 --emsize 400 --nhid 1840 --alpha 0 --beta 0 --dropoute 0 --dropouth 0.1
    # --dropouti 0.1 --dropout 0.4 --wdrop 0.2 --wdecay 1.2e-6 --bptt 200 --batch_size 128 --optimizer adam
    # --lr 1e-3 --when 25 35
    "enwik8": {
        "data": {"batch_size": 128, "bptt": 200, "eval_batch_size": 10, "test_batch_size": 1},
        "model": {"num_layers": 3, "emb_size": 400, "hidden_size": 1840, "dropout_emb": 0.0, "dropout_hidden": 0.1,
                  "dropout_input": 0.1, "dropout_output": 0.4, "weight_drop": 0.2, "tie_weights": True},
        "train": {"epochs": 50, "alpha": 0.0, "beta": 0.0, "weight_decay": 1.2e-6, "optimizer": "adam", "lr": 1e-3,
                  "lr_decay_epochs": [25, 35], "clip": 0.25, "seed": 1111},
    },
}


@pytest.mark.parametrize("name", sorted(AWD_CHAR))
def test_char_recipes_carry_the_published_command(name):
    config = load_config(CONFIGS / f"{name}.toml")
    assert config.name == name and config.data.dataset == name and name in DATASETS
    assert config.model.rnn == "qrnn"
    values = config_to_dict(config)
    for section, expected in AWD_CHAR[name].items():
        for key, value in expected.items():
            assert values[section][key] == value, f"{name}: {section}.{key}"
    assert "NOT run by this project" in (CONFIGS / f"{name}.toml").read_text()
