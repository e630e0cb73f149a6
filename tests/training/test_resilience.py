"""What a run does when things go wrong around it, in-process (seconds): periodic checkpoints,
the kept earlier last.pt, damaged and missing checkpoints on --resume, failing writes, SIGTERM.
The kill-and-resume property with real processes is test_kills.py."""

import os
import signal
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import qrnn_lm.models.checkpoint_file as checkpoint_module
from qrnn_lm.cli.commands import app
from qrnn_lm.config import ConfigError, UserError, load_config
from qrnn_lm.models.checkpoint_file import load_checkpoint, save_checkpoint
from qrnn_lm.training import train
from qrnn_lm.training.checkpointer import PREVIOUS, resume_checkpoint
from qrnn_lm.training.stopping import Interrupted, StopSignals, sigint_deferred

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "tiny.toml"




def tiny(corpus, *overrides):
    return load_config(TINY, [f'data.dataset="{corpus}"', "train.epochs=1", *overrides])


def run(config, out, **kwargs):
    return train(config, out, device="cpu", progress=False, **kwargs)


def test_periodic_checkpoints_keep_the_previous_one(corpus, tmp_path):
    out = tmp_path / "run"
    run(tiny(corpus, "train.max_steps=7", "train.checkpoint_every_steps=3"), out)
    # Saved at steps 3 and 6 (periodic), then 7 (max_steps): last.pt is 7, the one before is 6.
    assert load_checkpoint(out / "last.pt")["counters"]["step"] == 7
    assert load_checkpoint(out / PREVIOUS)["counters"]["step"] == 6
    assert not list(out.glob(".*"))  # no temp file or link left behind
    (out / ".last.pt.k1lled.tmp").write_bytes(b"PK")  # what a kill during a write leaves
    run(tiny(corpus, "train.max_steps=8", "train.checkpoint_every_steps=3"), out, resume=out)
    assert not list(out.glob(".*"))  # the continuing run removed it


def test_periodic_checkpoints_can_be_switched_off(corpus, tmp_path, monkeypatch):
    saved = []
    real = checkpoint_module.save_checkpoint
    monkeypatch.setattr("qrnn_lm.training.checkpointer.save_checkpoint",
                        lambda path, payload, **kw: (saved.append(payload["counters"]["step"]), real(path, payload, **kw))[1])
    run(tiny(corpus, "train.max_steps=5", "train.checkpoint_every_steps=0", "train.checkpoint_every_minutes=0"),
        tmp_path / "run")
    assert saved == [5, 5]  # last.pt and best.pt at max_steps, nothing inside the epoch


def test_checkpoint_every_minutes_saves_by_the_clock(corpus, tmp_path, monkeypatch):
    import qrnn_lm.training.trainer as trainer_module

    clock = iter(range(0, 10_000, 40))  # 40 s per call of time.monotonic
    monkeypatch.setattr(trainer_module.time, "monotonic", lambda: next(clock))
    out = tmp_path / "run"
    run(tiny(corpus, "train.max_steps=6", "train.checkpoint_every_minutes=1"), out)
    assert load_checkpoint(out / PREVIOUS)["counters"]["step"] < 6  # a timed save inside the epoch


def test_checkpoint_keys_are_validated():
    with pytest.raises(ConfigError, match="checkpoint_every_steps must be >= 0"):
        load_config(TINY, ["train.checkpoint_every_steps=-1"])
    with pytest.raises(ConfigError, match="checkpoint_every_minutes must be >= 0"):
        load_config(TINY, ["train.checkpoint_every_minutes=-2"])


def test_save_checkpoint_keeps_the_previous_file(tmp_path):
    path, previous = tmp_path / "last.pt", tmp_path / PREVIOUS
    base = {"config": {}, "vocab": [], "model": {}}
    save_checkpoint(path, {**base, "n": 1}, previous=previous)
    assert not previous.exists()
    save_checkpoint(path, {**base, "n": 2}, previous=previous)
    save_checkpoint(path, {**base, "n": 3}, previous=previous)
    assert load_checkpoint(path)["n"] == 3 and load_checkpoint(previous)["n"] == 2


def test_a_failing_write_keeps_the_previous_checkpoint_and_training_goes_on(corpus, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    real_save = torch.save
    calls = []

    def failing_save(payload, handle, *args, **kwargs):
        calls.append(payload["counters"]["step"])
        if payload["counters"]["step"] == 4:
            raise OSError(28, "No space left on device")
        return real_save(payload, handle, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module.torch, "save", failing_save)
    results = run(tiny(corpus, "train.max_steps=5", "train.checkpoint_every_steps=2"), out)
    assert results["steps"] == 5  # trained on past the failure
    lines = [line for line in capsys.readouterr().out.splitlines() if "could not write" in line]
    assert lines == [f"warning: could not write {out / 'last.pt'} (No space left on device); the previous "
                     "last.pt is kept, training goes on"]
    assert load_checkpoint(out / PREVIOUS)["counters"]["step"] == 2  # 4 failed: 2 stayed the earlier one
    assert not list(out.glob(".*.tmp"))


def test_a_state_whose_write_failed_is_written_by_the_next_save(corpus, tmp_path, monkeypatch, capsys):
    """The periodic last.pt of step 4 fails once (a disk full for a moment); the run's end saves
    the same step-4 state again, and that write must happen instead of counting as done."""
    out = tmp_path / "run"
    real_save = torch.save
    failed = []

    def failing_once(payload, handle, *args, **kwargs):
        if payload["kind"] == "last" and payload["counters"]["step"] == 4 and not failed:
            failed.append(4)
            raise OSError(28, "No space left on device")
        return real_save(payload, handle, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module.torch, "save", failing_once)
    results = run(tiny(corpus, "train.max_steps=4", "train.checkpoint_every_steps=2"), out)
    assert failed == [4] and results["steps"] == 4
    assert load_checkpoint(out / "last.pt")["counters"]["step"] == 4
    assert load_checkpoint(out / PREVIOUS)["counters"]["step"] == 2


def test_a_refused_write_warns_and_goes_on(corpus, tmp_path, monkeypatch, capsys):
    # As a folder made read-only under the run: the temp file cannot be created (root ignores chmod).
    real_mkstemp, calls = checkpoint_module.tempfile.mkstemp, []

    def refuse(*args, **kwargs):
        calls.append(1)
        if len(calls) <= 2:  # the saves at steps 1 and 2; the folder is writable again after
            raise PermissionError(13, "Permission denied")
        return real_mkstemp(*args, **kwargs)

    out = tmp_path / "run"
    monkeypatch.setattr(checkpoint_module.tempfile, "mkstemp", refuse)
    results = run(tiny(corpus, "train.max_steps=4", "train.checkpoint_every_steps=1"), out)
    assert results["steps"] == 4
    assert load_checkpoint(out / PREVIOUS)["counters"]["step"] == 3
    assert "(Permission denied); the previous last.pt is kept, training goes on" in capsys.readouterr().out


def choose_resume_file(resume: Path, take_previous: bool = False) -> Path:
    return resume_checkpoint(resume, take_previous)[0]


def damage(path: Path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_a_damaged_last_pt_offers_the_earlier_one(corpus, tmp_path):
    out = tmp_path / "run"
    run(tiny(corpus, "train.max_steps=4", "train.checkpoint_every_steps=2"), out)
    damage(out / "last.pt")
    with pytest.raises(UserError) as error:
        choose_resume_file(out)
    message = str(error.value)
    assert "last.pt is damaged" in message and "step 2" in message and "--resume-previous" in message
    assert "\n" not in message
    assert choose_resume_file(out, take_previous=True) == out / PREVIOUS
    result = CliRunner().invoke(app, ["train", "--resume", str(out), "--device", "cpu", "--no-progress"])
    assert result.exit_code == 1 and "--resume-previous" in result.output
    result = CliRunner().invoke(app, ["train", "--resume", str(out), "--resume-previous", "--max-steps", "6",
                                      "--device", "cpu", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert load_checkpoint(out / "last.pt")["counters"]["step"] == 6


def test_nothing_to_resume_says_so(corpus, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.toml").write_text("name = 'x'\n")  # what a run killed before its first save leaves
    result = CliRunner().invoke(app, ["train", "--resume", str(out), "--device", "cpu"])
    assert result.exit_code == 1
    assert f"nothing to resume in {out}" in result.output and f"--out {out}" in result.output
    assert "Traceback" not in result.output


def test_a_missing_last_pt_falls_back_to_the_earlier_one(tmp_path):
    # Where hard links are refused, a kill between the two renames leaves last.prev.pt alone.
    save_checkpoint(tmp_path / PREVIOUS, {"config": {}, "vocab": [], "model": {}})
    assert choose_resume_file(tmp_path) == tmp_path / PREVIOUS


def test_stop_signals_raise_with_their_number_and_wait_for_the_update():
    done = []
    with StopSignals(immediate=True):
        with pytest.raises(Interrupted) as error:
            with sigint_deferred():
                os.kill(os.getpid(), signal.SIGTERM)  # arrives in the middle of the "update"
                done.append("update finished")
    assert done == ["update finished"] and error.value.signum == signal.SIGTERM
    assert isinstance(error.value, KeyboardInterrupt)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler restored


def test_stop_signals_in_a_distributed_run_only_record():
    with StopSignals(immediate=False) as signals:
        os.kill(os.getpid(), signal.SIGHUP)
        with sigint_deferred():
            pass  # nothing raised: the trainer decides with the other ranks
        assert signals.pending == signal.SIGHUP


def test_sigterm_saves_the_exact_position(corpus, tmp_path, monkeypatch):
    import qrnn_lm.training.trainer as trainer_module

    real_step, calls = trainer_module.train_step, []

    def step(*args):
        calls.append(1)
        if len(calls) == 4:
            os.kill(os.getpid(), signal.SIGTERM)  # in the middle of step 4
        return real_step(*args)

    monkeypatch.setattr(trainer_module, "train_step", step)
    out = tmp_path / "run"
    with pytest.raises(Interrupted) as error:
        run(tiny(corpus, "train.max_steps=8"), out)
    assert error.value.signum == signal.SIGTERM
    assert load_checkpoint(out / "last.pt")["counters"]["step"] == 3  # the start of the interrupted step


def test_sigterm_while_the_stop_writes_last_pt_waits_for_the_write(corpus, tmp_path, monkeypatch):
    # A budget's stop validates, then writes last.pt; a signal then must neither cut the write
    # (torch.save turned the Interrupted into a RuntimeError and a traceback) nor lose the state.
    import qrnn_lm.training.checkpointer as checkpointer_module

    real_save = checkpointer_module.save_checkpoint

    def save(path, payload, **kwargs):
        if Path(path).name == "last.pt" and payload["counters"]["step"] == 8:
            os.kill(os.getpid(), signal.SIGTERM)  # the stop's write of last.pt
        return real_save(path, payload, **kwargs)

    monkeypatch.setattr(checkpointer_module, "save_checkpoint", save)
    out = tmp_path / "run"
    with pytest.raises(Interrupted) as error:
        run(tiny(corpus, "train.max_steps=8"), out)
    assert error.value.signum == signal.SIGTERM
    assert load_checkpoint(out / "last.pt")["counters"]["step"] == 8


def test_sigterm_during_a_periodic_write_of_last_pt_waits_for_the_write(corpus, tmp_path, monkeypatch):
    # Found by test_kills: a SIGTERM inside torch.save of a periodic last.pt became a RuntimeError
    # ("unexpected pos") and a traceback (exit 1) instead of the run's ordinary stop (exit 143).
    import qrnn_lm.training.checkpointer as checkpointer_module

    real_save = checkpointer_module.save_checkpoint

    def save(path, payload, **kwargs):
        if Path(path).name == "last.pt" and payload["counters"]["step"] == 4:
            os.kill(os.getpid(), signal.SIGTERM)  # the periodic write after step 4
        return real_save(path, payload, **kwargs)

    monkeypatch.setattr(checkpointer_module, "save_checkpoint", save)
    out = tmp_path / "run"
    with pytest.raises(Interrupted) as error:
        run(tiny(corpus, "train.max_steps=8", "train.checkpoint_every_steps=2"), out)
    assert error.value.signum == signal.SIGTERM
    assert load_checkpoint(out / "last.pt")["counters"]["step"] == 4
    assert not list(out.glob(".last.pt.*.tmp"))


def test_a_resume_through_the_command_line_reads_last_pt_once(corpus, tmp_path, monkeypatch):
    out = tmp_path / "run"
    run(tiny(corpus, "train.max_steps=3"), out)
    real_load, loaded = checkpoint_module.torch.load, []
    monkeypatch.setattr(checkpoint_module.torch, "load",
                        lambda path, *args, **kwargs: (loaded.append(Path(path).name), real_load(path, *args, **kwargs))[1])
    result = CliRunner().invoke(app, ["train", "--resume", str(out), "--max-steps", "5", "--device", "cpu", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert loaded.count("last.pt") == 1  # the command reads it; the trainer takes what it read
