"""End to end through the command line: train configs/tiny.toml for a few steps on a generated
corpus, then eval and generate from its checkpoint; bad data gives one line and exit code 1.

The run is trained once per module (a few seconds on 2 CPU cores) and shared by the tests.
"""

import json
import math
import random
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qrnn_lm.cli import app
from qrnn_lm.config import load_config

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.toml"
STEPS = 6
WORDS = "the a cat dog sat ran on under mat rug big small red blue and then it was N <unk>".split()  # PTB-like

runner = CliRunner()


def write_corpus(folder: Path, seed: int = 0, words=WORDS) -> Path:
    """train/valid/test.txt of random short sentences over a small vocabulary."""
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    for name, lines in (("train.txt", 400), ("valid.txt", 40), ("test.txt", 40)):
        text = "\n".join(" ".join(rng.choices(words, k=rng.randint(3, 12))) for _ in range(lines))
        (folder / name).write_text(text + "\n", encoding="utf-8")
    return folder


def invoke(*args):
    return runner.invoke(app, [str(arg) for arg in args])


def assert_one_line_error(result, *fragments):
    assert result.exit_code == 1, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), f"uncaught {result.exception!r}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Train tiny.toml for STEPS steps; returns (run folder, corpus folder, train result)."""
    root = tmp_path_factory.mktemp("e2e")
    corpus = write_corpus(root / "corpus")
    out = root / "run"
    result = invoke("train", "--data", corpus, "--config", TINY, "--out", out,
                    "--max-steps", STEPS, "--device", "cpu", "--no-progress")
    assert result.exit_code == 0, (result.output, result.exception)
    return out, corpus, result


def test_train_writes_checkpoints_config_and_results(run):
    out, corpus, result = run
    for name in ("last.pt", "best.pt", "config.toml", "results.json"):
        assert (out / name).is_file(), name
    results = json.loads((out / "results.json").read_text())
    assert results["steps"] == STEPS and results["status"] == "max_steps"
    assert math.isfinite(results["test_ppl"]) and results["test_ppl"] > 1
    saved = load_config(out / "config.toml")
    assert saved.data.dataset == str(corpus) and saved.train.max_steps == STEPS
    assert f"test ppl {results['test_ppl']:.2f}" in result.stdout


def test_without_progress_bars_the_run_still_prints_its_console_lines(run):
    """--no-progress hides the bars only: a log file still gets the max_steps validation line and
    the test line, each printed by the run itself (before the command's summary line)."""
    out, _, result = run
    results = json.loads((out / "results.json").read_text())
    lines = result.stdout.splitlines()
    assert any(line.startswith(f"stopped at step {STEPS} (max_steps): valid ppl") for line in lines), lines
    assert any(line.startswith("test loss") and f"test ppl {results['test_ppl']:.2f}" in line for line in lines), lines


def _parse_eval(stdout: str) -> tuple[float, float, int]:
    match = re.search(r"loss (\S+)\s+ppl (\S+)\s+\(([\d,]+) tokens\)", stdout)
    assert match, stdout
    return float(match[1]), float(match[2]), int(match[3].replace(",", ""))


@pytest.mark.parametrize("split", ["valid", "test"])
def test_eval_reproduces_the_numbers_of_training(run, split):
    out, _, _ = run
    results = json.loads((out / "results.json").read_text())
    config = load_config(out / "config.toml")
    batch_size = config.data.eval_batch_size if split == "valid" else config.data.test_batch_size
    result = invoke("eval", out / "best.pt", "--split", split, "--batch-size", batch_size, "--device", "cpu", "--no-progress")
    assert result.exit_code == 0, (result.output, result.exception)
    loss, ppl, tokens = _parse_eval(result.stdout)
    expected = results["best_val_loss"] if split == "valid" else results["test_loss"]
    assert loss == pytest.approx(expected, abs=1e-4)
    assert ppl == pytest.approx(math.exp(loss), rel=1e-3)
    if split == "test":
        assert tokens == results["test_tokens"]


def test_eval_of_a_run_folder_uses_its_best_checkpoint(run):
    out, _, _ = run
    by_file = invoke("eval", out / "best.pt", "--split", "valid", "--no-progress")
    by_folder = invoke("eval", out, "--split", "valid", "--no-progress")
    assert by_file.exit_code == by_folder.exit_code == 0
    assert by_file.stdout == by_folder.stdout


def test_generate_needs_no_data_and_is_reproducible_by_seed(run, tmp_path):
    out, corpus, _ = run
    hidden = tmp_path / "moved"
    shutil.move(corpus, hidden)  # generation must not read the corpus
    try:
        args = ["generate", out / "best.pt", "--prompt", "the cat", "--tokens", 30, "--device", "cpu"]
        first = invoke(*args, "--seed", 1)
        again = invoke(*args, "--seed", 1)
        other = invoke(*args, "--seed", 2)
    finally:
        shutil.move(hidden, corpus)
    assert first.exit_code == again.exit_code == other.exit_code == 0, first.output
    assert first.stdout == again.stdout != other.stdout
    assert first.stdout.startswith("the cat")
    words = first.stdout.split()
    # Each <eos> prints as a newline; the CLI ends the output with one more unless <eos> came last.
    assert len(words) - 2 + first.stdout.count("\n") in (30, 31)
    assert set(words) <= set(WORDS)
    assert first.stderr == ""


@pytest.fixture(scope="module")
def lstm_run(tmp_path_factory):
    """tiny.toml with AWD-LSTM layers (its zoneout, a QRNN setting, back to 0) for STEPS steps."""
    root = tmp_path_factory.mktemp("e2e-lstm")
    corpus = write_corpus(root / "corpus")
    out = root / "run"
    result = invoke("train", "--data", corpus, "--config", TINY, "--out", out, "--set", 'model.rnn="lstm"',
                    "--set", "model.zoneout=0", "--max-steps", STEPS, "--device", "cpu", "--no-progress")
    assert result.exit_code == 0, (result.output, result.exception)
    return out, corpus


def test_an_lstm_run_evals_and_generates_from_its_checkpoint_alone(lstm_run, tmp_path):
    out, corpus = lstm_run
    assert load_config(out / "config.toml").model.rnn == "lstm"
    results = json.loads((out / "results.json").read_text())
    result = invoke("eval", out / "best.pt", "--split", "test", "--device", "cpu", "--no-progress")
    assert result.exit_code == 0, (result.output, result.exception)
    loss, _, tokens = _parse_eval(result.stdout)
    assert loss == pytest.approx(results["test_loss"], abs=1e-4) and tokens == results["test_tokens"]
    hidden = tmp_path / "moved"
    shutil.move(corpus, hidden)  # generation reads the checkpoint only
    try:
        first, again = (invoke("generate", out, "--prompt", "the cat", "--tokens", 12, "--seed", 3) for _ in range(2))
    finally:
        shutil.move(hidden, corpus)
    assert first.exit_code == 0, (first.output, first.exception)
    assert first.stdout == again.stdout and first.stdout.startswith("the cat")
    assert set(first.stdout.split()) <= set(WORDS)


def test_an_lstm_with_a_qrnn_setting_is_one_error_line(tmp_path):
    result = invoke("train", "--data", tmp_path, "--config", TINY, "--set", "model.rnn=lstm", "--device", "cpu")
    assert_one_line_error(result, "model.zoneout = 0.1 is a QRNN setting", 'model.rnn="qrnn"')


def test_generate_streams_each_token_as_it_is_sampled(run, monkeypatch):
    """After each token the sampler yields, that token is already flushed to stdout."""
    import sys

    import qrnn_lm.inference.generate

    real_generate, flushed = qrnn_lm.inference.generate.generate, []

    def watched(*args, **kwargs):
        for token in real_generate(*args, **kwargs):
            yield token
            flushed.append((token, sys.stdout.buffer.getvalue().decode()))  # bytes written so far

    monkeypatch.setattr(qrnn_lm.inference.generate, "generate", watched)
    out, _, _ = run
    result = invoke("generate", out, "--prompt", "the", "--tokens", 8, "--seed", 0)
    assert result.exit_code == 0, result.output
    assert len(flushed) == 8
    for token, written in flushed:
        assert written.endswith("\n" if token == "<eos>" else token), (token, written)


def test_eval_on_other_data(run, tmp_path):
    out, _, _ = run
    other = write_corpus(tmp_path / "other", seed=5, words=WORDS[:5] + ["zebra"])  # zebra reads as <unk>
    result = invoke("eval", out, "--data", other, "--split", "valid", "--no-progress")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"{other} valid: loss")
    assert _parse_eval(result.stdout)[2] == sum(len(line.split()) + 1 for line in (other / "valid.txt").open()) - 1


def test_generate_without_prompt_and_with_filters(run):
    out, _, _ = run
    result = invoke("generate", out, "--tokens", 15, "--top-k", 3, "--top-p", 0.9, "--temperature", 0.7, "--seed", 0)
    assert result.exit_code == 0, result.output
    assert 1 <= len(result.stdout.split()) <= 15 and result.stdout.endswith("\n")


def test_generate_warns_about_unknown_prompt_words(run):
    out, _, _ = run
    result = invoke("generate", out, "--prompt", "the zebra sat", "--tokens", 3, "--seed", 0)
    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == "warning: not in the vocabulary, read as <unk>: zebra"
    assert result.stdout.startswith("the zebra sat")


def test_empty_prompt_is_a_one_line_error(run):
    out, _, _ = run
    assert_one_line_error(invoke("generate", out, "--prompt", "  "), "empty after tokenisation")


def test_resume_continues_to_a_higher_step_limit(run, tmp_path):
    out, _, _ = run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    result = invoke("train", "--resume", copy, "--max-steps", STEPS + 2, "--device", "cpu", "--no-progress")
    assert result.exit_code == 0, (result.output, result.exception)
    assert json.loads((copy / "results.json").read_text())["steps"] == STEPS + 2


def test_resume_refuses_a_different_vocabulary(run, tmp_path):
    out, _, _ = run
    other = write_corpus(tmp_path / "other", words=["x", "y", "z"])
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    result = invoke("train", "--resume", copy, "--data", other, "--device", "cpu", "--no-progress")
    assert_one_line_error(result)


def test_a_fresh_run_refuses_a_used_folder(run):
    out, corpus, _ = run
    result = invoke("train", "--data", corpus, "--config", TINY, "--out", out, "--device", "cpu", "--no-progress")
    assert_one_line_error(result, "last.pt")


def _missing_file(folder: Path):
    (folder / "valid.txt").unlink()


def _empty(folder: Path):
    (folder / "train.txt").write_text("")


def _latin1(folder: Path):
    (folder / "train.txt").write_bytes("the caf\xe9 sat\n".encode("latin-1"))


@pytest.mark.parametrize(
    "damage, fragment",
    [(_missing_file, "valid.txt"), (_empty, "train.txt"), (_latin1, "UTF-8")],
    ids=["missing-file", "empty", "not-utf8"],
)
def test_bad_data_is_a_one_line_error(tmp_path, damage, fragment):
    corpus = write_corpus(tmp_path / "corpus")
    damage(corpus)
    result = invoke("train", "--data", corpus, "--config", TINY, "--out", tmp_path / "run",
                    "--max-steps", 1, "--device", "cpu", "--no-progress")
    assert_one_line_error(result, fragment)


def test_unknown_named_dataset_and_missing_folder(tmp_path):
    assert_one_line_error(invoke("train", "--data", "wikitext-3", "--config", TINY), "wikitext-3")
    assert_one_line_error(invoke("train", "--data", tmp_path / "nowhere", "--config", TINY), "nowhere")
