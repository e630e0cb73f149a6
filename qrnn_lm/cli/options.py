"""What the commands share: the option types (``--data``, ``--device``, ...), the choices they take,
and the one way a user error ends a command: ``error: <one line>`` on stderr and exit status 1."""

from __future__ import annotations

from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..config import UserError

EXIT_USER_ERROR = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shell convention (SIGTERM: 143, SIGHUP: 129)


class Dataset(str, Enum):
    """The named corpora (``qrnn_lm.data.DATASETS``); ``--data`` also takes a folder."""

    ptb = "ptb"
    wikitext_2 = "wikitext-2"
    wikitext_103 = "wikitext-103"
    ptb_char = "ptb-char"
    enwik8 = "enwik8"


class Device(str, Enum):
    auto = "auto"  # CUDA when available, else CPU
    cpu = "cpu"
    cuda = "cuda"


class Split(str, Enum):
    train = "train"
    valid = "valid"
    test = "test"


def _complete_dataset(incomplete: str) -> list[str]:
    return [item.value for item in Dataset if item.value.startswith(incomplete)]


# Options shared by several commands.
DataOption = Annotated[
    Optional[str],
    typer.Option(
        "--data",
        metavar="NAME|PATH",
        help="ptb, wikitext-2, wikitext-103, ptb-char, enwik8 (downloaded when missing), a folder holding train.txt, valid.txt, test.txt, or one text file (split 90/5/5% by lines).",
        autocompletion=_complete_dataset,
    ),
]
DataDirOption = Annotated[
    Optional[Path],
    typer.Option("--data-dir", metavar="DIR", help="Where named datasets live (default: $QRNN_LM_DATA, else ./data)."),
]
DeviceOption = Annotated[Device, typer.Option("--device", help="auto picks CUDA when available.", case_sensitive=False)]
ProgressOption = Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")]


def one_line(message: str) -> str:
    return " ".join(part.strip() for part in str(message).splitlines() if part.strip())


def error_exit(message: str) -> typer.Exit:
    """Print ``error: <message>`` as one line on stderr; return the exit-1 exception to raise."""
    typer.echo(f"error: {one_line(message)}", err=True)
    return typer.Exit(EXIT_USER_ERROR)


@contextmanager
def user_errors():
    """Turn a UserError into ``error: <one line>`` + exit 1, and Ctrl-C into exit 130."""
    try:
        yield
    except UserError as error:
        raise error_exit(str(error)) from None
    except KeyboardInterrupt:
        typer.echo("\ninterrupted", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None


def check_data(data: str | None) -> None:
    """Fail fast (before torch loads) on a --data that is neither a known name, a folder nor a file."""
    if data is None or data in {item.value for item in Dataset} or Path(data).expanduser().exists():
        return
    names = ", ".join(item.value for item in Dataset)
    raise error_exit(f"unknown dataset or missing folder '{data}': use {names}, a folder holding train.txt, "
                     "valid.txt, test.txt, or one text file (split by lines)")


def checkpoint_file(path: Path, default_name: str) -> Path:
    """A run folder stands for its ``default_name`` checkpoint (best.pt to use, last.pt to resume)."""
    return path / default_name if path.is_dir() else path
