"""Batching a token stream for truncated back-propagation through time (as salesforce/awd-lstm-lm).

Shapes: ``N`` tokens, ``B`` batch size (parallel streams), ``L`` segment length.
"""

from __future__ import annotations

import torch

from .errors import DataError


def batchify(ids: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Cut a token stream into ``batch_size`` parallel streams, time-major.

    Args:
        ids: ``[N]`` token ids.
        batch_size: number of streams ``B`` (>= 1).

    Returns:
        ``[N // B, B]`` where column ``b`` is ``ids[b * (N // B) : (b + 1) * (N // B)]``; the last
        ``N % B`` tokens are dropped. A contiguous tensor on the device of ``ids``.

    Raises :class:`DataError` when the data is too short to give two rows (one input + one target
    step per stream): that is a problem of the data or of the chosen batch size.
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if ids.dim() != 1:
        raise ValueError(f"ids must be 1-D [N], got shape {list(ids.shape)}")
    num_steps = ids.numel() // batch_size
    if num_steps < 2:
        raise DataError(
            f"{ids.numel()} tokens are too few for batch size {batch_size} (need at least "
            f"{2 * batch_size}); use a smaller batch size or more data"
        )
    # [B * steps] -> [B, steps] -> [steps, B]: each column is one contiguous stretch of text.
    return ids[: num_steps * batch_size].view(batch_size, num_steps).t().contiguous()


def get_batch(source: torch.Tensor, start: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One BPTT segment of a batchified stream.

    Args:
        source: ``[T, B]`` from :func:`batchify`.
        start: first time step, ``0 <= start < T - 1``.
        seq_len: wanted length; shortened at the end of the data.

    Returns:
        ``(inputs, targets)``, both ``[L, B]`` with ``L = min(seq_len, T - 1 - start)``;
        ``targets`` is ``inputs`` shifted one step ahead. Views of ``source`` (no copy).
    """
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    if not 0 <= start < len(source) - 1:
        raise ValueError(f"start must be in [0, {len(source) - 1}) for a source of {len(source)} steps, got {start}")
    length = min(seq_len, len(source) - 1 - start)
    return source[start : start + length], source[start + 1 : start + 1 + length]


def sample_seq_len(bptt: int, generator: torch.Generator) -> int:
    """awd-lstm-lm's variable BPTT length.

    The base is ``bptt`` with probability 0.95, else ``bptt / 2``; the length is
    ``max(5, int(normal(base, 5)))``. Draws only from ``generator`` (a CPU ``torch.Generator``),
    so a resumed run and every DDP rank draw the same lengths when their generators agree.
    """
    if bptt < 1:
        raise ValueError(f"bptt must be >= 1, got {bptt}")
    base = bptt if torch.rand((), generator=generator).item() < 0.95 else bptt / 2
    return max(5, int(base + 5.0 * torch.randn((), generator=generator).item()))
