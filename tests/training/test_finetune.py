"""Finetune: a finished run's best weights continue into averaged SGD in a folder of their own."""

import json

import pytest
import torch

from qrnn_lm.config import UserError
from qrnn_lm.models.checkpoint_file import load_checkpoint
from qrnn_lm.training import train
from qrnn_lm.training.finetune import converged

from tests.training.test_trainer import assert_same_state, tiny


@pytest.fixture(scope="module")
def start(corpus, tmp_path_factory):
    """A finished one-epoch SGD run to finetune."""
    out = tmp_path_factory.mktemp("start")
    train(tiny(corpus, "train.epochs=1"), out, device="cpu", progress=False)
    return out


def finetune(corpus, start, out, *overrides, **kwargs):
    # nonmono large: the convergence stop does not end these short runs early
    config = tiny(corpus, "train.epochs=2", "train.nonmono=10", *overrides)
    return train(config, out, device="cpu", progress=False, init_from=start / "best.pt", **kwargs)


def test_finetune_starts_from_the_best_weights_in_averaged_sgd(corpus, start, tmp_path):
    results = finetune(corpus, start, tmp_path / "ft")
    first = load_checkpoint(start / "best.pt")
    record = json.loads((tmp_path / "ft" / "finetune.json").read_text())
    started = json.loads((start / "results.json").read_text())
    # the starting weights are scored as the starting run scored them
    assert record["start_test_loss"] == pytest.approx(started["test_loss"], rel=1e-6)
    assert record["start_val_loss"] == pytest.approx(started["best_val_loss"], rel=1e-6)
    last = load_checkpoint(tmp_path / "ft" / "last.pt")
    assert last["optimizer"]["name"] == "asgd" and results["optimizer"] == "asgd"
    assert last["counters"]["epoch"] == 3 and results["epochs_completed"] == 2
    ft = results["finetune"]
    assert ft["init_from"] == str(start / "best.pt")
    assert ft["test_ppl_change"] == pytest.approx(results["test_ppl"] - ft["start_test_ppl"])
    assert results["best_val_loss"] <= record["start_val_loss"]  # best.pt is the start or better
    assert json.loads((tmp_path / "ft" / "results.json").read_text())["finetune"] == ft
    assert any(not torch.equal(first["model"][k], last["model"][k]) for k in first["model"])


def test_a_finetune_resumes_like_any_run(corpus, start, tmp_path):
    whole = tmp_path / "whole"
    finetune(corpus, start, whole)
    part = tmp_path / "part"
    finetune(corpus, start, part, "train.max_steps=5")
    results = train(tiny(corpus, "train.epochs=2", "train.nonmono=10"), part, device="cpu", progress=False,
                    resume=part / "last.pt")
    assert_same_state(whole / "last.pt", part / "last.pt")
    assert "finetune" in results  # finetune.json marks the resumed run as a finetune


def test_converged_is_awds_finetune_stop():
    assert not converged([3.0], 1)
    assert not converged([3.0, 2.9, 2.8], 1)
    assert converged([3.0, 2.9, 3.1], 1)  # worse than the best but the last one
    assert not converged([3.0, 2.9, 3.1], 2)  # not enough history for nonmono 2


def test_finetune_refuses_another_model(corpus, start, tmp_path):
    with pytest.raises(UserError, match="model"):
        finetune(corpus, start, tmp_path / "ft", "model.hidden_size=30")


def test_the_finetune_stops_when_it_converges(corpus, start, tmp_path, monkeypatch):
    from qrnn_lm.training import trainer as trainer_module

    monkeypatch.setattr(trainer_module, "converged", lambda *args: True)
    results = finetune(corpus, start, tmp_path / "ft")
    assert results["status"] == "converged" and results["epochs_completed"] == 1


def test_the_finetune_command(corpus, start, tmp_path):
    from typer.testing import CliRunner

    from qrnn_lm.cli.commands import app

    runner = CliRunner()
    out = tmp_path / "ft"
    result = runner.invoke(app, ["finetune", str(start), "--epochs", "1", "--out", str(out), "--set", "train.nonmono=10",
                                 "--device", "cpu", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "finetune: valid ppl" in result.output and (out / "finetune.json").is_file()
    config = (out / "config.toml").read_text()
    assert 'name = "tiny-finetune"' in config and "nonmono = 10" in config and "epochs = 1" in config
    assert json.loads((out / "results.json").read_text())["finetune"]["init_from"] == str(start / "best.pt")
    result = runner.invoke(app, ["finetune", str(start), "--out", str(out), "--device", "cpu", "--no-progress"])
    assert result.exit_code == 1 and "already holds a run" in result.stderr
    result = runner.invoke(app, ["finetune", str(tmp_path / "missing.pt"), "--device", "cpu"])
    assert result.exit_code == 1 and result.stderr.startswith("error: ")


def test_finetune_on_another_corpus_keeps_the_checkpoints_vocabulary(corpus, start, tmp_path):
    """`finetune --data` as `train --data`: another corpus, read with the checkpoint's vocabulary
    (as eval reads foreign text); before, finetune had no --data and refused another vocabulary."""
    from typer.testing import CliRunner

    from qrnn_lm.cli.commands import app

    vocab = load_checkpoint(start / "best.pt")["vocab"]
    words = [word for word in vocab if not word.startswith("<")]

    def foreign(name, extra):
        folder = tmp_path / name
        folder.mkdir()
        for split, shift in (("train.txt", 0), ("valid.txt", 3), ("test.txt", 5)):  # other text, other order
            lines = [" ".join(words[(shift + 7 * i) % len(words):][:8] + extra) for i in range(40)]
            (folder / split).write_text("\n".join(lines) + "\n")
        return folder

    def finetune_on(folder):
        return CliRunner().invoke(app, ["finetune", str(start), "--data", str(folder), "--epochs", "1",
                                        "--out", str(tmp_path / f"ft-{folder.name}"), "--device", "cpu", "--no-progress"])

    folder = foreign("known", [])
    result = finetune_on(folder)
    assert result.exit_code == 0, (result.output, result.exception)
    out = tmp_path / "ft-known"
    assert load_checkpoint(out / "best.pt")["vocab"] == vocab  # the model's own vocabulary, not the text's order
    assert f'dataset = "{folder}"' in (out / "config.toml").read_text()
    if "<unk>" not in vocab:  # a word the model cannot read is a one-line error, not a traceback
        result = finetune_on(foreign("unseen", ["zebraword"]))
        assert result.exit_code == 1 and "zebraword" in result.stderr and len(result.stderr.splitlines()) == 1
