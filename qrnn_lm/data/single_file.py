"""One text file as a dataset: split by lines into train/valid/test, deterministically.

``--data book.txt`` is split without shuffling: the first 90% of its lines train, the next 5%
validate, the last 5% test (each at least one line). The three files are written once into a folder
beside the file, ``.<name>.qrnn_lm_split-<sha256 prefix>/`` (in the user cache folder when that
folder is read-only), so the same file gives the same split and the token cache works as for any
folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from .checksums import file_sha256
from .token_cache import marked_writable, user_cache_dir
from .errors import DataError
from .registry import SPLIT_FILES
from .split_names import split_folder_name

FRACTIONS = (0.90, 0.05, 0.05)  # train, valid, test, by lines


def split_lines(lines: list[bytes]) -> tuple[list[bytes], list[bytes], list[bytes]]:
    """``(train, valid, test)`` lines: the last ``round(5%)`` (at least 1) test, the ones before
    them valid, the rest train."""
    valid_count = max(1, round(len(lines) * FRACTIONS[1]))
    test_count = max(1, round(len(lines) * FRACTIONS[2]))
    train_count = len(lines) - valid_count - test_count
    return lines[:train_count], lines[train_count : train_count + valid_count], lines[train_count + valid_count :]


def split_text_file(path: str | os.PathLike) -> Path:
    """The folder holding ``path``'s split (written when missing). Raises :class:`DataError` when a
    split would hold no text."""
    path = Path(path).expanduser()
    lines = path.read_bytes().splitlines(keepends=True)
    parts = split_lines(lines) if len(lines) >= 3 else None
    empty = None if parts is None else next((n for n, p in zip(SPLIT_FILES, parts) if not b"".join(p).strip()), None)
    if parts is None or empty is not None:
        what = f"the {empty} split would be empty" if empty else f"it has {len(lines)} line(s)"
        raise DataError(
            f"{path} cannot be split into train/valid/test by lines (90/5/5%): {what}; give it at least 3 "
            "lines with text in the last 10%, or pass a folder holding train.txt, valid.txt, test.txt"
        )
    name = split_folder_name(path, file_sha256(path))
    for base in ([path.parent] if marked_writable(path.parent) else []) + [user_cache_dir()]:
        folder = base / name
        if all((folder / file).is_file() for file in SPLIT_FILES):
            return folder
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for file, part in zip(SPLIT_FILES, parts):
                tmp = folder / f".{file}.tmp"
                tmp.write_bytes(b"".join(part))
                os.replace(tmp, folder / file)
            return folder
        except OSError:
            continue
    raise DataError(f"no writable folder for the split of {path}; set XDG_CACHE_HOME to a writable folder")


def prepare_data(name_or_path: str | os.PathLike, data_dir: str | os.PathLike | None = None, *,
                 progress: bool = True) -> Path:
    """``prepare_dataset`` that also takes one text file (split by :func:`split_text_file`)."""
    from .download import prepare_dataset

    if Path(str(name_or_path)).expanduser().is_file():
        return split_text_file(name_or_path)
    return prepare_dataset(name_or_path, data_dir, progress=progress)
