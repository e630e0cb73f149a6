"""ForgetMult as a registered PyTorch operator: backend choice, dispatch, autograd.

Shapes: T = time steps, B = batch, H = hidden lanes; tensors are time-major ``[T, B, H]``.

Two custom ops, so that ``torch.compile`` traces forward and backward without graph breaks:

- ``qrnn_lm::forget_mult(f, x, h0, lengths, reverse, backend) -> h``
- ``qrnn_lm::forget_mult_backward(grad_h, f, x, h, h0, lengths, reverse, backend)
  -> (grad_f, grad_x, grad_h0)``

Each runs the backend chosen for the tensors' device (see :func:`resolve_backend`):
CPU -> numba (``cpu.py``); CUDA -> Triton (``triton.py``), then CuPy (``cupy.py``), then the
torch loop (``loop.py``); any other device -> the torch loop. Backend modules are imported on
first use, so ``import qrnn_lm`` does not pay for Triton or CuPy.

Export: while ``torch.onnx.export`` traces a model, :func:`forget_mult_op` calls the op's ONNX
form instead (torch's scan op, ``scan_form.py``), so a plain ``torch.onnx.export(dynamo=True)``
of any module using ForgetMult writes a standard ONNX ``Scan``; ``torch.export`` keeps the op.

Autocast: the ops have no autocast rule, so under ``torch.autocast`` they run in the dtype of
their inputs (fp16/bf16 when f and x come from autocast linear layers), compute in float32
inside, and return that dtype.
"""

import importlib
import logging
import os
from typing import Optional

import torch

from .scan_form import forget_mult_as_scan, in_onnx_export

logger = logging.getLogger(__name__)

ENV_BACKEND = "QRNN_LM_FORGET_MULT_BACKEND"

# backend name -> (module beside this file, its HAS_* flag, how to install what it needs)
_BACKEND_MODULES = {
    "numba": ("cpu", "HAS_NUMBA", "pip install numba"),
    "triton": ("triton", "HAS_TRITON", "pip install triton (it ships with PyTorch's CUDA wheels on Linux)"),
    "cupy": ("cupy", "HAS_CUPY", "pip install qrnn-lm[cupy]"),
    "torch": ("loop", None, ""),
}
# Preference order of "auto" per device type; devices not listed use the torch loop.
_AUTO_ORDER = {"cpu": ("numba", "torch"), "cuda": ("triton", "cupy", "torch")}
# Device types each kernel backend can run on ("torch" runs anywhere).
_DEVICE_TYPES = {"numba": ("cpu",), "triton": ("cuda",), "cupy": ("cuda",)}

_loaded: dict = {}
_logged_fallbacks: set = set()


def _load(name: str):
    """Import backend ``name`` once. Returns ``(module or None, reason it is unavailable)``."""
    if name not in _loaded:
        module_name, flag, _ = _BACKEND_MODULES[name]
        try:
            module = importlib.import_module(f"{__package__}.{module_name}")
        except ImportError as error:
            _loaded[name] = (None, f"importing {module_name}.py failed: {error}")
        else:
            if flag is not None and not getattr(module, flag, False):
                reason = getattr(module, "IMPORT_ERROR", "") or f"{flag} is False"
                _loaded[name] = (None, reason)
            else:
                _loaded[name] = (module, "")
    return _loaded[name]


def _runs_on(name: str, device_type: str) -> bool:
    if name == "torch":
        return True
    if name == "triton" and device_type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1":
        return True  # Triton's interpreter runs kernels on CPU tensors (used by its tests).
    return device_type in _DEVICE_TYPES[name]


def resolve_backend(device: torch.device, backend: str = "auto") -> str:
    """Name of the backend that will run for tensors on ``device``.

    ``backend="auto"`` reads ``QRNN_LM_FORGET_MULT_BACKEND`` (if set) as an explicit choice,
    otherwise takes the first available backend of the device's preference order, logging
    once (``logging.WARNING``) when it has to skip a preferred one. An explicit backend that
    is not installed, or cannot run on ``device``, raises ``RuntimeError`` saying what to do.
    """
    if backend == "auto":
        backend = os.environ.get(ENV_BACKEND, "auto") or "auto"
        if backend != "auto" and backend not in _BACKEND_MODULES:
            raise ValueError(
                f"{ENV_BACKEND} must be one of {('auto',) + tuple(_BACKEND_MODULES)}, got {backend!r}"
            )
    device_type = torch.device(device).type
    if backend != "auto":
        if not _runs_on(backend, device_type):
            raise RuntimeError(
                f"forget_mult: backend {backend!r} runs on {' or '.join(_DEVICE_TYPES[backend])} "
                f"tensors, got tensors on {device_type}; use backend='auto' or 'torch'"
            )
        module, reason = _load(backend)
        if module is None:
            hint = _BACKEND_MODULES[backend][2]
            raise RuntimeError(f"forget_mult: backend {backend!r} is not available ({reason}); install it with `{hint}`")
        return backend
    order = _AUTO_ORDER.get(device_type, ("torch",))
    skipped = []
    for name in order:
        module, reason = _load(name)
        if module is not None:
            if skipped and (device_type, name) not in _logged_fallbacks:
                _logged_fallbacks.add((device_type, name))
                logger.warning(
                    "forget_mult on %s: using the %r backend because %s",
                    device_type, name, "; ".join(skipped),
                )
            return name
        skipped.append(f"{name!r} is unavailable ({reason}; `{_BACKEND_MODULES[name][2]}`)")
    raise AssertionError("unreachable: the torch backend is always available")


def _backend_module(device: torch.device, backend: str):
    return _load(resolve_backend(device, backend))[0]


def _contiguous_lengths(lengths: Optional[torch.Tensor], device: torch.device) -> Optional[torch.Tensor]:
    if lengths is None:
        return None
    return lengths.to(device=device, dtype=torch.int64).contiguous()


@torch.library.custom_op("qrnn_lm::forget_mult", mutates_args=())
def forget_mult_forward_op(
    f: torch.Tensor,
    x: torch.Tensor,
    h0: torch.Tensor,
    lengths: Optional[torch.Tensor],
    reverse: bool,
    backend: str,
) -> torch.Tensor:
    """h ``[T, B, H]`` from f, x ``[T, B, H]``, h0 ``[B, H]``, lengths None or ``[B]``."""
    module = _backend_module(x.device, backend)
    return module.forward(
        f.contiguous(), x.contiguous(), h0.contiguous(), _contiguous_lengths(lengths, x.device), reverse
    )


@forget_mult_forward_op.register_fake
def _(f, x, h0, lengths, reverse, backend):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.custom_op("qrnn_lm::forget_mult_backward", mutates_args=())
def forget_mult_backward_op(
    grad_h: torch.Tensor,
    f: torch.Tensor,
    x: torch.Tensor,
    h: torch.Tensor,
    h0: torch.Tensor,
    lengths: Optional[torch.Tensor],
    reverse: bool,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(grad_f, grad_x, grad_h0) in the shapes and dtype of f, x, h0."""
    module = _backend_module(x.device, backend)
    return module.backward(
        grad_h.to(x.dtype).contiguous(),
        f.contiguous(),
        x.contiguous(),
        h.contiguous(),
        h0.contiguous(),
        _contiguous_lengths(lengths, x.device),
        reverse,
    )


@forget_mult_backward_op.register_fake
def _(grad_h, f, x, h, h0, lengths, reverse, backend):
    contiguous = torch.contiguous_format
    return (
        torch.empty_like(f, memory_format=contiguous),
        torch.empty_like(x, memory_format=contiguous),
        torch.empty_like(h0, memory_format=contiguous),
    )


def _setup_context(ctx, inputs, output):
    f, x, h0, lengths, reverse, backend = inputs
    # The backward needs h_prev at every step: saving the output h avoids recomputing it.
    ctx.save_for_backward(f, x, h0, output, lengths)
    ctx.reverse = reverse
    ctx.backend = backend


def _backward(ctx, grad_h):
    f, x, h0, h, lengths = ctx.saved_tensors
    grad_f, grad_x, grad_h0 = forget_mult_backward_op(grad_h, f, x, h, h0, lengths, ctx.reverse, ctx.backend)
    return grad_f, grad_x, grad_h0, None, None, None


forget_mult_forward_op.register_autograd(_backward, setup_context=_setup_context)


def forget_mult_op(f, x, h0, *, reverse, lengths, backend):
    """Called by the public :func:`qrnn_lm.forget_mult` after validation; materialises h0."""
    if h0 is None:
        h0 = x.new_zeros(x.shape[1:])
    if in_onnx_export():  # the op's ONNX form: a standard Scan (see scan_form.py)
        return forget_mult_as_scan(f, x, h0, lengths, bool(reverse), backend)
    return forget_mult_forward_op(f, x, h0, lengths, bool(reverse), backend)
