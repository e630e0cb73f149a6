"""The chunked linear + cross-entropy against the full softmax: loss and every gradient; the
blocked cross-entropy of bf16/fp16 logits against autograd's float32 softmax."""

import pytest
import torch
import torch.nn.functional as F

from qrnn_lm.models.softmax import blocked_cross_entropy, chunk_rows, chunked_cross_entropy


def _inputs(n=37, e=11, v=53, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, e, generator=g, dtype=dtype, requires_grad=True)
    w = torch.randn(v, e, generator=g, dtype=dtype, requires_grad=True)
    b = torch.randn(v, generator=g, dtype=dtype, requires_grad=True)
    t = torch.randint(0, v, (n,), generator=g)
    return x, w, b, t


def _grads(loss, *tensors):
    return torch.autograd.grad(loss, tensors)


@pytest.mark.parametrize("chunk", [1, 5, 37, 100])
@pytest.mark.parametrize("with_bias", [True, False])
def test_chunked_equals_full_in_loss_and_gradients(chunk, with_bias):
    x, w, b, t = _inputs()
    bias = b if with_bias else None
    full = F.cross_entropy(F.linear(x, w, bias), t, reduction="sum")
    chunked = chunked_cross_entropy(x, w, bias, t, chunk_size=chunk)
    # float64 inputs are cast to the logits' float32 softmax in both forms' spirit; compare loosely.
    torch.testing.assert_close(chunked.double(), full, rtol=1e-5, atol=1e-4)
    upstream = 0.37  # a non-unit incoming gradient, as a mean over tokens gives
    wrt = (x, w, b) if with_bias else (x, w)
    expected = _grads(full * upstream, *wrt)
    got = _grads(chunked * upstream, *wrt)
    for name, e, g in zip("xwb", expected, got):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5, msg=f"d{name}")


def test_chunked_float32_matches_full_float32():
    x, w, b, t = _inputs(n=64, e=16, v=300, dtype=torch.float32)
    full = F.cross_entropy(F.linear(x, w, b), t)
    chunked = chunked_cross_entropy(x, w, b, t, chunk_size=7) / t.numel()
    torch.testing.assert_close(chunked, full)
    for e, g in zip(_grads(full, x, w, b), _grads(chunked, x, w, b)):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-6)


def test_without_grad_mode_no_gradient_is_kept():
    x, w, b, t = _inputs()
    with torch.no_grad():
        value = chunked_cross_entropy(x, w, b, t, chunk_size=4)
    assert not value.requires_grad
    torch.testing.assert_close(value.double(), F.cross_entropy(F.linear(x, w, b), t, reduction="sum").detach(),
                               rtol=1e-5, atol=1e-4)


def test_under_bf16_autocast_close_to_float32():
    x, w, b, t = _inputs(n=40, e=16, v=200, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        chunked = chunked_cross_entropy(x, w, b, t, chunk_size=9)
    assert chunked.dtype == torch.float32
    full = F.cross_entropy(F.linear(x, w, b), t, reduction="sum")
    torch.testing.assert_close(chunked, full, rtol=2e-2, atol=0.5)
    dw = torch.autograd.grad(chunked, w)[0]
    assert dw.dtype == torch.float32  # gradients in the parameters' dtype


def test_bad_shapes_are_value_errors():
    x, w, b, t = _inputs()
    with pytest.raises(ValueError, match="targets"):
        chunked_cross_entropy(x, w, b, t[:-1])
    with pytest.raises(ValueError, match="x must be"):
        chunked_cross_entropy(x, w[:, :-1], b, t)


def test_chunk_rows_keeps_a_chunk_near_the_budget():
    assert chunk_rows(267_735) == 62  # 64 MiB / (4 bytes * 267,735)
    assert chunk_rows(10**9) == 1


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("block_rows", [1, 4, 29, 100])
@pytest.mark.parametrize("with_bias", [False, True])
def test_blocked_equals_autograds_float32_softmax(dtype, block_rows, with_bias):
    g = torch.Generator().manual_seed(3)
    logits = (torch.randn(29, 301, generator=g) * 4).to(dtype).requires_grad_()
    targets = torch.randint(0, 301, (29,), generator=g)
    bias = torch.randn(301, generator=g).requires_grad_() if with_bias else None
    upstream = 0.37  # a non-unit incoming gradient, as a mean over tokens gives
    wrt = (logits, bias) if with_bias else (logits,)
    expected_loss = F.cross_entropy(logits.float() + (bias if with_bias else 0), targets, reduction="sum")
    expected = torch.autograd.grad(expected_loss * upstream, wrt)
    loss = blocked_cross_entropy(logits, targets, bias, block_rows=block_rows)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, expected_loss, rtol=1e-6, atol=1e-4)
    got = torch.autograd.grad(loss * upstream, wrt)
    assert got[0].dtype == dtype
    # Rounded to the logits' dtype twice (the gradient, then its scaling) where autograd rounds once:
    # three roundings apart, each at most 2^-8 (bf16) or 2^-11 (fp16) relative; float32 to a few ulps.
    rounding = {torch.bfloat16: 2.0 ** -8, torch.float16: 2.0 ** -11, torch.float32: 2.0 ** -20}[dtype]
    torch.testing.assert_close(got[0].float(), expected[0].float(), rtol=3 * rounding, atol=1e-6)
    if with_bias:  # summed over the rows in float32
        assert got[1].dtype == torch.float32
        torch.testing.assert_close(got[1], expected[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("upstream", [1 / 29, 0.37])
def test_blocked_with_a_grad_scale_is_exact_whatever_the_incoming_gradient(dtype, upstream):
    """The gradients formed times grad_scale = 1/29: backward bringing exactly 1/29 returns them as
    they are (one rounding, as autograd's), any other incoming gradient (0.37) is still exact;
    float16's gradient is formed unscaled and multiplied by any incoming gradient."""
    g = torch.Generator().manual_seed(4)
    logits = (torch.randn(29, 301, generator=g) * 4).to(dtype).requires_grad_()
    targets = torch.randint(0, 301, (29,), generator=g)
    bias = torch.randn(301, generator=g).requires_grad_()
    expected_loss = F.cross_entropy(logits.float() + bias, targets, reduction="sum")
    expected = torch.autograd.grad(expected_loss * upstream, (logits, bias))
    loss = blocked_cross_entropy(logits, targets, bias, block_rows=4, grad_scale=1 / 29)
    torch.testing.assert_close(loss, expected_loss, rtol=1e-6, atol=1e-4)  # the sum, not scaled
    got = torch.autograd.grad(loss * upstream, (logits, bias))
    rounding = {torch.bfloat16: 2.0 ** -8, torch.float16: 2.0 ** -11, torch.float32: 2.0 ** -20}[dtype]
    # The ratio's multiply rounds once more; float16's gradient is formed unscaled (its range).
    roundings = 1 if upstream == 1 / 29 and dtype != torch.float16 else 3
    torch.testing.assert_close(got[0].float(), expected[0].float(), rtol=roundings * rounding, atol=1e-7)
    torch.testing.assert_close(got[1], expected[1], rtol=1e-5, atol=1e-7)


def _inplace_products_on(shape, run):
    """How many in-place multiplies ``run()`` makes on tensors of ``shape``."""
    from torch.utils._python_dispatch import TorchDispatchMode

    seen = []

    class Watch(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten.mul_.Tensor and tuple(args[0].shape) == shape:
                seen.append(func)
            return func(*args, **(kwargs or {}))

    with Watch():
        run()
    return len(seen)


def test_the_trainers_mean_loss_takes_no_pass_to_scale_the_logits_gradient():
    """The language model hints 1 / N, the trainer's regularized loss divides the sum by N: the
    backward of a bf16 step never multiplies the [N, V] gradient (1.0 ms of ptb-cpu-bf16's step)."""
    from qrnn_lm.config import ModelConfig
    from qrnn_lm.models import LanguageModel
    from qrnn_lm.training.step import regularized_loss

    torch.manual_seed(0)
    model = LanguageModel(50, ModelConfig(emb_size=8, hidden_size=8, num_layers=1))
    tokens, targets = torch.randint(0, 50, (7, 3)), torch.randint(0, 50, (7, 3))

    def step(alpha):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            nll_sum, _, raw, dropped = model(tokens, None, targets)
            loss = regularized_loss(nll_sum, targets, raw, dropped, alpha, alpha)[1]
        loss.backward()

    assert _inplace_products_on((21, 50), lambda: step(2.0)) == 0
    # The watch sees the multiply where the incoming gradient is not the hint (the summed loss):
    assert _inplace_products_on((21, 50), lambda: model(tokens, None, targets)[0].backward()) == 1


def test_blocked_bf16_gradient_of_a_mean_is_not_biased_by_a_rounded_scale():
    """1/1400 is not a bfloat16 number (rounded: 0.13% low). The gradient of the mean, formed times
    grad_scale in float32 and rounded once, has its exact scale on average (each element rounded
    to nearest); scaling bf16 values by bf16(1/1400) would shift them all by -0.13%."""
    g = torch.Generator().manual_seed(5)
    logits = (torch.randn(1400, 500, generator=g) * 2).bfloat16().requires_grad_()
    targets = torch.randint(0, 500, (1400,), generator=g)
    (blocked_cross_entropy(logits, targets, grad_scale=1 / 1400) / 1400).backward()
    exact = torch.autograd.grad(F.cross_entropy(logits.double(), targets), logits)[0]
    mask = exact.abs() > 1e-7
    ratio = (logits.grad.double()[mask] / exact[mask]).mean().item()
    assert abs(ratio - 1) < 2e-4, ratio


def test_blocked_backward_runs_once_and_shapes_are_checked():
    logits = torch.randn(6, 9, dtype=torch.bfloat16, requires_grad=True)
    targets = torch.randint(0, 9, (6,))
    loss = blocked_cross_entropy(logits, targets, block_rows=4)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="run it once"):
        loss.backward()
    with pytest.raises(ValueError, match="targets"):
        blocked_cross_entropy(logits, targets[:-1])
    with pytest.raises(ValueError, match="bias must have shape"):
        blocked_cross_entropy(logits, targets, torch.zeros(8))
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="grad_scale must be positive and finite"):
            blocked_cross_entropy(logits, targets, grad_scale=bad)


def test_the_language_model_uses_it_for_training_on_the_cpu(monkeypatch):
    from qrnn_lm.config import ModelConfig
    from qrnn_lm.models import LanguageModel, softmax as softmax_module
    from qrnn_lm.models import language_model as language_model_module

    calls = []
    real = softmax_module.blocked_cross_entropy
    monkeypatch.setattr(language_model_module, "blocked_cross_entropy",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    tokens, targets = torch.randint(0, 50, (5, 2)), torch.randint(0, 50, (5, 2))

    def loss_and_grads(autocast, grad=True, blocked=True):
        torch.manual_seed(0)
        model = LanguageModel(50, ModelConfig(emb_size=8, hidden_size=8, num_layers=1)).eval()  # no dropout draws
        if not blocked:
            monkeypatch.setattr(model, "_blocked_loss", lambda flat: False)
        with torch.set_grad_enabled(grad), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = model(tokens, None, targets)[0]
        if not grad:
            return loss, None
        return loss, torch.autograd.grad(loss, [model.decoder.weight, model.decoder.bias])

    blocked, blocked_grads = loss_and_grads(autocast=True)
    assert calls == [1]
    plain, _ = loss_and_grads(autocast=True, grad=False)  # evaluation: F.cross_entropy, the bias in the linear
    assert calls == [1]
    blocked32, blocked32_grads = loss_and_grads(autocast=False)  # float32 training takes it too
    assert calls == [1, 1]
    full, full_grads = loss_and_grads(autocast=False, blocked=False)  # F.cross_entropy in float32
    assert calls == [1, 1]
    torch.testing.assert_close(blocked, plain, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(blocked32, full, rtol=1e-6, atol=1e-5)
    for got, want in zip(blocked32_grads, full_grads):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    for got, want in zip(blocked_grads, full_grads):  # the tied weight's and the decoder bias's, to bf16 rounding
        torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-3)
