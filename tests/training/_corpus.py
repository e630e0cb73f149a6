"""The small deterministic corpus the training tests share: 16 words, 90 / 12 / 12 lines."""

import random
from pathlib import Path

WORDS = "the a cat dog sat ran on under mat rug big small red and then it".split()


def write_corpus(folder: Path, seed: int = 0, words=WORDS) -> Path:
    """``train.txt``, ``valid.txt``, ``test.txt`` of random lines of ``words`` in ``folder``."""
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    for name, lines in (("train.txt", 90), ("valid.txt", 12), ("test.txt", 12)):
        text = "\n".join(" ".join(rng.choices(words, k=rng.randint(3, 9))) for _ in range(lines))
        (folder / name).write_text(text + "\n", encoding="utf-8")
    return folder
