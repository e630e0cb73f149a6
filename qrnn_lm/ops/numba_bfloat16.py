"""Element access for numba kernels that take float32, float64 and bfloat16 arrays alike.

numba has no bfloat16, so a bfloat16 tensor goes to a kernel zero-copy as its raw 16-bit patterns
(a uint16 array: ``tensor.view(torch.int16).numpy().view(np.uint16)``). :func:`load` widens an
element to float32, :func:`store` rounds a value to nearest-even, bit for bit as PyTorch's
``.to(torch.bfloat16)`` rounds (a NaN is stored as 0x7FC0, PyTorch's scalar choice). float32 and
float64 arrays are read and written directly. Kernels written with these read and write half the
bytes for bfloat16 tensors and do their arithmetic in float32.

Import only where :data:`qrnn_lm.ops.numba_setup.HAS_NUMBA` is True.
"""

from __future__ import annotations

import numpy as np
import torch
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

__all__ = ["kernel_array", "load", "store", "scratch"]


def kernel_array(tensor: torch.Tensor) -> np.ndarray:
    """A CPU tensor as the numpy array a kernel takes, zero-copy: bfloat16 as its uint16 bit
    patterns, other dtypes as they are."""
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(np.uint16)
    return tensor.numpy()


@intrinsic
def _float_bits(typingctx, value):
    """The bit pattern of a float32 as a uint32."""
    if value != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.uint32(types.float32), codegen


@intrinsic
def _bits_float(typingctx, bits):
    """The float32 whose bit pattern is the uint32 ``bits``."""
    if bits != types.uint32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.uint32), codegen


def load(row, j):
    """``row[j]`` as a float (float32 for bfloat16 bit patterns)."""


def store(row, j, value):
    """``row[j] = value``, rounded to bfloat16 for bfloat16 bit patterns."""


def scratch(n, like):
    """Zeros ``[n]`` in the arithmetic dtype of the array ``like`` (float32 or float64)."""


@overload(load, inline="always")
def _load(row, j):
    if row.dtype == types.uint16:
        return lambda row, j: _bits_float(np.uint32(np.uint32(row[j]) << np.uint32(16)))
    return lambda row, j: row[j]


@overload(store, inline="always")
def _store(row, j, value):
    if row.dtype == types.uint16:
        def store_bfloat16(row, j, value):
            bits = _float_bits(np.float32(value))
            if bits & np.uint32(0x7FFFFFFF) > np.uint32(0x7F800000):  # NaN
                row[j] = np.uint16(0x7FC0)
            else:
                row[j] = np.uint16((bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1)))
                                   >> np.uint32(16))
        return store_bfloat16

    def store_float(row, j, value):
        row[j] = value
    return store_float


@overload(scratch, inline="always")
def _scratch(n, like):
    if like.dtype == types.float64:
        return lambda n, like: np.zeros(n, dtype=np.float64)
    return lambda n, like: np.zeros(n, dtype=np.float32)
