"""Files the project names exist: a repository path written in code, comments or docs
(``docs/...``, ``scripts/...``, ``notes/...``) and every relative Markdown link. A reader sent to
a file that is not there (``notes/kernel_contract.md`` once) learns to distrust the rest."""

import os
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCES = ["qrnn_lm", "docs", "scripts", "tests", "configs", ".ci"]
TOP_FILES = ["README.md", "Makefile", "pyproject.toml"]
SUFFIXES = {".py", ".md", ".toml", ".cu", ".cpp", ".h", ".txt", ""}
# A path from the repository root: one of its top folders, then a name.
PATH = re.compile(r"(?<![\w./-])((?:notes|docs|scripts|configs|tests|qrnn_lm|examples|\.ci)/[\w./-]*\w)(\*?)")
LINK = re.compile(r"\]\(([^)\s]+)\)")
# Named on purpose although absent from a checkout: the recipes' copy inside a built wheel.
NOT_IN_A_CHECKOUT = {"qrnn_lm/configs"}


def project_files():
    for name in TOP_FILES:
        yield REPO / name
    for folder in SOURCES:
        for path in sorted((REPO / folder).rglob("*")):
            # This file names an absent file on purpose, to show that the check can fail.
            if (path.is_file() and path.suffix in SUFFIXES and "__pycache__" not in path.parts
                    and path != Path(__file__).resolve()):
                yield path


def missing_references(files) -> list[str]:
    missing = []
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        for match in PATH.finditer(text):
            ref, glob = match.groups()
            if not glob and ref not in NOT_IN_A_CHECKOUT and not (REPO / ref).exists():
                missing.append(f"{os.path.relpath(path, REPO)}: {ref}")
        if path.suffix == ".md":
            for match in LINK.finditer(text):
                ref = match.group(1).split("#")[0]
                if ref and not re.match(r"[a-z]+:", ref) and not (path.parent / ref).exists():
                    missing.append(f"{os.path.relpath(path, REPO)}: link {ref}")
    return missing


def test_every_named_repository_file_exists():
    files = list(project_files())
    assert len(files) > 100  # the walk found the project
    assert missing_references(files) == []


def test_the_check_sees_a_missing_file(tmp_path):
    """The check itself can fail: a comment naming an absent file, a dead link."""
    source = tmp_path / "kernel.py"
    source.write_text("# see notes/kernel_contract.md and docs/export.md\n")
    page = tmp_path / "page.md"
    page.write_text("[gone](nowhere.md) [ok](https://example.org) [here](page.md#top)\n")
    found = [line.split(": ", 1)[1] for line in missing_references([source, page])]
    assert found == ["notes/kernel_contract.md", "link nowhere.md"]
