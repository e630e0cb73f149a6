"""``qrnn-lm tune`` on a tiny corpus: trials are ordinary runs, a hopeless trial is pruned, the
objective is each run's validation perplexity, the best trial's config retrains to the same
perplexity, and ``--report`` tables and plots the study."""

import json
import math

import optuna
import pytest
from tune_spaces import write_space
from typer.testing import CliRunner

from qrnn_lm.cli.commands import app
from qrnn_lm.tuning.study import default_storage

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"
# Adam without dropout learns the corpus within 30 steps at lr 1e-2 and not at all at 1e-5. The
# first three trials are enqueued: the pruner (median of 1 finished trial) must stop the second
# at its first validation, not the third (far better); the fourth is TPE's own.
SPACE = """train.optimizer = "adam"
model.dropout_emb = 0.0
model.dropout_input = 0.0
model.dropout_hidden = 0.0
model.dropout_output = 0.0
model.weight_drop = 0.0
model.zoneout = 0.0

[space]
train.lr = { low = 1e-5, high = 3e-2, log = true }
model.hidden_size = { low = 16, high = 32, step = 8 }

[tune]
startup_trials = 1
warmup_validations = 0

[[enqueue]]
train.lr = 1e-2
model.hidden_size = 24

[[enqueue]]
train.lr = 1e-5
model.hidden_size = 24

[[enqueue]]
train.lr = 3e-2
model.hidden_size = 32
"""


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, corpus):
    folder = tmp_path_factory.mktemp("tune")
    space = write_space(folder / "space", corpus, SPACE)
    run = folder / "run"
    result = runner.invoke(app, ["tune", str(space), "--out", str(run), "--trials", "4", "--device", "cpu"])
    assert result.exit_code == 0, (result.output, result.exception)
    study = optuna.load_study(study_name="space", storage=default_storage(run))
    return run, study, result.output


def test_trials_are_runs_and_the_objective_is_their_validation_perplexity(tuned):
    run, study, output = tuned
    trials = study.get_trials()
    assert len(trials) == 4
    assert trials[3].state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert [t.number for t in complete][:2] == [0, 2]
    for trial in complete:
        folder = run / f"trial-{trial.number:04d}"
        assert trial.user_attrs["run"] == str(folder)
        results = json.loads((folder / "results.json").read_text())
        assert trial.value == results["best_val_ppl"]
        assert trial.user_attrs["test_ppl"] == results["test_ppl"] and results["steps"] == 30
        assert (folder / "metrics.csv").is_file() and (folder / "config.toml").is_file()
        # one report per validation, numbered 1, 2, ..., the last one the run's final validation
        assert sorted(trial.intermediate_values) == list(range(1, len(trial.intermediate_values) + 1))
    assert trials[0].params == {"train.lr": 1e-2, "model.hidden_size": 24}
    assert "trial 1 pruned" in output and "best: trial" in output


def test_a_hopeless_trial_is_pruned_at_its_first_validation(tuned):
    run, study, _ = tuned
    pruned = study.get_trials()[1]
    assert pruned.state == optuna.trial.TrialState.PRUNED
    assert pruned.params["train.lr"] == 1e-5
    assert list(pruned.intermediate_values) == [1]
    assert pruned.intermediate_values[1] > study.get_trials()[0].intermediate_values[1]
    folder = run / "trial-0001"
    assert (folder / "last.pt").is_file() and not (folder / "results.json").exists()  # stopped mid-run


def test_the_best_trials_config_retrains_to_the_same_validation_perplexity(tuned, tmp_path):
    run, study, _ = tuned
    best = study.best_trial
    config = run / f"trial-{best.number:04d}" / "config.toml"
    result = runner.invoke(app, ["train", "--config", str(config), "--out", str(tmp_path / "again"),
                                 "--device", "cpu", "--no-progress"])
    assert result.exit_code == 0, (result.output, result.exception)
    again = json.loads((tmp_path / "again" / "results.json").read_text())
    assert math.isclose(again["best_val_ppl"], best.value, rel_tol=1e-9), (again["best_val_ppl"], best.value)


def test_the_report_tables_the_best_trials_and_writes_the_plots(tuned, tmp_path):
    run, study, _ = tuned
    result = runner.invoke(app, ["tune", "--report", str(run), "--out", str(tmp_path)])
    assert result.exit_code == 0, (result.output, result.exception)
    lines = result.output.splitlines()
    states = [t.state.name.lower() for t in study.get_trials()]
    assert lines[0].startswith(f"study space: {states.count('complete')} complete, {states.count('pruned')} pruned")
    assert lines[1].split()[:3] == ["trial", "valid", "ppl"]
    best = study.best_trial
    assert lines[2].split()[:2] == [str(best.number), f"{best.value:.2f}"]
    for name in ("optimization_history.png", "param_importances.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG


def test_a_finished_study_runs_no_more_trials(tuned):
    run, study, _ = tuned
    space = run.parent / "space" / "space.toml"
    result = runner.invoke(app, ["tune", str(space), "--out", str(run), "--trials", "4", "--device", "cpu"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "4 of 4 trials finished" in result.output
    assert len(optuna.load_study(study_name="space", storage=default_storage(run)).trials) == 4


def test_the_report_takes_a_database_url_and_says_what_is_missing(tuned, tmp_path):
    run, study, _ = tuned
    url = default_storage(run)
    result = runner.invoke(app, ["tune", "--report", url, "--study", "space", "--out", str(tmp_path / "plots")])
    assert result.exit_code == 0, (result.output, result.exception)
    assert (tmp_path / "plots" / "optimization_history.png").is_file()
    for args, fragment in ((["--report", url], "--out DIR"),
                           (["--report", url, "--study", "other", "--out", str(tmp_path)], "no study 'other'"),
                           (["--report", str(tmp_path)], "holds no study.db")):
        result = runner.invoke(app, ["tune", *args])
        assert result.exit_code == 1 and result.stderr.startswith("error: ") and fragment in result.stderr, result.output
        assert len(result.stderr.strip().splitlines()) == 1
