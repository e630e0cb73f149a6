"""Reference ForgetMult: a plain PyTorch loop over time, for tests and benchmarks only.

Shapes: T = time steps, B = batch, H = hidden lanes.

This is the ground truth every kernel is compared with. Never "fix" it to match a kernel.
"""

from __future__ import annotations

import torch


def forget_mult_reference(
    f: torch.Tensor,
    x: torch.Tensor,
    h0: torch.Tensor | None = None,
    reverse: bool = False,
    lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """Compute ``h_t = f_t * x_t + (1 - f_t) * h_{t-1}`` step by step, with autograd.

    Args:
        f: forget gates, ``[T, B, H]``.
        x: candidates, ``[T, B, H]``.
        h0: initial state ``[B, H]``; zeros when None.
        reverse: walk from the last valid step of each sequence down to step 0.
        lengths: ``[B]`` integers, the valid length of each batch element; None means all ``T``.

    Returns:
        ``h`` of shape ``[T, B, H]`` in the dtype of ``x`` (computed in float32 for fp16/bf16
        inputs, float64 stays float64). Steps at or past a sequence's length are 0 and do not
        take part in the recurrence.
    """
    seq_len, batch_size, hidden_size = x.shape
    if seq_len == 0:
        return (f * x).to(x.dtype)  # empty [0, B, H], still attached to the graph
    compute_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    f32, x32 = f.to(compute_dtype), x.to(compute_dtype)
    if h0 is None:
        prev = x32.new_zeros(batch_size, hidden_size)
    else:
        prev = h0.to(compute_dtype)
    if lengths is None:
        valid = torch.ones(seq_len, batch_size, 1, dtype=torch.bool, device=x.device)
    else:
        steps = torch.arange(seq_len, device=x.device).unsqueeze(1)  # [T, 1]
        valid = (steps < lengths.to(x.device).unsqueeze(0)).unsqueeze(2)  # [T, B, 1]
    outputs: list[torch.Tensor | None] = [None] * seq_len
    time_order = range(seq_len - 1, -1, -1) if reverse else range(seq_len)
    for t in time_order:
        h = f32[t] * x32[t] + (1 - f32[t]) * prev
        # Padded steps keep the carried state unchanged and output zero.
        prev = torch.where(valid[t], h, prev)
        outputs[t] = torch.where(valid[t], h, torch.zeros_like(h))
    return torch.stack(outputs).to(x.dtype)
