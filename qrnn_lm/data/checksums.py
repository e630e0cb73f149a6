"""The sha256 of data files, hashed once and remembered by size and modification time.

A folder's digests live in ``<folder>/.qrnn_lm_sha256.json`` ({file name: {"size", "mtime_ns",
"sha256"}}), or under ``$XDG_CACHE_HOME/qrnn_lm/sha256/`` when the folder is read-only. A file whose
size or mtime changed is hashed again. The record is a convenience: unreadable or unwritable, it is
ignored (never an error), and the file is simply hashed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

RECORD_NAME = ".qrnn_lm_sha256.json"


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cached_sha256(path: Path) -> str:
    """The sha256 of ``path``, from the folder's record when its size and mtime still match."""
    stat = path.stat()
    entry = _read(path.parent).get(path.name)
    if isinstance(entry, dict) and entry.get("size") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns:
        return str(entry.get("sha256"))
    digest = file_sha256(path)
    record_sha256(path, digest)
    return digest


def record_sha256(path: Path, digest: str) -> None:
    """Remember ``digest`` as the sha256 of ``path`` as it is now (size, mtime)."""
    stat = path.stat()
    for record in _record_paths(path.parent):
        entries = _read(path.parent)
        entries[path.name] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
        if _write(record, entries):
            return


def _record_paths(folder: Path) -> list[Path]:
    """Where the folder's record may go: the folder itself unless it is read-only (by its mode bits
    too: root may write anywhere, but a r-x folder of shared corpora stays untouched), then the
    user cache."""
    key = hashlib.sha256(str(folder.absolute()).encode()).hexdigest()[:20]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "qrnn_lm" / "sha256" / f"{key}.json"
    try:
        writable = os.access(folder, os.W_OK) and bool(folder.stat().st_mode & 0o222)
    except OSError:
        writable = False
    return [folder / RECORD_NAME, cache] if writable else [cache]


def _read(folder: Path) -> dict:
    for record in _record_paths(folder):
        try:
            entries = json.loads(record.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(entries, dict):
            return entries
    return {}


def _write(record: Path, entries: dict) -> bool:
    """Atomically write ``entries``; False when the place is not writable."""
    tmp = None
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=record.parent, prefix=".qrnn_lm_sha256-", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(entries, f, indent=1, sort_keys=True)
        os.chmod(tmp, 0o644)
        os.replace(tmp, record)
        return True
    except OSError as error:
        log.debug("cannot write the checksum record %s: %s", record, error)
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        return False
