"""The recipes in configs/: each loads and validates, and the AWD ones carry awd-lstm-lm's values."""

from pathlib import Path

import pytest

from qrnn_lm.config import config_to_dict, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
RECIPES = sorted(path for path in CONFIGS.glob("*.toml") if not path.stem.startswith("tune-"))  # tune-*: search spaces (tests/tuning)

# salesforce/awd-lstm-lm README, QRNN commands (the other values are main.py's defaults).
AWD_QRNN = {
    "ptb": {
        "data": {"batch_size": 20, "bptt": 70},
        "model": {"num_layers": 4, "emb_size": 400, "hidden_size": 1550, "weight_drop": 0.1,
                  "dropout_hidden": 0.3, "dropout_input": 0.4, "dropout_output": 0.4, "dropout_emb": 0.1,
                  "first_window": 2, "window": 1, "tie_weights": True},
        "train": {"optimizer": "sgd", "lr": 30.0, "clip": 0.2, "seed": 9001, "epochs": 550, "alpha": 2.0,
                  "beta": 1.0, "weight_decay": 1.2e-6, "asgd": True, "nonmono": 5},
    },
    "wikitext-2": {
        "data": {"batch_size": 40, "bptt": 70},
        "model": {"num_layers": 4, "emb_size": 400, "hidden_size": 1550, "weight_drop": 0.1,
                  "dropout_hidden": 0.2, "dropout_input": 0.4, "dropout_output": 0.4, "dropout_emb": 0.1},
        "train": {"optimizer": "sgd", "lr": 30.0, "clip": 0.25, "seed": 4002, "epochs": 500, "asgd": True},
    },
    "wikitext-103": {
        "data": {"batch_size": 60, "bptt": 140},
        "model": {"num_layers": 4, "emb_size": 400, "hidden_size": 2500, "weight_drop": 0.0,
                  "dropout_hidden": 0.1, "dropout_input": 0.1, "dropout_output": 0.1, "dropout_emb": 0.0},
        "train": {"optimizer": "adam", "lr": 1e-3, "epochs": 14, "alpha": 0.0, "beta": 0.0,
                  "weight_decay": 0.0, "lr_decay_epochs": [12]},
    },
}


def test_the_expected_recipes_exist():
    names = {path.stem for path in RECIPES}
    assert {"ptb", "wikitext-2", "wikitext-103", "ptb-small", "ptb-cpu", "tiny"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda path: path.name)
def test_recipe_loads_and_validates(path):
    config = load_config(path)
    assert config.name == path.stem  # the default run folder is runs/<file name>
    if path.stem in AWD_QRNN or path.stem.startswith("ptb"):
        assert config.data.dataset == path.stem.removesuffix("-small").removesuffix("-cpu")


@pytest.mark.parametrize("name", sorted(AWD_QRNN))
def test_awd_recipes_carry_the_published_hyper_parameters(name):
    values = config_to_dict(load_config(CONFIGS / f"{name}.toml"))
    for section, expected in AWD_QRNN[name].items():
        for key, value in expected.items():
            assert values[section][key] == value, f"{name}: {section}.{key}"


def test_small_recipes_are_small():
    def size(config):  # QRNN weights + tied embedding, roughly
        m = config.model
        inputs = [m.emb_size * m.first_window] + [m.hidden_size * m.window] * (m.num_layers - 1)
        outputs = [m.hidden_size] * (m.num_layers - 1) + [m.emb_size]
        return sum(3 * i * o for i, o in zip(inputs, outputs)) + 10_000 * m.emb_size

    ptb, small, tiny = (load_config(CONFIGS / f"{name}.toml") for name in ("ptb", "ptb-small", "tiny"))
    assert size(tiny) < 200_000 < size(small) < size(ptb) / 4
    assert small.train.max_steps > 0 or small.train.epochs <= 3  # bounded for a CPU


def test_the_cpu_recipe_is_time_budgeted_and_runs_as_an_lstm_too():
    """make train's CPU recipe: a wall-clock budget that leaves the final test inside 20 minutes,
    a schedule over that budget (never cut off), and `--set model.rnn=lstm` for the side-by-side."""
    cpu = load_config(CONFIGS / "ptb-cpu.toml")
    assert 0 < cpu.train.max_minutes <= 19 and cpu.train.lr_schedule != "constant"
    assert cpu.train.epochs >= 20  # a ceiling far above the ~7 epochs the budget holds on a fast CPU
    assert load_config(CONFIGS / "ptb-cpu.toml", ["model.rnn=lstm"]).model.rnn == "lstm"
    makefile = (CONFIGS.parent / "Makefile").read_text()
    assert "else 'ptb-cpu'" in makefile  # what make train picks without a GPU
