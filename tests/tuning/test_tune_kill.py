"""A tune killed (SIGKILL) in the middle of a trial resumes by running the same command again:
finished trials are kept as they are, the killed trial is retried once with the same parameters
and continues its run from its last.pt, and the study ends with the requested number of trials."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
from tune_spaces import write_space
from typer.testing import CliRunner

from qrnn_lm.cli.commands import app
from qrnn_lm.tuning.study import default_storage

STEPS = 150  # about 9 epochs: a last.pt at each epoch's end, long enough to be killed in between
SPACE = """
[space]
train.lr = { low = 1.0, high = 20.0, log = true }
model.hidden_size = { low = 16, high = 32, step = 8 }

[tune]
pruner = "none"
heartbeat_seconds = 1  # a silent trial is taken as dead after 2 s
"""


def wait_for(condition, process, seconds=600.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.slow
def test_a_killed_tune_resumes_without_repeating_finished_trials(tmp_path, corpus):
    space = write_space(tmp_path / "space", corpus, SPACE, max_steps=STEPS)
    run = tmp_path / "run"
    command = [sys.executable, "-m", "qrnn_lm", "tune", str(space), "--out", str(run), "--trials", "3",
               "--device", "cpu"]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killed = run / "trial-0001"
    wait_for(lambda: (killed / "last.pt").exists(), first)  # trial 1 has passed an epoch's end
    first.send_signal(signal.SIGKILL)
    first.communicate()
    assert not (killed / "results.json").exists(), "trial 1 finished before the kill: make STEPS larger"
    done = run / "trial-0000" / "results.json"
    before = (done.read_bytes(), os.stat(done).st_mtime_ns)

    time.sleep(3)  # past the 2 s grace period: the killed trial is stale
    second = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "resuming" in second.stdout

    study = optuna.load_study(study_name="space", storage=default_storage(run))
    trials = study.get_trials()
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 3
    assert trials[1].state == optuna.trial.TrialState.FAIL  # the killed attempt
    retries = [t for t in trials if t.system_attrs.get("failed_trial") is not None]
    assert len(retries) == 1 and retries[0].system_attrs["failed_trial"] == 1
    retry = retries[0]
    assert retry.state == optuna.trial.TrialState.COMPLETE and retry.params == trials[1].params
    assert retry.user_attrs["run"] == str(killed)
    # finished trials are not repeated: each set of parameters trained to the end once
    assert len({tuple(sorted(t.params.items())) for t in complete}) == 3
    assert (done.read_bytes(), os.stat(done).st_mtime_ns) == before

    # the retry continued trial 1's run exactly: the same result as one uninterrupted run
    results = json.loads((killed / "results.json").read_text())
    assert results["steps"] == STEPS and retry.value == results["best_val_ppl"]
    again = CliRunner().invoke(app, ["train", "--config", str(killed / "config.toml"), "--out",
                                     str(tmp_path / "again"), "--device", "cpu", "--no-progress"])
    assert again.exit_code == 0, (again.output, again.exception)
    fresh = json.loads((tmp_path / "again" / "results.json").read_text())
    assert math.isclose(fresh["best_val_ppl"], results["best_val_ppl"], rel_tol=1e-9)


@pytest.mark.slow
def test_a_terminated_tune_queues_its_trial_again_and_resumes_at_once(tmp_path, corpus):
    """SIGTERM (as Ctrl-C): the trainer saves last.pt, the tune exits 143, the trial is queued again
    with the same parameters, and the next run continues it without waiting for a heartbeat."""
    space = write_space(tmp_path / "space", corpus, SPACE.replace("heartbeat_seconds = 1", "heartbeat_seconds = 600"),
                        max_steps=STEPS)
    run = tmp_path / "run"
    command = [sys.executable, "-m", "qrnn_lm", "tune", str(space), "--out", str(run), "--trials", "2",
               "--device", "cpu"]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    stopped = run / "trial-0001"
    wait_for(lambda: (stopped / "last.pt").exists(), first)
    first.send_signal(signal.SIGTERM)
    output, _ = first.communicate(timeout=300)
    assert first.returncode == 143, output
    assert "run the same command again" in output and "Traceback" not in output
    assert not (stopped / "results.json").exists()
    study = optuna.load_study(study_name="space", storage=default_storage(run))
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert len(waiting) == 1 and waiting[0].params == study.trials[1].params

    second = subprocess.run(command, capture_output=True, text=True, timeout=1200)  # no grace period needed
    assert second.returncode == 0, second.stdout + second.stderr
    assert "resuming" in second.stdout
    study = optuna.load_study(study_name="space", storage=default_storage(run))
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert [t.number for t in complete] == [0, 2] and complete[1].params == study.trials[1].params
    assert json.loads((stopped / "results.json").read_text())["steps"] == STEPS
