"""Tokenisation, vocabulary, corpus loading and caching, batching, and the real corpora."""

from pathlib import Path

import pytest
import torch

from qrnn_lm.data import (
    DATASETS, EOS, UNK, Corpus, DataError, Vocab, batchify, get_batch, mismatched_files, prepare_dataset,
    resolve_data_dir, sample_seq_len, tokenize_line,
)
from qrnn_lm.data import corpus as corpus_module
from qrnn_lm.data import download as download_module

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
needs_shared = pytest.mark.skipif(
    not (SHARED_DATA / "ptb").is_dir() or not (SHARED_DATA / "wikitext-2").is_dir(),
    reason=f"real corpora not found at {SHARED_DATA}",
)


def write_folder(folder: Path, train: str, valid: str, test: str, mode: str = "w") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (("train.txt", train), ("valid.txt", valid), ("test.txt", test)):
        if isinstance(text, bytes):
            (folder / name).write_bytes(text)
        else:
            with open(folder / name, "w", encoding="utf-8", newline="") as f:
                f.write(text)
    return folder


def naive_ids(folder: Path) -> tuple[list[str], dict[str, list[int]]]:
    """The reference: awd-lstm-lm's line loop over text-mode lines, one vocabulary over all files."""
    stoi, out = {}, {}
    for split in ("train", "valid", "test"):
        with open(folder / f"{split}.txt", encoding="utf-8") as f:
            out[split] = [stoi.setdefault(w, len(stoi)) for line in f for w in tokenize_line(line)]
    return list(stoi), out


# ----------------------------------------------------------------------------- tokenising


def test_tokenize_line():
    assert tokenize_line("the cat  sat\n") == ["the", "cat", "sat", EOS]
    assert tokenize_line("\n") == [EOS]
    assert tokenize_line("") == [EOS]


TRICKY = "a b\r\nc\rd  e\t f\n\n  \nword\u2028split\x0cx <eos> y\n\u00e9t\u00e9 \u4e2d\u6587"  # no final newline


@pytest.mark.parametrize("chunk_bytes", [7, 1 << 20])
def test_chunked_tokeniser_equals_line_by_line(tmp_path, monkeypatch, chunk_bytes):
    monkeypatch.setattr(corpus_module, "_CHUNK_BYTES", chunk_bytes)  # chunk boundaries everywhere
    folder = write_folder(tmp_path, TRICKY, "a b\n\nc", "d\n" + TRICKY)  # valid: no final newline
    vocab_tokens, expected = naive_ids(folder)
    corpus = Corpus.load(folder, cache=False)
    assert corpus.vocab.itos == vocab_tokens
    for split in ("train", "valid", "test"):
        assert getattr(corpus, split).tolist() == expected[split]
    assert corpus.train.dtype == torch.long and corpus.train.dim() == 1


def test_words_missing_from_train_become_an_appended_unk(tmp_path):
    folder = write_folder(tmp_path, "a b\n", "b zz\n", "yy a\n")
    corpus = Corpus.load(folder, cache=False)
    assert corpus.vocab.itos == ["a", "b", EOS, UNK]
    assert corpus.valid.tolist() == [1, 3, 2] and corpus.test.tolist() == [3, 0, 2]


def test_vocab_is_train_order_and_unk_is_reused(tmp_path):
    folder = write_folder(tmp_path, "b a <unk> b\nc\n", "a new\n", "c\n")
    corpus = Corpus.load(folder, cache=False)
    assert corpus.vocab.itos == ["b", "a", UNK, EOS, "c"]
    assert corpus.valid.tolist() == [1, 2, 3]  # "new" -> the existing <unk>


# ----------------------------------------------------------------------------- vocab


def test_vocab_round_trip_and_encode():
    vocab = Vocab(["x", UNK, "y"])
    assert len(vocab) == 3 and vocab.unk_index == 1 and vocab.stoi["y"] == 2
    assert vocab.encode(["y", "nope", "x"]) == [2, 1, 0]
    assert vocab.decode(torch.tensor([2, 0])) == ["y", "x"]
    assert Vocab.from_list(vocab.to_list()) == vocab
    assert vocab.to_list() is not vocab.itos


def test_vocab_errors():
    no_unk = Vocab(["x", "y"])
    assert no_unk.unk_index is None
    with pytest.raises(DataError, match="'nope'"):
        no_unk.encode(["x", "nope"])
    with pytest.raises(ValueError, match="distinct"):
        Vocab(["x", "y", "x"])
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        no_unk.decode([2])


# ----------------------------------------------------------------------------- corpus


def test_given_vocab_maps_unknown_words_to_its_unk(tmp_path):
    folder = write_folder(tmp_path, "a b\n", "b q\n", "a\n")  # "q" only in valid
    checkpoint_vocab = Vocab([UNK, EOS, "b", "a", "q"])
    corpus = Corpus.load(folder, checkpoint_vocab, cache=False)
    assert corpus.vocab is checkpoint_vocab
    assert corpus.train.tolist() == [3, 2, 1]
    assert corpus.valid.tolist() == [2, 4, 1]  # "q" keeps its own id in the given vocabulary
    smaller = Vocab([UNK, EOS, "a"])
    assert Corpus.load(folder, smaller, cache=False).train.tolist() == [2, 0, 1]
    with pytest.raises(DataError, match="'b'.*no <unk>"):
        Corpus.load(folder, Vocab([EOS, "a"]), cache=False)


@pytest.mark.parametrize("bad", ["", "\n  \n\t\n"])
def test_empty_file_is_a_data_error(tmp_path, bad):
    folder = write_folder(tmp_path, "a b\n", bad, "a\n")
    with pytest.raises(DataError, match=r"valid\.txt is empty"):
        Corpus.load(folder, cache=False)


def test_non_utf8_names_file_and_line(tmp_path):
    folder = write_folder(tmp_path, "ok\nfine\n", "ok\n", b"one\ntwo\ncaf\xe9 au lait\n")
    with pytest.raises(DataError, match=r"test\.txt line 3 is not valid UTF-8") as info:
        Corpus.load(folder, cache=False)
    assert "\n" not in str(info.value)


def test_missing_file_and_folder(tmp_path):
    folder = write_folder(tmp_path / "d", "a\n", "a\n", "a\n")
    (folder / "test.txt").unlink()
    with pytest.raises(DataError, match=r"test\.txt missing"):
        Corpus.load(folder)
    with pytest.raises(DataError, match="missing"):
        Corpus.load(tmp_path / "nowhere")


def cache_files(folder: Path) -> list[Path]:
    return sorted(folder.glob(".qrnn_lm_cache-*"))


def test_cache_is_used_then_rebuilt_when_corrupt_or_stale(tmp_path, monkeypatch):
    folder = write_folder(tmp_path, "a b c\nb\n", "a\n", "c\n")
    first = Corpus.load(folder)
    [cache] = cache_files(folder)
    assert not cache.name.endswith(".tmp")

    def no_build(*args, **kwargs):
        raise AssertionError("tokenised again although a valid cache exists")

    with monkeypatch.context() as patch:
        patch.setattr(corpus_module, "_build", no_build)
        second = Corpus.load(folder)
    assert second.vocab == first.vocab and torch.equal(second.train, first.train)
    assert second.checksums == first.checksums and second.train.dtype == torch.long

    cache.write_bytes(b"not a torch file")  # corrupt: rebuilt and rewritten, never fatal
    third = Corpus.load(folder)
    assert torch.equal(third.valid, first.valid)
    assert cache.read_bytes() != b"not a torch file"

    (folder / "valid.txt").write_text("c c\n", encoding="utf-8")  # new content -> new key
    fourth = Corpus.load(folder)
    assert fourth.valid.tolist() == [2, 2, 3]
    assert len(cache_files(folder)) == 2


def test_cache_dir_and_no_cache(tmp_path):
    folder = write_folder(tmp_path / "d", "a\n", "a\n", "a\n")
    Corpus.load(folder, cache=False)
    assert cache_files(folder) == []
    Corpus.load(folder, cache_dir=tmp_path / "c")
    assert len(cache_files(tmp_path / "c")) == 1 and cache_files(folder) == []
    unwritable = tmp_path / "a-file"
    unwritable.write_text("")
    assert Corpus.load(folder, cache_dir=unwritable).train.tolist() == [0, 1]  # cache skipped, no crash


def test_read_only_folder_caches_in_the_user_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    folder = write_folder(tmp_path / "d", "a\n", "a\n", "a\n")
    folder.chmod(0o555)  # marked read-only (even root, who could write, leaves it alone)
    try:
        Corpus.load(folder)
    finally:
        folder.chmod(0o755)
    assert cache_files(folder) == [] and len(cache_files(tmp_path / "xdg" / "qrnn_lm")) == 1


# ----------------------------------------------------------------------------- batching


def test_batchify_streams_are_time_major_columns():
    ids = torch.arange(23)
    batched = batchify(ids, 4)
    assert batched.shape == (5, 4) and batched.is_contiguous()
    assert batched[:, 1].tolist() == [5, 6, 7, 8, 9]  # the trailing 3 tokens are dropped
    with pytest.raises(DataError, match="too few"):
        batchify(torch.arange(7), 4)
    with pytest.raises(ValueError, match="batch_size"):
        batchify(ids, 0)


def test_get_batch_shifts_targets_and_shortens_at_the_end():
    source = batchify(torch.arange(40), 2)  # [20, 2]
    inputs, targets = get_batch(source, 0, 7)
    assert inputs.shape == targets.shape == (7, 2)
    assert torch.equal(targets[:-1], inputs[1:]) and torch.equal(targets, source[1:8])
    inputs, targets = get_batch(source, 15, 7)
    assert inputs.shape == (4, 2) and targets[-1].tolist() == source[-1].tolist()
    with pytest.raises(ValueError, match="start"):
        get_batch(source, 19, 7)


def test_sample_seq_len_uses_only_its_generator():
    torch.manual_seed(0)
    global_state = torch.get_rng_state()
    a = [sample_seq_len(70, torch.Generator().manual_seed(3)) for _ in range(3)]
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    lengths = [sample_seq_len(70, g1) for _ in range(2000)]
    assert lengths == [sample_seq_len(70, g2) for _ in range(2000)]
    assert torch.equal(torch.get_rng_state(), global_state) and len(set(a)) == 1
    short = sum(length < 52 for length in lengths) / len(lengths)  # the bptt/2 branch (mean 35)
    assert 0.03 < short < 0.07
    long = [length for length in lengths if length >= 52]
    assert 69 < sum(long) / len(long) < 71 and min(lengths) >= 5
    assert min(sample_seq_len(2, g1) for _ in range(50)) == 5


# ----------------------------------------------------------------------------- folders


def test_resolve_data_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("QRNN_LM_DATA", str(tmp_path / "env"))
    assert resolve_data_dir(tmp_path / "flag") == tmp_path / "flag"
    assert resolve_data_dir(None) == tmp_path / "env"
    monkeypatch.delenv("QRNN_LM_DATA")
    monkeypatch.chdir(tmp_path)
    assert resolve_data_dir(None) == tmp_path / "data"


def test_prepare_dataset_with_folders_and_bad_names(tmp_path):
    folder = write_folder(tmp_path / "mine", "a\n", "a\n", "a\n")
    assert prepare_dataset(str(folder)) == folder
    with pytest.raises(DataError, match="ptb, wikitext-2, wikitext-103"):
        prepare_dataset("ptbb")
    with pytest.raises(DataError, match="not a folder"):
        prepare_dataset(str(folder / "train.txt"))
    (folder / "valid.txt").unlink()
    with pytest.raises(DataError, match=r"valid\.txt missing"):
        prepare_dataset(folder)


def test_mismatched_files_against_published_checksums():
    published = dict(DATASETS["ptb"].file_sha256)
    assert mismatched_files("ptb", published) == []
    assert mismatched_files("ptb", {**published, "valid.txt": "0" * 64}) == ["valid.txt"]
    assert mismatched_files("my-folder", {"train.txt": "0" * 64}) == []


# ----------------------------------------------------------------------------- real corpora


@needs_shared
def test_real_corpora_counts_and_checksums(tmp_path, monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("tried to download although the files are there")

    monkeypatch.setattr(download_module, "download_dataset", no_download)
    expected = {"ptb": (929_589, 73_760, 82_430, 10_000), "wikitext-2": (2_088_628, 217_646, 245_569, 33_278)}
    for name, counts in expected.items():
        folder = prepare_dataset(name, SHARED_DATA, progress=False)
        assert folder == SHARED_DATA / name
        corpus = Corpus.load(folder, cache_dir=tmp_path)
        assert (len(corpus.train), len(corpus.valid), len(corpus.test), len(corpus.vocab)) == counts
        assert corpus.checksums == DATASETS[name].file_sha256
        assert corpus.vocab.unk_index is not None and corpus.vocab.stoi[EOS] >= 0


@needs_shared
def test_real_ptb_ids_equal_the_line_by_line_reference():
    vocab_tokens, expected = naive_ids(SHARED_DATA / "ptb")
    corpus = Corpus.load(SHARED_DATA / "ptb", cache=False)
    assert corpus.vocab.itos == vocab_tokens
    for split in ("train", "valid", "test"):
        assert getattr(corpus, split).tolist() == expected[split]
