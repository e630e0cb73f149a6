"""Optional ForgetMult backend: the CUDA C kernels of ``forget_mult.cu``, compiled by CuPy's NVRTC.

Shapes: T = time steps, B = batch, H = hidden lanes; tensors are time-major ``[T, B, H]``.

For platforms without Triton (the original pytorch-qrnn ran the same kind of kernel through
pynvrtc, now yanked). Needs ``pip install qrnn-lm[cupy]``, i.e. the CuPy wheel matching the CUDA
major version of the torch build (``cupy-cuda12x`` or ``cupy-cuda13x``). Nothing is compiled at
install time: the first call on a device compiles ``forget_mult.cu`` (about a second; CuPy also
keeps the binary in its on-disk kernel cache) and later calls reuse it.

Contract: "Backend contract" in ``README.md`` beside this file (the same for every backend).
Tensors are shared with the kernel as raw device pointers and the kernel runs on torch's current
CUDA stream, so it is ordered with the surrounding torch work and with torch's caching allocator,
like a native torch kernel.

``HAS_CUPY`` tells whether a usable CuPy was found; if not, ``IMPORT_ERROR`` holds one line saying
why and which package to install (``INSTALL_HINT``), and :func:`forward` / :func:`backward` raise
it as a ``RuntimeError``.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable

import numpy as np
import torch

__all__ = ["HAS_CUPY", "IMPORT_ERROR", "INSTALL_HINT", "forward", "backward", "check_available"]

CUDA_SOURCE_PATH = Path(__file__).with_name("forget_mult.cu")
# Extra NVRTC options. None needed: the source includes no header, and CuPy adds the
# architecture flag of the device it compiles for.
NVRTC_OPTIONS: tuple[str, ...] = ()
THREADS_PER_BLOCK = 256
# Entry points in forget_mult.cu are forget_mult_{fwd,bwd}_<suffix>, one pair per storage type.
KERNEL_SUFFIX = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16", torch.float64: "f64"}
KERNEL_NAMES = tuple(f"forget_mult_{d}_{s}" for s in KERNEL_SUFFIX.values() for d in ("fwd", "bwd"))

# launch(kernel_name, grid, block, args, device): runs a kernel of forget_mult.cu with a 1-D grid
# of `grid` blocks of `block` threads. The CUDA launcher is below; the tests pass a CPU one.
Launcher = Callable[[str, int, int, tuple, torch.device], None]


def cupy_package_for(torch_cuda_version: str) -> str:
    """The CuPy wheel matching a CUDA version string such as ``"13.0"``: ``"cupy-cuda13x"``."""
    return f"cupy-cuda{torch_cuda_version.split('.')[0]}x"


def _first_line(error: Exception) -> str:
    """An exception as one line (CuPy's import errors span several lines with banners)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip(" =-")]
    return lines[0] if lines else type(error).__name__


def _find_cupy():
    """Import CuPy and check it matches torch's CUDA. Returns ``(cupy module or None, reason)``."""
    if torch.version.cuda is None:
        return None, f"the cupy backend needs a CUDA build of torch; this torch ({torch.__version__}) has no CUDA"
    wanted = cupy_package_for(torch.version.cuda)
    fix = f"pip install {wanted} (torch uses CUDA {torch.version.cuda})"
    try:
        import cupy
    except Exception as error:  # not installed, or a broken install (missing CUDA libraries)
        return None, f"CuPy could not be imported ({_first_line(error)}): {fix}"
    try:
        runtime = int(cupy.cuda.runtime.runtimeGetVersion())  # e.g. 12080 for CUDA 12.8
    except Exception as error:
        return None, f"CuPy cannot load its CUDA runtime ({_first_line(error)}): {fix}"
    runtime_major = runtime // 1000
    if str(runtime_major) != torch.version.cuda.split(".")[0]:
        return None, (
            f"the installed CuPy is built for CUDA {runtime_major}.{runtime % 1000 // 10} but torch uses CUDA "
            f"{torch.version.cuda}: pip uninstall cupy-cuda{runtime_major}x && pip install {wanted}"
        )
    return cupy, ""


_cupy, IMPORT_ERROR = _find_cupy()
HAS_CUPY = _cupy is not None
# The install command for this torch build (what the dispatcher should print).
INSTALL_HINT = f"pip install {cupy_package_for(torch.version.cuda)}" if torch.version.cuda else "a CUDA build of torch"


def check_available() -> None:
    """Raise ``RuntimeError`` with the install line when this backend cannot run."""
    if not HAS_CUPY:
        raise RuntimeError(f"forget_mult backend 'cupy' is unavailable: {IMPORT_ERROR}")


@functools.lru_cache(maxsize=None)
def load_source() -> str:
    """The CUDA C source handed to NVRTC (read once)."""
    return CUDA_SOURCE_PATH.read_text(encoding="utf-8")


def kernel_name(direction: str, dtype: torch.dtype) -> str:
    """Entry point for ``direction`` ("fwd" or "bwd") and a storage dtype."""
    return f"forget_mult_{direction}_{KERNEL_SUFFIX[dtype]}"


def grid_size(lanes: int) -> int:
    """Blocks of ``THREADS_PER_BLOCK`` threads needed for one thread per lane."""
    return (lanes + THREADS_PER_BLOCK - 1) // THREADS_PER_BLOCK


def _check_tensors(lengths: torch.Tensor | None, states: dict, **sequences: torch.Tensor) -> None:
    """Raise ValueError unless the tensors follow the backend contract (README.md beside this file).

    ``sequences`` are ``[T, B, H]`` tensors, the first fixes shape, dtype and device for all;
    ``states`` maps names to ``[B, H]`` tensors (h0, grad_h0). The kernels trust these facts
    (they index raw pointers), hence the checks here even though the public op validates first.
    """
    first_name, first = next(iter(sequences.items()))
    if first.dim() != 3:
        raise ValueError(f"forget_mult[cupy]: {first_name} must be [T, B, H], got shape {tuple(first.shape)}")
    if first.dtype not in KERNEL_SUFFIX:
        raise ValueError(
            f"forget_mult[cupy]: dtype must be one of {[str(d) for d in KERNEL_SUFFIX]}, got {first.dtype}"
        )
    _, batch_size, hidden_size = first.shape
    expected_shapes = {name: (tensor, tuple(first.shape)) for name, tensor in sequences.items()}
    expected_shapes.update({name: (tensor, (batch_size, hidden_size)) for name, tensor in states.items()})
    for name, (tensor, shape) in expected_shapes.items():
        if tuple(tensor.shape) != shape:
            raise ValueError(f"forget_mult[cupy]: {name} must have shape {shape}, got {tuple(tensor.shape)}")
        if tensor.dtype != first.dtype or tensor.device != first.device:
            raise ValueError(
                f"forget_mult[cupy]: {name} must be {first.dtype} on {first.device} like {first_name}, "
                f"got {tensor.dtype} on {tensor.device}"
            )
        if not tensor.is_contiguous():
            raise ValueError(f"forget_mult[cupy]: {name} must be contiguous, got strides {tensor.stride()}")
    if lengths is not None:
        if lengths.dtype != torch.int64 or tuple(lengths.shape) != (batch_size,):
            raise ValueError(
                f"forget_mult[cupy]: lengths must be int64 of shape ({batch_size},), "
                f"got {lengths.dtype} of shape {tuple(lengths.shape)}"
            )
        if lengths.device != first.device or not lengths.is_contiguous():
            raise ValueError(
                f"forget_mult[cupy]: lengths must be contiguous on {first.device}, got "
                f"{'contiguous' if lengths.is_contiguous() else 'non-contiguous'} on {lengths.device}"
            )


def _pointer(tensor: torch.Tensor | None) -> np.uint64:
    """A tensor's data address as a kernel argument (a null pointer for None)."""
    return np.uint64(0 if tensor is None else tensor.data_ptr())


def _sizes(x: torch.Tensor, reverse: bool) -> tuple:
    """The trailing kernel arguments: seq_len, lanes, hidden (64-bit) and reverse (32-bit)."""
    seq_len, batch_size, hidden_size = x.shape
    return (np.int64(seq_len), np.int64(batch_size * hidden_size), np.int64(hidden_size), np.int32(bool(reverse)))


def launch_forward(launch: Launcher, f, x, h0, lengths, reverse: bool, h: torch.Tensor) -> None:
    """Write the forward pass into the preallocated ``h`` ``[T, B, H]`` (every element)."""
    _check_tensors(lengths, {"h0": h0}, f=f, x=x, h=h)
    lanes = x.shape[1] * x.shape[2]
    if lanes == 0:
        return  # nothing to write, and CUDA rejects an empty grid
    args = (_pointer(f), _pointer(x), _pointer(h0), _pointer(lengths), _pointer(h)) + _sizes(x, reverse)
    launch(kernel_name("fwd", x.dtype), grid_size(lanes), THREADS_PER_BLOCK, args, x.device)


def launch_backward(
    launch: Launcher, grad_h, f, x, h, h0, lengths, reverse: bool, grad_f, grad_x, grad_h0
) -> None:
    """Write the gradients into the preallocated ``grad_f``, ``grad_x`` ``[T, B, H]`` and ``grad_h0`` ``[B, H]``."""
    states = {"h0": h0, "grad_h0": grad_h0}
    _check_tensors(lengths, states, grad_h=grad_h, f=f, x=x, h=h, grad_f=grad_f, grad_x=grad_x)
    lanes = x.shape[1] * x.shape[2]
    if lanes == 0:
        return
    args = (
        _pointer(grad_h), _pointer(f), _pointer(x), _pointer(h), _pointer(h0), _pointer(lengths),
        _pointer(grad_f), _pointer(grad_x), _pointer(grad_h0),
    ) + _sizes(x, reverse)
    launch(kernel_name("bwd", x.dtype), grid_size(lanes), THREADS_PER_BLOCK, args, x.device)


@functools.lru_cache(maxsize=None)
def _compiled_module(device_index: int):
    # A CUDA module is loaded into one device's context, hence one RawModule per device.
    with _cupy.cuda.Device(device_index):
        return _cupy.RawModule(code=load_source(), options=NVRTC_OPTIONS, backend="nvrtc")


@functools.lru_cache(maxsize=None)
def _compiled_kernel(device_index: int, name: str):
    """The kernel ``name`` compiled for device ``device_index`` (one NVRTC compile per device)."""
    with _cupy.cuda.Device(device_index):
        return _compiled_module(device_index).get_function(name)


def launch_on_cuda(name: str, grid: int, block: int, args: tuple, device: torch.device) -> None:
    """Launch on ``device`` in torch's current stream there."""
    kernel = _compiled_kernel(device.index, name)
    stream = torch.cuda.current_stream(device).cuda_stream
    with _cupy.cuda.Device(device.index), _cupy.cuda.ExternalStream(stream, device.index):
        kernel((grid,), (block,), args)


def _check_cuda(*tensors: torch.Tensor | None) -> None:
    for tensor in tensors:
        if tensor is not None and tensor.device.type != "cuda":
            raise ValueError(f"forget_mult[cupy]: tensors must be on a CUDA device, got {tensor.device}")


def forward(f, x, h0, lengths, reverse):
    """Forward pass on CUDA tensors.

    Args:
        f, x: ``[T, B, H]`` contiguous, float32/float16/bfloat16 (float64 also works), one device.
        h0: ``[B, H]`` initial state, same dtype and device (zeros, never None).
        lengths: None (all sequences have length T) or a contiguous int64 ``[B]`` tensor in [0, T].
        reverse: walk from each sequence's last valid step down to step 0.

    Returns:
        ``h`` ``[T, B, H]`` in the input dtype; 0 at padded steps.
    """
    check_available()
    _check_cuda(f, x, h0, lengths)
    h = torch.empty_like(x)
    launch_forward(launch_on_cuda, f, x, h0, lengths, reverse, h)
    return h


def backward(grad_h, f, x, h, h0, lengths, reverse):
    """Backward pass on CUDA tensors; ``h`` is the output of :func:`forward`.

    Returns:
        ``(grad_f, grad_x, grad_h0)``: ``[T, B, H]``, ``[T, B, H]`` and ``[B, H]`` in the input
        dtype; zeros at padded steps, ``grad_h0`` is 0 for sequences of length 0.
    """
    check_available()
    _check_cuda(grad_h, f, x, h, h0, lengths)
    grad_f, grad_x, grad_h0 = torch.empty_like(f), torch.empty_like(x), torch.empty_like(h0)
    launch_backward(launch_on_cuda, grad_h, f, x, h, h0, lengths, reverse, grad_f, grad_x, grad_h0)
    return grad_f, grad_x, grad_h0
