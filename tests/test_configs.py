"""The recipes in configs/: each loads and validates, and the AWD ones carry awd-lstm-lm's values."""

from pathlib import Path

import pytest

from qrnn_lm.cli.recipes import make_train_recipe
from qrnn_lm.config import config_to_dict, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
MEASURED = CONFIGS.parent / "docs" / "results" / "ptb-tuned-zen3"  # the full runs of issue 24's sweep
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
    assert {"ptb", "wikitext-2", "wikitext-103", "ptb-small", "ptb-cpu", "ptb-cpu-bf16", "ptb-cpu-lstm", "tiny"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda path: path.name)
def test_recipe_loads_and_validates(path):
    config = load_config(path)
    assert config.name == path.stem  # the default run folder is runs/<file name>
    if path.stem in AWD_QRNN or path.stem.startswith("ptb"):
        dataset = path.stem
        for variant in ("-lstm", "-bf16", "-cpu", "-small"):  # ptb-cpu-lstm -> ptb-cpu -> ptb
            dataset = dataset.removesuffix(variant)
        assert config.data.dataset == dataset


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


@pytest.mark.parametrize("name", ["ptb-cpu", "ptb-cpu-bf16", "ptb-cpu-lstm"])
def test_the_cpu_recipes_are_time_budgeted(name):
    """make train's CPU recipes and the LSTM beside them: a wall-clock budget that leaves the final
    test inside 20 minutes, a schedule over that budget (never cut off), the cache pointer after it."""
    cpu = load_config(CONFIGS / f"{name}.toml")
    assert 0 < cpu.train.max_minutes <= 19 and cpu.train.lr_schedule != "constant"
    assert cpu.train.epochs >= 20  # a ceiling far above the ~7 epochs the budget holds on a fast CPU
    assert cpu.data.test_batch_size == 1 and cpu.train.cache_at_end == "search"


def test_the_deep_cpu_recipe_runs_as_an_lstm_too():
    """docs/cpu-recipe.md's side-by-side: the same recipe with AWD-LSTM layers (it sets no QRNN-only key)."""
    assert load_config(CONFIGS / "ptb-cpu-bf16.toml", ["model.rnn=lstm"]).model.rnn == "lstm"


def test_make_train_picks_the_recipe_for_the_machine(tmp_path):
    """GPU: the AWD recipe; a CPU with bf16 instructions: the deep recipe measured on a Zen 5; any
    other CPU (or no /proc/cpuinfo): the small model the tuner found on an fp32 Zen 3."""
    with_bf16, without = tmp_path / "bf16", tmp_path / "fp32"
    with_bf16.write_text("flags\t\t: fpu sse avx2 avx512f avx512_bf16\n")
    without.write_text("flags\t\t: fpu sse avx2 fma\n")
    assert make_train_recipe(cuda_available=True, cpuinfo=with_bf16) == "ptb"
    assert make_train_recipe(cuda_available=False, cpuinfo=with_bf16) == "ptb-cpu-bf16"
    assert make_train_recipe(cuda_available=False, cpuinfo=without) == "ptb-cpu"
    assert make_train_recipe(cuda_available=False, cpuinfo=tmp_path / "absent") == "ptb-cpu"
    for name in ("ptb", "ptb-cpu-bf16", "ptb-cpu"):
        assert (CONFIGS / f"{name}.toml").is_file()
    assert "make_train_recipe()" in (CONFIGS.parent / "Makefile").read_text()  # what make train runs


# The keys where a recipe may differ from the run that measured it, and why: the name; at one
# layer hidden_size is unused (the only layer is the last, as wide as the tied embedding); the
# LSTM's measured run had the cache pointer off (it runs after the budget and the plain test).
UNUSED = {
    "ptb-cpu": {("", "name"), ("model", "hidden_size")},
    "ptb-cpu-lstm": {("", "name"), ("train", "cache_at_end")},
}


@pytest.mark.parametrize("recipe, run", [("ptb-cpu", "qrnn-trial4-seed141"), ("ptb-cpu-lstm", "lstm-trial3-seed141")])
def test_the_tuned_recipes_are_the_configurations_measured(recipe, run):
    """The README's figures for ptb-cpu and ptb-cpu-lstm come from docs/results/ptb-tuned-zen3:
    the recipe file must train exactly the model that run trained."""
    mine = config_to_dict(load_config(CONFIGS / f"{recipe}.toml"))
    measured = config_to_dict(load_config(MEASURED / run / "config.toml"))

    def flat(values):  # {(section, key): value}, top-level keys under section ""
        pairs = {}
        for key, value in values.items():
            pairs.update({(key, k): v for k, v in value.items()} if isinstance(value, dict) else {("", key): value})
        return pairs

    mine, measured = flat(mine), flat(measured)
    differing = {key for key in mine.keys() | measured.keys() if mine.get(key) != measured.get(key)}
    assert differing <= UNUSED[recipe], sorted(differing - UNUSED[recipe])
    if ("model", "hidden_size") in differing:
        assert mine[("model", "num_layers")] == 1
