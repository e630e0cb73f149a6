"""ForgetMult "torch" backend: a plain PyTorch loop over time with an explicit backward.

Shapes: T = time steps, B = batch, H = hidden lanes; tensors are time-major ``[T, B, H]``.

Runs on any device PyTorch supports (CUDA without Triton/CuPy, MPS, XPU, CPU without numba).
It launches a few small kernels per time step, so it is slow on long sequences, but it needs no
compiler and no extra package. Unlike ``naive.py`` (the reference, differentiated by autograd)
this backend implements the backend contract (see ``README.md`` beside this file): ``forward``
and ``backward`` are explicit, autograd is not involved, arithmetic is done in float32
(float64 stays float64) and results are cast back to the input dtype.
"""

from __future__ import annotations

import torch

__all__ = ["forward", "backward"]


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _valid_mask(lengths: torch.Tensor | None, seq_len: int, batch_size: int, device) -> torch.Tensor:
    """``[T, B, 1]`` bool: True where step t is part of sequence b (t < lengths[b])."""
    if lengths is None:
        return torch.ones(seq_len, batch_size, 1, dtype=torch.bool, device=device)
    steps = torch.arange(seq_len, device=device).unsqueeze(1)  # [T, 1]
    return (steps < lengths.unsqueeze(0)).unsqueeze(2)  # [T, B, 1]


def forward(
    f: torch.Tensor,
    x: torch.Tensor,
    h0: torch.Tensor,
    lengths: torch.Tensor | None,
    reverse: bool,
) -> torch.Tensor:
    """``h[t] = f[t] * x[t] + (1 - f[t]) * h_prev``; padded steps (t >= lengths[b]) give 0.

    f, x: ``[T, B, H]``; h0: ``[B, H]``; lengths: None or int64 ``[B]``. Returns h ``[T, B, H]``.
    """
    seq_len, batch_size, _ = x.shape
    compute = _compute_dtype(x.dtype)
    f_c, x_c = f.to(compute), x.to(compute)
    valid = _valid_mask(lengths, seq_len, batch_size, x.device)
    h = torch.empty_like(x)
    prev = h0.to(compute)
    time_order = range(seq_len - 1, -1, -1) if reverse else range(seq_len)
    for t in time_order:
        # lerp(prev, x, f) = prev + f * (x - prev) = f * x + (1 - f) * prev, one fused kernel.
        step = torch.lerp(prev, x_c[t], f_c[t])
        # Padded steps leave the carried state alone, so with reverse=True each sequence starts
        # from h0 at its own last valid step.
        prev = torch.where(valid[t], step, prev)
        h[t] = torch.where(valid[t], step, 0.0)
    return h


def backward(
    grad_h: torch.Tensor,
    f: torch.Tensor,
    x: torch.Tensor,
    h: torch.Tensor,
    h0: torch.Tensor,
    lengths: torch.Tensor | None,
    reverse: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of the forward above. Returns ``(grad_f, grad_x, grad_h0)``.

    Walks time opposite to the forward: ``g_t = grad_h[t] + (1 - f[t_next]) * g_{t_next}`` where
    ``t_next`` is the step the forward visited after t; ``grad_x[t] = f[t] * g_t``,
    ``grad_f[t] = (x[t] - h_prev(t)) * g_t``, ``grad_h0 = (1 - f[t_first]) * g_{t_first}``.
    """
    seq_len, batch_size, _ = x.shape
    compute = _compute_dtype(x.dtype)
    f_c, x_c, h_c, g_out = f.to(compute), x.to(compute), h.to(compute), grad_h.to(compute)
    h0_c = h0.to(compute)
    valid = _valid_mask(lengths, seq_len, batch_size, x.device)
    grad_f = torch.empty_like(f)
    grad_x = torch.empty_like(x)
    # carry = (1 - f[t]) * g_t of the last valid step handled, i.e. the gradient flowing into
    # the state the forward had just before step t. After the loop it is grad_h0.
    carry = torch.zeros_like(h0_c)
    if reverse:
        # The forward walked lengths[b]-1 down to 0, so the backward walks 0 up to T-1.
        time_order = range(seq_len)
    else:
        time_order = range(seq_len - 1, -1, -1)
    for t in time_order:
        g = torch.where(valid[t], g_out[t] + carry, 0.0)
        if reverse:
            # h_prev(t) = h[t+1] while t+1 is a valid step, else the walk started here from h0.
            if t + 1 < seq_len:
                h_prev = torch.where(valid[t + 1], h_c[t + 1], h0_c)
            else:
                h_prev = h0_c
        else:
            h_prev = h_c[t - 1] if t > 0 else h0_c
        grad_x[t] = f_c[t] * g
        grad_f[t] = (x_c[t] - h_prev) * g
        carry = torch.where(valid[t], (1 - f_c[t]) * g, carry)
    return grad_f, grad_x, carry.to(h0.dtype)
