"""Helpers for test_forget_mult_cupy.py: NVRTC compile, the CPU build of forget_mult.cu, a fake CuPy.

Shapes: T = time steps, B = batch, H = hidden lanes (only in the kernels these helpers drive).
"""

from __future__ import annotations

import ctypes
import subprocess
import types
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
# Kernel arguments as cupy.py packs them (numpy scalars) -> the C type the kernel reads.
_CTYPE_OF = {np.uint64: ctypes.c_uint64, np.int64: ctypes.c_int64, np.int32: ctypes.c_int32}


def nvrtc_compile(backend, arch: str) -> bytes:
    """Compile the backend's CUDA source with NVRTC for ``arch`` and its options.

    ``arch`` "compute_XX" returns PTX text; "sm_XX" returns a CUBIN (ptxas runs inside NVRTC).
    Skips the calling test when cuda-bindings (installed with CUDA builds of torch) is absent.
    """
    nvrtc = pytest.importorskip("cuda.bindings.nvrtc", reason="cuda-bindings (installed with CUDA torch) is absent")
    err, program = nvrtc.nvrtcCreateProgram(backend.load_source().encode(), b"forget_mult.cu", 0, [], [])
    assert err == nvrtc.nvrtcResult.NVRTC_SUCCESS, err
    options = [o.encode() for o in backend.NVRTC_OPTIONS] + [f"--gpu-architecture={arch}".encode()]
    (err,) = nvrtc.nvrtcCompileProgram(program, len(options), options)
    _, log_size = nvrtc.nvrtcGetProgramLogSize(program)
    # A fresh, writable buffer: NVRTC writes into it. (Never `b" " * n`: for n = 1, the usual
    # empty log, that is CPython's shared one-byte object b" ", and NVRTC would overwrite every
    # space character of the process with a NUL byte.)
    log = bytearray(log_size)
    nvrtc.nvrtcGetProgramLog(program, log)
    assert err == nvrtc.nvrtcResult.NVRTC_SUCCESS, log.decode(errors="replace")
    if arch.startswith("compute_"):
        get_size, get = nvrtc.nvrtcGetPTXSize, nvrtc.nvrtcGetPTX
    else:
        get_size, get = nvrtc.nvrtcGetCUBINSize, nvrtc.nvrtcGetCUBIN
    _, size = get_size(program)
    output = bytearray(size)
    get(program, output)
    nvrtc.nvrtcDestroyProgram(program)
    return bytes(output)


def build_host_library(compiler: str, directory: Path) -> ctypes.CDLL:
    """Compile _cupy_host_driver.cpp (which includes the package's forget_mult.cu) into a library."""
    package_dir = HERE.parents[1] / "qrnn_lm" / "ops" / "forget_mult"
    library_path = directory / "forget_mult_host.so"
    command = [
        compiler, "-std=c++14", "-O2", "-Wall", "-Wextra", "-shared", "-fPIC",
        "-I", str(HERE), "-I", str(package_dir),
        str(HERE / "_cupy_host_driver.cpp"), "-o", str(library_path),
    ]  # fmt: skip
    built = subprocess.run(command, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    library = ctypes.CDLL(str(library_path))
    library.qrnn_host_launch.argtypes = [ctypes.c_char_p, ctypes.c_uint, ctypes.c_uint, ctypes.POINTER(ctypes.c_void_p)]
    library.qrnn_host_launch.restype = ctypes.c_int
    for name in ("half_to_float", "float_to_half", "bfloat16_to_float", "float_to_bfloat16"):
        getattr(library, f"qrnn_host_{name}").argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_longlong]
    return library


def host_launcher(library: ctypes.CDLL):
    """A ``launch(name, grid, block, args, device)`` for cupy.py that runs kernels on the CPU.

    Like cuLaunchKernel, the library receives an array of pointers to each argument's value.
    """

    def launch(name, grid, block, args, device):
        assert device.type == "cpu", f"host kernels need CPU tensors, got {device}"
        values = [_CTYPE_OF[type(arg)](int(arg)) for arg in args]
        params = (ctypes.c_void_p * len(values))(*[ctypes.addressof(v) for v in values])
        status = library.qrnn_host_launch(name.encode(), grid, block, params)
        assert status == 0, f"the host build has no kernel named {name}"

    return launch


def convert(library: ctypes.CDLL, name: str, values: np.ndarray, out_dtype) -> np.ndarray:
    """Run the library's ``qrnn_host_<name>`` conversion over a contiguous array."""
    out = np.empty(values.shape, dtype=out_dtype)
    getattr(library, f"qrnn_host_{name}")(values.ctypes.data, out.ctypes.data, values.size)
    return out


def fake_cupy(runtime_version: int | None) -> types.ModuleType:
    """A stand-in for CuPy whose CUDA runtime has ``runtime_version`` (None: fails to load)."""

    def runtime_get_version():
        if runtime_version is None:
            raise RuntimeError("=====\nCUDA runtime libcudart.so.13 not found\n=====")
        return runtime_version

    fake = types.ModuleType("cupy")
    fake.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(runtimeGetVersion=runtime_get_version))
    return fake
