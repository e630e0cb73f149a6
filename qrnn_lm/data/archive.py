"""Safe extraction of the few files a dataset needs from a .tgz/.tar.gz or .zip archive.

Only the wanted members are read, and they are written to temporary files whose names this code
chooses, never to a path taken from the archive. Besides, an archive is refused when any member
has an absolute path or a ``..`` component, or when a wanted member is not a regular file
(symlink, hard link, device, directory) or appears twice.
"""

from __future__ import annotations

import hashlib
import stat
import tarfile
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import IO


class UnsafeArchive(Exception):
    """The archive is malformed or tries to escape its folder; ``str(e)`` says how."""


def normalize_member(name: str) -> str:
    """``./a//b/c`` -> ``a/b/c``; raises :class:`UnsafeArchive` for absolute or ``..`` paths."""
    posix = name.replace("\\", "/")
    if posix.startswith("/") or (len(posix) > 1 and posix[1] == ":"):
        raise UnsafeArchive(f"member {name!r} has an absolute path")
    parts = [part for part in PurePosixPath(posix).parts if part not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchive(f"member {name!r} climbs out of the archive with '..'")
    return "/".join(parts)


MAX_MEMBER_BYTES = 4 << 30  # no corpus file comes near this (WikiText-103 train: 0.5 GiB)


def copy_hashing(src: IO[bytes], dst: IO[bytes], max_bytes: int | None = None) -> str:
    """Copy a binary stream and return the sha256 of what was copied.

    Raises :class:`UnsafeArchive` past ``max_bytes`` (a decompression bomb).
    """
    digest = hashlib.sha256()
    copied = 0
    while block := src.read(1 << 20):
        copied += len(block)
        if max_bytes is not None and copied > max_bytes:
            raise UnsafeArchive(f"a member expands past {max_bytes:,} bytes")
        digest.update(block)
        dst.write(block)
    return digest.hexdigest()


def extract_members(archive: Path, fmt: str, wanted: dict[str, str], dest_dir: Path) -> dict[str, tuple[Path, str]]:
    """Extract ``wanted`` (target name -> member path) into temporary files in ``dest_dir``.

    Returns target name -> (temporary file, its sha256). The caller renames or deletes the files;
    on any error the files made so far are deleted here. Raises :class:`UnsafeArchive`, or
    ``tarfile.TarError`` / ``zipfile.BadZipFile`` / ``EOFError`` for a damaged archive.
    """
    by_member = {normalize_member(member): target for target, member in wanted.items()}
    extracted: dict[str, tuple[Path, str]] = {}

    def take(target: str, reader: IO[bytes]) -> None:
        fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=f".{target}.", suffix=".part")
        extracted[target] = (Path(tmp), "")
        with open(fd, "wb") as out:
            extracted[target] = (Path(tmp), copy_hashing(reader, out, MAX_MEMBER_BYTES))

    try:
        if fmt == "tar":
            _extract_tar(archive, by_member, take)
        elif fmt == "zip":
            _extract_zip(archive, by_member, take)
        else:
            raise ValueError(f"archive format must be 'tar' or 'zip', got {fmt!r}")
        absent = [wanted[target] for target in wanted if target not in extracted]
        if absent:
            raise UnsafeArchive(f"the archive lacks {', '.join(absent)}")
    except BaseException:
        for tmp, _ in extracted.values():
            tmp.unlink(missing_ok=True)
        raise
    return extracted


def _extract_tar(archive: Path, by_member: dict[str, str], take) -> None:
    # Stream mode ("r|*"): one sequential pass through the compressed file.
    seen = set()
    with tarfile.open(archive, "r|*") as tar:
        for member in tar:
            name = normalize_member(member.name)
            if (member.issym() or member.islnk()) and _link_escapes(name, member.linkname, member.issym()):
                raise UnsafeArchive(f"link {member.name!r} points outside the archive ({member.linkname!r})")
            target = by_member.get(name)
            if target is None:
                continue
            if not member.isreg():
                raise UnsafeArchive(f"member {member.name!r} is not a regular file (link, device or folder)")
            if name in seen:
                raise UnsafeArchive(f"member {member.name!r} appears twice")
            seen.add(name)
            reader = tar.extractfile(member)
            with reader:
                take(target, reader)


def _link_escapes(name: str, linkname: str, symbolic: bool) -> bool:
    """Whether a link target leaves the archive root (symlinks resolve from the link's folder,
    hard links from the root)."""
    if linkname.startswith("/"):
        return True
    stack = list(PurePosixPath(name).parent.parts) if symbolic else []
    for part in linkname.split("/"):
        if part == "..":
            if not stack:
                return True
            stack.pop()
        elif part not in ("", "."):
            stack.append(part)
    return False


def _extract_zip(archive: Path, by_member: dict[str, str], take) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        names = [normalize_member(info.filename) for info in infos]  # refuse escapes anywhere
        for info, name in zip(infos, names):
            target = by_member.get(name)
            if target is None:
                continue
            if names.count(name) > 1:
                raise UnsafeArchive(f"member {info.filename!r} appears twice")
            file_type = stat.S_IFMT(info.external_attr >> 16)  # Unix type bits; 0 if not recorded
            if info.is_dir() or file_type not in (0, stat.S_IFREG):
                raise UnsafeArchive(f"member {info.filename!r} is not a regular file (link, device or folder)")
            with zf.open(info) as reader:
                take(target, reader)


__all__ = ["UnsafeArchive", "copy_hashing", "extract_members", "normalize_member"]
