"""Tokenizers on text in any script: round trips, PTB-char, word caps, the cache key and errors."""

from pathlib import Path

import numpy as np
import pytest
import torch

from qrnn_lm.config import ConfigError, load_config
from qrnn_lm.data import Corpus, DataError, Vocab, make_tokenizer, tokenizer_from_state
from qrnn_lm.data.subword import SubwordTokenizer
from qrnn_lm.data.tokenizer import ByteTokenizer, CharTokenizer

MIXED = (
    "Привет мир, как дела?\n"
    "你好世界，今天天气很好。\n"
    "hello 👋 world 🌍 and  two  spaces\n"
    "\tthe end 🐈‍⬛ ё\n"
)
UNSEEN = "Ωμέγα ñ 猫 🦀\n"  # characters the training text lacks


def write(folder: Path, train: str, valid: str | None = None, test: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (("train.txt", train), ("valid.txt", valid or train), ("test.txt", test or train)):
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def state_through_torch(tokenizer, vocab, tmp_path):
    """Save the state as a checkpoint does and read it back with weights_only=True."""
    torch.save({"tokenizer": tokenizer.state(), "vocab": vocab}, tmp_path / "t.pt")
    payload = torch.load(tmp_path / "t.pt", weights_only=True)
    return tokenizer_from_state(payload["tokenizer"], payload["vocab"])


@pytest.mark.parametrize("kind", ["char", "byte", "subword"])
def test_round_trip_of_mixed_scripts_through_files_and_a_checkpoint(tmp_path, kind):
    folder = write(tmp_path / "d", MIXED * 30)
    tokenizer = make_tokenizer(load_config(None, [f'data.tokenizer="{kind}"', "data.vocab_size=360"]).data)
    corpus = Corpus.load(folder, tokenizer=tokenizer, cache=False)
    assert corpus.tokenizer.decode(corpus.train) == MIXED * 30  # the file, exactly
    again = state_through_torch(corpus.tokenizer, corpus.vocab.to_list(), tmp_path)
    for text in (MIXED, "  the  world and two  ", "дела 你好 👋"):
        assert again.decode(again.encode(text)) == text
    if kind == "char":  # unseen characters are <unk>: printed as U+FFFD, one per character
        assert again.decode(again.encode(UNSEEN)) == "".join(c if c in MIXED else "\ufffd" for c in UNSEEN)
    else:  # bytes, and subwords through byte fallback, are exact on any text
        assert again.decode(again.encode(UNSEEN)) == UNSEEN


def test_char_tokens_are_code_points_and_newlines():
    tokenizer = CharTokenizer(vocab=Vocab(sorted(set("ab\n🌍")) + ["<unk>"]))
    ids = tokenizer.encode("a🌍\nb")
    assert [tokenizer.vocab.itos[i] for i in ids] == ["a", "🌍", "\n", "b"]


def test_ptb_char_files_are_spaced_characters_and_underscore_decodes_to_a_space(tmp_path):
    train = " a e r _ b a n k _ t h e\n t h e _ c a t\n"
    folder = write(tmp_path / "ptbc", train)
    corpus = Corpus.load(folder, tokenizer=CharTokenizer(), cache=False)
    assert corpus.tokenizer.spaced
    tokens = [corpus.vocab.itos[i] for i in corpus.train.tolist()]
    assert tokens[:6] == ["a", "e", "r", "_", "b", "a"] and tokens.count("<eos>") == 2 and " " not in tokens
    assert corpus.tokenizer.decode(corpus.train) == "aer bank the\nthe cat\n"
    assert corpus.tokenizer.decode(corpus.tokenizer.encode("the bank")) == "the bank"
    prose = Corpus.load(write(tmp_path / "prose", "the bank_account\n"), tokenizer=CharTokenizer(), cache=False)
    assert not prose.tokenizer.spaced


def test_bytes_decode_invalid_utf8_with_replacement_and_hold_back_unfinished_sequences():
    tokenizer = ByteTokenizer()
    step = tokenizer.decoder()
    euro = "€".encode()  # 3 bytes
    assert step(euro[0]) == "" and step(euro[1]) == "" and step(euro[2]) == "€"
    assert tokenizer.decode([0xFF, ord("a"), 0xE2, 0x82]) == "\ufffda\ufffd"


def test_word_vocabulary_capped_from_train_alone(tmp_path):
    train = "a a a a b b b c c d\n" * 2
    folder = write(tmp_path / "w", train, valid="a b c d e\n", test="d d\n")
    by_count = Corpus.load(folder, tokenizer=make_tokenizer(load_config(None, ["data.min_count=5"]).data), cache=False)
    assert by_count.vocab.itos == ["a", "b", "<eos>", "<unk>"]  # c (4), d (2) rarer than 5; e not in train
    unk = by_count.vocab.unk_index
    assert by_count.valid.tolist() == [0, 1, unk, unk, unk, 2] and by_count.test.tolist() == [unk, unk, 2]
    capped = Corpus.load(folder, tokenizer=make_tokenizer(load_config(None, ["data.max_vocab=4"]).data), cache=False)
    assert capped.vocab.itos == ["a", "b", "<eos>", "<unk>"]  # the 2 most frequent words, <eos>, <unk>
    whole = Corpus.load(folder, cache=False)
    assert whole.vocab.itos == ["a", "b", "c", "d", "<eos>", "<unk>"]  # default: today's rule


def test_cache_is_keyed_by_the_tokenizer(tmp_path):
    folder = write(tmp_path / "c", MIXED * 3)
    words = Corpus.load(folder)
    chars = Corpus.load(folder, tokenizer=CharTokenizer())
    data_bytes = Corpus.load(folder, tokenizer=ByteTokenizer())
    assert len({len(words.train), len(chars.train), len(data_bytes.train)}) == 3
    assert len(list(folder.glob(".qrnn_lm_cache-*.pt"))) == 3
    cached = Corpus.load(folder, tokenizer=CharTokenizer())  # from the cache: the same ids and tokenizer
    assert torch.equal(cached.train, chars.train) and cached.tokenizer.state() == chars.tokenizer.state()


def test_non_utf8_file_for_a_char_model_names_the_byte_offset(tmp_path):
    folder = write(tmp_path / "latin", "ok\n")
    (folder / "valid.txt").write_bytes("caf".encode() + b"\xe9 au lait\n")
    with pytest.raises(DataError, match=r"valid.txt is not UTF-8 text .* at byte offset 3\).*data.tokenizer=byte") as error:
        Corpus.load(folder, tokenizer=CharTokenizer(), cache=False)
    assert "\n" not in str(error.value)
    assert len(Corpus.load(folder, tokenizer=ByteTokenizer(), cache=False).valid) == 13  # bytes read anything


@pytest.mark.parametrize("kind", ["char", "byte", "subword"])
def test_empty_split_is_a_data_error(tmp_path, kind):
    folder = write(tmp_path / "e", MIXED * 5)
    (folder / "test.txt").write_text("", encoding="utf-8")
    tokenizer = make_tokenizer(load_config(None, [f'data.tokenizer="{kind}"', "data.vocab_size=330"]).data)
    with pytest.raises(DataError, match="test.txt is empty"):
        Corpus.load(folder, tokenizer=tokenizer, cache=False)


def test_subword_vocab_size_too_small_for_the_alphabet(tmp_path):
    folder = write(tmp_path / "s", MIXED * 5)
    with pytest.raises(DataError, match=r"data.vocab_size = 100 is too small for the alphabet .* at least \d+ tokens") as error:
        Corpus.load(folder, tokenizer=SubwordTokenizer(100), cache=False)
    assert "\n" not in str(error.value)
    with pytest.raises(DataError, match=r"data.vocab_size = 100000 is more than .* can give"):
        Corpus.load(folder, tokenizer=SubwordTokenizer(100000), cache=False)


def test_subword_state_is_plain_data(tmp_path):
    corpus = Corpus.load(write(tmp_path / "p", MIXED * 10), tokenizer=SubwordTokenizer(330), cache=False)
    state = corpus.tokenizer.state()
    assert state["kind"] == "subword" and state["model"].dtype == torch.uint8
    assert len(corpus.vocab) == 330 and corpus.vocab.itos[:2] == ["<unk>", "<eos>"]
    ids = corpus.tokenizer.encode_file(Path(tmp_path / "p" / "valid.txt"))
    assert ids.dtype == np.int32 and int((ids == 1).sum()) == MIXED.count("\n") * 10  # one <eos> per line


@pytest.mark.parametrize("override, message", [
    ('data.tokenizer="wordpiece"', "data.tokenizer must be one of 'word', 'char', 'byte', 'subword', got 'wordpiece'"),
    ('data.tokenizer="char"', "data.max_vocab and data.min_count cap a word vocabulary"),
])
def test_config_errors(override, message):
    extra = ["data.min_count=2"] if "char" in override else []
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override, *extra])


def test_old_checkpoint_state_reads_as_word():
    tokenizer = tokenizer_from_state(None, ["a", "<eos>"])
    assert tokenizer.kind == "word" and tokenizer.vocab.itos == ["a", "<eos>"]
