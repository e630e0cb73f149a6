"""Char, byte and subword models after training: eval's units, readable generation, the cache
pointer, old word checkpoints, and one-line refusals (CLI exit 1)."""

import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from qrnn_lm.cli import app
from qrnn_lm.config import UserError, load_config
from qrnn_lm.data import count_words
from qrnn_lm.inference.cache import CacheParams, evaluate_cache_checkpoint
from qrnn_lm.inference.evaluate import evaluate_checkpoint
from qrnn_lm.models.checkpoint_file import load_checkpoint, tokenizer_from_checkpoint
from qrnn_lm.training import train

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "tiny.toml"
runner = CliRunner()
LINES = ["Привет мир, как дела?", "你好世界，今天天气很好。", "hello 👋 world 🌍 again"]


@pytest.fixture(scope="module")
def book(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("text") / "book.txt"
    path.write_text("\n".join(LINES * 40) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def runs(book, tmp_path_factory) -> dict[str, Path]:
    """A few steps of a tiny model per tokenizer, on the single file (split 90/5/5)."""
    out = {}
    for kind in ("char", "byte", "subword"):
        config = load_config(TINY, [f'data.dataset="{book}"', f'data.tokenizer="{kind}"', "data.vocab_size=320",
                                    "train.max_steps=12"])
        out[kind] = tmp_path_factory.mktemp(kind) / "run"
        train(config, out[kind], device="cpu", progress=False)
    return out


@pytest.mark.parametrize("kind", ["char", "byte"])
def test_eval_reports_bits_per_character(runs, kind):
    result = evaluate_checkpoint(runs[kind] / "best.pt", device="cpu", progress=False)
    assert result["tokenizer"] == kind and "word_ppl" not in result
    assert result["bpc"] == pytest.approx(result["loss"] / math.log(2))
    cli = runner.invoke(app, ["eval", str(runs[kind]), "--device", "cpu", "--no-progress"])
    assert cli.exit_code == 0 and f"bpc {result['bpc']:.4f}" in cli.output


def test_eval_reports_per_word_perplexity_for_subwords(runs):
    result = evaluate_checkpoint(runs["subword"] / "best.pt", device="cpu", progress=False)
    book = Path(load_checkpoint(runs["subword"] / "best.pt")["config"]["data"]["dataset"])
    test_lines = (LINES * 40)[-6:]  # 5% of the 120 lines
    words = sum(len(line.split()) + 1 for line in test_lines)
    assert count_words(next(book.parent.glob(".book.txt.qrnn_lm_split-*")) / "test.txt") == words
    assert result["words"] == words and "bpc" not in result
    tokens = result["tokens"] + 1  # batch size 1: every token but the first is scored
    assert tokens > words  # Chinese has no spaces: many pieces per "word"
    assert result["word_ppl"] == pytest.approx(math.exp(result["loss"] * tokens / words))


@pytest.mark.parametrize("kind", ["char", "byte", "subword"])
def test_generate_prints_readable_text(runs, kind):
    result = runner.invoke(app, ["generate", str(runs[kind]), "--prompt", "Привет 你好", "-n", "60", "--seed", "3",
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Привет 你好")
    assert "<eos>" not in result.output and "<0x" not in result.output and "\u2581" not in result.output
    if kind == "char":  # decoded characters of its alphabet (or U+FFFD for <unk>), nothing else
        assert set(result.output) <= set("\n".join(LINES) + "\n\ufffd"), result.output
    fresh = runner.invoke(app, ["generate", str(runs[kind]), "-n", "30", "--seed", "1", "--device", "cpu"])
    assert fresh.exit_code == 0, fresh.output


def test_cache_pointer_reads_the_checkpoints_tokenizer(runs):
    result = evaluate_cache_checkpoint(runs["char"] / "best.pt", params=CacheParams(window=20), device="cpu",
                                       progress=False)
    plain = evaluate_checkpoint(runs["char"] / "best.pt", device="cpu", progress=False)
    assert result["loss"] == pytest.approx(plain["loss"], rel=1e-5)


def test_checkpoint_holds_the_tokenizer_as_plain_data(runs):
    payload = torch.load(runs["subword"] / "best.pt", weights_only=True)
    assert payload["tokenizer"]["kind"] == "subword" and payload["tokenizer"]["model"].dtype == torch.uint8
    old = {key: value for key, value in payload.items() if key != "tokenizer"}  # written before tokenizers
    assert tokenizer_from_checkpoint(old).kind == "word"


def test_a_char_model_refuses_ptb_char_files_in_one_line(runs, tmp_path):
    spaced = tmp_path / "ptb-char-like"
    spaced.mkdir()
    for name in ("train.txt", "valid.txt", "test.txt"):
        (spaced / name).write_text(" h e l l o _ w o r l d\n" * 5, encoding="utf-8")
    with pytest.raises(UserError, match=r"character tokenizer does not match .*spaced characters \(PTB-char\); evaluate it on"):
        evaluate_checkpoint(runs["char"] / "best.pt", data=str(spaced), device="cpu", progress=False)
    other = tmp_path / "greek"
    other.mkdir()
    for name in ("train.txt", "valid.txt", "test.txt"):
        (other / name).write_text("Ωμέγα αβγδ\n" * 5, encoding="utf-8")
    result = runner.invoke(app, ["eval", str(runs["char"]), "--data", str(other), "--device", "cpu", "--no-progress"])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert "outside the model's alphabet" in result.output and "--data" in result.output


def test_cli_one_line_errors(tmp_path):
    result = runner.invoke(app, ["train", "--data", str(tmp_path), "--set", 'data.tokenizer="wordpiece"'])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert "data.tokenizer must be one of 'word', 'char', 'byte', 'subword'" in result.output
    latin = tmp_path / "latin.txt"
    latin.write_bytes(("ok\n" * 20).encode() + b"caf\xe9\n" + b"more\n" * 3)  # the bad byte: offset 63
    result = runner.invoke(app, ["train", "--data", str(latin), "--config", str(TINY), "--set", 'data.tokenizer="char"',
                                 "--set", "train.max_steps=1", "--out", str(tmp_path / "run"), "--device", "cpu", "--no-progress"])
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert f"{latin} is not UTF-8 text" in result.output and "byte offset 63)" in result.output
    assert "data.tokenizer=byte" in result.output


def test_a_dataset_registered_for_another_tokenizer_is_refused(runs, book, monkeypatch):
    """Where the registry names a dataset's tokenizer (enwik8: bytes, say), a model of another kind
    is refused before anything is read or downloaded."""
    from types import SimpleNamespace

    from qrnn_lm.inference import checkpoint_data

    monkeypatch.setattr(checkpoint_data, "DATASETS", {"enwik8": SimpleNamespace(tokenizer="byte")})
    with pytest.raises(UserError, match=r"character tokenizer does not match enwik8: that dataset is read as byte "
                                        r"tokens; evaluate it on data like its own \(--data .*book.txt\)"):
        evaluate_checkpoint(runs["char"] / "best.pt", data="enwik8", device="cpu", progress=False)
    evaluate_checkpoint(runs["byte"] / "best.pt", data=str(book), device="cpu", progress=False)  # its own data
