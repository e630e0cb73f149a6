"""A training run reports its text unit: bits per character for a char run, per-word perplexity for
a subword run (console, results.json, metrics.csv, TensorBoard), each equal to the hand computation
from the reported losses; a word run's reports are as before (no new keys, no new column)."""

import contextlib
import io
import math
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from _metrics_rows import read_rows
from qrnn_lm.config import load_config
from qrnn_lm.inference.evaluate import evaluate_checkpoint
from qrnn_lm.training import train
from qrnn_lm.training.metrics import COLUMNS, HEADER, MetricsCsv
from qrnn_lm.training.state import Counters

TINY = Path(__file__).resolve().parents[2] / "configs" / "tiny.toml"
LINES = ["Привет мир, как дела?", "你好世界，今天天气很好。", "hello 👋 world 🌍 again"]
BOOK = [LINES[i % 3] + " ok" * (i % 7) for i in range(120)]  # valid and test differ (in words and in tokens)
UNIT_KEYS = {"best_val_bpc", "test_bpc", "best_val_word_ppl", "test_word_ppl", "test_words"}


@pytest.fixture(scope="module")
def runs(corpus, tmp_path_factory) -> dict[str, tuple[Path, dict, str]]:
    """``{kind: (run folder, results, console output)}``: a few steps of a tiny model per tokenizer
    (char and subword on one file, split 90/5/5 by lines; word on the shared corpus)."""
    book = tmp_path_factory.mktemp("text") / "book.txt"
    book.write_text("\n".join(BOOK) + "\n", encoding="utf-8")
    out = {}
    for kind, data in (("char", book), ("subword", book), ("word", corpus)):
        config = load_config(TINY, [f'data.dataset="{data}"', f'data.tokenizer="{kind}"', "data.vocab_size=320",
                                    "train.max_steps=20"])  # word: a validation at the epoch's end (17) and one at the stop
        folder = tmp_path_factory.mktemp(kind) / "run"
        console = io.StringIO()
        with contextlib.redirect_stdout(console):
            results = train(config, folder, device="cpu", progress=False)
        out[kind] = folder, results, console.getvalue()
    return out


def scalars(folder: Path) -> dict[str, list[float]]:
    events = EventAccumulator(str(folder / "tb"))
    events.Reload()
    return {tag: [event.value for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_a_char_run_reports_bits_per_character(runs):
    folder, results, console = runs["char"]
    bpc = results["best_val_loss"] / math.log(2)
    assert results["best_val_bpc"] == pytest.approx(bpc, rel=1e-12)
    assert results["test_bpc"] == pytest.approx(results["test_loss"] / math.log(2), rel=1e-12)
    assert not (UNIT_KEYS - {"best_val_bpc", "test_bpc"}) & set(results)
    path = folder / "metrics.csv"
    assert path.read_text().splitlines()[0] == HEADER + ",valid_bpc"
    rows = read_rows(path)
    valid = [row for row in rows if row["valid_ppl"]]
    assert valid and all(row["valid_bpc"] == "" for row in rows if row["train_loss"])
    for row in valid:  # each validation's bpc is log2 of its perplexity
        assert float(row["valid_bpc"]) == pytest.approx(math.log2(float(row["valid_ppl"])), rel=1e-5)
    assert min(float(row["valid_bpc"]) for row in valid) == pytest.approx(bpc, rel=1e-5)
    tags = scalars(folder)
    assert [pytest.approx(v, rel=1e-5) for v in tags["val/bpc"]] == [math.log2(float(r["valid_ppl"])) for r in valid]
    assert tags["test/bpc"] == [pytest.approx(results["test_bpc"], rel=1e-6)]
    assert "val/word_ppl" not in tags
    assert f"| test bpc {results['test_bpc']:.4f}" in console and "valid bpc " in console


def test_a_subword_run_reports_perplexity_per_word(runs):
    folder, results, console = runs["subword"]
    test_words = sum(len(line.split()) + 1 for line in BOOK[-6:])  # the last 5% of the 120 lines
    valid_words = sum(len(line.split()) + 1 for line in BOOK[-12:-6])
    assert results["test_words"] == test_words
    test_tokens = results["test_tokens"] + 1  # test batch size 1: every token but the first is scored
    assert test_tokens > test_words  # Chinese has no spaces: many pieces per word
    assert results["test_word_ppl"] == pytest.approx(math.exp(results["test_loss"] * test_tokens / test_words), rel=1e-9)
    evaluated = evaluate_checkpoint(folder / "best.pt", device="cpu", progress=False)  # eval's own count and formula
    assert results["test_word_ppl"] == pytest.approx(evaluated["word_ppl"], rel=1e-4)
    valid_tokens = evaluate_checkpoint(folder / "best.pt", split="valid", device="cpu", progress=False)["tokens"] + 1
    best = math.exp(results["best_val_loss"] * valid_tokens / valid_words)
    assert results["best_val_word_ppl"] == pytest.approx(best, rel=1e-9)
    assert not (UNIT_KEYS - {"best_val_word_ppl", "test_word_ppl", "test_words"}) & set(results)
    path = folder / "metrics.csv"
    assert path.read_text().splitlines()[0] == HEADER + ",valid_word_ppl"
    valid = [row for row in read_rows(path) if row["valid_ppl"]]
    assert min(float(row["valid_word_ppl"]) for row in valid) == pytest.approx(best, rel=1e-5)
    tags = scalars(folder)
    assert tags["test/word_ppl"] == [pytest.approx(results["test_word_ppl"], rel=1e-6)] and "val/bpc" not in tags
    assert len(tags["val/word_ppl"]) == len(valid)
    assert f"| test word ppl {results['test_word_ppl']:.2f}" in console


def test_a_word_run_reports_as_before(runs):
    folder, results, console = runs["word"]
    assert not UNIT_KEYS & set(results)
    assert (folder / "metrics.csv").read_text().splitlines()[0] == HEADER
    assert tuple(read_rows(folder / "metrics.csv")[0]) == COLUMNS
    assert not {"val/bpc", "val/word_ppl", "test/bpc", "test/word_ppl"} & set(scalars(folder))
    assert " bpc " not in console and "word ppl" not in console


def test_resuming_a_file_written_before_the_unit_column_keeps_its_rows(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text(f"{HEADER}\n5,1,200,1.000,2.5,,5\n6,1,240,1.200,,12.5,5\n7,1,280,1.400,2.4,,5\n")
    csv = MetricsCsv(path, 6, "bpc")  # the checkpoint was at step 6
    csv.row(Counters(step=7), 2.0, 5.0, train_loss=2.0)
    csv.row(Counters(step=7), 2.5, 5.0, valid_ppl=8.0, valid_unit=3.0)
    csv.close()
    assert path.read_text() == (f"{HEADER},valid_bpc\n5,1,200,1.000,2.5,,5,\n6,1,240,1.200,,12.5,5,\n"
                                "7,1,0,2.000,2,,5,\n7,1,0,2.500,,8,5,3\n")


def test_the_cli_summary_line_names_the_unit(runs):
    from qrnn_lm.cli.train import _format_results

    folder, results, _ = runs["char"]
    line = _format_results(results, folder)
    assert f"best valid bpc {results['best_val_bpc']:.4f}, test bpc {results['test_bpc']:.4f}" in line
    folder, results, _ = runs["subword"]
    assert f"test word ppl {results['test_word_ppl']:.2f};" in _format_results(results, folder)
    assert "bpc" not in _format_results(runs["word"][1], folder)
