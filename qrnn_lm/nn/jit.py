"""TorchScript (``torch.jit.trace`` / ``torch.jit.script``) is refused with one clear line.

The QRNN layers call numba kernels and a registered custom op with Python-side dispatch, which
TorchScript can neither trace (numba raises a TypingError on the tracer's tensors) nor compile.
``torch.export`` handles them, so the error points there.
"""

from __future__ import annotations

import torch

from ..config import UserError

__all__ = ["TorchScriptUnsupported", "refuse_torchscript", "refuse_tracing"]


class TorchScriptUnsupported(UserError, RuntimeError):
    """torch.jit.trace or torch.jit.script was used on a QRNN module."""


def _message(class_name: str, how: str) -> str:
    return (f"{class_name}: {how} is not supported (TorchScript cannot run the numba/custom-op "
            f"ForgetMult); use torch.export.export(module, args) instead, or qrnn_lm.inference.export "
            f"(`qrnn-lm export`) for pt2/ONNX files")


def refuse_torchscript(module) -> None:
    """Called from ``__prepare_scriptable__``, which ``torch.jit.script`` runs first."""
    raise TorchScriptUnsupported(_message(type(module).__name__, "torch.jit.script"))


def refuse_tracing(module) -> None:
    """Raise when ``forward`` runs under ``torch.jit.trace``; a no-op otherwise."""
    if torch.jit.is_tracing():
        raise TorchScriptUnsupported(_message(type(module).__name__, "torch.jit.trace"))
