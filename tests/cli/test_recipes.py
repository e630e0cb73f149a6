"""Which Config a ``qrnn-lm train`` run uses (``qrnn_lm.cli.recipes``)."""

from pathlib import Path

from qrnn_lm.config import config_to_dict
from qrnn_lm.cli.recipes import recipe_dir, resolve_train_config

NAMES = ["ptb", "wikitext-2", "wikitext-103"]


def test_a_named_dataset_takes_its_recipe_then_the_overrides():
    assert recipe_dir() == Path(__file__).resolve().parents[2] / "configs"
    config = resolve_train_config("ptb", None, ["train.lr=7", "model.num_layers=2"], None, NAMES)
    assert (config.name, config.data.dataset, config.model.hidden_size) == ("ptb", "ptb", 1550)  # from ptb.toml
    assert (config.train.lr, config.model.num_layers) == (7, 2)


def test_a_folder_takes_the_defaults_named_after_it(tmp_path):
    corpus = tmp_path / "my corpus"
    corpus.mkdir()
    config = resolve_train_config(str(corpus), None, [], None, NAMES)
    assert (config.name, config.data.dataset) == ("my corpus", str(corpus.absolute()))


def test_a_resumed_run_keeps_its_own_config_under_the_overrides():
    saved = config_to_dict(resolve_train_config("ptb", None, ["train.lr=3"], None, NAMES))
    config = resolve_train_config(None, None, ["train.epochs=9"], saved, NAMES)
    assert (config.train.lr, config.train.epochs, config.name) == (3, 9, "ptb")


def test_an_explicit_config_file_wins_over_the_recipe(tmp_path):
    recipe = tmp_path / "mine.toml"
    recipe.write_text('name = "mine"\n[train]\nlr = 5.0\n')
    config = resolve_train_config("ptb", recipe, [], None, NAMES)
    assert (config.name, config.data.dataset, config.train.lr) == ("mine", "ptb", 5.0)
