"""Triton GPU backend of ForgetMult: launch wrappers and the choice of the scan path.

Shapes: T = time steps, B = batch, H = hidden lanes, N = B*H lanes (contiguous in ``[T, B, H]``).

``forward`` and ``backward`` follow the backend contract shared by every ForgetMult backend:
float16/bfloat16/float32 in, float32 accumulation, outputs in the input dtype, every output
element written (padding gets 0). The kernels live in ``triton_scan.py``.

Two paths, chosen per call by ``plan_scan`` from the shape:

- one launch: one program per block of BLOCK_N lanes walks all T steps (tiles of BLOCK_T steps).
- chunked (few lanes, long T): T is cut into chunks so that lane blocks x chunks programs keep
  the GPU busy; two launches (chunk summaries, then a scan of every chunk that folds the earlier
  summaries first). It moves more bytes (f and x, or grad_h and f, are read twice), so it is used
  only when the one-launch path would leave most SMs idle.

Outputs are allocated with torch on the inputs' device and kernels run on torch's current stream
(Triton's launcher asks torch for it). Under ``TRITON_INTERPRET=1`` the same code runs on CPU
tensors, which is how the tests check it on machines without a GPU.
"""

from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass

import torch

try:
    import triton  # the real package: this module is qrnn_lm.ops.forget_mult.triton

    from . import triton_scan as _kernels

    HAS_TRITON = True
except ImportError:  # Triton ships with PyTorch's CUDA wheels; CPU-only wheels lack it
    triton = None
    _kernels = None
    HAS_TRITON = False

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)

BLOCK_T = 16  # steps per tile: the loads of 16 steps are in flight before the first FMA
MAX_BLOCK_N = 128  # lanes per program: one lane per thread with 4 warps
# Chunked-path heuristic. Not measured (this project was built without a GPU); reasoned instead:
# a streaming kernel needs bandwidth x latency (~3 TB/s x ~0.6 us = ~2 MB on an H100) of loads in
# flight. One program keeps BLOCK_N lanes x BLOCK_T steps x 8 bytes = 16 KB in flight, so below
# about one program per two SMs the one-launch path is latency-bound and its time grows with T
# alone; chunking then buys parallelism (up to ~2 programs per SM) for ~1.7x the bytes.
CHUNK_WHEN_PROGRAMS_PER_SM_BELOW = 0.5
PROGRAMS_PER_SM_WANTED = 2
MIN_CHUNK_LEN = 4 * BLOCK_T  # shorter chunks spend more on summaries and the fold than they save
MAX_CHUNKS = 64  # each chunk program folds all earlier chunk summaries sequentially
DEFAULT_NUM_SMS = 132  # an H100 SXM; used when no CUDA device can be asked (interpreter runs)


@dataclass(frozen=True)
class ScanPlan:
    """How one call is launched: grid (ceil(N / block_n), num_chunks), chunks of chunk_len steps."""

    block_t: int
    block_n: int
    num_warps: int
    chunk_len: int
    num_chunks: int


def plan_scan(seq_len: int, num_lanes: int, num_sms: int = DEFAULT_NUM_SMS,
              chunk_len: int | None = None, block_t: int = BLOCK_T) -> ScanPlan:
    """Choose tile sizes and the number of time chunks for T = seq_len, N = num_lanes.

    ``chunk_len`` forces a chunk length (tests use it to run the chunked path on tiny shapes);
    by default one chunk is used unless fewer than half the SMs would get a program and T is
    long enough to give every chunk at least MIN_CHUNK_LEN steps.
    """
    if seq_len < 1 or num_lanes < 1:
        raise ValueError(f"expected seq_len >= 1 and num_lanes >= 1, got {seq_len}, {num_lanes}")
    block_n = min(MAX_BLOCK_N, max(16, triton.next_power_of_2(num_lanes)))
    lane_blocks = triton.cdiv(num_lanes, block_n)
    if chunk_len is None:
        num_chunks = 1
        if lane_blocks < CHUNK_WHEN_PROGRAMS_PER_SM_BELOW * num_sms:
            wanted = math.ceil(PROGRAMS_PER_SM_WANTED * num_sms / lane_blocks)
            num_chunks = max(1, min(wanted, seq_len // MIN_CHUNK_LEN, MAX_CHUNKS))
        chunk_len = math.ceil(seq_len / num_chunks)
    elif chunk_len < 1:
        raise ValueError(f"expected chunk_len >= 1, got {chunk_len}")
    return ScanPlan(block_t=block_t, block_n=block_n, num_warps=max(1, min(4, block_n // 32)),
                    chunk_len=chunk_len, num_chunks=math.ceil(seq_len / chunk_len))


@functools.lru_cache(maxsize=None)
def _num_sms(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return DEFAULT_NUM_SMS


def _check_inputs(f: torch.Tensor, *others: torch.Tensor) -> None:
    if not HAS_TRITON:
        raise RuntimeError("the Triton backend needs triton: pip install triton "
                           "(it ships with PyTorch's CUDA wheels)")
    if f.dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"expected dtype in {SUPPORTED_DTYPES} for the Triton kernels, got {f.dtype}")
    for tensor in (f, *others):
        if not tensor.is_contiguous():
            raise ValueError(f"expected contiguous tensors, got strides {tensor.stride()}")


def _device_guard(tensor: torch.Tensor):
    return torch.cuda.device(tensor.device) if tensor.is_cuda else contextlib.nullcontext()


def _plan_for(f: torch.Tensor, chunk_len: int | None, block_t: int) -> ScanPlan:
    seq_len, batch_size, hidden_size = f.shape
    return plan_scan(seq_len, batch_size * hidden_size, _num_sms(f.device), chunk_len, block_t)


def _summaries(plan: ScanPlan, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 chunk maps [num_chunks, N]; with one chunk they are never read (a 1-element stub)."""
    if plan.num_chunks == 1:
        stub = torch.empty(1, dtype=torch.float32, device=like.device)
        return stub, stub
    shape = (plan.num_chunks, like.shape[1] * like.shape[2])
    if shape[0] * shape[1] >= 2**31:  # the kernels index the summaries in int32
        raise ValueError(f"expected num_chunks * B * H < 2**31 on the chunked path, got {shape}")
    return (torch.empty(shape, dtype=torch.float32, device=like.device),
            torch.empty(shape, dtype=torch.float32, device=like.device))


def _launch_setup(f, h0, lengths, reverse, chunk_len, block_t):
    """What both passes launch with: ``(plan, sum_a, sum_b, lens, flags, lane_blocks)``."""
    plan = _plan_for(f, chunk_len, block_t)
    sum_a, sum_b = _summaries(plan, f)
    lens = h0 if lengths is None else lengths  # never read when HAS_LENGTHS is False
    flags = dict(HAS_LENGTHS=lengths is not None, REVERSE=bool(reverse),
                 BLOCK_T=plan.block_t, BLOCK_N=plan.block_n, num_warps=plan.num_warps)
    lane_blocks = triton.cdiv(f.shape[1] * f.shape[2], plan.block_n)
    return plan, sum_a, sum_b, lens, flags, lane_blocks


def forward_into(h, f, x, h0, lengths, reverse, *, chunk_len=None, block_t=BLOCK_T) -> None:
    """Write ForgetMult's h into the preallocated ``h`` ([T, B, H], like f).

    ``chunk_len``/``block_t`` override the plan (tests); ``forward`` is the contract entry point.
    """
    _check_inputs(f, x, h0, h)
    seq_len, batch_size, hidden_size = f.shape
    num_lanes = batch_size * hidden_size
    if seq_len == 0 or num_lanes == 0:
        return
    plan, sum_a, sum_b, lens, flags, lane_blocks = _launch_setup(f, h0, lengths, reverse, chunk_len, block_t)
    with _device_guard(f):
        if plan.num_chunks > 1:
            _kernels.forget_mult_fwd_summary_kernel[(lane_blocks, plan.num_chunks - 1)](
                f, x, lens, sum_a, sum_b, seq_len, num_lanes, hidden_size, plan.chunk_len,
                **flags)
        _kernels.forget_mult_fwd_scan_kernel[(lane_blocks, plan.num_chunks)](
            f, x, h0, lens, h, sum_a, sum_b, seq_len, num_lanes, hidden_size, plan.chunk_len,
            **flags)


def backward_into(grad_f, grad_x, grad_h0, grad_h, f, x, h, h0, lengths, reverse, *,
                  chunk_len=None, block_t=BLOCK_T) -> None:
    """Write the gradients into preallocated grad_f, grad_x ([T, B, H]) and grad_h0 ([B, H])."""
    _check_inputs(f, x, h, h0, grad_h, grad_f, grad_x, grad_h0)
    seq_len, batch_size, hidden_size = f.shape
    num_lanes = batch_size * hidden_size
    if num_lanes == 0:
        return
    if seq_len == 0:
        grad_h0.zero_()  # no step reads h0
        return
    plan, sum_a, sum_b, lens, flags, lane_blocks = _launch_setup(f, h0, lengths, reverse, chunk_len, block_t)
    with _device_guard(f):
        if plan.num_chunks > 1:
            _kernels.forget_mult_bwd_summary_kernel[(lane_blocks, plan.num_chunks - 1)](
                grad_h, f, lens, sum_a, sum_b, seq_len, num_lanes, hidden_size, plan.chunk_len,
                **flags)
        _kernels.forget_mult_bwd_scan_kernel[(lane_blocks, plan.num_chunks)](
            grad_h, f, x, h, h0, lens, grad_f, grad_x, grad_h0, sum_a, sum_b,
            seq_len, num_lanes, hidden_size, plan.chunk_len, plan.num_chunks, **flags)


def forward(f, x, h0, lengths, reverse):
    """ForgetMult forward on the GPU (contract): f, x [T, B, H], h0 [B, H], lengths [B] or None.

    Returns:
        h [T, B, H] in the dtype of f; 0 at padded steps.
    """
    h = torch.empty_like(f)
    forward_into(h, f, x, h0, lengths, reverse)
    return h


def backward(grad_h, f, x, h, h0, lengths, reverse):
    """ForgetMult backward on the GPU (contract); h is the forward's output.

    Returns:
        (grad_f [T, B, H], grad_x [T, B, H], grad_h0 [B, H]) in the dtype of f.
    """
    grad_f, grad_x, grad_h0 = torch.empty_like(f), torch.empty_like(x), torch.empty_like(h0)
    backward_into(grad_f, grad_x, grad_h0, grad_h, f, x, h, h0, lengths, reverse)
    return grad_f, grad_x, grad_h0
