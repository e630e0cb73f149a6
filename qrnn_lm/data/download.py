"""Finding a data folder, and downloading the named datasets into it.

A download goes to a temporary file inside the dataset's folder, is checked (byte count against
Content-Length and the published size, sha256 (or md5) of the archive and/or sha256 of the extracted
files), and only then are the missing files moved into place with ``os.replace``; a file already in
the folder is never downloaded again nor overwritten. Temporary files are removed on any failure.
Mirrors are tried in order; when all fail, one :class:`DataError` line names each URL tried, why it
failed, and which files to put where by hand. Files already there (placed by hand, or by an earlier
run) are checked against the published sha256 once (see :mod:`.checksums`): a one-line warning
when one differs.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import ssl
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from .archive import UnsafeArchive, copy_hashing, extract_members
from .checksums import cached_sha256, record_sha256
from .errors import DataError
from .registry import DATASETS, SPLIT_FILES, DatasetSpec, Source, mismatched_files

log = logging.getLogger(__name__)

DATA_ENV = "QRNN_LM_DATA"
TIMEOUT_S = 60  # per socket operation, not for the whole download
# Some mirrors (wikitext.smerity.com) answer 403 to Python's default "Python-urllib/3.x"; this one
# is accepted by browser-minded filters and still says who is asking.
USER_AGENT = "Mozilla/5.0 (compatible; qrnn-lm dataset download)"


class _SourceFailed(Exception):
    """One mirror failed; ``offline`` when the network itself was unreachable."""

    def __init__(self, reason: str, *, offline: bool = False):
        super().__init__(reason)
        self.offline = offline


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The data directory: ``data_dir`` if given, else ``$QRNN_LM_DATA``, else ``./data`` (absolute)."""
    if data_dir is None or str(data_dir) == "":
        data_dir = os.environ.get(DATA_ENV) or "data"
    return Path(data_dir).expanduser().absolute()


def prepare_dataset(
    name_or_path: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    progress: bool = True,
) -> Path:
    """A folder holding ``train.txt``, ``valid.txt`` and ``test.txt``.

    A known name (see ``DATASETS``) means ``<data_dir>/<name>/``; the files missing there are
    downloaded (unless ``download=False``), the others kept as they are, and checked against the
    published sha256 (hashed once, then remembered by size and mtime): a one-line warning names a
    file that differs. Anything else is taken as a folder path. Raises :class:`DataError` for an
    unknown name that is no folder (listing the known names), missing files, or a failed download.
    """
    name = str(name_or_path)
    if name in DATASETS:
        spec = DATASETS[name]
        folder = resolve_data_dir(data_dir) / name
        missing = _missing_files(folder)
        if missing:
            if not download:
                raise DataError(
                    f"{', '.join(missing)} missing in {folder} and downloading is off; "
                    f"{_manual_hint(spec, folder)}"
                )
            download_dataset(spec, folder, progress=progress, only=missing)
        _warn_if_changed(spec, folder)
        return folder
    folder = Path(name).expanduser()
    if not folder.is_dir():
        known = ", ".join(DATASETS)
        what = "is a file, not a folder" if folder.exists() else "is neither a known dataset nor a folder"
        raise DataError(f"{name!r} {what}; use one of {known}, or a folder holding {', '.join(SPLIT_FILES)}")
    missing = _missing_files(folder)
    if missing:
        raise DataError(f"{', '.join(missing)} missing in {folder.absolute()}; a data folder must hold {', '.join(SPLIT_FILES)}")
    return folder


def download_dataset(spec: DatasetSpec, folder: Path, *, progress: bool = True, only: list[str] | None = None) -> None:
    """Download ``spec``'s files ``only`` (default: all three) into ``folder`` (created if needed),
    trying its sources in order. A file already in ``folder`` is never overwritten."""
    wanted = list(SPLIT_FILES if only is None else only)
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(f"cannot create {folder} ({error.strerror}); choose a writable --data-dir or set {DATA_ENV}") from None
    failures = []
    for source in spec.sources:
        try:
            _download_source(spec, source, folder, wanted, progress)
            return
        except _SourceFailed as failure:
            failures.append(failure)
        except OSError as error:  # the folder itself: disk full, permissions
            raise DataError(f"cannot write into {folder} ({error}); free some space or choose another --data-dir") from None
    if created:
        try:
            folder.rmdir()  # leave no empty folder that looks like a dataset
        except OSError:
            pass
    reasons = "; ".join(str(failure) for failure in failures)
    if all(failure.offline for failure in failures):
        raise DataError(f"cannot download {spec.name} (offline? {reasons}); {_manual_hint(spec, folder)}")
    raise DataError(f"cannot download {spec.name}: {reasons}; retry later, or {_manual_hint(spec, folder)}")


def _missing_files(folder: Path) -> list[str]:
    return [name for name in SPLIT_FILES if not (folder / name).is_file()]


def _warn_if_changed(spec: DatasetSpec, folder: Path) -> None:
    """One warning line naming the files whose sha256 differs from the published one."""
    if not spec.file_sha256:
        return  # nothing published to compare with: do not spend time hashing
    checksums = {name: cached_sha256(folder / name) for name in spec.file_sha256}
    changed = mismatched_files(spec.name, checksums)
    if changed:
        log.warning(
            "%s in %s %s from the published %s files (sha256); results will not compare with "
            "published ones: delete %s to download the originals",
            ", ".join(changed), folder, "differs" if len(changed) == 1 else "differ", spec.name,
            "it" if len(changed) == 1 else "them",
        )


def _manual_hint(spec: DatasetSpec, folder: Path) -> str:
    """What to do by hand: which files to put where (one line), naming every mirror."""
    archives = [source for source in spec.sources if source.format != "files"]
    ways = []
    if archives:
        urls = " or ".join(dict.fromkeys(source.url for source in archives))
        if spec.prepare is not None:
            ways.append(f"unzip {urls} and split it as salesforce/awd-lstm-lm's data/enwik8/prep_enwik8.py does")
        else:
            members = ", ".join(f"{member} as {target}" for target, member in archives[0].members.items())
            ways.append(f"extract {members} from {urls}")
    for source in spec.sources:
        if source.format == "files":
            ways.append("download " + ", ".join(f"{url} as {target}" for target, url in source.members.items()))
    return (
        f"put {', '.join(SPLIT_FILES)} into {folder} ({'; or '.join(ways)}), or point --data-dir or "
        f"{DATA_ENV} at a folder holding {spec.name}/"
    )


def _download_source(spec: DatasetSpec, source: Source, folder: Path, wanted: list[str], progress: bool) -> None:
    """Fetch one source, check it, and move the ``wanted`` files into ``folder``."""
    temporaries: list[Path] = []
    try:
        if source.format == "files":
            files = {}
            for target in wanted:
                tmp, digest = _fetch(source.members[target], folder, None, progress)
                temporaries.append(tmp)
                files[target] = (tmp, digest)
        else:
            archive, digest = _fetch(source.url, folder, source.num_bytes, progress)
            temporaries.append(archive)
            _check_digest(f"archive {source.url}", "sha256", digest, source.sha256)
            if source.md5 is not None:
                _check_digest(f"archive {source.url}", "md5", _md5(archive), source.md5)
            members = source.members if spec.prepare else {target: source.members[target] for target in wanted}
            files = _extract(archive, source, members, folder)
            temporaries.extend(tmp for tmp, _ in files.values())
            if spec.prepare is not None:
                (member, _), = files.values()
                try:
                    files = spec.prepare(member, folder)
                except ValueError as error:
                    raise _SourceFailed(f"cannot split {source.url}: {error}") from None
                temporaries.extend(tmp for tmp, _ in files.values())
        for target in wanted:
            _check_digest(f"{target} from {source.url}", "sha256", files[target][1], spec.file_sha256.get(target))
        for target in wanted:
            if not (folder / target).exists():  # never overwrite a file that appeared meanwhile
                os.replace(files[target][0], folder / target)
                record_sha256(folder / target, files[target][1])
    finally:
        for tmp in temporaries:
            tmp.unlink(missing_ok=True)


def _extract(archive: Path, source: Source, members: dict[str, str], folder: Path) -> dict[str, tuple[Path, str]]:
    try:
        return extract_members(archive, source.format, members, folder)
    except UnsafeArchive as error:
        raise _SourceFailed(f"refused archive {source.url}: {error}") from None
    except Exception as error:  # tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error
        if isinstance(error, OSError) and error.errno is not None:
            raise  # a real I/O error of the folder (disk full...), not a damaged archive
        raise _SourceFailed(f"damaged archive {source.url}: {type(error).__name__}: {error}") from None


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_digest(what: str, kind: str, actual: str, expected: str | None) -> None:
    if expected is not None and actual != expected:
        raise _SourceFailed(
            f"{kind} of {what} is {actual}, expected {expected}: the download is corrupt or the file "
            "changed upstream (the downloaded file was removed)"
        )


def _fetch(url: str, folder: Path, expected_bytes: int | None, progress: bool) -> tuple[Path, str]:
    """Download ``url`` into a temporary file in ``folder``; returns (path, sha256).

    Raises :class:`_SourceFailed` for network errors and truncated downloads (the partial file is
    deleted), ``OSError`` when the folder cannot be written.
    """
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".download-", suffix=".part")
    try:
        with open(fd, "wb") as out:
            received, declared, digest = _stream(url, out, expected_bytes, progress)
        if declared is not None and received != declared:
            raise _SourceFailed(f"truncated download of {url}: got {received:,} of {declared:,} bytes")
        if expected_bytes is not None and received != expected_bytes:
            raise _SourceFailed(f"{url} sent {received:,} bytes, expected {expected_bytes:,}: truncated or changed upstream")
        return Path(tmp), digest
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _stream(url: str, out, expected_bytes: int | None, progress: bool) -> tuple[int, int | None, str]:
    """Copy the body of ``url`` to ``out``; returns (bytes received, Content-Length, sha256)."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            length = response.headers.get("Content-Length")
            declared = int(length) if length and length.strip().isdigit() else None
            with tqdm(
                total=declared or expected_bytes, unit="B", unit_scale=True, unit_divisor=1024,
                desc=url.rsplit("/", 1)[-1], disable=not progress, leave=False,
            ) as bar:
                counter = _CountingWriter(out, bar)
                digest = copy_hashing(response, counter)
            return counter.count, declared, digest
    except urllib.error.HTTPError as error:
        raise _SourceFailed(f"{url} answered HTTP {error.code} {error.reason}") from None
    except urllib.error.URLError as error:
        raise _SourceFailed(f"cannot reach {url}: {error.reason}", offline=True) from None
    except (TimeoutError, ConnectionError, ssl.SSLError, http.client.HTTPException) as error:
        raise _SourceFailed(f"download of {url} broke off ({type(error).__name__}: {error}); it is truncated") from None


class _CountingWriter:
    """A file wrapper that counts the bytes written and advances a progress bar."""

    def __init__(self, out, bar):
        self.out, self.bar, self.count = out, bar, 0

    def write(self, block: bytes) -> None:
        self.out.write(block)
        self.count += len(block)
        self.bar.update(len(block))
