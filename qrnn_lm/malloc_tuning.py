"""Let the C allocator keep freed memory for reuse (glibc only), as the qrnn-lm application does.

PyTorch allocates CPU tensors with plain malloc. glibc serves blocks of a few MB from the heap but
returns the freed top of the heap to the OS (and blocks above its mmap threshold are unmapped on
free), so a loop that allocates fresh outputs of that size every call page-faults on every call.
Measured on ForgetMult at (T, B, H) = (70, 20, 1550): backward kernel 3.1-3.4 ms, whole call 7 ms
with the default; the whole call 3.6 ms with the thresholds below. PyTorch's CPU performance
guide recommends jemalloc or tcmalloc for the same reason; this is the dependency-free version.

The ``qrnn-lm`` command applies it at start-up. It changes the whole process's allocator, so the
library never applies it on import: library users can call :func:`keep_freed_memory` themselves,
or set ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` in the environment.
A leaf module: stdlib only.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# mallopt parameter numbers from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Blocks up to 1 GB come from the heap (a [70, 20, 1550] fp32 tensor is 8.7 MB), and up to 1.5 GB
# of freed heap is kept for reuse instead of being returned to the OS: a training process keeps its
# peak memory, and stops page-faulting on every step. Measured on nn.LSTM(320, 320) training at
# (T, B) = (64, 64): with 64 MB / 256 MB (this module's earlier values) it page-faulted about 50 MB
# per call (so it allocates blocks over 64 MB) and ran 10-15% slower than with these, which leave
# it no faults. At (T, B) = (512, 256) it still faults with any setting (up to 2 GB).
MMAP_THRESHOLD_BYTES = 1 << 30
TRIM_THRESHOLD_BYTES = 1536 << 20  # mallopt takes a C int: below 2 GB
# Set to 0 to keep the C library's defaults in the qrnn-lm application.
ENV_SWITCH = "QRNN_LM_MALLOC_TUNING"


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds; True when applied.

    Does nothing (False) off Linux/glibc, when ``QRNN_LM_MALLOC_TUNING=0``, or when the user set
    ``MALLOC_MMAP_THRESHOLD_`` or ``MALLOC_TRIM_THRESHOLD_`` (their choice wins).
    """
    if os.environ.get(ENV_SWITCH, "1") == "0" or not sys.platform.startswith("linux"):
        return False
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt  # absent from musl: an AttributeError means "not glibc"
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success. Fixing the mmap threshold also turns off glibc's dynamic
    # threshold, which otherwise keeps moving and trimming with the sizes it sees.
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
