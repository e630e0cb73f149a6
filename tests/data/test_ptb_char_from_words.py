"""scripts/ptb_char_from_words.py writes Mikolov's PTB-char layout from the word-level PTB files (the
char recipe's CPU measurements use it where the archive is not at hand), and the char tokenizer reads
the result as PTB-char: a symbol a token, ``_`` between words, ``<eos>`` per line."""

import importlib.util
from pathlib import Path

from qrnn_lm.data.tokenizer import CharTokenizer, is_spaced_characters

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "ptb_char_from_words.py"


def _script():
    spec = importlib.util.spec_from_file_location("ptb_char_from_words", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_word_line_becomes_mikolovs_char_line():
    # The first lines of ptb.train.txt and of Mikolov's ptb.char.train.txt as published.
    script = _script()
    assert script.to_ptb_char(" aer banknote berlitz \n") == "a e r _ b a n k n o t e _ b e r l i t z"
    assert script.to_ptb_char(" pierre <unk> N years old") == "p i e r r e _ < u n k > _ N _ y e a r s _ o l d"


def test_the_converted_files_read_as_ptb_char(tmp_path):
    words, chars = tmp_path / "words", tmp_path / "chars"
    words.mkdir()
    for split in ("train", "valid", "test"):
        (words / f"{split}.txt").write_text(" the cat sat \n on the mat \n", encoding="utf-8")
    _script().convert(words, chars)
    text = (chars / "train.txt").read_text(encoding="utf-8")
    assert text == "t h e _ c a t _ s a t\no n _ t h e _ m a t\n"
    assert is_spaced_characters(text)
    tokenizer = CharTokenizer()
    tokenizer.fit(chars / "train.txt")
    assert tokenizer.spaced
    decode = tokenizer.decoder()
    assert "".join(decode(int(i)) for i in tokenizer.encode_file(chars / "train.txt")) == "the cat sat\non the mat\n"
