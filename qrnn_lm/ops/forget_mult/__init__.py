"""ForgetMult: ``h_t = f_t * x_t + (1 - f_t) * h_{t-1}``, the recurrence at the heart of a QRNN.

Shapes: T = time steps, B = batch, H = hidden lanes. Layout is time-major ``[T, B, H]``.
"""

from __future__ import annotations

import torch
from torch import nn

from .function import forget_mult_op

__all__ = ["forget_mult", "ForgetMult", "BACKENDS"]

# Backends a caller may ask for; "auto" picks the fastest available for the tensors' device.
BACKENDS = ("auto", "numba", "triton", "cupy", "torch")

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_lengths(op_name: str, lengths, batch_size: int, seq_len: int) -> None:
    """Validate an op's optional ``lengths`` argument: None, or ``[B]`` integers in ``[0, T]``.

    Raises ValueError naming ``op_name``, the expected and the given value. Shared by every op
    that takes ``lengths`` (ForgetMult, the fused QRNN gates).
    """
    if lengths is None:
        return
    if not isinstance(lengths, torch.Tensor):
        raise ValueError(f"{op_name}: lengths must be a torch.Tensor or None, got {type(lengths).__name__}")
    if lengths.dim() != 1 or lengths.shape[0] != batch_size:
        raise ValueError(f"{op_name}: lengths must have shape [B] = [{batch_size}], got {tuple(lengths.shape)}")
    if lengths.dtype.is_floating_point or lengths.dtype.is_complex or lengths.dtype == torch.bool:
        raise ValueError(f"{op_name}: lengths must hold integers, got {lengths.dtype}")
    # The range check reads the values (a device sync, and a graph break under
    # torch.compile), so compiled graphs skip it; eager calls always check.
    if batch_size > 0 and not torch.compiler.is_compiling():
        smallest, largest = int(lengths.min()), int(lengths.max())
        if smallest < 0 or largest > seq_len:
            raise ValueError(
                f"{op_name}: lengths must lie in [0, T={seq_len}], got values from {smallest} to {largest}"
            )


def _check_inputs(f, x, h0, lengths, backend) -> None:
    """Raise ValueError naming the expected and the actual value for any bad argument."""
    for name, tensor in (("f", f), ("x", x)):
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"forget_mult: {name} must be a torch.Tensor, got {type(tensor).__name__}")
        if tensor.dim() != 3:
            raise ValueError(
                f"forget_mult: {name} must have shape [T, B, H] (3 dims), got {tuple(tensor.shape)}"
            )
        if tensor.dtype not in _FLOAT_DTYPES:
            raise ValueError(
                f"forget_mult: {name} must be float16, bfloat16, float32 or float64, got {tensor.dtype}"
            )
    if f.shape != x.shape:
        raise ValueError(f"forget_mult: f and x must have the same shape, got {tuple(f.shape)} and {tuple(x.shape)}")
    if f.dtype != x.dtype:
        raise ValueError(f"forget_mult: f and x must have the same dtype, got {f.dtype} and {x.dtype}")
    if f.device != x.device:
        raise ValueError(f"forget_mult: f and x must be on the same device, got {f.device} and {x.device}")
    seq_len, batch_size, hidden_size = x.shape
    if h0 is not None:
        if not isinstance(h0, torch.Tensor):
            raise ValueError(f"forget_mult: h0 must be a torch.Tensor or None, got {type(h0).__name__}")
        if tuple(h0.shape) != (batch_size, hidden_size):
            raise ValueError(
                f"forget_mult: h0 must have shape [B, H] = {(batch_size, hidden_size)}, got {tuple(h0.shape)}"
            )
        if h0.dtype != x.dtype:
            raise ValueError(f"forget_mult: h0 must have the dtype of x ({x.dtype}), got {h0.dtype}")
        if h0.device != x.device:
            raise ValueError(f"forget_mult: h0 must be on the device of x ({x.device}), got {h0.device}")
    check_lengths("forget_mult", lengths, batch_size, seq_len)
    if backend not in BACKENDS:
        raise ValueError(f"forget_mult: backend must be one of {BACKENDS}, got {backend!r}")


def forget_mult(
    f: torch.Tensor,
    x: torch.Tensor,
    h0: torch.Tensor | None = None,
    *,
    reverse: bool = False,
    lengths: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Run the ForgetMult recurrence ``h_t = f_t * x_t + (1 - f_t) * h_{t-1}``.

    Args:
        f: forget gates ``[T, B, H]`` (usually a sigmoid output), float16/bfloat16/float32/float64.
        x: candidates ``[T, B, H]``, same dtype and device as ``f``.
        h0: initial state ``[B, H]``; default None means zeros.
        reverse: default False. True walks from the end of each sequence towards step 0
            (the backward direction of a bidirectional QRNN).
        lengths: default None (every sequence has length T). ``[B]`` integers in ``[0, T]``:
            steps at or past ``lengths[b]`` are not part of the recurrence and output 0; with
            ``reverse=True`` sequence ``b`` starts at its own last valid step ``lengths[b] - 1``.
        backend: default "auto" (numba on CPU; Triton, then CuPy, then the torch loop on CUDA),
            or one of "numba", "triton", "cupy", "torch". The environment variable
            ``QRNN_LM_FORGET_MULT_BACKEND`` sets the default for "auto".

    Returns:
        ``h`` of shape ``[T, B, H]`` in the dtype of ``x``; accumulation is done in float32
        (float64 inputs stay float64). Differentiable in ``f``, ``x`` and ``h0``.
    """
    _check_inputs(f, x, h0, lengths, backend)
    return forget_mult_op(f, x, h0, reverse=reverse, lengths=lengths, backend=backend)


class ForgetMult(nn.Module):
    """The original pytorch-qrnn module form: ``ForgetMult()(f, x, hidden_init=None, use_cuda=True)``.

    ``use_cuda=False`` forces the plain torch loop, as the original's CPU fallback did.
    Shapes as in :func:`forget_mult`.
    """

    def forward(
        self,
        f: torch.Tensor,
        x: torch.Tensor,
        hidden_init: torch.Tensor | None = None,
        use_cuda: bool = True,
    ) -> torch.Tensor:
        backend = "auto" if use_cuda else "torch"
        return forget_mult(f, x, hidden_init, backend=backend)
