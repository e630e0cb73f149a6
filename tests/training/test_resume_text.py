"""Char and subword runs on one text file resume bit for bit (the tokenizer is refitted or read
from the cache, and must give the same ids), and resuming with another tokenizer is refused."""

from pathlib import Path

import pytest
import torch

from qrnn_lm.config import UserError, load_config
from qrnn_lm.models.checkpoint_file import load_checkpoint
from qrnn_lm.training import train

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "tiny.toml"
LINES = ["Привет мир, как дела?", "你好世界，今天天气很好。", "hello 👋 world 🌍 again"]


def tiny(book: Path, tokenizer: str, steps: int):
    return load_config(TINY, [f'data.dataset="{book}"', f'data.tokenizer="{tokenizer}"', "data.vocab_size=320",
                              f"train.max_steps={steps}"])


@pytest.mark.parametrize("tokenizer", ["char", "subword"])
def test_stop_and_resume_equals_an_uninterrupted_run(tmp_path, tokenizer):
    book = tmp_path / "book.txt"
    book.write_text("\n".join(LINES * 40) + "\n", encoding="utf-8")
    train(tiny(book, tokenizer, 16), tmp_path / "whole", device="cpu", progress=False)
    train(tiny(book, tokenizer, 7), tmp_path / "parts", device="cpu", progress=False)
    for cache in book.parent.glob(".book.txt.qrnn_lm_split-*/.qrnn_lm_cache-*.pt"):
        cache.unlink()  # the resumed run fits its tokenizer again
    train(tiny(book, tokenizer, 16), tmp_path / "parts", device="cpu", progress=False, resume=tmp_path / "parts")
    whole, parts = load_checkpoint(tmp_path / "whole" / "last.pt"), load_checkpoint(tmp_path / "parts" / "last.pt")
    assert parts["counters"] == whole["counters"]
    for name, tensor in whole["model"].items():
        assert torch.equal(tensor, parts["model"][name]), name
    assert parts["vocab"] == whole["vocab"]
    with pytest.raises(UserError, match="other data"):
        train(tiny(book, "byte", 20), tmp_path / "parts", device="cpu", progress=False, resume=tmp_path / "parts")
