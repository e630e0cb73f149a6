"""--data FILE.txt: one file split by lines into train/valid/test (90/5/5%), deterministically."""

import pytest

from qrnn_lm.data import DataError, prepare_data, split_text_file
from qrnn_lm.data.single_file import split_lines


def test_split_is_by_lines_90_5_5_in_order(tmp_path):
    path = tmp_path / "book.txt"
    lines = [f"line {i} 行 {i}\n" for i in range(100)]
    path.write_text("".join(lines), encoding="utf-8")
    folder = prepare_data(path)
    read = [(folder / n).read_text(encoding="utf-8") for n in ("train.txt", "valid.txt", "test.txt")]
    assert read == ["".join(lines[:90]), "".join(lines[90:95]), "".join(lines[95:])]
    assert split_text_file(path) == folder  # the same file, the same folder
    path.write_text("".join(lines[:50]), encoding="utf-8")
    assert split_text_file(path) != folder  # another text, another split


def test_small_files_keep_a_line_in_each_split():
    assert split_lines([b"a\n", b"b\n", b"c\n"]) == ([b"a\n"], [b"b\n"], [b"c\n"])


@pytest.mark.parametrize("text, problem", [
    ("only one line\n", "it has 1 line"),
    ("a\nb\n\n", "the test.txt split would be empty"),
])
def test_an_empty_split_is_one_line_saying_what_to_do(tmp_path, text, problem):
    path = tmp_path / "tiny.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=problem) as error:
        prepare_data(path)
    assert "\n" not in str(error.value) and "at least 3" in str(error.value)


def test_a_bad_byte_in_a_split_is_named_at_its_offset_in_the_users_file(tmp_path):
    from qrnn_lm.data import Corpus
    from qrnn_lm.data.tokenizer import CharTokenizer

    path = tmp_path / "notes.txt"
    good = "".join(f"строка {i}\n" for i in range(40)).encode()
    path.write_bytes(good + b"bad \xff line\n")  # the last line: in test.txt
    with pytest.raises(DataError, match=rf"{path} is not UTF-8 text .* at byte offset {len(good) + 4}\)"):
        Corpus.load(prepare_data(path), tokenizer=CharTokenizer(), cache=False)
