"""Tests of the Triton ForgetMult kernels, on a machine with or without a GPU.

Shapes: T = time steps, B = batch, H = hidden lanes, N = B*H.

1. Interpreted: every kernel runs on CPU under TRITON_INTERPRET=1 in a subprocess
   (``_triton_interpret_check.py``; the variable must be set before the kernels are decorated),
   compared with the reference loop, outputs and all grads, one pytest result per case.
2. Compiled: every kernel compiles to PTX and a cubin for sm_80 and sm_90 with no GPU present.
3. On a CUDA device: the launched kernels against the reference (skipped without one).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

triton = pytest.importorskip("triton", reason="the Triton backend needs the triton package")

from qrnn_lm.ops.forget_mult import triton as backend  # noqa: E402
from qrnn_lm.ops.forget_mult import triton_scan  # noqa: E402
from qrnn_lm.ops.forget_mult.naive import forget_mult_reference  # noqa: E402

HELPER = Path(__file__).with_name("_triton_interpret_check.py")
REPO = Path(__file__).resolve().parents[2]


def _load_helper():
    spec = importlib.util.spec_from_file_location("_triton_interpret_check", HELPER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # stdlib only at import time; runs no kernel
    return module


INTERPRETED_CASES = [case["name"] for case in _load_helper().cases()]
INTERPRETED_CASES += [name for name, _ in _load_helper().half_precision_cases()]
INTERPRETED_CASES.append("public-entry-points-auto-chunked")


@pytest.fixture(scope="module")
def interpreted_results() -> dict[str, dict]:
    """Run every interpreted case once, in one subprocess (~30 s on 2 cores)."""
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, str(HELPER)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, f"interpreter run failed:\n{proc.stderr[-4000:]}"
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return {result["name"]: result for result in results}


@pytest.mark.slow  # Triton kernels interpreted in a subprocess
@pytest.mark.parametrize("name", INTERPRETED_CASES)
def test_interpreted_kernels_match_reference(name, interpreted_results):
    assert name in interpreted_results, f"case {name} did not report (crash?)"
    result = interpreted_results[name]
    assert result["ok"], result["detail"]


# --- the chunked-path heuristic (pure Python) ---------------------------------------------

@pytest.mark.parametrize("seq_len, num_lanes", [(70, 20 * 1550), (105, 20 * 640), (32, 8 * 320)])
def test_plan_keeps_one_launch_when_lanes_fill_the_gpu_or_t_is_short(seq_len, num_lanes):
    plan = backend.plan_scan(seq_len, num_lanes, num_sms=132)
    assert plan.num_chunks == 1 and plan.chunk_len == seq_len


@pytest.mark.parametrize("seq_len, num_lanes", [(4096, 64), (500, 4 * 320), (512, 8 * 320), (129, 1)])
def test_plan_chunks_long_sequences_with_few_lanes(seq_len, num_lanes):
    plan = backend.plan_scan(seq_len, num_lanes, num_sms=132)
    assert 1 < plan.num_chunks <= backend.MAX_CHUNKS
    assert plan.chunk_len >= backend.MIN_CHUNK_LEN
    # The chunks tile T exactly: the last one is non-empty.
    assert (plan.num_chunks - 1) * plan.chunk_len < seq_len <= plan.num_chunks * plan.chunk_len


def test_plan_rejects_bad_sizes():
    with pytest.raises(ValueError, match="seq_len >= 1"):
        backend.plan_scan(0, 8)
    with pytest.raises(ValueError, match="chunk_len >= 1"):
        backend.plan_scan(8, 8, chunk_len=0)


def test_float64_is_refused_with_the_supported_dtypes_named():
    f = torch.rand(2, 1, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="float64"):
        backend.forward(f, f, f[0], None, False)


# --- compiled for GPU targets with no GPU ----------------------------------------------------

KERNELS = ["forget_mult_fwd_summary_kernel", "forget_mult_fwd_scan_kernel",
           "forget_mult_bwd_summary_kernel", "forget_mult_bwd_scan_kernel"]
FLAGS = ("HAS_LENGTHS", "REVERSE", "BLOCK_T", "BLOCK_N")


def _compile(kernel_name: str, capability: int, dtype: str, has_lengths: bool, reverse: bool):
    """triton.compile one kernel with the launch configuration of a many-lane call."""
    from triton.backends.compiler import GPUTarget

    kernel = getattr(triton_scan, kernel_name)
    signature = {}
    for arg in kernel.arg_names:
        if arg in FLAGS:
            signature[arg] = "constexpr"
        elif arg == "len_ptr":
            signature[arg] = "*i64"
        elif arg.startswith("sum_"):
            signature[arg] = "*fp32"  # chunk summaries are always float32
        elif arg.endswith("_ptr"):
            signature[arg] = "*" + dtype
        else:
            signature[arg] = "i32"
    plan = backend.plan_scan(64, 1 << 20)  # many lanes: BLOCK_N = 128, 4 warps
    constexprs = dict(HAS_LENGTHS=has_lengths, REVERSE=reverse, BLOCK_T=plan.block_t,
                      BLOCK_N=plan.block_n)
    source = triton.compiler.ASTSource(fn=kernel, signature=signature, constexprs=constexprs)
    return triton.compile(source, target=GPUTarget("cuda", capability, 32),
                          options=dict(num_warps=plan.num_warps))


def _assert_compiled(compiled, kernel_name: str, capability: int) -> None:
    ptx = compiled.asm["ptx"]
    assert f".entry {kernel_name}" in ptx
    assert f".target sm_{capability}" in ptx  # sm_90 comes out as sm_90a
    assert len(compiled.asm["cubin"]) > 0, "ptxas produced no cubin"
    # The tile keeps time inside each thread, so scans and reductions need no shared memory; a
    # layout change that spreads time over threads would show up here (and cost speed).
    assert compiled.metadata.shared == 0, f"{kernel_name} now uses shared memory"


@pytest.mark.slow  # Triton compiles for sm_80/sm_90
@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1",
                    reason="TRITON_INTERPRET=1 replaces the compiler with the interpreter")
@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("capability", [80, 90])
@pytest.mark.parametrize("kernel_name", KERNELS)
def test_kernels_compile_for_gpu_targets(kernel_name, capability, dtype):
    compiled = _compile(kernel_name, capability, dtype, has_lengths=True, reverse=True)
    _assert_compiled(compiled, kernel_name, capability)


@pytest.mark.slow  # Triton compiles for sm_80/sm_90
@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1",
                    reason="TRITON_INTERPRET=1 replaces the compiler with the interpreter")
@pytest.mark.parametrize("has_lengths, reverse", [(False, False), (False, True), (True, False)])
@pytest.mark.parametrize("kernel_name", KERNELS)
def test_kernel_variants_compile(kernel_name, has_lengths, reverse):
    compiled = _compile(kernel_name, 90, "fp32", has_lengths, reverse)
    _assert_compiled(compiled, kernel_name, 90)


# --- on a CUDA device ------------------------------------------------------------------------

@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
class TestOnCuda:
    """The launched kernels against the reference, on the one-launch and the chunked path."""

    @pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-4), (torch.float16, 1e-2),
                                            (torch.bfloat16, 6e-2)])
    @pytest.mark.parametrize("shape", [(1, 1, 1), (63, 1, 500), (70, 20, 1550), (4096, 1, 64)])
    @pytest.mark.parametrize("reverse", [False, True])
    @pytest.mark.parametrize("ragged", [False, True])
    def test_matches_reference(self, shape, reverse, ragged, dtype, tol):
        seq_len, batch_size, hidden_size = shape
        generator = torch.Generator().manual_seed(seq_len * 7 + batch_size)
        f = torch.rand(shape, generator=generator).to(dtype).cuda()
        x = torch.randn(shape, generator=generator).to(dtype).cuda()
        h0 = torch.randn(shape[1:], generator=generator).to(dtype).cuda()
        grad_h = torch.randn(shape, generator=generator).to(dtype).cuda()
        lengths = None
        if ragged:
            lengths = torch.randint(0, seq_len + 1, (batch_size,), generator=generator).cuda()
        f_ref, x_ref, h0_ref = (t.float().requires_grad_() for t in (f, x, h0))
        h_ref = forget_mult_reference(f_ref, x_ref, h0_ref, reverse=reverse, lengths=lengths)
        h_ref.backward(grad_h.float())

        h = torch.full_like(f, float("nan"))
        backend.forward_into(h, f, x, h0, lengths, reverse)
        grads = (torch.full_like(f, float("nan")), torch.full_like(x, float("nan")),
                 torch.full_like(h0, float("nan")))
        backend.backward_into(*grads, grad_h, f, x, h, h0, lengths, reverse)
        expected = (h_ref, f_ref.grad, x_ref.grad, h0_ref.grad)
        for label, got, want in zip(("h", "grad_f", "grad_x", "grad_h0"), (h, *grads), expected):
            assert not got.isnan().any(), f"{label} has unwritten (NaN) elements"
            torch.testing.assert_close(got.float(), want.detach(), rtol=tol, atol=tol, msg=label)

    def test_chunked_and_one_launch_paths_agree(self):
        shape = (4096, 1, 64)
        f, x = torch.rand(shape, device="cuda"), torch.randn(shape, device="cuda")
        h0 = torch.randn(shape[1:], device="cuda")
        chunked = backend.forward(f, x, h0, None, False)
        one_launch = torch.empty_like(f)
        backend.forward_into(one_launch, f, x, h0, None, False, chunk_len=shape[0])
        torch.testing.assert_close(chunked, one_launch, rtol=1e-5, atol=1e-5)
