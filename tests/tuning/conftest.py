"""Fixtures of the tune tests: a small learnable corpus and a space file builder."""

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
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


def write_space(folder: Path, corpus: Path, body: str, max_steps: int = 30) -> Path:
    """``folder/space.toml`` on configs/tiny.toml (copied beside it) with ``body`` after [fixed]."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "configs" / "tiny.toml", folder / "tiny.toml")
    path = folder / "space.toml"
    path.write_text(f'base = "tiny.toml"\n\n[fixed]\ndata.dataset = "{corpus}"\ntrain.max_steps = {max_steps}\n'
                    f"train.epochs = 100\ntrain.log_interval = 5\n\n{body}", encoding="utf-8")
    return path
