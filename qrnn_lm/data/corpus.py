"""Reading a folder of train/valid/test text into token-id tensors, with an on-disk cache.

Files are read as UTF-8 in chunks of whole lines and tokenised at C speed (one ``str.split`` per
chunk, ``dict`` lookups through ``map``), so WikiText-103 never becomes a Python list of 100M
tokens. The result is cached next to the data (or in the user cache folder when the data folder is
read-only), keyed by the files' sha256, so large corpora are tokenised once (:mod:`.token_cache`).
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import numpy as np
import torch
from tqdm.auto import tqdm

from .checksums import file_sha256
from .errors import DataError
from .registry import SPLIT_FILES
from .token_cache import CACHE_FORMAT, cache_directories, cache_name, load_cache, save_cache
from .tokenizer import Tokenizer, WordTokenizer, tokenizer_from_state
from .vocab import EOS, UNK, Vocab

log = logging.getLogger(__name__)

_CHUNK_BYTES = 8 << 20  # read about 8 MiB of whole lines at a time


def _read_text_chunks(path: Path, progress: bool):
    """Yield the file's text in chunks of whole lines, newlines normalised to ``\\n``.

    Line breaks follow Python's text mode (``\\r\\n`` and a lone ``\\r`` end a line too), so the
    tokens equal ``tokenize_line`` applied to every line of ``open(path, encoding="utf-8")``.
    """
    first_line = 1
    with open(path, "rb") as f, tqdm(
        total=path.stat().st_size, unit="B", unit_scale=True, desc=f"tokenising {path.name}",
        disable=not progress, leave=False,
    ) as bar:
        while lines := f.readlines(_CHUNK_BYTES):
            raw = b"".join(lines)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                _raise_not_utf8(path, lines, first_line)
            yield text.replace("\r\n", "\n").replace("\r", "\n")
            bar.update(len(raw))
            first_line += len(lines)


def _raise_not_utf8(path: Path, lines: list[bytes], first_line: int) -> NoReturn:
    for offset, line in enumerate(lines):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as error:
            bad = line[error.start : error.start + 4]
            raise DataError(
                f"{path} line {first_line + offset} is not valid UTF-8 (bytes {bad!r} at column "
                f"{error.start + 1}); convert the file to UTF-8, e.g. iconv -f latin1 -t utf-8"
            ) from None
    raise AssertionError("unreachable: the chunk failed to decode but no line did")


def _encode_file(path: Path, stoi: defaultdict[str, int], progress: bool) -> np.ndarray:
    """Token ids of one file as int32 ``[N]``.

    ``stoi`` is a defaultdict whose factory is its own ``__len__``: looking up a new token inserts
    it with the next free index, so one C-level ``map`` both grows the vocabulary in order of first
    appearance and encodes.
    """
    chunks = []
    for text in _read_text_chunks(path, progress):
        tokens = text.replace("\n", f" {EOS} ").split()
        if text and not text.endswith("\n"):
            tokens.append(EOS)  # the last line has no newline but is still a line
        chunks.append(np.fromiter(map(stoi.__getitem__, tokens), dtype=np.int32, count=len(tokens)))
    ids = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int32)
    eos = stoi.get(EOS)
    if ids.size == 0 or not (ids != eos).any():
        raise DataError(f"{path} is empty (it holds no words); put text in it or use another folder")
    return ids


def _build(folder: Path, progress: bool) -> dict:
    """Tokenise the three files with one vocabulary over all of them (train's tokens first)."""
    stoi: defaultdict[str, int] = defaultdict()
    stoi.default_factory = stoi.__len__  # a new token gets index len(stoi)
    splits = {}
    train_vocab_size = 0
    for name in SPLIT_FILES:
        splits[name] = torch.from_numpy(_encode_file(folder / name, stoi, progress))
        if name == "train.txt":
            train_vocab_size = len(stoi)
    return {"vocab": list(stoi), "train_vocab_size": train_vocab_size, "splits": splits}


def _build_tokenized(folder: Path, tokenizer: Tokenizer) -> dict:
    """Char, byte and subword data: fit ``tokenizer`` on train.txt unless it is fitted already
    (a checkpoint's), then encode the three files with it."""
    if tokenizer.vocab is None:
        tokenizer.fit(folder / "train.txt")
    splits = {name: torch.from_numpy(tokenizer.encode_file(folder / name)) for name in SPLIT_FILES}
    return {"vocab": tokenizer.vocab.to_list(), "train_vocab_size": len(tokenizer.vocab), "splits": splits,
            "tokenizer": tokenizer.state()}


@dataclass
class Corpus:
    """A tokenised corpus: ``train``/``valid``/``test`` are 1-D int64 token-id tensors ``[N]``."""

    vocab: Vocab
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    checksums: dict[str, str] = field(default_factory=dict)  # sha256 per file name ("train.txt")
    folder: Path | None = None
    tokenizer: Tokenizer = field(default_factory=WordTokenizer)  # fitted: its vocab is ``vocab``

    @classmethod
    def load(
        cls,
        folder: str | os.PathLike,
        vocab: Vocab | None = None,
        *,
        tokenizer: Tokenizer | None = None,
        progress: bool = False,
        cache: bool = True,
        cache_dir: str | os.PathLike | None = None,
    ) -> Corpus:
        """Read ``folder/{train,valid,test}.txt``.

        Without ``vocab`` the vocabulary is train's tokens in order of first appearance (as
        awd-lstm-lm); words of valid/test missing from train map to ``<unk>``, which is appended
        to the vocabulary if train lacks it. With ``vocab`` (a checkpoint's), every word absent
        from it maps to its ``<unk>``; without ``<unk>`` that is a :class:`DataError`. A word
        ``tokenizer`` with ``max_vocab``/``min_count`` caps train's vocabulary (the rest -> ``<unk>``).

        ``tokenizer`` (default: word): a char, byte or subword tokenizer is fitted on train.txt
        unless it is fitted already (a checkpoint's, whose vocabulary ``vocab`` then must be).

        The tokenised files are cached as ``<folder>/.qrnn_lm_cache-<key>.pt``, keyed by the files'
        sha256 and the tokenizer (in ``cache_dir`` if given; in ``$XDG_CACHE_HOME/qrnn_lm``, default
        ``~/.cache/qrnn_lm``, when the folder is read-only); ``cache=False`` neither reads nor
        writes it. A damaged cache is rebuilt.

        Raises :class:`DataError` for a missing folder or file, an empty file or non-UTF-8 bytes.
        """
        folder = Path(folder).expanduser()
        missing = [name for name in SPLIT_FILES if not (folder / name).is_file()]
        if missing:
            raise DataError(
                f"{', '.join(missing)} missing in {folder.absolute()}; a data folder must hold "
                f"{', '.join(SPLIT_FILES)} (plain UTF-8 text, tokens separated by spaces)"
            )
        checksums = {name: file_sha256(folder / name) for name in SPLIT_FILES}
        directories = cache_directories(folder, cache_dir)
        tokenizer = tokenizer or WordTokenizer()
        name = cache_name(checksums, tokenizer)
        payload = None
        if cache:
            payload = next(filter(None, (load_cache(d / name, checksums, tokenizer.kind) for d in directories)), None)
        if payload is None:
            payload = _build(folder, progress) if tokenizer.kind == "word" else _build_tokenized(folder, tokenizer)
            if cache:
                save_cache(directories, name, {"format": CACHE_FORMAT, "checksums": checksums, **payload})
        splits = {key: ids.long() for key, ids in payload["splits"].items()}
        full = payload["vocab"]
        if tokenizer.kind != "word":
            tokenizer = tokenizer_from_state(payload["tokenizer"], full)
            vocab = tokenizer.vocab
        elif vocab is None:
            vocab = _train_vocab(full, payload["train_vocab_size"], splits)
            if tokenizer.max_vocab or tokenizer.min_count > 1:
                vocab = _cap_vocab(vocab, splits, tokenizer.max_vocab, tokenizer.min_count)
        elif vocab.itos != full:
            for key in SPLIT_FILES:
                splits[key] = _remap(splits[key], full, vocab, folder / key)
        if tokenizer.kind == "word":
            tokenizer = WordTokenizer(tokenizer.max_vocab, tokenizer.min_count)
            tokenizer.vocab = vocab
        return cls(vocab, splits["train.txt"], splits["valid.txt"], splits["test.txt"], checksums, folder, tokenizer)


def _train_vocab(full: list[str], num_train: int, splits: dict[str, torch.Tensor]) -> Vocab:
    """Train's vocabulary; valid/test words outside it (ids >= num_train) become <unk>."""
    tokens = full[:num_train]
    if num_train == len(full):
        return Vocab(tokens)
    if UNK not in tokens:
        log.warning("valid/test hold words that train.txt lacks; they map to %s, added to the vocabulary", UNK)
        tokens.append(UNK)
    vocab = Vocab(tokens)
    for key in ("valid.txt", "test.txt"):
        ids = splits[key]
        splits[key] = torch.where(ids >= num_train, vocab.unk_index, ids)
    return vocab


def _cap_vocab(vocab: Vocab, splits: dict[str, torch.Tensor], max_vocab: int, min_count: int) -> Vocab:
    """Keep the words seen at least ``min_count`` times in train, at most ``max_vocab`` tokens
    with ``<eos>`` and ``<unk>`` (the most frequent; ties to the earlier word), in the original
    order; every other word of every split becomes ``<unk>``. ``splits`` is re-indexed in place."""
    counts = torch.bincount(splits["train.txt"], minlength=len(vocab))  # [V] train counts
    keep = counts >= min_count
    for special in (EOS, UNK):
        if special in vocab:
            keep[vocab.stoi[special]] = True
    if max_vocab:
        room = max_vocab - (0 if UNK in vocab else 1)  # a new <unk> takes one place
        # stable sort by count, specials first: the words to keep are the first ``room``
        priority = counts.double() + torch.tensor([t in (EOS, UNK) for t in vocab.itos], dtype=torch.double) * 1e18
        order = torch.sort(priority, descending=True, stable=True).indices
        capped = torch.zeros_like(keep)
        capped[order[:room]] = True
        keep &= capped
    if bool(keep.all()):
        return vocab
    tokens = [token for token, kept in zip(vocab.itos, keep.tolist()) if kept]
    if UNK not in tokens:
        tokens.append(UNK)
    capped_vocab = Vocab(tokens)
    for key in SPLIT_FILES:
        splits[key] = _remap(splits[key], vocab.itos, capped_vocab, Path(key))
    return capped_vocab


def _remap(ids: torch.Tensor, old: list[str], vocab: Vocab, path: Path) -> torch.Tensor:
    """Re-index ``ids`` (over the ``old`` token list) into ``vocab``; unknown words -> its <unk>."""
    fill = -1 if vocab.unk_index is None else vocab.unk_index
    table = torch.tensor([vocab.stoi.get(token, fill) for token in old], dtype=torch.long)
    mapped = table[ids]
    if fill == -1 and (mapped < 0).any():
        token = old[int(ids[int((mapped < 0).nonzero()[0])])]
        raise DataError(
            f"{path} holds the word {token!r}, which the given vocabulary (e.g. the checkpoint's) "
            f"lacks and it has no {UNK} to stand for it; use data with the training vocabulary"
        )
    return mapped
