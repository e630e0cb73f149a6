"""Where the folder of a split text file lives, and how a place in a split maps back to the file.

A single file ``book.txt`` is split into ``.book.txt.qrnn_lm_split-<sha256 prefix>/`` beside it
(:mod:`.single_file`): train.txt, valid.txt and test.txt are its lines in order, so a byte offset
in a split is the offset in the original plus the sizes of the splits before it.
"""

from __future__ import annotations

from pathlib import Path

from .registry import SPLIT_FILES

SPLIT_MARK = ".qrnn_lm_split-"


def split_folder_name(source: Path, digest: str) -> str:
    return f".{source.name}{SPLIT_MARK}{digest[:16]}"


def original_location(path: Path, offset: int) -> tuple[Path, int]:
    """``(file, offset)`` in the user's own file for ``offset`` in a split file; unchanged for
    any other file."""
    path = Path(path)
    folder = path.parent.name
    if SPLIT_MARK not in folder or not folder.startswith(".") or path.name not in SPLIT_FILES:
        return path, offset
    before = SPLIT_FILES[: SPLIT_FILES.index(path.name)]
    offset += sum((path.parent / name).stat().st_size for name in before)
    return path.parent.parent / folder[1 : folder.index(SPLIT_MARK)], offset
