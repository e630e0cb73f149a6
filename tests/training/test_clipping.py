"""training.step.clip_gradients against torch.nn.utils.clip_grad_norm_: the same gradients bit
for bit and the same norm, and no pass over the gradients when the norm is under the bound."""

import math

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from qrnn_lm.training.step import clip_gradients


def model_with_gradients(scale: float, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(7, 5), nn.Linear(5, 3, bias=False), nn.Linear(3, 2))
    model[2].bias.requires_grad_(False)  # a parameter without a gradient
    for parameter in model.parameters():
        if parameter.requires_grad:
            parameter.grad = torch.randn_like(parameter) * scale
    return model


class CountMultiplies(TorchDispatchMode):
    """Counts the in-place multiplies (torch's clipping scales with _foreach_mul_ or mul_)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in (torch.ops.aten._foreach_mul_.Tensor, torch.ops.aten._foreach_mul_.Scalar,
                    torch.ops.aten.mul_.Tensor, torch.ops.aten.mul_.Scalar):
            self.count += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("scale, max_norm", [(1.0, 0.25), (1e-3, 0.25), (1.0, math.inf)],
                         ids=["clipped", "under-the-bound", "no-clipping"])
def test_same_gradients_and_norm_as_torch(scale, max_norm):
    ours, theirs = model_with_gradients(scale), model_with_gradients(scale)
    with CountMultiplies() as watch:
        norm = clip_gradients(ours, max_norm)
    want = float(torch.nn.utils.clip_grad_norm_(theirs.parameters(), max_norm))
    assert norm == want
    for mine, reference in zip(ours.parameters(), theirs.parameters()):
        assert (mine.grad is None) == (reference.grad is None)
        if mine.grad is not None:
            assert torch.equal(mine.grad, reference.grad)
    clipped = norm > max_norm
    assert clipped == (scale == 1.0 and max_norm == 0.25)
    assert (watch.count > 0) == clipped  # no pass over the gradients unless they change


def test_a_non_finite_norm_poisons_the_gradients_as_torch_does():
    ours, theirs = model_with_gradients(1.0), model_with_gradients(1.0)
    for model in (ours, theirs):
        model[0].weight.grad[0, 0] = float("nan")
    assert math.isnan(clip_gradients(ours, 0.25))
    torch.nn.utils.clip_grad_norm_(theirs.parameters(), 0.25)
    for mine, reference in zip(ours.parameters(), theirs.parameters()):
        if mine.grad is not None:
            torch.testing.assert_close(mine.grad, reference.grad, equal_nan=True, rtol=0, atol=0)


def test_no_gradients_give_a_zero_norm():
    model = nn.Linear(3, 2)
    assert clip_gradients(model, 0.25) == 0.0
