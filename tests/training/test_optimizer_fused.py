"""make_optimizer's Adam/AdamW on the CPU: torch's fused kernel, whose update equals the plain
for-loop's to within rounding, and which a checkpoint's optimizer state carries into a resume."""

import copy

import pytest
import torch
from torch import nn

from qrnn_lm.training.optimizer import make_optimizer


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Embedding(50, 16), nn.Linear(16, 24), nn.Linear(24, 50))


def _steps(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int, seed: int = 1) -> None:
    """``steps`` updates with gradients that depend only on ``seed`` and the step."""
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        for param in model.parameters():
            param.grad = torch.randn(param.shape, generator=generator)
        optimizer.step()


@pytest.mark.parametrize("name, plain", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)])
def test_the_cpu_optimizer_is_fused_and_its_update_equals_the_for_loops(name, plain):
    chosen_model, plain_model = _model(), _model()
    chosen = make_optimizer(name, chosen_model, lr=3e-3, weight_decay=0.01)
    assert chosen.param_groups[0]["fused"] is True
    reference = plain(plain_model.parameters(), lr=3e-3, weight_decay=0.01, foreach=False)
    _steps(chosen_model, chosen, 5)
    _steps(plain_model, reference, 5)
    for got, want in zip(chosen_model.parameters(), plain_model.parameters()):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)


def test_a_resumed_fused_optimizer_steps_bit_for_bit_like_the_uninterrupted_one():
    model = _model()
    optimizer = make_optimizer("adam", model, lr=3e-3, weight_decay=0.0)
    _steps(model, optimizer, 3)
    resumed_model = copy.deepcopy(model)
    resumed = make_optimizer("adam", resumed_model, lr=3e-3, weight_decay=0.0)
    resumed.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    _steps(model, optimizer, 3, seed=2)
    _steps(resumed_model, resumed, 3, seed=2)
    for got, want in zip(resumed_model.parameters(), model.parameters()):
        assert torch.equal(got, want)


def test_an_old_for_loop_checkpoint_resumes_with_the_for_loop():
    """A checkpoint written before the fused default keeps its implementation: bit for bit."""
    model = _model()
    old = torch.optim.Adam(model.parameters(), lr=3e-3)  # what make_optimizer built before
    _steps(model, old, 3)
    resumed_model = copy.deepcopy(model)
    resumed = make_optimizer("adam", resumed_model, lr=3e-3, weight_decay=0.0)
    resumed.load_state_dict(copy.deepcopy(old.state_dict()))
    assert not resumed.param_groups[0]["fused"]
    _steps(model, old, 3, seed=2)
    _steps(resumed_model, resumed, 3, seed=2)
    for got, want in zip(resumed_model.parameters(), model.parameters()):
        assert torch.equal(got, want)
