"""Tokenizers: how text becomes token ids and back, one per value of ``data.tokenizer``.

========  ===============================================================================
word      whitespace-separated words plus ``<eos>`` per line (PTB, WikiText); the corpus reader
          in :mod:`.corpus` tokenises it at C speed, this class only carries its settings
char      Unicode code points of the text as it is; a newline is a token. Mikolov's PTB-char
          files (every line single characters separated by spaces, ``_`` between words) are
          read as those characters plus ``<eos>`` per line, and ``_`` decodes to a space
byte      UTF-8 bytes: 256 tokens, any file, decoded with invalid sequences replaced
subword   a sentencepiece BPE model trained on train.txt (:mod:`.subword`), ``<eos>`` per line
========  ===============================================================================

A tokenizer's :meth:`state` is plain data (str, int, bool, a uint8 tensor) that
``torch.load(weights_only=True)`` accepts; the vocabulary (index -> token string) travels beside
it as the checkpoint's ``vocab`` list, and :func:`tokenizer_from_state` rebuilds the two together.
"""

from __future__ import annotations

import codecs
import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..config import TOKENIZERS, DataConfig
from .errors import DataError
from .split_names import original_location
from .vocab import EOS, UNK, Vocab

REPLACEMENT = "\ufffd"  # printed for <unk> and for invalid UTF-8


class Tokenizer:
    """Interface: ``kind``; ``vocab`` once fitted; ``fit(train_path)``; ``encode_file(path) -> [N]``
    int32 ids; ``encode(text) -> ids`` (a prompt); ``decoder()`` -> a function turning one id at a
    time into printable text (it may hold back an unfinished UTF-8 sequence); ``state()``."""

    kind = "word"
    # what eval reports beside the per-token perplexity: "bpc" (bits per character, one character
    # per token), "word_ppl" (per-word perplexity) or None
    unit: str | None = None
    vocab: Vocab | None = None

    def fit(self, train_path: Path) -> None:
        raise NotImplementedError

    def encode_file(self, path: Path) -> np.ndarray:
        raise NotImplementedError

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def decoder(self) -> Callable[[int], str]:
        raise NotImplementedError

    def decode(self, ids) -> str:
        """The text of a whole id sequence (``decoder()`` applied to each id, flushed)."""
        step = self.decoder()
        return "".join(step(int(i)) for i in ids) + step(None)

    def state(self) -> dict:
        return {"kind": self.kind}

    def cache_key(self) -> dict:
        """What the tokenised data depends on: the settings, and a fitted tokenizer's vocabulary."""
        key = {"kind": self.kind}
        if self.vocab is not None and self.kind == "char":
            key.update(self.state(), vocab_sha256=hashlib.sha256("\0".join(self.vocab.itos).encode()).hexdigest())
        return key


class WordTokenizer(Tokenizer):
    """Today's rule; ``max_vocab``/``min_count`` cap the vocabulary (see ``Corpus.load``)."""

    kind = "word"

    def __init__(self, max_vocab: int = 0, min_count: int = 1):
        self.max_vocab, self.min_count = max_vocab, min_count

    def state(self) -> dict:
        return {"kind": "word", "max_vocab": self.max_vocab, "min_count": self.min_count}


def read_utf8(path: Path) -> str:
    """The file's text; a non-UTF-8 file is a DataError naming the byte offset."""
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        bad = raw[error.start : error.start + 4]
        path, offset = original_location(path, error.start)  # a split of one text file: that file
        raise DataError(
            f"{path} is not UTF-8 text (bytes {bad!r} at byte offset {offset}); convert it to UTF-8 "
            "(e.g. iconv -f latin1 -t utf-8) or read it as bytes with --set data.tokenizer=byte"
        ) from None


def _nonempty(path: Path, count: int) -> None:
    if count == 0:
        raise DataError(f"{path} is empty (it holds no text); put text in it or use another folder")


def is_spaced_characters(text: str) -> bool:
    """Mikolov's PTB-char layout: every whitespace-separated token is one character, and ``_``
    marks the spaces between words (plain prose always has longer tokens)."""
    tokens = text.split()
    return "_" in tokens and max(map(len, tokens)) == 1


class CharTokenizer(Tokenizer):
    """Unicode code points; the vocabulary is train's characters (sorted) plus ``<unk>`` for
    characters it lacks (or, for PTB-char, its spaced characters plus ``<eos>``)."""

    kind, unit = "char", "bpc"

    def __init__(self, spaced: bool = False, vocab: Vocab | None = None):
        self.spaced, self.vocab = spaced, vocab

    def fit(self, train_path: Path) -> None:
        text = read_utf8(train_path)
        _nonempty(train_path, len(text))
        self.spaced = is_spaced_characters(text)
        symbols = sorted(set(text.split())) + [EOS] if self.spaced else sorted(set(text))
        self.vocab = Vocab(symbols + [UNK])

    def encode_file(self, path: Path) -> np.ndarray:
        text = read_utf8(path)
        _nonempty(path, len(text.strip() if self.spaced else text))
        if self.spaced:
            tokens = text.replace("\n", f" {EOS} ").split()
            if not text.endswith("\n"):
                tokens.append(EOS)  # the last line has no newline but is still a line
            return np.asarray(self.vocab.encode(tokens), dtype=np.int32)
        points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)  # [N] code points
        table = np.full(0x110000, self.vocab.unk_index, dtype=np.int32)  # code point -> id
        for index, token in enumerate(self.vocab.itos):
            if len(token) == 1:
                table[ord(token)] = index
        return table[points]

    def encode(self, text: str) -> list[int]:
        if self.spaced:  # natural text -> PTB-char symbols: a space is "_", a newline <eos>
            symbols = [EOS if c == "\n" else "_" if c == " " else c for c in text]
            return self.vocab.encode(symbols)
        return self.vocab.encode(text)

    def decoder(self) -> Callable[[int | None], str]:
        itos = self.vocab.itos

        def step(index: int | None) -> str:
            if index is None:
                return ""
            token = itos[index]
            if token == UNK:
                return REPLACEMENT
            if self.spaced:
                return "\n" if token == EOS else " " if token == "_" else token
            return token

        return step

    def state(self) -> dict:
        return {"kind": "char", "spaced": self.spaced}


class ByteTokenizer(Tokenizer):
    """UTF-8 bytes: token ``b`` is byte ``b`` (256 tokens, named ``<0x00>`` ... ``<0xFF>``)."""

    kind, unit = "byte", "bpc"

    def __init__(self):
        self.vocab = Vocab([f"<0x{b:02X}>" for b in range(256)])

    def fit(self, train_path: Path) -> None:
        pass  # nothing to learn

    def encode_file(self, path: Path) -> np.ndarray:
        raw = Path(path).read_bytes()
        _nonempty(path, len(raw))
        return np.frombuffer(raw, dtype=np.uint8).astype(np.int32)

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decoder(self) -> Callable[[int | None], str]:
        return byte_stream_decoder(lambda index: bytes((index,)))


def byte_stream_decoder(to_bytes: Callable[[int], bytes]) -> Callable[[int | None], str]:
    """id -> its bytes -> text, through an incremental UTF-8 decoder that holds back an unfinished
    sequence and replaces invalid ones (never raises); ``None`` flushes."""
    utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
    return lambda index: utf8.decode(b"", final=True) if index is None else utf8.decode(to_bytes(index))


def make_tokenizer(data: DataConfig) -> Tokenizer:
    """An unfitted tokenizer for the ``[data]`` section's ``tokenizer`` and its settings."""
    if data.tokenizer == "word":
        return WordTokenizer(data.max_vocab, data.min_count)
    if data.tokenizer == "char":
        return CharTokenizer()
    if data.tokenizer == "byte":
        return ByteTokenizer()
    if data.tokenizer == "subword":
        from .subword import SubwordTokenizer

        return SubwordTokenizer(data.vocab_size)
    raise DataError(f"data.tokenizer must be one of {', '.join(TOKENIZERS)}, got {data.tokenizer!r}")


def tokenizer_from_state(state: dict | None, vocab: list[str]) -> Tokenizer:
    """The fitted tokenizer a checkpoint or cache holds; ``None`` (a checkpoint written before
    tokenizers existed) is the word tokenizer."""
    state = state or {"kind": "word"}
    kind = state.get("kind")
    if kind == "word":
        tokenizer = WordTokenizer(int(state.get("max_vocab", 0)), int(state.get("min_count", 1)))
        tokenizer.vocab = Vocab(vocab)
        return tokenizer
    if kind == "char":
        return CharTokenizer(bool(state["spaced"]), Vocab(vocab))
    if kind == "byte":
        return ByteTokenizer()
    if kind == "subword":
        from .subword import SubwordTokenizer

        return SubwordTokenizer.from_state(state)
    raise DataError(f"unknown tokenizer {kind!r} in the checkpoint; upgrade qrnn-lm "
                    f"(this version knows {', '.join(TOKENIZERS)})")
