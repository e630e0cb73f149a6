"""The on-disk cache of a tokenised corpus: one ``torch.save`` file per (files' sha256, tokenizer),
written atomically next to the data, or in the user cache folder when the data folder is read-only.

A damaged, stale or foreign cache file is ignored and rebuilt, never a crash; no writable folder
only means tokenising again next time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

import torch

from .registry import SPLIT_FILES
from .tokenizer import Tokenizer

log = logging.getLogger(__name__)

CACHE_FORMAT = 1  # bump when the cached content or the tokenisation rule changes
CACHE_PREFIX = ".qrnn_lm_cache-"


def user_cache_dir() -> Path:
    """Where caches go when the data folder is read-only: ``$XDG_CACHE_HOME/qrnn_lm``."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "qrnn_lm"


def marked_writable(folder: Path) -> bool:
    """Whether the folder may hold a cache: writable, and not marked read-only by its mode bits
    (root may write anywhere, but a ``r-x`` folder of shared corpora should stay untouched)."""
    return os.access(folder, os.W_OK) and bool(folder.stat().st_mode & 0o222)


def cache_directories(folder: Path, cache_dir: str | os.PathLike | None) -> list[Path]:
    """Where a cache of ``folder``'s data may go, in order: ``cache_dir`` alone when given, else the
    data folder (when writable) and then the user cache folder."""
    if cache_dir is not None:
        return [Path(cache_dir)]
    return ([folder] if marked_writable(folder) else []) + [user_cache_dir()]


def cache_name(checksums: dict[str, str], tokenizer: Tokenizer) -> str:
    """The cache file's name for the files of ``checksums`` tokenised by ``tokenizer``."""
    key = {"format": CACHE_FORMAT, "files": checksums}
    if tokenizer.kind != "word":  # word data does not depend on max_vocab/min_count (applied on load)
        key["tokenizer"] = tokenizer.cache_key()
    key = json.dumps(key, sort_keys=True)
    return f"{CACHE_PREFIX}{hashlib.sha256(key.encode()).hexdigest()[:20]}.pt"


def load_cache(path: Path, checksums: dict[str, str], kind: str) -> dict | None:
    """The cached build, or None when it is missing, corrupt or stale (never raises)."""
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        _expect(payload["format"] == CACHE_FORMAT, "another cache format")
        _expect(payload["checksums"] == checksums, "made from other files")
        _expect((payload.get("tokenizer") or {"kind": "word"})["kind"] == kind, "another tokenizer")
        vocab = payload["vocab"]
        _expect(isinstance(vocab, list) and all(isinstance(t, str) for t in vocab), "bad vocabulary")
        _expect(0 < payload["train_vocab_size"] <= len(vocab), "bad train vocabulary size")
        _expect(set(payload["splits"]) == set(SPLIT_FILES), "missing splits")
        for ids in payload["splits"].values():
            _expect(ids.dtype == torch.int32 and ids.dim() == 1 and ids.numel() > 0, "bad tensor")
            _expect(0 <= int(ids.min()) and int(ids.max()) < len(vocab), "ids out of range")
        return payload
    except Exception as error:  # any damage means "rebuild", never a crash
        log.warning("ignoring unreadable data cache %s (%s: %s); rebuilding it", path, type(error).__name__, error)
        return None


def _expect(condition: bool, problem: str) -> None:
    if not condition:
        raise ValueError(problem)


def save_cache(directories: list[Path], name: str, payload: dict) -> Path | None:
    """Write atomically to the first writable directory; None when none is (never raises)."""
    for directory in directories:
        tmp = None
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=CACHE_PREFIX, suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                torch.save(payload, f)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)  # mkstemp makes it 0600; let others sharing the data read it
            os.replace(tmp, directory / name)
            return directory / name
        except OSError as error:
            log.debug("cannot write the data cache in %s: %s", directory, error)
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)
    log.info("no writable folder for the data cache; the data will be tokenised again next time")
    return None
