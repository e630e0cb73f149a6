"""``qrnn-lm tune``: a bad space, a storage that cannot be opened and a study created with another
space are each one ``error:`` line and exit 1, before any trial trains."""

import pytest
from tune_spaces import write_space
from typer.testing import CliRunner

from qrnn_lm.cli.commands import app
from qrnn_lm.tuning.space import read_space
from qrnn_lm.tuning.study import default_storage, open_study

runner = CliRunner()
LR = "[space]\ntrain.lr = { low = 1e-3, high = 1e-1, log = true }\n"


def tune(space, out, *extra):
    return runner.invoke(app, ["tune", str(space), "--out", str(out), "--trials", "2", "--device", "cpu", *extra])


def assert_one_line_error(result, *fragments):
    assert result.exit_code == 1, (result.exit_code, result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("body, fragments", [
    ("[space]\ntrain.learning_rate = { low = 1e-3, high = 1e-1 }\n", ["train.learning_rate", "valid keys in [train]", "lr"]),
    ("[space]\noptim.lr = { low = 1e-3, high = 1e-1 }\n", ["optim.lr", "unknown config key"]),
    ("[space]\ntrain.lr = { low = 0.1, high = 0.1 }\n", ["train.lr", "[0.1, 0.1] is empty"]),
    ("[space]\ntrain.lr = { low = 0.5, high = 0.1 }\n", ["[0.5, 0.1] is empty"]),
    ("[space]\ntrain.lr = { low = 0.0, high = 0.1, log = true }\n", ["log range needs low > 0"]),
    ("[space]\ntrain.lr = { low = 0.1 }\n", ["needs both low and high"]),
    ("[space]\ntrain.optimizer = { choices = [] }\n", ["choices must be a non-empty list"]),
    ("[space]\ntrain.optimizer = { choices = [\"sgd\", \"lbfgs\"] }\n", ["train.optimizer = 'lbfgs'", "optimizer must be"]),
    ("[space]\nmodel.hidden_size = { low = 8.0, high = 32.0 }\n", ["model.hidden_size", "must be int"]),
    ("[space]\ntrain.lr = 0.1\n", ["train.lr must be { low"]),
    ("[space]\n", ["[space] is empty"]),
    (LR + "[tune]\npruner = \"hyperband\"\n", ["pruner must be"]),
    (LR + "[tune]\nsampler = \"random\"\n", ["unknown [tune] key 'sampler'"]),
    (LR + "[[enqueue]]\ntrain.clip = 0.5\n", ["train.clip is not a key of [space]"]),
    ("[spaces]\n" + LR, ["unknown entry 'spaces'"]),
    ("[space\n", ["not valid TOML"]),
])
def test_a_bad_space_is_one_line(tmp_path, corpus, body, fragments):
    space = write_space(tmp_path / "s", corpus, body)
    assert_one_line_error(tune(space, tmp_path / "run"), *fragments)
    assert not (tmp_path / "run" / "trial-0000").exists()


def test_an_invalid_base_is_one_line(tmp_path, corpus):
    space = write_space(tmp_path / "s", corpus, LR)
    assert_one_line_error(tune(space, tmp_path / "run", "--set", "train.epochs=0"), "base config is invalid", "train.epochs must be >= 1")


def test_a_missing_space_file_and_missing_options_are_one_line(tmp_path):
    assert_one_line_error(tune(tmp_path / "nope.toml", tmp_path / "run"), "does not exist")
    assert_one_line_error(runner.invoke(app, ["tune", str(tmp_path / "nope.toml")]), "--out RUN and --trials N")


@pytest.mark.parametrize("url, fragment", [
    ("sqlite:////nonexistent-folder/deeper/study.db", "cannot open the study storage"),
    ("nosuchdb://user@host/study", "cannot open the study storage"),
])
def test_a_storage_that_cannot_be_opened_is_one_line(tmp_path, corpus, url, fragment):
    space = write_space(tmp_path / "s", corpus, LR)
    assert_one_line_error(tune(space, tmp_path / "run", "--storage", url), fragment, url)


def test_a_study_created_with_another_space_is_one_line(tmp_path, corpus):
    first = write_space(tmp_path / "a", corpus, LR)
    run = tmp_path / "run"
    run.mkdir()
    open_study(read_space(first), default_storage(run), "space")  # created, no trial run
    wider = write_space(tmp_path / "b", corpus, "[space]\ntrain.lr = { low = 1e-4, high = 1e-1, log = true }\n")
    assert_one_line_error(tune(wider, run), "created with another space", "params.train.lr.low")
    longer = write_space(tmp_path / "c", corpus, LR, max_steps=99)
    assert_one_line_error(tune(longer, run), "created with another space", "base.train.max_steps")
    assert_one_line_error(tune(first, run, "--set", "train.clip=0.5"), "base.train.clip")
    # the same space opens it again
    assert open_study(read_space(first), default_storage(run), "space").study_name == "space"


def test_qrnn_only_keys_are_sampled_for_qrnn_trials_only(tmp_path, corpus):
    space = read_space(write_space(tmp_path, corpus, LR + "model.zoneout = { low = 0.0, high = 0.3 }\n"),
                       ["model.rnn=\"lstm\"", "model.zoneout=0.0"])
    assert [p.key for p in space.active("lstm")] == ["train.lr"]
    assert [p.key for p in space.active("qrnn")] == ["train.lr", "model.zoneout"]


def test_the_ptb_cpu_space_reads_for_both_model_types():
    """configs/tune-ptb-cpu.toml (issue 24's sweep): one space, the QRNN-only keys aside for an
    LSTM, and a 2-layer 200-650 LSTM inside it."""
    from tune_spaces import ROOT

    path = ROOT / "configs" / "tune-ptb-cpu.toml"
    qrnn, lstm = read_space(path), read_space(path, ["model.rnn=\"lstm\""])
    assert qrnn.base.train.max_minutes > 0 and lstm.base.model.rnn == "lstm"
    assert {p.key for p in qrnn.params} - {p.key for p in lstm.active("lstm")} == {"model.zoneout", "model.first_window"}
    ranges = {p.key: p for p in lstm.active("lstm")}
    assert ranges["model.num_layers"].low <= 2 <= ranges["model.num_layers"].high
    for key in ("model.emb_size", "model.hidden_size"):
        assert ranges[key].low <= 200 and ranges[key].high >= 650
    for values in qrnn.enqueue:
        lstm.trial_config(values)  # the enqueued points are valid for both types
        qrnn.trial_config(values)
