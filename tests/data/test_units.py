"""Bits per character and per-word perplexity, checked by hand on a tiny corpus."""

import math

import pytest

from qrnn_lm.data import bits_per_character, count_words, word_perplexity


def test_bits_per_character_by_hand():
    # A model that gives every one of 4 equally likely characters p = 1/4 spends 2 bits on each.
    assert bits_per_character(math.log(4)) == pytest.approx(2.0)
    # Two characters per token: the same loss per token is half the bits per character.
    assert bits_per_character(math.log(4), chars_per_token=2.0) == pytest.approx(1.0)
    assert bits_per_character(1.0) == pytest.approx(1.4426950408889634)  # 1 / ln 2
    with pytest.raises(ValueError, match="chars_per_token must be > 0"):
        bits_per_character(1.0, 0.0)


def test_per_word_perplexity_by_hand(tmp_path):
    # "the cat sat" + "on mats": 5 words and 2 line ends = 7 word tokens.
    path = tmp_path / "test.txt"
    path.write_text("the cat sat\non mats\n", encoding="utf-8")
    assert count_words(path) == 7
    # A subword model that split it into 14 pieces at 0.5 nats each: 7 nats over 7 words -> e.
    assert word_perplexity(14 * 0.5, count_words(path)) == pytest.approx(math.e)
    # The same total over the 14 pieces is a per-token perplexity of exp(0.5): per word is higher.
    assert word_perplexity(7.0, 14) == pytest.approx(math.exp(0.5))
    with pytest.raises(ValueError, match="num_words must be >= 1"):
        word_perplexity(1.0, 0)


def test_count_words_counts_a_last_line_without_newline_and_blank_lines(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("a b\n\nc", encoding="utf-8")
    assert count_words(path) == 6  # a b <eos> <eos> c <eos>
