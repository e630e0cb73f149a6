"""The field's units beside per-token perplexity: bits per character and per-word perplexity.

Character and byte models are scored in bits per character (PTB-char and enwik8 tables; enwik8's
"characters" are bytes): the mean loss in nats over ln 2, per character. Subword models are also
scored per word, so they sit in the same table as word models: the exponential of the total
negative log-likelihood over the number of words, counted as the word tokenizer counts tokens
(whitespace-separated words plus one ``<eos>`` per line).

:class:`RunUnits` is a run's unit, as its console lines, ``metrics.csv``, TensorBoard and
``results.json`` show it: bits per character for character and byte models, per-word perplexity for
subword models; word models have none (their per-token perplexity is already per word). The
per-word perplexity of a split takes its total loss as the mean loss times the split's token count,
as ``qrnn-lm eval`` does (a batched evaluation leaves a few tokens unscored at the streams' ends:
the mean stands for them), over the split's words counted as the word tokenizer counts them.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .corpus import Corpus


def bits_per_character(mean_loss: float, chars_per_token: float = 1.0) -> float:
    """``mean_loss`` (nats per token) in bits per character: ``mean_loss / ln 2 / chars_per_token``.

    ``chars_per_token`` is 1 for character and byte models (a newline, or PTB-char's ``<eos>``,
    counts as one character).
    """
    if chars_per_token <= 0:
        raise ValueError(f"chars_per_token must be > 0, got {chars_per_token}")
    return mean_loss / math.log(2) / chars_per_token


def word_perplexity(total_nll: float, num_words: int) -> float:
    """``exp(total_nll / num_words)``: the perplexity per word of text whose tokens (of any kind)
    sum to ``total_nll`` nats."""
    if num_words < 1:
        raise ValueError(f"num_words must be >= 1, got {num_words}")
    return math.exp(min(total_nll / num_words, 700.0))  # a huge loss reads as a huge number, not an error


def count_words(path: str | os.PathLike) -> int:
    """Words of a UTF-8 file as the word tokenizer counts them: whitespace-separated words plus one
    ``<eos>`` per line (a last line without a newline still counts)."""
    count = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            count += len(line.split()) + 1
    return count


LABELS = {"bpc": "bpc", "word_ppl": "word ppl"}  # a unit's name in console lines


class RunUnits:
    """The unit of ``corpus``'s tokenizer (``unit``: "bpc", "word_ppl" or None) and what turning
    a validation or test mean loss into it needs (the words and tokens of a subword corpus's splits)."""

    def __init__(self, corpus: "Corpus"):
        self.unit: str | None = corpus.tokenizer.unit if corpus.tokenizer.unit in LABELS else None
        self.words: dict[str, int] = {}
        self.tokens: dict[str, int] = {}
        if self.unit == "word_ppl":
            for split in ("valid", "test"):
                self.words[split] = count_words(corpus.folder / f"{split}.txt")
                self.tokens[split] = getattr(corpus, split).numel()

    def value(self, mean_loss: float, split: str) -> float | None:
        """``mean_loss`` (nats per token) of ``split`` ("valid" or "test") in the run's unit; None
        for a word model."""
        if self.unit == "bpc":
            return bits_per_character(mean_loss)
        if self.unit == "word_ppl":
            return word_perplexity(mean_loss * self.tokens[split], self.words[split])
        return None

    def results(self, best_val: float, test_loss: float) -> dict[str, float | int]:
        """The keys ``results.json`` gains: ``best_val_bpc``, ``test_bpc``; or ``best_val_word_ppl``,
        ``test_word_ppl``, ``test_words``; or none (a word model)."""
        if self.unit is None:
            return {}
        extra: dict[str, float | int] = {f"best_val_{self.unit}": self.value(best_val, "valid"),
                                         f"test_{self.unit}": self.value(test_loss, "test")}
        if self.unit == "word_ppl":
            extra["test_words"] = self.words["test"]
        return extra

    def text(self, mean_loss: float, split: str, name: str) -> str:
        """A console line's part, e.g. ``" | valid bpc 1.4213"`` (``name``: "valid", "test"); "" for a word model."""
        value = self.value(mean_loss, split)
        if value is None:
            return ""
        return f" | {name} {LABELS[self.unit]} " + (f"{value:.4f}" if self.unit == "bpc" else f"{value:.2f}")
