"""Fixtures of the tune tests: a small learnable corpus (the space file builder is in tune_spaces.py)."""

from pathlib import Path

import pytest

WORDS = "the a cat dog sat ran on under mat rug big small red and then it".split()


def write_corpus(folder: Path) -> Path:
    """Lines where each word follows the one before it in ``WORDS``: easy to learn, so a good
    learning rate beats a bad one by far after one epoch."""
    folder.mkdir(parents=True)
    for name, lines in (("train.txt", 90), ("valid.txt", 12), ("test.txt", 12)):
        text = "\n".join(" ".join(WORDS[(i * 5 + k) % len(WORDS)] for k in range(6)) for i in range(lines))
        (folder / name).write_text(text + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("data") / "corpus")
