"""Shared by the kernel tests: allocations filled with NaN, so an output a kernel forgets to write
shows up as NaN instead of passing by luck."""

import contextlib

import torch


@contextlib.contextmanager
def nan_poisoned_allocations(monkeypatch):
    """Inside the block, torch.empty/empty_like return NaN-filled tensors (float dtypes)."""
    real_empty, real_empty_like = torch.empty, torch.empty_like

    def poison(tensor):
        if tensor.dtype.is_floating_point:
            tensor.fill_(float("nan"))
        return tensor

    with monkeypatch.context() as patch:
        patch.setattr(torch, "empty", lambda *a, **k: poison(real_empty(*a, **k)))
        patch.setattr(torch, "empty_like", lambda *a, **k: poison(real_empty_like(*a, **k)))
        yield
