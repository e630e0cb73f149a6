"""Which device a run uses and which precision it can train in there.

:func:`resolve_device` turns ``--device`` into a ``torch.device``; :func:`resolve_precision` decides
``train.precision = "auto"``; :func:`check_precision` refuses a precision the device cannot train
in. (The autocast context and the gradient scaler that apply a precision are
:mod:`qrnn_lm.training.step`'s.) The precisions:

* ``"fp32"``: no autocast.
* ``"bf16"``: ``torch.autocast`` with bfloat16 for the forward and the loss; no scaler (bf16 has
  fp32's exponent range). Works on CPU and CUDA.
* ``"fp16"``: autocast with float16 and a :class:`torch.amp.GradScaler` against gradient
  underflow; CUDA only (the CPU's float16 matrix products are slow or missing).
* ``"auto"``: ``"bf16"`` where the device computes bfloat16 products natively (a CUDA GPU of
  compute capability 8.0 or more: A100, H100, RTX 30xx on; a CPU with AVX512-BF16 or AMX-BF16,
  e.g. AMD Zen 4/5, Intel Sapphire Rapids), else ``"fp32"``: elsewhere bfloat16 is emulated and
  slower than float32. Older GPUs (V100 7.0, T4 7.5) get fp32, not fp16: fp16 needs loss scaling
  and can overflow where fp32 trains, so it stays a choice the user makes by name.

The weights, optimiser state, checkpoints and evaluation stay float32: autocast only changes the
dtype the operations compute in, so a run can be resumed or evaluated at any precision.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .config import UserError

__all__ = ["resolve_device", "check_precision", "resolve_precision", "cpu_has_native_bf16", "cpu_recipe",
           "cuda_has_native_bf16"]


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> cuda when available, else cpu; ``"cpu"``/``"cuda"``/``"cuda:N"`` as given.

    Asking for cuda on a machine without a usable GPU is a UserError saying to use cpu.
    """
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("device 'cuda' asked for but no CUDA GPU is available; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"unsupported device {name!r}; use auto, cpu or cuda")
    return device


def cpu_has_native_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether the CPU's flags (Linux's ``/proc/cpuinfo``) list bfloat16 dot-product instructions;
    False where the file does not exist (other systems: the safe choice is float32)."""
    try:
        flags = Path(cpuinfo).read_text(encoding="utf-8", errors="replace").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_recipe(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """The 20-minute word recipe (a name in ``configs/``) for this CPU: ``"ptb-cpu-bf16"`` where it
    has native bfloat16 (the same wall clock buys about three times the tokens), else
    ``"ptb-cpu"``."""
    return "ptb-cpu-bf16" if cpu_has_native_bf16(cpuinfo) else "ptb-cpu"


def cuda_has_native_bf16(device: torch.device) -> bool:
    """Whether the CUDA ``device`` computes bfloat16 natively: compute capability 8.0 or more.
    Not ``torch.cuda.is_bf16_supported()``: it also says True where bfloat16 is only emulated
    (V100, T4), which is slower than float32."""
    major, _ = torch.cuda.get_device_capability(device)
    return major >= 8


def resolve_precision(precision: str, device: torch.device) -> str:
    """``train.precision`` as it will run on ``device``: ``"auto"`` becomes ``"bf16"`` or ``"fp32"``
    (see the module docstring), the others stay as they are."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if cuda_has_native_bf16(device) else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_has_native_bf16() else "fp32"
    return "fp32"


def check_precision(precision: str, device: torch.device) -> None:
    """UserError for a precision this device cannot train in."""
    if precision == "fp16" and device.type != "cuda":
        raise UserError(f"train.precision = 'fp16' needs a CUDA GPU (the device is {device.type}); "
                        "use --set train.precision=bf16 on the CPU")
