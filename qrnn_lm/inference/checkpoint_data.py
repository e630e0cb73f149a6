"""The data a checkpoint is scored on, read with the checkpoint's own tokenizer.

``eval`` and the cache pointer read ``--data`` (or the dataset the model was trained on) through
the tokenizer stored in the checkpoint, so they need no other file, and refuse, in one line, data
the model cannot read: a dataset registered for another kind of tokenizer, PTB-char's spaced
characters for a model of plain text (or the reverse), or text whose characters the model's
alphabet mostly lacks.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..config import UserError
from ..data import DATASETS, Corpus, Tokenizer, Vocab, prepare_data
from ..data.tokenizer import is_spaced_characters, read_utf8
from ..models.checkpoint_file import tokenizer_from_checkpoint

UNKNOWN_LIMIT = 0.5  # a char model whose alphabet lacks more of the text than this cannot score it


def _describe(tokenizer: Tokenizer) -> str:
    if tokenizer.kind == "char":
        return "PTB-char (spaced characters)" if tokenizer.spaced else "character"
    return {"word": "word", "byte": "byte", "subword": "subword"}[tokenizer.kind]


def _refuse(payload: dict[str, Any], tokenizer: Tokenizer, dataset: str, problem: str) -> UserError:
    trained_on = payload.get("data", {}).get("dataset") or payload["config"]["data"]["dataset"]
    return UserError(
        f"the checkpoint's {_describe(tokenizer)} tokenizer does not match {dataset}: {problem}; evaluate it on "
        f"data like its own (--data {trained_on}), or train a model on {dataset} (e.g. --set data.tokenizer=byte reads any text)"
    )


def checkpoint_corpus(payload: dict[str, Any], dataset: str, data_dir: str | os.PathLike | None = None, *,
                      progress: bool = True) -> tuple[Corpus, Path]:
    """``(corpus, folder)``: ``dataset`` (a name, folder or text file) tokenised as the checkpoint
    ``payload`` was trained, over its vocabulary. Raises UserError when they do not match."""
    tokenizer = tokenizer_from_checkpoint(payload)
    expected = getattr(DATASETS.get(dataset), "tokenizer", None)  # the registry's kind, where it names one
    if expected is not None and expected != tokenizer.kind:
        raise _refuse(payload, tokenizer, dataset, f"that dataset is read as {expected} tokens")
    folder = prepare_data(dataset, data_dir, progress=progress)
    if tokenizer.kind == "char":
        spaced = is_spaced_characters(read_utf8(folder / "valid.txt"))
        if spaced != tokenizer.spaced:
            layout = "spaced characters (PTB-char)" if spaced else "plain text"
            raise _refuse(payload, tokenizer, dataset, f"its files hold {layout}")
    corpus = Corpus.load(folder, vocab=Vocab(payload["vocab"]), tokenizer=tokenizer, progress=progress)
    if tokenizer.kind == "char":
        ids = corpus.valid
        share = float((ids == corpus.vocab.unk_index).double().mean())
        if share > UNKNOWN_LIMIT:
            raise _refuse(payload, tokenizer, dataset, f"{share:.0%} of its characters are outside the model's alphabet")
    return corpus, folder
