"""The named datasets beyond PTB words: enwik8's split, ptb-char, WikiText's mirrors, and data
already on disk (only missing files fetched, hand-placed files checked once). All downloads come
from a local HTTP server on 127.0.0.1."""

import dataclasses
import hashlib
import logging
from functools import partial

import pytest
from _http import make_tgz, make_zip, sha256

from qrnn_lm.data import DATASETS, Corpus, DataError, DatasetSpec, Source, checksums, prepare_dataset
from qrnn_lm.data import download as download_module
from qrnn_lm.data import enwik8 as enwik8_module
from qrnn_lm.data.enwik8 import awd_offsets, split_like_awd
from qrnn_lm.data.registry import DEAD_HOSTS

TEXTS = {"train.txt": b"the cat sat\non the mat\n", "valid.txt": b"the mat\n", "test.txt": b"a cat\n"}


def awd_text(part: bytes) -> bytes:
    """salesforce/awd-lstm-lm data/enwik8/prep_enwik8.py's format, written as its one-liner."""
    return " ".join([str(c) if c != ord("\n") else "\n" for c in part]).encode()


def local(name: str, server, body: bytes, *, path: str, **changes) -> DatasetSpec:
    """The registry's entry ``name`` with one source: its first, served locally, checksums of ``body``."""
    spec = DATASETS[name]
    server.routes[path] = body
    source = dataclasses.replace(
        spec.sources[0], url=server.url + path, num_bytes=len(body),
        sha256=sha256(body) if spec.sources[0].sha256 else None,
        md5=hashlib.md5(body).hexdigest() if spec.sources[0].md5 else None,
    )
    return dataclasses.replace(spec, sources=(source,), **changes)


# ----------------------------------------------------------------------------------------- enwik8


def test_enwik8_entry_is_awds_split_of_the_published_zip():
    spec = DATASETS["enwik8"]
    assert spec.prepare.func is split_like_awd and spec.prepare.keywords == {"num_test_bytes": 5_000_000}
    assert all(source.members == {"enwik8": "enwik8"} and source.num_bytes == 36_445_475 for source in spec.sources)
    assert spec.sources[0].url == "http://mattmahoney.net/dc/enwik8.zip"  # awd-lstm-lm getdata.sh
    # awd: data[:-2n], data[-2n:-n], data[-n:] of the 10^8 bytes = the 90M / 5M / 5M split
    assert awd_offsets(10**8, 5 * 10**6) == {
        "train.txt": (0, 90 * 10**6), "valid.txt": (90 * 10**6, 95 * 10**6), "test.txt": (95 * 10**6, 10**8),
    }
    assert (spec.tokenizer, spec.unit) == ("word", "bpc")


@pytest.mark.parametrize("block", [1 << 20, 7])  # one block per split, and many (the joins between blocks)
def test_enwik8_split_of_a_small_synthetic_zip(server, monkeypatch, tmp_path, block):
    monkeypatch.setattr(enwik8_module, "_BLOCK", block)
    data = bytes(range(256)) * 3 + b"<page>\n\n  <title>A</title>\n\xe2\x82\xac end\n" + bytes(range(200, 256))
    n = 50  # plays the part of enwik8's 5,000,000
    spec = local("enwik8", server, make_zip({"enwik8": data}), path="/enwik8.zip",
                 prepare=partial(split_like_awd, num_test_bytes=n))
    monkeypatch.setitem(DATASETS, "enwik8", spec)
    folder = prepare_dataset("enwik8", tmp_path, progress=False)
    parts = {"train.txt": data[: -2 * n], "valid.txt": data[-2 * n : -n], "test.txt": data[-n:]}
    for name, part in parts.items():
        assert (folder / name).read_bytes() == awd_text(part), name
    assert not list(folder.glob(".*.part"))
    # one token per byte (the newline byte as its line's <eos>), plus the last line's <eos>
    corpus = Corpus.load(folder, cache=False)
    assert [len(corpus.train), len(corpus.valid), len(corpus.test)] == [len(p) + 1 for p in parts.values()]


def test_enwik8_too_small_to_split_is_one_line(server, monkeypatch, tmp_path):
    spec = local("enwik8", server, make_zip({"enwik8": b"0123456789"}), path="/enwik8.zip")
    monkeypatch.setitem(DATASETS, "enwik8", spec)
    with pytest.raises(DataError, match=r"cannot split .*enwik8\.zip: a file of 10 bytes has no training part") as info:
        prepare_dataset("enwik8", tmp_path, progress=False)
    assert "prep_enwik8.py" in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "enwik8").exists()


# --------------------------------------------------------------------------------------- ptb-char


def simple_examples() -> dict[str, bytes]:
    """A tiny simple-examples.tgz: the word files and the character files side by side."""
    chars = {"train.txt": b" a _ c a t\n", "valid.txt": b" t h e\n", "test.txt": b" m a t\n"}
    members = {f"./simple-examples/data/ptb.char.{k}": v for k, v in chars.items()}
    members.update({f"./simple-examples/data/ptb.{k}": TEXTS[k] for k in TEXTS})
    return chars, members


def test_ptb_char_comes_from_the_ptb_archive(server, monkeypatch, tmp_path):
    spec = DATASETS["ptb-char"]
    assert [s.url for s in spec.sources] == [s.url for s in DATASETS["ptb"].sources if s.format == "tar"]
    assert (spec.tokenizer, spec.unit) == ("char", "bpc")
    chars, members = simple_examples()
    monkeypatch.setitem(DATASETS, "ptb-char", local("ptb-char", server, make_tgz(members), path="/se.tgz"))
    folder = prepare_dataset("ptb-char", tmp_path, progress=False)
    assert {name: (folder / name).read_bytes() for name in chars} == chars
    corpus = Corpus.load(folder, cache=False)
    assert corpus.vocab.itos[:5] == ["a", "_", "c", "t", "<eos>"]  # one token per character


def test_archive_md5_mismatch_removes_the_download(server, monkeypatch, tmp_path):
    _, members = simple_examples()
    spec = local("ptb-char", server, make_tgz(members), path="/se.tgz")
    spec = dataclasses.replace(spec, sources=(dataclasses.replace(spec.sources[0], md5="0" * 32),))
    monkeypatch.setitem(DATASETS, "ptb-char", spec)
    with pytest.raises(DataError, match=r"md5 of archive .*se\.tgz is [0-9a-f]{32}, expected 0{32}") as info:
        prepare_dataset("ptb-char", tmp_path, progress=False)
    assert "(the downloaded file was removed)" in str(info.value) and "\n" not in str(info.value)
    assert list(tmp_path.rglob("*")) == []


# --------------------------------------------------------------------------------------- WikiText


def test_no_source_list_points_only_at_the_dead_bucket():
    for name, spec in DATASETS.items():
        alive = [s.url for s in spec.sources if not any(host in s.url for host in DEAD_HOSTS)]
        assert alive, f"{name} has only dead sources"
        assert alive[0] == spec.sources[0].url, f"{name} tries a dead source first"
    for name in ("wikitext-2", "wikitext-103"):
        urls = [s.url for s in DATASETS[name].sources]
        assert urls[0] == f"https://wikitext.smerity.com/{name}-v1.zip"
        assert len({s.sha256 for s in DATASETS[name].sources}) == 1  # the identical archive everywhere


def wikitext_like(server, monkeypatch, *paths: str) -> None:
    """A WikiText-2-like entry whose sources are ``paths`` on the local server, all the same zip."""
    spec = DATASETS["wikitext-2"]
    members = spec.sources[0].members
    body = make_zip({members[k]: v for k, v in TEXTS.items()})
    sources = []
    for path in paths:
        server.routes[path] = body
        sources.append(dataclasses.replace(spec.sources[0], url=server.url + path, sha256=sha256(body), num_bytes=len(body)))
    file_sha256 = {k: sha256(v) for k, v in TEXTS.items()}
    monkeypatch.setitem(DATASETS, "wikitext-2", dataclasses.replace(spec, sources=tuple(sources), file_sha256=file_sha256))


def test_wikitext_from_a_mirror_that_refuses_pythons_user_agent(server, monkeypatch, tmp_path):
    server.forbidden.add("/dead/wikitext-2-v1.zip")
    server.picky.add("/smerity/wikitext-2-v1.zip")
    wikitext_like(server, monkeypatch, "/dead/wikitext-2-v1.zip", "/smerity/wikitext-2-v1.zip")
    folder = prepare_dataset("wikitext-2", tmp_path, progress=False)
    assert all((folder / k).read_bytes() == v for k, v in TEXTS.items())
    assert server.requests == ["/dead/wikitext-2-v1.zip", "/smerity/wikitext-2-v1.zip"]  # in order
    assert not any(agent.startswith("Python-urllib") for agent in server.user_agents)


def test_all_mirrors_failing_is_one_line_naming_each_url(server, monkeypatch, tmp_path):
    server.forbidden.update({"/a/w.zip", "/b/w.zip"})
    wikitext_like(server, monkeypatch, "/a/w.zip", "/b/w.zip")
    with pytest.raises(DataError) as info:
        prepare_dataset("wikitext-2", tmp_path, progress=False)
    message = str(info.value)
    assert "\n" not in message
    for path in ("/a/w.zip", "/b/w.zip"):
        assert f"{server.url}{path} answered HTTP 403" in message
    assert f"put train.txt, valid.txt, test.txt into {tmp_path / 'wikitext-2'}" in message
    assert f"wikitext-2/wiki.train.tokens as train.txt" in message
    assert f"from {server.url}/a/w.zip or {server.url}/b/w.zip" in message


# ----------------------------------------------------------------------------- data already on disk


def tiny_zip_spec(server, monkeypatch) -> DatasetSpec:
    members = {k: f"tiny/{k}" for k in TEXTS}
    body = make_zip({members[k]: v for k, v in TEXTS.items()})
    server.routes["/tiny.zip"] = body
    spec = DatasetSpec(
        name="tiny", sources=(Source(url=server.url + "/tiny.zip", format="zip", members=members, sha256=sha256(body)),),
        file_sha256={k: sha256(v) for k, v in TEXTS.items()},
    )
    monkeypatch.setitem(DATASETS, "tiny", spec)
    return spec


def test_only_the_missing_file_is_fetched_and_nothing_is_overwritten(server, monkeypatch, tmp_path, caplog):
    tiny_zip_spec(server, monkeypatch)
    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / "train.txt").write_bytes(TEXTS["train.txt"])
    (folder / "valid.txt").write_bytes(b"my own valid text\n")  # edited by the user: kept as it is
    with caplog.at_level(logging.WARNING):
        prepare_dataset("tiny", tmp_path, progress=False)
    assert (folder / "test.txt").read_bytes() == TEXTS["test.txt"]
    assert (folder / "valid.txt").read_bytes() == b"my own valid text\n"
    assert (folder / "train.txt").read_bytes() == TEXTS["train.txt"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert warnings[0].startswith(f"valid.txt in {folder} differs from the published tiny files")


def test_only_missing_direct_files_are_requested(server, monkeypatch, tmp_path):
    for name, data in TEXTS.items():
        server.routes[f"/f/{name}"] = data
    source = Source(url=server.url + "/f/", format="files", members={k: f"{server.url}/f/{k}" for k in TEXTS})
    monkeypatch.setitem(DATASETS, "tiny", DatasetSpec(name="tiny", sources=(source,)))
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "valid.txt").write_bytes(b"kept\n")
    prepare_dataset("tiny", tmp_path, progress=False)
    assert sorted(server.requests) == ["/f/test.txt", "/f/train.txt"]
    assert (tmp_path / "tiny" / "valid.txt").read_bytes() == b"kept\n"


def test_hand_placed_files_are_hashed_once_and_again_when_changed(server, monkeypatch, tmp_path, caplog):
    tiny_zip_spec(server, monkeypatch)
    folder = tmp_path / "tiny"
    folder.mkdir()
    for name, data in TEXTS.items():
        (folder / name).write_bytes(data)
    hashed = []
    real = checksums.file_sha256
    monkeypatch.setattr(checksums, "file_sha256", lambda path: hashed.append(path.name) or real(path))
    with caplog.at_level(logging.WARNING):
        prepare_dataset("tiny", tmp_path, progress=False)
        assert sorted(hashed) == sorted(TEXTS)
        prepare_dataset("tiny", tmp_path, progress=False)
        assert len(hashed) == 3  # the second run reads the record
        assert not caplog.records and server.requests == []
        (folder / "test.txt").write_bytes(b"a dog\n")  # same size, new content and mtime
        prepare_dataset("tiny", tmp_path, progress=False)
    assert hashed[3:] == ["test.txt"]
    assert [r.getMessage().split(" in ")[0] for r in caplog.records] == ["test.txt"]


def test_read_only_folder_keeps_its_record_in_the_user_cache(server, monkeypatch, tmp_path):
    tiny_zip_spec(server, monkeypatch)
    folder = tmp_path / "data" / "tiny"
    folder.mkdir(parents=True)
    for name, data in TEXTS.items():
        (folder / name).write_bytes(data)
    folder.chmod(0o555)
    try:
        prepare_dataset("tiny", tmp_path / "data", progress=False)
        assert sorted(p.name for p in folder.iterdir()) == sorted(TEXTS)  # nothing written there
        assert len(list((tmp_path / "user-cache" / "qrnn_lm" / "sha256").glob("*.json"))) == 1
    finally:
        folder.chmod(0o755)


def test_a_file_placed_after_the_download_started_is_not_overwritten(server, monkeypatch, tmp_path):
    tiny_zip_spec(server, monkeypatch)
    folder = tmp_path / "tiny"
    real_fetch = download_module._fetch

    def fetch_then_user_places_a_file(*args, **kwargs):
        result = real_fetch(*args, **kwargs)
        (folder / "train.txt").write_bytes(b"placed meanwhile\n")
        return result

    monkeypatch.setattr(download_module, "_fetch", fetch_then_user_places_a_file)
    prepare_dataset("tiny", tmp_path, progress=False)
    assert (folder / "train.txt").read_bytes() == b"placed meanwhile\n"
    assert (folder / "valid.txt").read_bytes() == TEXTS["valid.txt"]
