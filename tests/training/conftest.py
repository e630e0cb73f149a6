"""Fixtures of the training tests."""

import pytest
from _corpus import write_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A folder holding the shared small corpus (see ``_corpus.py``)."""
    return write_corpus(tmp_path_factory.mktemp("data") / "corpus")

