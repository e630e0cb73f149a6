"""fp16/bf16 checks that a backend accumulating in half precision fails (shared by the CPU and
the interpreted-Triton tests; stdlib + torch only).

Shapes: T = time steps, B = batch, H = hidden lanes; tensors are ``[T, B, H]``.

The contract says: inputs in half precision, arithmetic in float32, outputs rounded once to the
input dtype. So the reference here takes the *same* rounded inputs, runs the recurrence and its
backward in float32 (the backward on the rounded saved ``h``, as every backend does), and rounds
once at the end. A correct backend then differs from it by rounding only (an ulp or two), while
one that keeps its running state in half precision drifts far away: with T = 256 and forget
gates near 0 each step adds ``f * (x - h)``, below half an ulp of ``h``, so a half-precision
state stops moving, and gates near 1 reset it. The tolerance sits between the two (measured).
"""

from __future__ import annotations

import functools

import torch

SHAPE = (256, 2, 16)  # long T, few lanes: cheap under the Triton interpreter too
# Max |got - want| / (|want| + 1), over h and all grads, allowed. Measured (torch loop and numba,
# both directions): correct backends <= 3.3e-4 (fp16), <= 7.0e-3 (bf16, an ulp of h moves
# x - h_prev); the torch loop computing in the input dtype >= 1.0e-2 (fp16), >= 4.4e-2 (bf16).
TOLERANCE = {torch.float16: 2.5e-3, torch.bfloat16: 2e-2}


def inputs(dtype: torch.dtype, seed: int = 0):
    """(f, x, h0, grad_h) in ``dtype``: f mostly in [1e-4, 1e-3] with 5% of steps in [0.99, 1]."""
    generator = torch.Generator().manual_seed(seed)
    rand = lambda *size: torch.rand(*size, generator=generator)  # noqa: E731
    small = 1e-4 + 9e-4 * rand(*SHAPE)
    f = torch.where(rand(*SHAPE) < 0.05, 0.99 + 0.01 * rand(*SHAPE), small)
    x = 0.5 + 0.5 * rand(*SHAPE)  # one sign, so the slow drift of h does not average out
    h0 = rand(*SHAPE[1:]) - 0.5
    grad_h = 2 * rand(*SHAPE) - 1
    return tuple(t.to(dtype) for t in (f, x, h0, grad_h))


def round_to(values: torch.Tensor, dtype: torch.dtype, mode: str = "nearest") -> torch.Tensor:
    """float32 ``values`` rounded to ``dtype``: "nearest" (ties to even, what torch and the GPU
    do) or "toward_zero" (bfloat16 only: what the Triton interpreter's cast does, measured with
    triton 3.x: it drops the low 16 bits)."""
    if mode == "nearest":
        return values.to(dtype)
    assert mode == "toward_zero" and dtype == torch.bfloat16, (mode, dtype)
    return (values.float().view(torch.int32) & -65536).view(torch.float32).to(dtype)


def reference(f, x, h0, grad_h, reverse: bool, rounding: str = "nearest"):
    """(h, grad_f, grad_x, grad_h0) in the input dtype: float32 arithmetic on the rounded
    inputs, backward on the rounded h, each result rounded once (``rounding``: see round_to)."""
    dtype = x.dtype
    if reverse:  # a reverse walk is the forward walk of the time-flipped sequence
        flipped = reference(f.flip(0), x.flip(0), h0, grad_h.flip(0), False, rounding)
        return flipped[0].flip(0), flipped[1].flip(0), flipped[2].flip(0), flipped[3]
    f32, x32, g32 = f.float(), x.float(), grad_h.float()
    h = torch.empty_like(x32)
    prev = h0.float()
    for t in range(x.shape[0]):
        prev = f32[t] * x32[t] + (1 - f32[t]) * prev
        h[t] = prev
    h_saved = round_to(h, dtype, rounding).float()  # what the autograd function saves and hands to backward
    h_prev = torch.cat([h0.float().unsqueeze(0), h_saved[:-1]])
    grad_f, grad_x = torch.empty_like(x32), torch.empty_like(x32)
    carry = torch.zeros_like(h0.float())
    for t in range(x.shape[0] - 1, -1, -1):
        g = g32[t] + carry
        grad_x[t] = f32[t] * g
        grad_f[t] = (x32[t] - h_prev[t]) * g
        carry = (1 - f32[t]) * g
    return tuple(round_to(t, dtype, rounding) for t in (h, grad_f, grad_x, carry))


@functools.lru_cache(maxsize=None)
def _cached_reference(dtype, reverse, rounding):
    """The reference on ``inputs(dtype, seed=int(reverse))``, computed once per process."""
    return reference(*inputs(dtype, seed=int(reverse)), reverse, rounding)


def worst_error(got, want) -> float:
    """max |got - want| / (|want| + 1) over every tensor pair, in float32."""
    return max(float(((a.float() - b.float()).abs() / (b.float().abs() + 1)).max())
               for a, b in zip(got, want))


def check(forward, backward, dtype: torch.dtype, reverse: bool, rounding: str = "nearest") -> str:
    """Run ``forward(f, x, h0, None, reverse)`` and ``backward(grad_h, f, x, h, h0, None,
    reverse)`` (the backend contract) and raise AssertionError past TOLERANCE."""
    f, x, h0, grad_h = inputs(dtype, seed=int(reverse))
    h = forward(f, x, h0, None, reverse)
    got = (h, *backward(grad_h, f, x, h, h0, None, reverse))
    want = _cached_reference(dtype, reverse, rounding)
    for label, a, b in zip(("h", "grad_f", "grad_x", "grad_h0"), got, want):
        assert a.dtype == dtype, f"{label}: dtype {a.dtype}, expected {dtype}"
    error = worst_error(got, want)
    assert error <= TOLERANCE[dtype], (
        f"{dtype} error {error:.2e} > {TOLERANCE[dtype]:.1e}: does it accumulate in half precision?")
    return f"{dtype} error {error:.2e}"
