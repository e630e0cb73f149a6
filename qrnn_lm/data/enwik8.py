"""enwik8's standard split, written as salesforce/awd-lstm-lm's ``data/enwik8/prep_enwik8.py`` does.

The offsets are awd's, counted from the end: test = the last ``num_test_bytes`` bytes (5,000,000),
valid = the 5,000,000 before them, train = all the rest; enwik8 holds exactly 10^8 bytes, so that is
the standard 90M / 5M / 5M split of its first 100M bytes.

The format is awd's too: every byte written as its decimal value, separated by single spaces, and
the newline byte (10) written as a real line break, e.g. bytes ``<p>\\nA`` -> ``60 112 62 \\n 65``. The
whitespace ("word") tokenizer then gives exactly awd's tokens: one per byte, the newline byte as each
line's ``<eos>`` (plus one ``<eos>`` for the last line, as awd's ``data.py`` counts it), and
bits per character are the mean loss / ln 2 per token. Kept over raw bytes because a user's own
awd-lstm-lm ``data/enwik8`` folder can be placed here as it is, and because the text is plain ASCII
whatever the split boundaries cut.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

SPLITS = ("train.txt", "valid.txt", "test.txt")
_BLOCK = 1 << 20  # bytes converted at a time (about 4 MiB of text)
# Each byte value's token; the newline byte stays a line break, as in awd's script.
_TOKENS = [str(value).encode() for value in range(256)]
_TOKENS[10] = b"\n"


def awd_offsets(num_bytes: int, num_test_bytes: int) -> dict[str, tuple[int, int]]:
    """[start, stop) of each split in a file of ``num_bytes`` bytes: awd's ``data[:-2n]``,
    ``data[-2n:-n]``, ``data[-n:]`` with ``n = num_test_bytes``.

    Raises ``ValueError`` when the file has no byte left for train.
    """
    if not 0 < 2 * num_test_bytes < num_bytes:
        raise ValueError(f"a file of {num_bytes:,} bytes has no training part after 2 x {num_test_bytes:,} bytes")
    return {
        "train.txt": (0, num_bytes - 2 * num_test_bytes),
        "valid.txt": (num_bytes - 2 * num_test_bytes, num_bytes - num_test_bytes),
        "test.txt": (num_bytes - num_test_bytes, num_bytes),
    }


def as_awd_text(data: bytes) -> bytes:
    """awd's text for ``data``: ``' '.join(str(c) if c != 10 else '\\n' for c in data)``, ASCII."""
    return b" ".join(map(_TOKENS.__getitem__, data))


def split_like_awd(source: Path, folder: Path, num_test_bytes: int = 5_000_000) -> dict[str, tuple[Path, str]]:
    """Write the three splits of the file ``source`` into temporary files in ``folder``.

    Returns {``train.txt``/``valid.txt``/``test.txt``: (temporary file, its sha256)}; the caller
    moves or deletes them (on an error here, the ones made so far are deleted). ``num_test_bytes``
    scales the split (5,000,000 for enwik8; small in tests).
    """
    data = source.read_bytes()  # 100 MB for enwik8
    made: dict[str, tuple[Path, str]] = {}
    try:
        for name, (start, stop) in awd_offsets(len(data), num_test_bytes).items():
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".part")
            made[name] = (Path(tmp), "")
            digest = hashlib.sha256()
            with open(fd, "wb") as out:
                for offset in range(start, stop, _BLOCK):
                    text = as_awd_text(data[offset : min(offset + _BLOCK, stop)])
                    if offset > start:
                        text = b" " + text  # the separator between two blocks' tokens
                    digest.update(text)
                    out.write(text)
            made[name] = (Path(tmp), digest.hexdigest())
    except BaseException:
        for tmp, _ in made.values():
            tmp.unlink(missing_ok=True)
        raise
    return made
