"""ForgetMult CPU backends (numba sequential, numba chunked scan, torch loop) vs the reference.

Shape legend: T = time steps, B = batch, H = hidden lanes; tensors are [T, B, H].

Each case compares the output and all gradients (f, x, h0) with ``naive.forget_mult_reference``
differentiated by autograd, with an upstream gradient that puts extra weight on each sequence's
final state. Outputs of the backends are poisoned with NaN before the kernels write, so an
element a kernel forgets to write shows up as a mismatch.
"""

import itertools
import sys

import pytest
import torch

from qrnn_lm.ops.forget_mult import cpu, loop
from qrnn_lm.ops.forget_mult.naive import forget_mult_reference
from _poison import nan_poisoned_allocations  # tests/ops/_poison.py

# (T, B, H): T in {1, 2, 63}, B = 1 and B > 1, H in {1, 7, 500}, without the full product.
SHAPES = [(1, 1, 1), (1, 3, 500), (2, 1, 7), (2, 4, 500), (63, 1, 7), (63, 5, 1), (63, 3, 500)]
SMALL_SHAPES = [(2, 3, 7), (63, 2, 500)]
# Tolerances per dtype: fp16/bf16 backends reuse the saved output h, rounded to the input
# dtype, in the backward, where the reference keeps float32 intermediates.
TOLERANCES = {
    torch.float64: dict(atol=1e-10, rtol=1e-10),
    torch.float32: dict(atol=2e-5, rtol=2e-5),
    torch.float16: dict(atol=2e-2, rtol=1e-2),
    torch.bfloat16: dict(atol=1e-1, rtol=5e-2),
}
# "numba" runs the sequential kernel in the calling thread, "numba-parallel" its prange form,
# "numba-chunked" the chunked scan (always parallel).
BACKENDS = ["numba", "numba-parallel", "numba-chunked", "torch"]


def set_serial_threshold(monkeypatch, elements):
    """Run the sequential kernel in the calling thread up to ``elements``, whichever threading
    layer numba has started (0: always the parallel kernel)."""
    monkeypatch.setattr(cpu, "SERIAL_MAX_ELEMENTS", elements)
    monkeypatch.setattr(cpu, "POOLED_SERIAL_MAX_ELEMENTS", elements)


def backend_module(name, monkeypatch):
    """The backend module; for numba, forces the sequential or the chunked strategy, and for the
    sequential one the serial ("numba") or the parallel ("numba-parallel") kernel."""
    if name == "torch":
        return loop
    strategy = "chunked" if name == "numba-chunked" else "sequential"
    monkeypatch.setenv("QRNN_LM_FORGET_MULT_CPU_STRATEGY", strategy)
    set_serial_threshold(monkeypatch, 0 if name == "numba-parallel" else 1 << 62)
    return cpu


def make_inputs(shape, dtype, with_lengths, generator):
    """Fresh random f in (0, 1), x, h0, upstream grad and lengths (a 0 and a T when B > 1)."""
    seq_len, batch_size, hidden_size = shape

    def rand(*size):
        return torch.rand(*size, generator=generator, dtype=torch.float64)

    f = (0.05 + 0.9 * rand(seq_len, batch_size, hidden_size)).to(dtype)
    x = (2 * rand(seq_len, batch_size, hidden_size) - 1).to(dtype)
    h0 = (2 * rand(batch_size, hidden_size) - 1).to(dtype)
    grad_h = (2 * rand(seq_len, batch_size, hidden_size) - 1).to(dtype)
    lengths = None
    if with_lengths:
        lengths = torch.randint(0, seq_len + 1, (batch_size,), generator=generator)
        if batch_size > 1:
            lengths[0], lengths[-1] = 0, seq_len
        else:
            lengths[0] = max(seq_len - 1, 0)
    return f, x, h0, grad_h, lengths


def emphasise_final_state(grad_h, lengths, reverse, weight=5.0):
    """Add weight to the upstream grad of each sequence's final state (what a layer returns)."""
    seq_len, batch_size, _ = grad_h.shape
    grad_h = grad_h.clone()
    for b in range(batch_size):
        length = seq_len if lengths is None else int(lengths[b])
        if length > 0:
            last = 0 if reverse else length - 1
            grad_h[last, b] += weight
    return grad_h


def reference_and_grads(f, x, h0, grad_h, lengths, reverse):
    leaves = [t.detach().clone().requires_grad_(True) for t in (f, x, h0)]
    h = forget_mult_reference(*leaves, reverse=reverse, lengths=lengths)
    grads = torch.autograd.grad(h, leaves, grad_h)
    return h.detach(), grads


def assert_matches(name, actual, expected):
    assert actual.dtype == expected.dtype, f"{name}: dtype {actual.dtype}, expected {expected.dtype}"
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)}, expected {tuple(expected.shape)}"
    assert not torch.isnan(actual).any(), f"{name}: NaN left, an element was not written"
    torch.testing.assert_close(actual, expected, **TOLERANCES[expected.dtype], msg=lambda m: f"{name}: {m}")


def check_backend(module, shape, dtype, reverse, with_lengths, monkeypatch, seed=0):
    generator = torch.Generator().manual_seed(seed + 1000 * shape[0] + shape[2])
    f, x, h0, grad_h, lengths = make_inputs(shape, dtype, with_lengths, generator)
    grad_h = emphasise_final_state(grad_h, lengths, reverse)
    expected_h, expected_grads = reference_and_grads(f, x, h0, grad_h, lengths, reverse)
    with nan_poisoned_allocations(monkeypatch):
        h = module.forward(f, x, h0, lengths, reverse)
        grads = module.backward(grad_h, f, x, h, h0, lengths, reverse)
    assert_matches("h", h, expected_h)
    for name, actual, expected in zip(("grad_f", "grad_x", "grad_h0"), grads, expected_grads):
        assert_matches(name, actual, expected)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "T{}-B{}-H{}".format(*s))
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
def test_fp32_matches_reference(backend, shape, reverse, with_lengths, monkeypatch):
    module = backend_module(backend, monkeypatch)
    check_backend(module, shape, torch.float32, reverse, with_lengths, monkeypatch)


@pytest.mark.parametrize("backend", ["numba", "numba-chunked", "torch"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("shape", SMALL_SHAPES, ids=lambda s: "T{}-B{}-H{}".format(*s))
@pytest.mark.parametrize("reverse,with_lengths", list(itertools.product([False, True], [False, True])))
def test_other_dtypes_match_reference(backend, dtype, shape, reverse, with_lengths, monkeypatch):
    module = backend_module(backend, monkeypatch)
    check_backend(module, shape, dtype, reverse, with_lengths, monkeypatch)


@pytest.mark.parametrize("backend", ["numba", "numba-parallel", "numba-chunked"])
def test_long_sequence_few_lanes(backend, monkeypatch):
    """The shapes the chunked scan is for (many chunks, chunk edges inside and past lengths)."""
    module = backend_module(backend, monkeypatch)
    for reverse in (False, True):
        check_backend(module, (700, 3, 5), torch.float32, reverse, True, monkeypatch, seed=7)


@pytest.mark.parametrize("backend", ["numba", "numba-parallel"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_batch_folding_with_full_lengths_and_strided_inputs(backend, reverse, monkeypatch):
    """Lengths that are all T fold the batch into the lanes (the kernels see B = 1), also when the
    inputs are strided views (batch-first tensors transposed), and the results still match."""
    module = backend_module(backend, monkeypatch)
    seen_batch_sizes = []
    for name in ("_seq_forward", "_seq_forward_serial", "_seq_backward", "_seq_backward_serial"):
        kernel = getattr(cpu, name)
        monkeypatch.setattr(cpu, name, lambda *a, kernel=kernel: (seen_batch_sizes.append(a[1].shape[1]), kernel(*a))[1])
    generator = torch.Generator().manual_seed(5)
    f, x, h0, grad_h, _ = make_inputs((40, 3, 100), torch.float32, False, generator)
    f, x, grad_h = (t.transpose(0, 1).contiguous().transpose(0, 1) for t in (f, x, grad_h))
    assert not f.is_contiguous()
    lengths = torch.full((3,), 40)
    expected_h, expected_grads = reference_and_grads(f, x, h0, grad_h, lengths, reverse)
    with nan_poisoned_allocations(monkeypatch):
        h = module.forward(f, x, h0, lengths, reverse)
        grads = module.backward(grad_h, f, x, h, h0, lengths, reverse)
    assert seen_batch_sizes == [1, 1]
    assert_matches("h", h, expected_h)
    for name, actual, expected in zip(("grad_f", "grad_x", "grad_h0"), grads, expected_grads):
        assert_matches(name, actual, expected)


def test_forced_strategies_really_apply(monkeypatch):
    """Guard against the chunked/parallel tests silently running another kernel."""
    monkeypatch.setenv("QRNN_LM_FORGET_MULT_CPU_STRATEGY", "chunked")
    assert cpu._strategy(63, 1, 7) == "chunked"
    monkeypatch.setenv("QRNN_LM_FORGET_MULT_CPU_STRATEGY", "sequential")
    assert cpu._strategy(4096, 1, 1) == "sequential"
    set_serial_threshold(monkeypatch, 0)
    assert not cpu._run_serially(20, 4, 2, 5) or cpu.numba.get_num_threads() == 1  # 12 tiles
    assert cpu._run_serially(20, 1, 8, 5)  # one tile: nothing to share out
    monkeypatch.setenv("QRNN_LM_FORGET_MULT_CPU_STRATEGY", "fastest")
    with pytest.raises(ValueError, match="'auto', 'chunked' or 'sequential'.*fastest"):
        cpu._strategy(63, 1, 7)


def test_nan_poisoning_catches_an_unwritten_element(monkeypatch):
    """The poison must make a skipped write visible: a backend that leaves one element unwritten."""

    def lazy_forward(f, x, h0, lengths, reverse):
        h = torch.empty_like(x)
        h[1:] = forget_mult_reference(f, x, h0)[1:]  # forgets h[0]
        return h

    f, x, h0, _, _ = make_inputs((3, 2, 4), torch.float32, False, torch.Generator().manual_seed(0))
    with nan_poisoned_allocations(monkeypatch):
        h = lazy_forward(f, x, h0, None, False)
    with pytest.raises(AssertionError, match="NaN left"):
        assert_matches("h", h, forget_mult_reference(f, x, h0))


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_sequence_and_empty_batch(backend, monkeypatch):
    module = backend_module(backend, monkeypatch)
    for shape in [(0, 2, 3), (3, 0, 4)]:
        f, x, h0 = torch.rand(shape), torch.rand(shape), torch.rand(shape[1:])
        h = module.forward(f, x, h0, None, False)
        grad_f, grad_x, grad_h0 = module.backward(torch.ones(shape), f, x, h, h0, None, False)
        assert h.shape == grad_f.shape == grad_x.shape == shape
        assert torch.equal(grad_h0, torch.zeros(shape[1:]))


def run_python(script, layer=None):
    """Run ``script`` in a fresh interpreter (numba's threading layer is chosen once per process),
    with NUMBA_THREADING_LAYER set to ``layer`` (None: the project's default choice)."""
    import os
    import subprocess
    import sys
    import textwrap

    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_THREADING_LAYER")}
    if layer is not None:
        env["NUMBA_THREADING_LAYER"] = layer
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True,
                          text=True, timeout=300, env=env)


@pytest.mark.slow  # a real process
@pytest.mark.parametrize("layer", [None, "workqueue"], ids=["default-layer", "workqueue"])
def test_parallel_kernels_from_several_python_threads(layer):
    """numba's workqueue layer aborts the whole process on concurrent parallel launches, so the
    check runs in a subprocess, under each layer; the backend must serialise its launches."""
    result = run_python(
        """
        import threading, torch
        from qrnn_lm.ops.forget_mult import cpu
        cpu.SERIAL_MAX_ELEMENTS = cpu.POOLED_SERIAL_MAX_ELEMENTS = 0  # the parallel kernels, always
        f, x, h0 = torch.rand(50, 4, 300), torch.rand(50, 4, 300), torch.rand(4, 300)
        expected = cpu.forward(f, x, h0, None, False)
        bad = []
        def work():
            for _ in range(30):
                h = cpu.forward(f, x, h0, None, False)
                cpu.backward(h, f, x, h, h0, None, False)
                bad.extend([1] if not torch.equal(h, expected) else [])
        threads = [threading.Thread(target=work) for _ in range(4)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        print("mismatches", len(bad))
        """,
        layer,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "mismatches 0" in result.stdout


@pytest.mark.slow  # real processes
def test_a_forked_child_runs_the_op_after_the_parent_ran_it_in_parallel():
    """A process forked after the parent launched the parallel kernels (a DataLoader worker) gets
    the same results: numba's GNU OpenMP layer terminates such a child at its first parallel
    launch, so the backend must run the kernels in the child's own thread."""
    result = run_python(
        """
        import multiprocessing, torch
        from qrnn_lm.ops.forget_mult import cpu
        cpu.SERIAL_MAX_ELEMENTS = cpu.POOLED_SERIAL_MAX_ELEMENTS = 0  # the parallel kernels, always
        f, x, h0 = torch.rand(50, 4, 300), torch.rand(50, 4, 300), torch.rand(4, 300)
        expected = cpu.forward(f, x, h0, None, False)
        expected_grads = cpu.backward(expected, f, x, expected, h0, None, False)

        def child(queue):
            torch.set_num_threads(1)  # PyTorch's own OpenMP pool does not survive fork() either
            h = cpu.forward(f, x, h0, None, False)
            grads = cpu.backward(h, f, x, h, h0, None, False)
            queue.put(torch.equal(h, expected) and all(map(torch.equal, grads, expected_grads)))

        context = multiprocessing.get_context("fork")
        queue = context.Queue()
        process = context.Process(target=child, args=(queue,))
        process.start()
        process.join(timeout=120)
        print("exit code", process.exitcode, "matches", queue.get() if process.exitcode == 0 else None)
        """
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "exit code 0 matches True" in result.stdout, result.stdout + result.stderr[-2000:]


# Launches one parallel kernel after changing a NUMBA_ variable of the environment (numba then
# reloads its whole config from the environment), and prints the layer numba started.
LAYER_SCRIPT = """
    import os, sys
    import numba, torch
    real_platform, sys.platform = sys.platform, {platform!r}  # the platform qrnn_lm chooses for
    from qrnn_lm.ops.forget_mult import cpu
    sys.platform = real_platform
    os.environ["NUMBA_OPT"] = "3"  # numba's default, changed from unset
    numba.config.reload_config()
    cpu.SERIAL_MAX_ELEMENTS = cpu.POOLED_SERIAL_MAX_ELEMENTS = 0
    cpu.forward(torch.rand(4, 2, 64), torch.rand(4, 2, 64), torch.zeros(2, 64), None, False)
    print("layer", numba.threading_layer())
"""


@pytest.mark.slow  # real processes
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="numba's OpenMP layer is preferred on Linux only")
def test_linux_prefers_numbas_openmp_layer_and_the_environment_wins():
    """On Linux the backend asks numba for its OpenMP layer (a launch costs microseconds, not the
    75-130 us of workqueue); NUMBA_THREADING_LAYER still decides when it is set."""
    pytest.importorskip("numba.np.ufunc.omppool", reason="this numba build has no OpenMP layer")
    script = LAYER_SCRIPT.format(platform=sys.platform)
    default, forced = run_python(script), run_python(script, "workqueue")
    assert "layer omp" in default.stdout, default.stderr[-2000:]
    assert "layer workqueue" in forced.stdout, forced.stderr[-2000:]


@pytest.mark.slow  # a real process
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs a platform whose default would be omp")
def test_the_choice_off_linux_survives_numbas_config_reload():
    """Off Linux the backend picks workqueue, and numba's reload of its config from the
    environment (after any change to os.environ) must not undo that choice."""
    pytest.importorskip("numba.np.ufunc.omppool", reason="this numba build has no OpenMP layer")
    result = run_python(LAYER_SCRIPT.format(platform="darwin"))
    assert "layer workqueue" in result.stdout, result.stdout + result.stderr[-2000:]


def test_the_serial_threshold_follows_the_threading_layer(monkeypatch):
    """workqueue launches cost 75-130 us, so up to SERIAL_MAX_ELEMENTS the calling thread runs
    the kernel; an OpenMP pool launches in microseconds, and only tiny calls stay serial."""
    numel, batch_size, tile, hidden_size = 100_000, 4, 256, 512  # 8 tiles
    if cpu.numba.get_num_threads() == 1:
        pytest.skip("numba has one thread: every call runs serially")
    monkeypatch.setattr(cpu.numba, "threading_layer", lambda: "workqueue")
    assert cpu._run_serially(numel, batch_size, tile, hidden_size)
    monkeypatch.setattr(cpu.numba, "threading_layer", lambda: "omp")
    assert not cpu._run_serially(numel, batch_size, tile, hidden_size)
    assert cpu._run_serially(1000, batch_size, tile, hidden_size)
    monkeypatch.setattr(cpu, "parallel_launch_safe", lambda: False)  # in a forked child
    assert cpu._run_serially(numel, batch_size, tile, hidden_size)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_half_precision_accumulates_in_float32(backend, dtype, reverse, monkeypatch):
    """Long T, gates near 0 and 1: a backend keeping its state in half precision fails here
    (see _half_precision.py); the tolerances above are too wide to see it."""
    import _half_precision  # tests/ops/_half_precision.py

    module = backend_module(backend, monkeypatch)
    _half_precision.check(module.forward, module.backward, dtype, reverse)


# B = 1 with several tiles along H (4 tiles of 128 lanes) and B > 1 with 2 tiles per row: the
# prange launch with tiles that start inside a row.
PARALLEL_SHAPES = [(63, 1, 500), (9, 2, 100)]


@pytest.mark.parametrize("shape", PARALLEL_SHAPES, ids=lambda s: "T{}-B{}-H{}".format(*s))
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_parallel_launch_really_runs_and_matches(shape, reverse, monkeypatch):
    """"numba-parallel" must reach the prange kernels (not the serial loop) on these shapes."""
    if cpu.numba.get_num_threads() == 1:
        pytest.skip("numba has one thread: the backend never launches the parallel kernels")
    launches = []
    for name in ("_seq_forward", "_seq_backward"):
        kernel = getattr(cpu, name)
        monkeypatch.setattr(cpu, name, lambda *a, kernel=kernel, name=name: (launches.append(name), kernel(*a))[1])
    module = backend_module("numba-parallel", monkeypatch)
    check_backend(module, shape, torch.float32, reverse, True, monkeypatch)
    assert launches == ["_seq_forward", "_seq_backward"]


def test_bfloat16_stores_round_like_torch():
    """The kernels write bfloat16 results themselves (round to nearest, ties to even): every
    float32 below must give PyTorch's ``.to(torch.bfloat16)`` bits, and NaN a NaN (PyTorch's own
    NaN bits differ between its vectorised and scalar conversions: 0xFFFF or 0x7FC0)."""
    import numpy as np
    from numba import njit

    from qrnn_lm.ops.numba_bfloat16 import load, store

    @njit
    def round_all(values, out):
        for j in range(values.shape[0]):
            store(out, j, values[j])

    @njit
    def widen_all(bits, out):
        for j in range(bits.shape[0]):
            out[j] = load(bits, j)

    patterns = np.array(
        [0x3F808000, 0x3F818000, 0x3F80C000, 0x3F807FFF, 0x3F808001,  # ties to even / odd, above, below
         0x7F7FFFFF, 0xFF7FFFFF, 0x7F800000, 0xFF800000,  # largest finite (rounds to inf), infinities
         0x7FC00000, 0x7F800001, 0xFFFFFFFF, 0x00000001, 0x80000000, 0x00008000, 0x00018000],  # NaNs, tiny
        dtype=np.uint32)
    values = np.concatenate([patterns.view(np.float32), np.random.default_rng(0).standard_normal(10_000, np.float32)])
    out = np.empty(values.shape, np.uint16)
    round_all(values, out)
    expected = torch.from_numpy(values).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    nan = np.isnan(values)
    assert nan.sum() == 3 and np.array_equal(out[~nan], expected[~nan])
    assert np.all((out[nan] & 0x7F80 == 0x7F80) & (out[nan] & 0x007F != 0))  # NaN bit patterns
    widened = np.empty(values.shape, np.float32)
    widen_all(expected, widened)
    assert np.array_equal(widened, torch.from_numpy(expected.view(np.int16)).view(torch.bfloat16).float().numpy(),
                          equal_nan=True)


@pytest.mark.parametrize("backend", ["numba", "numba-parallel", "numba-chunked"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_bfloat16_kernels_give_the_float32_kernels_results_rounded(backend, reverse, monkeypatch):
    """bfloat16 tensors go to the kernels as they are (no float32 copies); the results must be,
    bit for bit, those of the float32 kernels on the widened inputs, rounded to bfloat16."""
    module = backend_module(backend, monkeypatch)
    generator = torch.Generator().manual_seed(3)
    f, x, h0, grad_h, lengths = make_inputs((63, 3, 500), torch.float32, True, generator)
    f, x, h0, grad_h = (t.to(torch.bfloat16) for t in (f, x, h0, grad_h))
    x[5, 1, 7] = float("inf")  # (NaN bits would differ: PyTorch's own rounding of NaN varies)
    wide = [t.float() for t in (f, x, h0, grad_h)]
    h = module.forward(f, x, h0, lengths, reverse)
    expected_h = module.forward(*wide[:3], lengths, reverse)
    assert h.dtype == torch.bfloat16
    assert torch.equal(h.view(torch.int16), expected_h.to(torch.bfloat16).view(torch.int16))
    grads = module.backward(grad_h, f, x, h, h0, lengths, reverse)
    expected = module.backward(wide[3], wide[0], wide[1], h.float(), wide[2], lengths, reverse)
    for actual, wanted in zip(grads, expected):
        assert actual.dtype == torch.bfloat16
        assert torch.equal(actual.view(torch.int16), wanted.to(torch.bfloat16).view(torch.int16))
