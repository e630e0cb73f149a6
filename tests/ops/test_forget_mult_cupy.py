"""The optional CuPy/NVRTC ForgetMult backend: qrnn_lm/ops/forget_mult/{cupy.py, forget_mult.cu}.

Shapes: T = time steps, B = batch, H = hidden lanes.

No GPU is needed for most of this file:
  (a) NVRTC (cuda.bindings, installed with torch) compiles forget_mult.cu for sm_80 and sm_90;
  (b) the very same forget_mult.cu is compiled as C++ with a host shim (_cupy_host_shim.h,
      _cupy_host_driver.cpp), run on CPU tensors through the argument packing of cupy.py, and
      compared with the reference: outputs and all gradients, both directions, with lengths;
  (c) with a GPU and CuPy, the real backend is compared with the reference the same way;
  (d) a missing or mismatched CuPy gives one clear line naming the package to install.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from qrnn_lm.ops.forget_mult import cupy as cupy_backend
from qrnn_lm.ops.forget_mult.naive import forget_mult_reference

HERE = Path(__file__).resolve().parent
# Helpers live beside this file; loaded by path so it works whatever pytest's import mode.
_spec = importlib.util.spec_from_file_location("_cupy_helpers", HERE / "_cupy_helpers.py")
helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(helpers)
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
TOLERANCE = {  # (rtol, atol) against the fp32/fp64 reference
    torch.float64: (1e-10, 1e-12),
    torch.float32: (1e-5, 1e-5),
    torch.float16: (5e-3, 5e-3),
    torch.bfloat16: (2e-2, 2e-2),
}
# (T, B, H, lengths or None). Lengths include 0, 1 and T; H = 500 and B * H = 900 span several
# blocks of 256 threads with a partly used last block; T = 0 still has grad_h0 to write.
CASES = [
    (0, 2, 3, None),
    (0, 2, 3, [0, 0]),
    (1, 1, 1, None),
    (2, 1, 7, [1]),
    (63, 1, 500, None),
    (63, 1, 7, [40]),
    (63, 4, 7, [63, 0, 31, 1]),
    (5, 3, 300, [5, 2, 0]),
]


def make_inputs(seq_len, batch_size, hidden_size, lengths, dtype, device="cpu", seed=0):
    """Fresh random f (in (0, 1)), x, h0, grad_h in ``dtype``; lengths as int64 or None."""
    generator = torch.Generator().manual_seed(seed)
    shape = (seq_len, batch_size, hidden_size)
    f = torch.sigmoid(torch.randn(shape, generator=generator))
    x = torch.randn(shape, generator=generator)
    h0 = torch.randn(batch_size, hidden_size, generator=generator)
    grad_h = torch.randn(shape, generator=generator)
    tensors = [t.to(device=device, dtype=dtype) for t in (f, x, h0, grad_h)]
    length_tensor = None if lengths is None else torch.tensor(lengths, dtype=torch.int64, device=device)
    return (*tensors, length_tensor)


def reference(f, x, h0, lengths, reverse, grad_h):
    """(h, grad_f, grad_x, grad_h0) from the naive loop and autograd."""
    if f.shape[0] == 0:
        # naive.py cannot stack zero steps (reported to the lead); by the contract, T = 0 means
        # empty outputs and grad_h0 = 0 (every length is 0).
        return f.clone(), f.clone(), x.clone(), torch.zeros_like(h0)
    leaves = [t.detach().clone().requires_grad_() for t in (f, x, h0)]
    h = forget_mult_reference(*leaves, reverse=reverse, lengths=lengths)
    h.backward(grad_h)
    return (h.detach(), *(leaf.grad for leaf in leaves))


def run_kernels(launch, f, x, h0, lengths, reverse, grad_h):
    """(h, grad_f, grad_x, grad_h0) from the backend's kernels, outputs poisoned with NaN first."""
    h = torch.full_like(x, float("nan"))
    cupy_backend.launch_forward(launch, f, x, h0, lengths, reverse, h)
    grads = [torch.full_like(t, float("nan")) for t in (f, x, h0)]
    cupy_backend.launch_backward(launch, grad_h, f, x, h, h0, lengths, reverse, *grads)
    return (h, *grads)


def assert_matches_reference(got, expected, dtype):
    rtol, atol = TOLERANCE[dtype]
    for name, a, b in zip(("h", "grad_f", "grad_x", "grad_h0"), got, expected):
        assert a.dtype == dtype, f"{name} has dtype {a.dtype}, expected {dtype}"
        torch.testing.assert_close(a.float().cpu(), b.float().cpu(), rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")


# ---------------------------------------------------------------------------------------------
# (a) NVRTC compiles the CUDA C source for sm_80 and sm_90, with no GPU.


@pytest.mark.parametrize("major", [80, 90])
def test_nvrtc_compiles_every_entry_point_to_ptx(major):
    ptx = helpers.nvrtc_compile(cupy_backend, f"compute_{major}")
    text = ptx.decode(errors="replace")
    assert f".target sm_{major}" in text
    entries = set(re.findall(r"\.entry\s+(\w+)\(", text))
    assert entries == set(cupy_backend.KERNEL_NAMES)


@pytest.mark.parametrize("major", [80, 90])
def test_nvrtc_assembles_a_cubin(major):
    """sm_XX goes through ptxas inside NVRTC, which checks the inline PTX (fp16 cvt)."""
    cubin = helpers.nvrtc_compile(cupy_backend, f"sm_{major}")
    assert cubin[:4] == b"\x7fELF"


def test_source_needs_no_include_path():
    """The .cu is self-contained, so CuPy never has to find cuda_fp16.h / cuda_bf16.h."""
    assert "#include" not in cupy_backend.load_source()


# ---------------------------------------------------------------------------------------------
# (b) The same source compiled as C++ with a host shim, run on CPU tensors.

@pytest.fixture(scope="module")
def host_library(tmp_path_factory):
    compiler = shutil.which(os.environ.get("CXX", "g++"))
    if compiler is None:
        pytest.skip("no C++ compiler (g++ or $CXX) to build the host version of forget_mult.cu")
    return helpers.build_host_library(compiler, tmp_path_factory.mktemp("cupy_host"))


@pytest.fixture(scope="module")
def host_launch(host_library):
    """A launcher for cupy.py's launch_forward/launch_backward that runs the kernels on the CPU."""
    return helpers.host_launcher(host_library)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"T{c[0]}-B{c[1]}-H{c[2]}-len{c[3]}")
def test_host_kernels_match_reference(host_launch, case, reverse, dtype):
    f, x, h0, grad_h, lengths = make_inputs(*case, dtype)
    got = run_kernels(host_launch, f, x, h0, lengths, reverse, grad_h)
    assert_matches_reference(got, reference(f, x, h0, lengths, reverse, grad_h), dtype)


def test_host_kernels_zero_the_padding_exactly(host_launch):
    f, x, h0, grad_h, lengths = make_inputs(6, 2, 3, [4, 0], torch.float32)
    h, grad_f, grad_x, grad_h0 = run_kernels(host_launch, f, x, h0, lengths, True, grad_h)
    for tensor in (h, grad_f, grad_x):
        assert torch.equal(tensor[4:, 0], torch.zeros(2, 3)) and torch.equal(tensor[:, 1], torch.zeros(6, 3))
    assert torch.equal(grad_h0[1], torch.zeros(3)) and not torch.equal(grad_h0[0], torch.zeros(3))


def _float32_samples() -> np.ndarray:
    """Random float32 values over the whole exponent range, halfway cases and specials."""
    rng = np.random.default_rng(0)
    random_bits = rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    halfway = (np.arange(1, 2**10, dtype=np.float32) + 0.5) * np.float32(2.0**-24)  # fp16 subnormal ties
    specials = np.array([0.0, -0.0, 65504.0, 65519.0, 65520.0, 1e-8, 3e38, np.inf, -np.inf], dtype=np.float32)
    return np.concatenate([random_bits[np.isfinite(random_bits)], halfway, -halfway, specials])


def test_host_half_conversions_match_numpy(host_library):
    every_half = np.arange(2**16, dtype=np.uint16)
    widened = helpers.convert(host_library, "half_to_float", every_half, np.float32)
    np.testing.assert_array_equal(widened, every_half.view(np.float16).astype(np.float32))
    values = _float32_samples()
    narrowed = helpers.convert(host_library, "float_to_half", values, np.uint16)
    with np.errstate(over="ignore"):  # values past the fp16 range become inf, on purpose
        expected = values.astype(np.float16).view(np.uint16)
    np.testing.assert_array_equal(narrowed, expected)


def test_device_bfloat16_conversions_match_torch(host_library):
    """bf16 conversion is plain integer code in the .cu itself: the same code runs on the GPU."""
    every_bfloat16 = np.arange(2**16, dtype=np.uint16)
    widened = helpers.convert(host_library, "bfloat16_to_float", every_bfloat16, np.float32)
    expected = torch.from_numpy(every_bfloat16.view(np.int16)).view(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(widened, expected)
    values = _float32_samples()
    narrowed = helpers.convert(host_library, "float_to_bfloat16", values, np.uint16)
    expected_bits = torch.from_numpy(values).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(narrowed, expected_bits)
    nan_bits = helpers.convert(host_library, "float_to_bfloat16", np.array([np.nan], dtype=np.float32), np.uint16)
    assert np.isnan(torch.from_numpy(nan_bits.view(np.int16)).view(torch.bfloat16).float().numpy()).all()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t: t.update(x=t["x"].transpose(0, 1).contiguous().transpose(0, 1)), "x must be contiguous"),
        (lambda t: t.update(lengths=t["lengths"].int()), "lengths must be int64"),
        (lambda t: t.update(h0=t["h0"][:1]), r"h0 must have shape \(2, 3\)"),
        (lambda t: t.update(x=t["x"].double()), "x must be torch.float32 on cpu like f, got torch.float64"),
        (lambda t: t.update(x=t["x"].int(), f=t["f"].int()), "dtype must be one of"),
    ],
)
def test_bad_arguments_raise_value_error(host_launch, change, message):
    f, x, h0, _, lengths = make_inputs(4, 2, 3, [4, 1], torch.float32)
    tensors = {"f": f, "x": x, "h0": h0, "lengths": lengths}
    change(tensors)
    h = torch.empty(4, 2, 3)
    with pytest.raises(ValueError, match=message):
        cupy_backend.launch_forward(host_launch, reverse=False, h=h, **tensors)


# ---------------------------------------------------------------------------------------------
# (c) The real backend on a GPU.

needs_gpu_and_cupy = pytest.mark.skipif(
    not (cupy_backend.HAS_CUPY and torch.cuda.is_available()),
    reason=f"needs a CUDA GPU and CuPy ({cupy_backend.IMPORT_ERROR or 'no CUDA device'})",
)


@needs_gpu_and_cupy
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"T{c[0]}-B{c[1]}-H{c[2]}-len{c[3]}")
def test_gpu_kernels_match_reference(case, reverse, dtype):
    f, x, h0, grad_h, lengths = make_inputs(*case, dtype, device="cuda")
    got = run_kernels(cupy_backend.launch_on_cuda, f, x, h0, lengths, reverse, grad_h)
    assert_matches_reference(got, reference(f, x, h0, lengths, reverse, grad_h), dtype)


@needs_gpu_and_cupy
def test_gpu_forward_backward_on_a_side_stream():
    f, x, h0, grad_h, lengths = make_inputs(63, 4, 7, [63, 0, 31, 1], torch.float32, device="cuda")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        h = cupy_backend.forward(f, x, h0, lengths, False)
        grads = cupy_backend.backward(grad_h, f, x, h, h0, lengths, False)
    torch.cuda.current_stream().wait_stream(stream)
    assert_matches_reference((h, *grads), reference(f, x, h0, lengths, False, grad_h), torch.float32)


def test_forward_refuses_cpu_tensors():
    f, x, h0, _, _ = make_inputs(2, 1, 3, None, torch.float32)
    error = ValueError if cupy_backend.HAS_CUPY else RuntimeError
    with pytest.raises(error):
        cupy_backend.forward(f, x, h0, None, False)


# ---------------------------------------------------------------------------------------------
# (d) A missing or mismatched CuPy: HAS_CUPY is False and asking for the backend says what to do.


@pytest.fixture
def reload_backend(monkeypatch):
    """Reload cupy.py under monkeypatched conditions; restore the real module afterwards."""
    yield lambda: importlib.reload(cupy_backend)
    monkeypatch.undo()
    importlib.reload(cupy_backend)


@pytest.mark.parametrize(
    "torch_cuda, cupy_module, expected",
    [
        ("13.0", None, "pip install cupy-cuda13x"),
        ("12.6", None, "pip install cupy-cuda12x"),
        (
            "13.0",
            helpers.fake_cupy(12080),
            "built for CUDA 12.8 but torch uses CUDA 13.0: pip uninstall cupy-cuda12x && pip install cupy-cuda13x",
        ),
        ("12.4", helpers.fake_cupy(13000), "pip uninstall cupy-cuda13x && pip install cupy-cuda12x"),
        (None, None, "needs a CUDA build of torch"),
        ("13.0", helpers.fake_cupy(None), "(CUDA runtime libcudart.so.13 not found): pip install cupy-cuda13x"),
    ],
)
def test_missing_or_mismatched_cupy_gives_one_clear_line(
    monkeypatch, reload_backend, torch_cuda, cupy_module, expected
):
    monkeypatch.setattr(torch.version, "cuda", torch_cuda)
    monkeypatch.setitem(sys.modules, "cupy", cupy_module)  # None makes `import cupy` fail
    backend = reload_backend()
    assert backend.HAS_CUPY is False
    assert expected in backend.IMPORT_ERROR and "\n" not in backend.IMPORT_ERROR
    f, x, h0, grad_h, _ = make_inputs(2, 1, 3, None, torch.float32)
    with pytest.raises(RuntimeError, match=re.escape(backend.IMPORT_ERROR)):
        backend.forward(f, x, h0, None, False)
    with pytest.raises(RuntimeError, match=re.escape(backend.IMPORT_ERROR)):
        backend.backward(grad_h, f, x, x, h0, None, False)


def test_matching_cupy_is_accepted(monkeypatch, reload_backend):
    """The check can also pass: a CuPy built for torch's CUDA major version is taken."""
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setitem(sys.modules, "cupy", helpers.fake_cupy(13010))
    backend = reload_backend()
    assert backend.HAS_CUPY is True and backend.IMPORT_ERROR == ""


def test_cuda_launch_plumbing_with_a_recording_cupy(monkeypatch, reload_backend):
    """Without a GPU, check launch_on_cuda against CuPy's documented API with a recording stand-in:
    one NVRTC module per device built from forget_mult.cu, launched inside that device and torch's
    current stream of that device."""
    events = []
    active = {"device": None, "stream": None}

    class Context:  # cupy.cuda.Device / ExternalStream: `with` makes them current
        def __init__(self, key, value):
            self.key, self.value = key, value

        def __enter__(self):
            self.saved, active[self.key] = active[self.key], self.value

        def __exit__(self, *exc):
            active[self.key] = self.saved

    class RawModule:
        def __init__(self, code, options, backend):
            events.append(("compile", active["device"], code == cupy_backend.load_source(), options, backend))

        def get_function(self, name):
            return lambda grid, block, args: events.append(("launch", name, grid, block, args, dict(active)))

    fake = helpers.fake_cupy(13000)
    fake.RawModule = RawModule
    fake.cuda.Device = lambda index: Context("device", index)
    fake.cuda.ExternalStream = lambda ptr, device_id: Context("stream", (ptr, device_id))
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setitem(sys.modules, "cupy", fake)
    torch_stream = lambda device: types.SimpleNamespace(cuda_stream=7000 + device.index)  # noqa: E731
    monkeypatch.setattr(torch.cuda, "current_stream", torch_stream)
    backend = reload_backend()
    args = (np.uint64(0), np.int64(3))
    backend.launch_on_cuda("forget_mult_fwd_f32", 2, 256, args, torch.device("cuda", 1))
    backend.launch_on_cuda("forget_mult_bwd_f16", 1, 256, args, torch.device("cuda", 1))
    backend.launch_on_cuda("forget_mult_fwd_f32", 3, 256, args, torch.device("cuda", 0))
    compiles = [e for e in events if e[0] == "compile"]
    assert compiles == [("compile", device, True, backend.NVRTC_OPTIONS, "nvrtc") for device in (1, 0)]
    launches = [e[1:] for e in events if e[0] == "launch"]
    assert launches == [
        ("forget_mult_fwd_f32", (2,), (256,), args, {"device": 1, "stream": (7001, 1)}),
        ("forget_mult_bwd_f16", (1,), (256,), args, {"device": 1, "stream": (7001, 1)}),
        ("forget_mult_fwd_f32", (3,), (256,), args, {"device": 0, "stream": (7000, 0)}),
    ]
