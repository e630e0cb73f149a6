"""Config: TOML recipes <-> dataclasses, overrides, and one-line errors for bad keys and values."""

import re

import pytest

from qrnn_lm.config import (
    Config,
    ConfigError,
    UserError,
    config_from_dict,
    load_config,
    parse_override,
    to_toml,
)


def test_defaults_without_a_file():
    config = load_config(None)
    assert config == Config()


def test_toml_round_trip(tmp_path):
    config = load_config(None, ["train.lr_decay_epochs=[3, 7]", "model.zoneout=0.1", "name=\"x y\""])
    path = tmp_path / "c.toml"
    path.write_text(to_toml(config))
    assert load_config(path) == config


def test_cli_overrides_win_over_the_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[train]\nlr = 5.0\nseed = 3\n")
    config = load_config(path, ["train.lr=7"])
    assert config.train.lr == 7.0 and isinstance(config.train.lr, float)
    assert config.train.seed == 3


def test_bare_string_override():
    assert parse_override("data.dataset=wikitext-2") == ("data", "dataset", "wikitext-2")
    assert load_config(None, ["data.dataset=wikitext-2"]).data.dataset == "wikitext-2"


def test_unknown_key_names_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown config key 'train.lrr'.*lr,"):
        config_from_dict({"train": {"lrr": 1}})
    with pytest.raises(ConfigError, match="valid top-level keys"):
        config_from_dict({"optim": {}})


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epochs=1.5", "must be int"),
        ("train.asgd=1", "must be bool"),
        ("model.tie_weights=\"yes\"", "must be bool"),
        ("train.lr=-1", "must be > 0"),
        ("model.zoneout=1.0", r"must be in \[0, 1\)"),
        ("train.optimizer=rmsprop", "train.optimizer must be one of 'sgd', 'adam', 'adamw', got 'rmsprop'"),
        ("train.lr_decay_epochs=[1.5]", "must be list"),
        ("nodot=3", "section.key=value"),
        ("novalue", "section.key=value"),
    ],
)
def test_bad_values_are_one_line_errors(override, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_config(None, [override])
    assert "\n" not in str(info.value)


def test_file_errors_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nlr = ")
    with pytest.raises(UserError, match="not valid TOML"):
        load_config(bad)


def test_model_rnn_defaults_to_qrnn_and_takes_lstm():
    assert load_config(None).model.rnn == "qrnn"
    assert config_from_dict({"model": {}}).model.rnn == "qrnn"  # an old checkpoint's config, without the key
    config = load_config(None, ["model.rnn=lstm"])
    assert config.model.rnn == "lstm"
    assert load_config(None, ['model.rnn="lstm"', "model.first_window=2", "model.window=1", "model.zoneout=0"]) == config


def test_a_bad_model_rnn_names_the_valid_ones():
    with pytest.raises(ConfigError, match=r"model.rnn must be one of 'qrnn', 'lstm', got 'gru'") as info:
        load_config(None, ["model.rnn=gru"])
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("override", ["model.window=2", "model.first_window=1", "model.zoneout=0.1"])
def test_qrnn_only_keys_away_from_their_default_are_errors_for_an_lstm(override):
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"{key} = .* is a QRNN setting .*remove it .*model.rnn=\"qrnn\"") as info:
        load_config(None, ["model.rnn=lstm", override])
    assert "\n" not in str(info.value)
    load_config(None, ["model.rnn=qrnn", override])  # a QRNN takes it


@pytest.mark.parametrize("override, message", [
    ("model.decoder=split", "model.decoder"),
    ("model.adaptive_cutoffs=[20, 10]", "adaptive_cutoffs"),
    ("model.adaptive_cutoffs=[10, 10]", "adaptive_cutoffs"),
    ("model.adaptive_cutoffs=[]", "adaptive_cutoffs"),
    ("train.softmax=partial", "train.softmax"),
    ("train.softmax_memory_mb=-1", "softmax_memory_mb"),
    ("train.precision=fp8", "train.precision"),
    ("train.compile=1", "train.compile"),
])
def test_softmax_precision_and_compile_keys_are_checked(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_softmax_precision_and_compile_defaults_are_conservative():
    config = load_config(None)
    assert (config.model.decoder, config.train.softmax, config.train.precision, config.train.compile) == (
        "softmax", "auto", "fp32", False)
    assert config.model.adaptive_cutoffs == [2800, 20000, 76000]  # awd-lstm-lm's WikiText-103 split


@pytest.mark.parametrize("override, message", [
    ("train.lr_schedule=step", "train.lr_schedule must be one of 'constant', 'cosine', 'linear', got 'step'"),
    ("train.warmup=1.5", r"train.warmup .* \[0, 1\]"),
    ("train.warmup=-0.1", r"train.warmup .* \[0, 1\]"),
    ("train.lr_floor=2", r"train.lr_floor .* \[0, 1\]"),
    ("train.lr_floor=0.1", "set train.lr_schedule to 'cosine' or 'linear'"),  # a constant has no floor
    ("train.max_minutes=-1", "train.max_minutes must be >= 0"),
    ("train.max_minutes=true", "must be float"),
])
def test_schedule_and_time_budget_keys_are_checked(override, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_config(None, [override])
    assert "\n" not in str(info.value)


def test_schedule_and_time_budget_defaults_change_nothing():
    train = load_config(None).train
    assert (train.lr_schedule, train.warmup, train.lr_floor, train.max_minutes) == ("constant", 0.0, 0.0, 0.0)
    cosine = load_config(None, ["train.lr_schedule=cosine", "train.warmup=0.05", "train.lr_floor=0.1",
                                "train.max_minutes=30"]).train
    assert (cosine.lr_schedule, cosine.warmup, cosine.lr_floor, cosine.max_minutes) == ("cosine", 0.05, 0.1, 30.0)


@pytest.mark.parametrize("override, message", [
    ("train.weight_decay=-1", "train.weight_decay must be >= 0, got -1.0"),  # was a traceback from torch
    ("train.clip=-0.5", "train.clip must be >= 0 (0 disables clipping), got -0.5"),  # silently no clipping
    ("train.alpha=-2", "train.alpha must be >= 0"),  # would reward large activations
    ("train.beta=-1", "train.beta must be >= 0"),
    ("train.seed=-1", "train.seed must be >= 0"),
    ("train.lr_decay_epochs=[3, 0]", "train.lr_decay_epochs must be a list of integers >= 1"),
    ('name="a/b"', "name must be a folder name"),
    ('name=" "', "name must be a folder name"),
    ('data.dataset=""', "data.dataset must not be blank"),
])
def test_every_key_has_its_range_checked(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        load_config(None, [override])
    assert "\n" not in str(info.value)


def test_toml_strings_escape_control_characters(tmp_path):
    config = load_config(None, ["data.dataset=\"tab\\there\\nand \\\"quoted\\\" \\\\ \\u0001\""])
    path = tmp_path / "c.toml"
    path.write_text(to_toml(config))
    assert load_config(path) == config and config.data.dataset == "tab\there\nand \"quoted\" \\ \x01"
