"""Mixed precision for training: ``train.precision`` -> an autocast context and a gradient scaler.

* ``"fp32"``: no autocast.
* ``"bf16"``: ``torch.autocast`` with bfloat16 for the forward and the loss; no scaler (bf16 has
  fp32's exponent range). Works on CPU and CUDA.
* ``"fp16"``: autocast with float16 and a :class:`torch.amp.GradScaler` against gradient
  underflow; CUDA only (the CPU's float16 matrix products are slow or missing).

The weights, optimiser state, checkpoints and evaluation stay float32: autocast only changes the
dtype the operations compute in, so a run can be resumed or evaluated at any precision.
"""

from __future__ import annotations

import contextlib

import torch

from ..config import UserError

__all__ = ["precision_context", "make_scaler", "check_precision"]

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str, device: torch.device) -> None:
    """UserError for a precision this device cannot train in."""
    if precision == "fp16" and device.type != "cuda":
        raise UserError(f"train.precision = 'fp16' needs a CUDA GPU (the device is {device.type}); "
                        "use --set train.precision=bf16 on the CPU")


def precision_context(device: torch.device, precision: str):
    """The autocast context for the forward and the loss (a no-op context for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=_DTYPES[precision])


def make_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """A GradScaler for fp16, None otherwise."""
    check_precision(precision, device)
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None
