"""The field's units beside per-token perplexity: bits per character and per-word perplexity.

Character and byte models are scored in bits per character (PTB-char and enwik8 tables; enwik8's
"characters" are bytes): the mean loss in nats over ln 2, per character. Subword models are also
scored per word, so they sit in the same table as word models: the exponential of the total
negative log-likelihood over the number of words, counted as the word tokenizer counts tokens
(whitespace-separated words plus one ``<eos>`` per line).
"""

from __future__ import annotations

import math
import os


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
