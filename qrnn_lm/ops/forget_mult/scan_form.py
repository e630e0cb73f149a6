"""ForgetMult written with torch's scan higher-order op: the form the op takes in an ONNX export.

Shapes: T = time steps, B = batch, H = hidden lanes; time-major ``[T, B, H]``.

``torch.onnx.export(dynamo=True)`` has no translation for the ``qrnn_lm::forget_mult`` custom op,
but it writes torch's scan op as a standard ONNX ``Scan`` with a dynamic length. The op's Python
entry point (:func:`~.function.forget_mult_op`) therefore calls :func:`forget_mult_as_scan` instead
of the op while ``torch.onnx.export`` traces a model, so a plain ``torch.onnx.export`` of any module
using ForgetMult works, with no custom ONNX domain and no translation table to pass.
"""

from __future__ import annotations

import torch

__all__ = ["forget_mult_as_scan", "in_onnx_export"]


def in_onnx_export() -> bool:
    """True while ``torch.onnx.export`` traces a model (cheap to ask on every call: torch.onnx is
    only looked at while torch.export traces)."""
    return torch.compiler.is_exporting() and torch.onnx.is_in_onnx_export()


def forget_mult_as_scan(f, x, h0, lengths=None, reverse=False, backend="auto"):
    """``qrnn_lm::forget_mult`` as a scan: h ``[T, B, H]`` from f, x ``[T, B, H]`` and h0 ``[B, H]``.

    Same arguments as the op (``backend`` is ignored: the scan is the kernel). ``lengths`` must be
    None: padded sequences (PackedSequence) are not exportable, export padded input instead.
    """
    from torch._higher_order_ops.scan import scan

    if lengths is not None:
        raise ValueError("forget_mult: sequences with lengths (PackedSequence) cannot be exported; "
                         "export padded input (lengths=None)")

    def step(h, f_x):
        f_t, x_t = f_x  # [B, H] each
        h = f_t * x_t + (1 - f_t) * h
        return h, h.clone()  # carry, and this step's output (scan needs two distinct tensors)

    _, h = scan(step, h0, (f, x), reverse=reverse)
    return h
