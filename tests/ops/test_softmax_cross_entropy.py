"""The CPU softmax cross-entropy kernel (qrnn_lm/ops/softmax_cross_entropy.py) against
F.cross_entropy in float64: loss, gradient and bias gradient, serial and parallel, float32 and
bfloat16 logits, and the rows a softmax finds hard (huge, -inf and NaN logits)."""

import pytest
import torch
import torch.nn.functional as F

from qrnn_lm.ops import numba_setup
from qrnn_lm.ops import softmax_cross_entropy as op
from qrnn_lm.ops.softmax_cross_entropy import loss_and_gradients

# (N, V): a vocabulary that is not a multiple of the vector width; the large shape runs the parallel
# kernel over several work items, the last one partial.
SHAPES = [(3, 37), (1, 1), (150, 997)]


def reference(logits, targets, bias):
    """Loss, gradient and bias gradient of F.cross_entropy in float64."""
    logits64 = logits.double().requires_grad_()
    bias64 = None if bias is None else bias.double().requires_grad_()
    loss = F.cross_entropy(logits64 + (0 if bias64 is None else bias64), targets, reduction="sum")
    grads = torch.autograd.grad(loss, [logits64] + ([] if bias64 is None else [bias64]))
    return loss.detach(), grads[0], (grads[1] if bias64 is not None else None)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("with_bias", [False, True])
def test_matches_float64_cross_entropy(shape, dtype, with_bias):
    g = torch.Generator().manual_seed(sum(shape))
    logits = (torch.randn(shape, generator=g) * 5).to(dtype)
    targets = torch.randint(0, shape[1], (shape[0],), generator=g)
    bias = torch.randn(shape[1], generator=g) if with_bias else None
    loss, grad, grad_bias = loss_and_gradients(logits, targets, bias)
    want_loss, want_grad, want_bias = reference(logits, targets, bias)
    assert loss.dtype == torch.float32 and grad.dtype == dtype and grad_bias.dtype == torch.float32
    torch.testing.assert_close(loss.double(), want_loss, rtol=1e-6, atol=1e-5)
    rounding = 2.0 ** -8 if dtype == torch.bfloat16 else 1e-6  # the gradient is rounded once to the dtype
    torch.testing.assert_close(grad.double(), want_grad, rtol=rounding, atol=1e-7)
    if with_bias:
        torch.testing.assert_close(grad_bias.double(), want_bias, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_grad_scale_multiplies_both_gradients_not_the_loss(dtype):
    g = torch.Generator().manual_seed(7)
    logits = (torch.randn(150, 997, generator=g) * 5).to(dtype)
    targets = torch.randint(0, 997, (150,), generator=g)
    bias = torch.randn(997, generator=g)
    loss, grad, grad_bias = loss_and_gradients(logits, targets, bias, grad_scale=1 / 150)
    want_loss, want_grad, want_bias = reference(logits, targets, bias)
    torch.testing.assert_close(loss.double(), want_loss, rtol=1e-6, atol=1e-5)
    rounding = 2.0 ** -8 if dtype == torch.bfloat16 else 1e-6
    torch.testing.assert_close(grad.double(), want_grad / 150, rtol=rounding, atol=1e-9)
    torch.testing.assert_close(grad_bias.double(), want_bias / 150, rtol=1e-5, atol=1e-8)
    unscaled = loss_and_gradients(logits, targets, bias, grad_scale=1.0)
    assert torch.equal(unscaled[1], loss_and_gradients(logits, targets, bias)[1])


def test_serial_and_parallel_give_the_same_rows(monkeypatch):
    logits = torch.randn(300, 500).bfloat16()
    targets = torch.randint(0, 500, (300,))
    bias = torch.randn(500)
    parallel = loss_and_gradients(logits, targets, bias)
    monkeypatch.setattr(numba_setup, "parallel_launch_safe", lambda: False)  # as in a forked child
    monkeypatch.setattr(op, "_rows_parallel", None)  # which must not launch it
    serial = loss_and_gradients(logits, targets, bias)
    assert torch.equal(serial[1], parallel[1])  # each row's gradient is the same computation
    torch.testing.assert_close(serial[0], parallel[0], rtol=1e-6, atol=0)  # sums in another order
    torch.testing.assert_close(serial[2], parallel[2], rtol=1e-5, atol=1e-6)


def test_huge_logits_do_not_overflow_and_minus_infinity_is_probability_zero():
    logits = torch.tensor([[1e4, 1e4 - 1.0, -float("inf"), 0.0]])
    loss, grad, _ = loss_and_gradients(logits, torch.tensor([1]))
    want_loss, want_grad, _ = reference(logits, torch.tensor([1]), None)
    torch.testing.assert_close(loss.double(), want_loss)
    torch.testing.assert_close(grad.double(), want_grad)
    assert grad[0, 2] == 0


@pytest.mark.parametrize("offset", [-1e4, 1e4])
def test_rows_far_from_zero_are_shifted_by_their_own_max(offset):
    """exp(logit - max) neither underflows to a zero normaliser (all logits far below 0, where
    a max taken as 0 or from the wrong sign would give an infinite loss) nor overflows."""
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(150, 997, generator=g) * 30 + offset  # a spread past exp's range (88)
    targets = torch.randint(0, 997, (150,), generator=g)
    loss, grad, _ = loss_and_gradients(logits, targets)
    want_loss, want_grad, _ = reference(logits, targets, None)
    torch.testing.assert_close(loss.double(), want_loss, rtol=1e-4, atol=0)  # float32 logits near 1e4
    torch.testing.assert_close(grad.double(), want_grad, rtol=1e-2, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rows_at_every_offset_match_float64_whether_shifted_or_not(dtype):
    """The kernel first sums exp(logits) unshifted and shifts by the row's max only when that sum
    leaves a safe range: rows from far below to far above exp's range, one offset each, all within
    the tolerances of ordinary logits."""
    g = torch.Generator().manual_seed(5)
    offsets = torch.linspace(-100, 100, 81).unsqueeze(1)  # steps of 2.5 across both thresholds
    logits = (torch.randn(81, 300, generator=g) * 4 + offsets).to(dtype)  # |logit| < 128
    targets = torch.randint(0, 300, (81,), generator=g)
    # Quarters: logit + bias is then exact in float32 at any offset, as the float64 reference's is.
    bias = torch.randint(-8, 9, (300,), generator=g) / 4
    loss, grad, grad_bias = loss_and_gradients(logits, targets, bias)
    want_loss, want_grad, want_bias = reference(logits, targets, bias)
    torch.testing.assert_close(loss.double(), want_loss, rtol=1e-6, atol=1e-5)
    rounding = 2.0 ** -8 if dtype == torch.bfloat16 else 1e-6
    torch.testing.assert_close(grad.double(), want_grad, rtol=rounding, atol=1e-7)
    torch.testing.assert_close(grad_bias.double(), want_bias, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_a_nan_logit_gives_a_nan_loss_whatever_its_sign_bit(sign):
    logits = torch.randn(4, 40)
    logits[2, 7] = torch.copysign(torch.tensor(float("nan")), torch.tensor(sign))
    loss, _, _ = loss_and_gradients(logits, torch.zeros(4, dtype=torch.long))
    assert loss.isnan()


def test_a_nan_logit_gives_a_nan_loss():
    logits = torch.randn(4, 40)
    logits[2, 7] = float("nan")
    loss, _, _ = loss_and_gradients(logits, torch.zeros(4, dtype=torch.long))
    assert loss.isnan()


def test_takes_non_contiguous_logits():
    logits = torch.randn(40, 60)[:, :50]
    targets = torch.randint(0, 50, (40,))
    torch.testing.assert_close(loss_and_gradients(logits, targets)[1], loss_and_gradients(logits.contiguous(), targets)[1])


@pytest.mark.parametrize("bad", [-1, 37])
def test_rejects_targets_outside_the_vocabulary(bad):
    targets = torch.tensor([0, bad, 1])
    with pytest.raises(ValueError, match=r"targets must be in \[0, 37\)"):
        loss_and_gradients(torch.randn(3, 37), targets)
