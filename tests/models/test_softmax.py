"""The chunked linear + cross-entropy against the full softmax: loss and every gradient."""

import pytest
import torch
import torch.nn.functional as F

from qrnn_lm.models.softmax import chunk_rows, chunked_cross_entropy


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
