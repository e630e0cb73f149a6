"""Reading a run's ``metrics.csv`` back in the training tests."""

import csv
from pathlib import Path


def read_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a ``metrics.csv`` as dicts of strings (empty string: no value)."""
    with path.open(newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))
