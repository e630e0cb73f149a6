"""Build Mikolov's PTB-char layout from the word-level PTB files, for measuring without the archive.

Mikolov's ``ptb.char.{train,valid,test}.txt`` (in simple-examples.tgz, which ``--data ptb-char``
downloads) are the word-level ``ptb.*.txt`` written one character per space-separated symbol with
``_`` between words, ``<unk>`` spelled out, one sentence per line: the line `` aer banknote`` becomes
``a e r _ b a n k n o t e``. This script writes that layout from the word files, for a machine that
has the word files but not the archive (the project's CPU measurements of the char recipe use it).

    python scripts/ptb_char_from_words.py WORD_DIR OUT_DIR   # WORD_DIR holds train.txt valid.txt test.txt
"""

import sys
from pathlib import Path


def to_ptb_char(line: str) -> str:
    """One word-level PTB line -> its PTB-char line (without the newline)."""
    return " _ ".join(" ".join(word) for word in line.split())


def convert(word_dir: Path, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for split in ("train", "valid", "test"):
        lines = (word_dir / f"{split}.txt").read_text(encoding="utf-8").splitlines()
        text = "".join(to_ptb_char(line) + "\n" for line in lines)
        (out_dir / f"{split}.txt").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python scripts/ptb_char_from_words.py WORD_DIR OUT_DIR")
    convert(Path(sys.argv[1]), Path(sys.argv[2]))
