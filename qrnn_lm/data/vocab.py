"""Tokenisation and the vocabulary (token <-> index)."""

from __future__ import annotations

from collections.abc import Iterable

from .errors import DataError

EOS = "<eos>"
UNK = "<unk>"


def tokenize_line(line: str) -> list[str]:
    """Whitespace-split words of one line plus the end-of-sentence token.

    The convention of the PyTorch word_language_model example and salesforce/awd-lstm-lm: a blank
    line is a single ``<eos>``.
    """
    return line.split() + [EOS]


def _explain_bad_tokens(tokens: list) -> None:
    """Raise the ValueError that names the first non-string or repeated token."""
    seen: dict[str, int] = {}
    for index, token in enumerate(tokens):
        if type(token) is not str:
            raise ValueError(f"vocabulary tokens must be str, got {type(token).__name__} at index {index}")
        if token in seen:
            raise ValueError(f"vocabulary tokens must be distinct, got {token!r} at indices {seen[token]} and {index}")
        seen[token] = index


class Vocab:
    """An ordered vocabulary: ``itos[i]`` is the token of index ``i``, ``stoi`` the reverse map.

    Built from a list of distinct tokens (index order = list order). It is stored in checkpoints as
    a plain list of strings (:meth:`to_list` / :meth:`from_list`), so ``generate`` needs no data.
    """

    def __init__(self, tokens: list[str]):
        tokens = list(tokens)
        try:
            stoi = {token: index for index, token in enumerate(tokens)}
        except TypeError:  # an unhashable token
            stoi = {}
        if len(stoi) != len(tokens) or not all(type(token) is str for token in tokens):
            _explain_bad_tokens(tokens)
        self.itos: list[str] = tokens
        self.stoi: dict[str, int] = stoi

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: object) -> bool:
        return token in self.stoi

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.itos == other.itos

    def __repr__(self) -> str:
        return f"Vocab(size={len(self)}, unk_index={self.unk_index})"

    @property
    def unk_index(self) -> int | None:
        """Index of ``<unk>``, or ``None`` when the vocabulary has no such token."""
        return self.stoi.get(UNK)

    def encode(self, tokens: Iterable[str]) -> list[int]:
        """Token ids; tokens not in the vocabulary map to ``<unk>``.

        Raises :class:`DataError` naming the first unknown token when there is no ``<unk>``.
        """
        unk = self.unk_index
        if unk is not None:
            get = self.stoi.get
            return [get(token, unk) for token in tokens]
        try:
            return [self.stoi[token] for token in tokens]
        except KeyError as error:
            raise DataError(
                f"the word {error.args[0]!r} is not in the vocabulary and the vocabulary has no {UNK}"
                " token to stand for it; remove the word or use a vocabulary with <unk>"
            ) from None

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Tokens of the given ids (a list, or a 1-D tensor/array of integers)."""
        if hasattr(ids, "tolist"):  # torch.Tensor / numpy array -> Python ints
            ids = ids.tolist()
        out = []
        for index in ids:
            if not 0 <= index < len(self.itos):
                raise ValueError(f"token id must be in [0, {len(self.itos)}), got {index}")
            out.append(self.itos[index])
        return out

    def to_list(self) -> list[str]:
        """The tokens in index order (a copy), e.g. for a checkpoint."""
        return list(self.itos)

    @classmethod
    def from_list(cls, tokens: Iterable[str]) -> Vocab:
        """Inverse of :meth:`to_list`."""
        return cls(list(tokens))
