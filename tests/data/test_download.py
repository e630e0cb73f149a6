"""Downloads against a local HTTP server on 127.0.0.1 (no internet needed): success, mirrors,
checksum mismatch, truncation, hostile archives, offline."""

import dataclasses
import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest
from _http import Server, make_tgz, make_zip, sha256

from qrnn_lm.data import DATASETS, Corpus, DatasetSpec, DataError, Source, prepare_dataset
from qrnn_lm.data import archive as archive_module
from qrnn_lm.data.archive import UnsafeArchive, normalize_member

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
TEXTS = {"train.txt": b"the cat sat\non the mat\n", "valid.txt": b"the mat\n", "test.txt": b"a cat\n"}
WIKI_MEMBERS = {name: f"tiny/wiki.{name[:-4]}.tokens" for name in TEXTS}



def register(monkeypatch, *sources: Source, file_sha256=None) -> None:
    spec = DatasetSpec(name="tiny", sources=sources, file_sha256=file_sha256 or {k: sha256(v) for k, v in TEXTS.items()})
    monkeypatch.setitem(DATASETS, "tiny", spec)


def zip_source(server: Server, body: bytes, *, sha=True, path="/tiny.zip") -> Source:
    server.routes[path] = body
    return Source(url=server.url + path, format="zip", members=WIKI_MEMBERS, sha256=sha256(body) if sha else None)


def assert_clean(data_dir: Path) -> None:
    """A failed download leaves no folder, file or temporary behind."""
    assert not (data_dir / "tiny").exists()
    assert [p for p in data_dir.rglob("*")] == []


def test_zip_download_places_verified_files(server, monkeypatch, tmp_path):
    register(monkeypatch, zip_source(server, make_zip({WIKI_MEMBERS[k]: v for k, v in TEXTS.items()})))
    folder = prepare_dataset("tiny", tmp_path, progress=False)
    assert folder == tmp_path / "tiny"
    # the three files and their checksum record, nothing else (no temporary left behind)
    assert sorted(p.name for p in folder.iterdir()) == [".qrnn_lm_sha256.json", "test.txt", "train.txt", "valid.txt"]
    assert all((folder / k).read_bytes() == v for k, v in TEXTS.items())
    assert Corpus.load(folder, cache=False).train.tolist() == [0, 1, 2, 3, 4, 0, 5, 3]
    prepare_dataset("tiny", tmp_path, progress=False)
    assert server.requests == ["/tiny.zip"]  # present files are not downloaded again


def test_tgz_download_with_dot_slash_members_and_unwanted_links(server, monkeypatch, tmp_path):
    members = {f"./pkg/data/{k}": v for k, v in TEXTS.items()}
    server.routes["/a.tgz"] = make_tgz(members, links={"./pkg/link": ("data/train.txt", tarfile.SYMTYPE)})
    source = Source(url=server.url + "/a.tgz", format="tar", members={k: f"pkg/data/{k}" for k in TEXTS})
    register(monkeypatch, source)
    folder = prepare_dataset("tiny", tmp_path, progress=False)
    assert (folder / "valid.txt").read_bytes() == TEXTS["valid.txt"]


def test_archive_checksum_mismatch(server, monkeypatch, tmp_path):
    source = zip_source(server, make_zip({WIKI_MEMBERS[k]: v for k, v in TEXTS.items()}))
    register(monkeypatch, dataclasses.replace(source, sha256="0" * 64))
    with pytest.raises(DataError, match="sha256 of archive .* expected 0{64}: the download is corrupt") as info:
        prepare_dataset("tiny", tmp_path, progress=False)
    assert "retry later" in str(info.value) and "\n" not in str(info.value)
    assert "(the downloaded file was removed)" in str(info.value)
    assert_clean(tmp_path)


def test_extracted_file_checksum_mismatch(server, monkeypatch, tmp_path):
    members = {WIKI_MEMBERS[k]: v for k, v in TEXTS.items()}
    members[WIKI_MEMBERS["test.txt"]] = b"a dog\n"
    register(monkeypatch, zip_source(server, make_zip(members), sha=False))
    with pytest.raises(DataError, match=r"sha256 of test\.txt from .*tiny\.zip"):
        prepare_dataset("tiny", tmp_path, progress=False)
    assert_clean(tmp_path)


def test_truncated_download(server, monkeypatch, tmp_path):
    source = zip_source(server, make_zip({WIKI_MEMBERS[k]: v for k, v in TEXTS.items()}))
    server.truncate.add("/tiny.zip")
    register(monkeypatch, source)
    with pytest.raises(DataError, match=r"truncated download of .*tiny\.zip: got [\d,]+ of [\d,]+ bytes"):
        prepare_dataset("tiny", tmp_path, progress=False)
    assert_clean(tmp_path)


def test_size_mismatch_without_content_length_check(server, monkeypatch, tmp_path):
    source = zip_source(server, make_zip({WIKI_MEMBERS[k]: v for k, v in TEXTS.items()}), sha=False)
    register(monkeypatch, dataclasses.replace(source, num_bytes=10**6))
    with pytest.raises(DataError, match="expected 1,000,000"):
        prepare_dataset("tiny", tmp_path, progress=False)
    assert_clean(tmp_path)


def test_zip_with_path_escape_is_refused(server, monkeypatch, tmp_path):
    members = {WIKI_MEMBERS[k]: v for k, v in TEXTS.items()}
    members["../../evil.txt"] = b"owned"
    data_dir = tmp_path / "d"
    register(monkeypatch, zip_source(server, make_zip(members)))
    with pytest.raises(DataError, match=r"refused archive .*'\.\./\.\./evil\.txt' climbs out"):
        prepare_dataset("tiny", data_dir, progress=False)
    assert not list(tmp_path.rglob("evil.txt"))
    assert_clean(data_dir)


@pytest.mark.parametrize(
    "link, problem",
    [
        (("valid.txt", tarfile.SYMTYPE), "not a regular file"),  # a wanted member that is a link
        (("../../outside", tarfile.LNKTYPE), "points outside"),
    ],
)
def test_tar_with_links_is_refused(server, monkeypatch, tmp_path, link, problem):
    members = {f"pkg/{k}": v for k, v in TEXTS.items() if k != "train.txt"}
    name = "pkg/train.txt" if problem == "not a regular file" else "pkg/other"
    if name != "pkg/train.txt":
        members["pkg/train.txt"] = TEXTS["train.txt"]
    server.routes["/l.tgz"] = make_tgz(members, links={name: link})
    register(monkeypatch, Source(url=server.url + "/l.tgz", format="tar", members={k: f"pkg/{k}" for k in TEXTS}))
    with pytest.raises(DataError, match=problem):
        prepare_dataset("tiny", tmp_path, progress=False)
    assert_clean(tmp_path)


def test_zip_member_that_is_a_symlink_is_refused(server, monkeypatch, tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for target, member in WIKI_MEMBERS.items():
            info = zipfile.ZipInfo(member)
            if target == "valid.txt":  # a symlink entry: its "content" is the link target
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
                zf.writestr(info, "/etc/passwd")
            else:
                zf.writestr(info, TEXTS[target])
    register(monkeypatch, zip_source(server, buffer.getvalue()))
    with pytest.raises(DataError, match=r"'tiny/wiki\.valid\.tokens' is not a regular file"):
        prepare_dataset("tiny", tmp_path, progress=False)
    assert_clean(tmp_path)


def test_decompression_bomb_is_refused(server, monkeypatch, tmp_path):
    monkeypatch.setattr(archive_module, "MAX_MEMBER_BYTES", 1000)
    members = {WIKI_MEMBERS[k]: v for k, v in TEXTS.items()}
    members[WIKI_MEMBERS["train.txt"]] = b"a " * 5000  # compresses to almost nothing
    register(monkeypatch, zip_source(server, make_zip(members)))
    with pytest.raises(DataError, match="expands past 1,000 bytes"):
        prepare_dataset("tiny", tmp_path, progress=False)
    assert_clean(tmp_path)


def test_normalize_member():
    assert normalize_member("./a//b/./c") == "a/b/c"
    for bad in ("/etc/passwd", "a/../../b", "C:\\x", "..\\x"):
        with pytest.raises(UnsafeArchive):
            normalize_member(bad)


def test_offline_says_which_files_to_put_where(monkeypatch, tmp_path, closed_port_url):
    register(monkeypatch, Source(url=closed_port_url + "/w.zip", format="zip", members=WIKI_MEMBERS))
    with pytest.raises(DataError) as info:
        prepare_dataset("tiny", tmp_path, progress=False)
    message = str(info.value)
    assert "offline?" in message and "\n" not in message
    assert f"into {tmp_path / 'tiny'}" in message and "QRNN_LM_DATA" in message
    for target, member in WIKI_MEMBERS.items():
        assert f"{member} as {target}" in message
    assert_clean(tmp_path)


def test_http_error_is_not_called_offline(server, monkeypatch, tmp_path):
    register(monkeypatch, Source(url=server.url + "/gone.zip", format="zip", members=WIKI_MEMBERS))
    with pytest.raises(DataError, match="HTTP 404") as info:
        prepare_dataset("tiny", tmp_path, progress=False)
    assert "offline" not in str(info.value)


def test_next_mirror_after_a_failure_and_direct_files(server, monkeypatch, tmp_path, closed_port_url):
    for name, data in TEXTS.items():
        server.routes[f"/files/ptb.{name}"] = data
    dead = Source(url=closed_port_url + "/x.tgz", format="tar", members={k: k for k in TEXTS})
    files = Source(url=server.url + "/files/", format="files",
                   members={k: f"{server.url}/files/ptb.{k}" for k in TEXTS})
    register(monkeypatch, dead, files)
    folder = prepare_dataset("tiny", tmp_path, progress=False)
    assert all((folder / k).read_bytes() == v for k, v in TEXTS.items())


def test_no_download_when_disabled(server, monkeypatch, tmp_path):
    register(monkeypatch, zip_source(server, make_zip({WIKI_MEMBERS[k]: v for k, v in TEXTS.items()})))
    with pytest.raises(DataError, match="downloading is off; put train.txt, valid.txt, test.txt into"):
        prepare_dataset("tiny", tmp_path, download=False)
    assert server.requests == []


@pytest.mark.skipif(not (SHARED_DATA / "ptb").is_dir(), reason=f"real PTB not found at {SHARED_DATA}")
def test_real_ptb_entry_from_a_local_copy_of_the_archive(server, monkeypatch, tmp_path):
    """The registry's member paths and file checksums, served as Mikolov's archive lays them out."""
    spec = DATASETS["ptb"]
    archive = spec.sources[0]
    members = {"./" + archive.members[k]: (SHARED_DATA / "ptb" / k).read_bytes() for k in TEXTS}
    server.routes["/simple-examples.tgz"] = make_tgz(members)
    local = dataclasses.replace(archive, url=server.url + "/simple-examples.tgz", num_bytes=None, md5=None)
    monkeypatch.setitem(DATASETS, "ptb", dataclasses.replace(spec, sources=(local,)))
    folder = prepare_dataset("ptb", tmp_path, progress=False)
    assert Corpus.load(folder, cache=False).checksums == spec.file_sha256
