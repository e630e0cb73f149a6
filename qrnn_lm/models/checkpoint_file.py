"""Checkpoints: plain dicts of tensors and Python values, written atomically, read safely.

A checkpoint never pickles code: it is loaded with ``torch.load(..., weights_only=True)``, so a
file that would run code on load is refused. It rebuilds the model from its stored config and
vocabulary, so generating text needs no data files.

Payload keys (``format_version`` 1):

========================  ===================================================================
``format_version``        int, :data:`FORMAT_VERSION` of the writer
``kind``                  ``"last"`` (resumable, raw weights) or ``"best"`` (best validation;
                          holds the averaged weights when NT-ASGD was active)
``config``                the resolved Config as nested dicts (``config_to_dict``)
``vocab``                 ``list[str]``, index -> token (word, character, byte name, piece)
``tokenizer``             the tokenizer's settings as plain data (``{"kind": "word"|"char"|"byte"|
                          "subword", ...}``; a subword model's bytes as a uint8 tensor); absent
                          in checkpoints written before it existed, which read as word
``model``                 the model's state_dict (``module.``/``_orig_mod.`` prefixes stripped)
``optimizer``             ``{"name": "sgd"|"asgd"|"adam"|"adamw", "lr": base rate, "state":
                          optimizer.state_dict(), "recipe": {"optimizer", "lr"}}`` (the config's)
``rng``                   ``{"torch": ByteTensor, "cuda": [ByteTensor...], "bptt": ByteTensor,
                          "shared": ByteTensor}`` (``shared``: the weight-drop mask generator,
                          the same on every rank); data-parallel runs add ``"ranks"``, each
                          rank's own states
``counters``              ``{"epoch", "position", "step", "tokens"}`` (epoch 1-based; position =
                          next time step of the epoch's training stream)
``stream``                ``{"hidden": [B, H] per layer, "prev_x": [1, B, I] or None per layer}``:
                          the carried state of all B streams of the global batch (gathered from
                          the ranks), so a mid-epoch resume is exact with any number of ranks
``history``               ``{"val_losses": [...], "best_val_loss": float}``
``budget``                ``{"elapsed_s": float}``: seconds of training and validation so far
``scaler``                fp16 runs: the ``torch.amp.GradScaler``'s state_dict
``state_version``         2; the training keys' layout (``qrnn_lm.training.checkpointer`` names
                          them, saves each component's state_dict under its key, and converts
                          version 1, which kept ``lr`` and ``elapsed_s`` in ``history``)
``data``                  ``{"dataset": str, "checksums": {file: sha256}}``
========================  ===================================================================
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..config import Config, ConfigError, UserError, config_from_dict
from ..data import Tokenizer, Vocab, tokenizer_from_state
from .language_model import LanguageModel

__all__ = [
    "FORMAT_VERSION",
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "model_from_checkpoint",
    "tokenizer_from_checkpoint",
    "clean_state_dict",
]

FORMAT_VERSION = 1  # bump when the payload layout changes incompatibly

_REQUIRED_KEYS = ("format_version", "config", "vocab", "model")
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # added by DDP and torch.compile


class CheckpointError(UserError):
    """A checkpoint that is missing, truncated, foreign, too new or unsafe to load."""


def clean_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip the ``module.`` (DDP) and ``_orig_mod.`` (torch.compile) prefixes, at any depth order."""
    cleaned = {}
    for key, value in state_dict.items():
        changed = True
        while changed:
            changed = False
            for prefix in _WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix):], True
        cleaned[key] = value
    return cleaned


def _fsync_directory(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any], *,
                    previous: str | os.PathLike | None = None) -> Path:
    """Write ``payload`` to ``path`` atomically: a temp file in the same folder, flushed and
    fsynced, then ``os.replace``. A crash leaves either the old file or the new one, never half.

    ``previous``: keep the file that ``path`` held until now under this name (e.g. ``last.prev.pt``
    beside ``last.pt``), so an earlier good state survives a newest file damaged later. The new
    file is complete on disk before the old one is moved: a failing write (disk full, permission)
    raises OSError with both files untouched.

    Returns the path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format_version": FORMAT_VERSION, **payload}
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        if previous is not None and path.exists():
            _keep_previous(path, Path(previous))
        os.replace(tmp_name, path)
    except BaseException:
        # Also on KeyboardInterrupt: never leave a temp file behind.
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(path.parent)
    return path


def _keep_previous(path: Path, previous: Path) -> None:
    """Make ``previous`` hold what ``path`` holds now. A hard link keeps ``path`` in place all the
    while (a kill at any moment leaves a complete ``path``); where links are refused, a rename
    leaves a moment with ``previous`` alone, which resuming also accepts."""
    link = previous.with_name(f".{previous.name}.link")
    try:
        if link.exists():
            link.unlink()
        os.link(path, link)
        os.replace(link, previous)
    except OSError:
        os.replace(path, previous)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


# torch.save writes a zip archive (the default since torch 1.6) or, in the legacy format, a pickle
# that starts with the PROTO opcode. Anything else is not a checkpoint at all, and saying so beats
# the weights_only unpickler's "unsupported operand" (which reads like a refused pickle).
_TORCH_FILE_MAGIC = (b"PK\x03\x04", b"\x80")


def _looks_like_a_torch_file(path: Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(4)
    return any(head.startswith(magic) for magic in _TORCH_FILE_MAGIC)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises :class:`CheckpointError` (one line) when the file is missing, is a folder, is truncated
    or not a torch file, holds a pickle that would run code (``weights_only=True`` refuses it),
    is not a qrnn-lm checkpoint, or has a newer ``format_version`` than this version reads.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist; pass a .pt file written by 'qrnn-lm train'")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder; pass a file such as {path / 'best.pt'}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (an interrupted copy?); use another checkpoint of the run")
    if not _looks_like_a_torch_file(path):
        raise CheckpointError(
            f"checkpoint {path} is not a torch file (neither a zip archive nor a pickle); "
            "pass a .pt file written by 'qrnn-lm train'"
        )
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if "weights only" in str(error).lower() or "weights_only" in str(error).lower():
            raise CheckpointError(
                f"checkpoint {path} holds Python objects that would run code when loaded; refusing it "
                "(only checkpoints written by qrnn-lm are accepted)"
            ) from None
        raise CheckpointError(f"checkpoint {path} is not a readable torch file ({_first_line(error)})") from None
    except Exception as error:  # a foreign or damaged file can fail in many ways inside the unpickler
        raise CheckpointError(
            f"checkpoint {path} is truncated or not a torch file ({_first_line(error)}); "
            "use another checkpoint (e.g. last.pt or best.pt of the run)"
        ) from None
    if not isinstance(payload, dict) or any(key not in payload for key in _REQUIRED_KEYS):
        raise CheckpointError(f"{path} is not a qrnn-lm checkpoint (no format_version/config/vocab/model)")
    version = payload["format_version"]
    if not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{path} has an invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {version}, newer than this qrnn-lm reads "
            f"({FORMAT_VERSION}); upgrade qrnn-lm"
        )
    return payload


def model_from_checkpoint(
    payload: dict[str, Any], device: str | torch.device = "cpu"
) -> tuple[LanguageModel, Vocab, Config]:
    """Rebuild the model from a loaded payload: ``(model in eval mode on device, Vocab, Config)``."""
    try:
        config = config_from_dict(payload["config"])
    except ConfigError as error:
        raise CheckpointError(f"checkpoint config is invalid for this qrnn-lm: {error}") from None
    vocab = Vocab.from_list(payload["vocab"])
    model = LanguageModel(len(vocab), config.model, config.train.softmax, config.train.softmax_memory_mb)
    try:
        model.load_state_dict(clean_state_dict(payload["model"]))
    except RuntimeError as error:
        raise CheckpointError(f"checkpoint weights do not fit its config: {_first_line(error)}") from None
    model.to(device)
    model.eval()
    return model, vocab, config


def tokenizer_from_checkpoint(payload: dict[str, Any]) -> Tokenizer:
    """The fitted tokenizer a loaded payload holds (word for a checkpoint without one)."""
    return tokenizer_from_state(payload.get("tokenizer"), payload["vocab"])
