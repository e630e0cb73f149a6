"""A run's unit beside per-token perplexity, as it appears in its console lines, ``metrics.csv``,
TensorBoard and ``results.json``: bits per character for character and byte models, per-word
perplexity for subword models (the functions of :mod:`qrnn_lm.data.units`); word models have none
(their per-token perplexity is already per word).

The per-word perplexity of a split takes its total loss as the mean loss times the split's token
count, as ``qrnn-lm eval`` does (a batched evaluation leaves a few tokens unscored at the streams'
ends: the mean stands for them), over the split's words counted as the word tokenizer counts them.
"""

from __future__ import annotations

from ..data import Corpus, bits_per_character, count_words, word_perplexity

__all__ = ["RunUnits", "LABELS"]

LABELS = {"bpc": "bpc", "word_ppl": "word ppl"}  # a unit's name in console lines


class RunUnits:
    """The unit of ``corpus``'s tokenizer (``unit``: "bpc", "word_ppl" or None) and what turning
    a validation or test mean loss into it needs (the words and tokens of a subword corpus's splits)."""

    def __init__(self, corpus: Corpus):
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
