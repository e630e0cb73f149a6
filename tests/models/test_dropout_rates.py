"""The AWD dropouts at rates other than 0.5: observed drop rate and the 1 / (1 - p) scaling.

At p = 0.5 "keep with probability p" and "keep with probability 1 - p" draw identical masks for
the same seed, so a swapped rate passes; these tests use p = 0.2 and p = 0.7 on masks large enough
that the observed rate is within a few standard deviations (about 0.006 for 40k draws) of p.
"""

import pytest
import torch
from torch import nn

from qrnn_lm.models import LockedDropout, embedding_dropout
from qrnn_lm.models.dropout import WeightDrop
from qrnn_lm.ops.drop_connect import drop_connect

RATES = [0.2, 0.7]


def assert_dropped_and_scaled(values: torch.Tensor, p: float, kept_value: torch.Tensor):
    """Every entry is 0 or ``kept_value / (1 - p)``, and the zeros are a fraction ``p`` (+- 0.02)."""
    dropped = values == 0
    assert torch.allclose(values[~dropped], (kept_value / (1 - p)).expand_as(values)[~dropped])
    assert abs(dropped.float().mean().item() - p) < 0.02


@pytest.mark.parametrize("p", RATES)
def test_locked_dropout_rate_and_scaling(p):
    torch.manual_seed(0)
    x = torch.ones(3, 200, 200)
    y = LockedDropout(p)(x)
    assert torch.equal(y, y[:1].expand_as(y))  # one mask per sequence
    assert_dropped_and_scaled(y[0], p, torch.tensor(1.0))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("p", [0.3, 0.25, 0.2])
def test_locked_dropout_in_half_precision_is_unbiased(p, dtype):
    """The kept values average x / (1 - p): in bfloat16 a mask holding 1 / 0.7 rounded (1.4297)
    made them 0.08% too large, every one alike; rounding each product is unbiased over many x."""
    torch.manual_seed(0)
    x = (torch.rand(40, 100, 500) + 0.5).to(dtype)
    y = LockedDropout(p)(x)
    kept = y != 0
    ratio = (y[kept].double().sum() / x[kept].double().sum()).item() * (1 - p)
    assert abs(ratio - 1) < 1e-4


@pytest.mark.parametrize("p", RATES)
def test_embedding_dropout_rate_and_scaling(p):
    torch.manual_seed(0)
    vocab = 40_000
    embedding = nn.Embedding(vocab, 3)
    with torch.no_grad():
        embedding.weight.fill_(1.5)
    ids = torch.arange(vocab).view(-1, 1)  # [T = V, B = 1]: every word once
    out = embedding_dropout(embedding, ids, p, training=True)  # [V, 1, 3]
    rows = out[:, 0]  # [V, 3]: a dropped word is zero in all of its features
    assert torch.equal(rows == 0, (rows[:, :1] == 0).expand_as(rows))
    assert_dropped_and_scaled(rows[:, 0], p, torch.tensor(1.5))


def test_embedding_dropout_rejects_a_mask_that_never_drops():
    """A word must really be dropped sometimes at p > 0 (a mask of ones would pass a shape test)."""
    torch.manual_seed(3)
    embedding = nn.Embedding(500, 4)
    ids = torch.arange(500).view(-1, 1)
    out = embedding_dropout(embedding, ids, 0.3, training=True)
    dropped = (out[:, 0] == 0).all(dim=1)
    assert 0.2 < dropped.float().mean().item() < 0.4


@pytest.mark.parametrize("p", RATES)
def test_weight_drop_rate_and_scaling(p):
    torch.manual_seed(0)
    weight = torch.full((200, 200), 2.0)
    drop = WeightDrop(p)
    assert_dropped_and_scaled(drop(weight), p, torch.tensor(2.0))
    drop.eval()
    assert torch.equal(drop(weight), weight)


def test_weight_drop_on_the_cpu_draws_its_mask_with_drop_connect():
    weight = torch.randn(8, 8)
    torch.manual_seed(2)
    expected = drop_connect(weight, 0.4)
    torch.manual_seed(2)
    assert torch.equal(WeightDrop(0.4)(weight), expected)


def test_weight_drop_under_bf16_autocast_gives_the_product_its_dtype():
    """Under CPU bf16 autocast the masked weight comes out bfloat16 (what the product would cast it
    to, bit for bit), and the float32 weight gets a float32 gradient."""
    weight = torch.randn(8, 8, requires_grad=True)
    torch.manual_seed(2)
    plain = WeightDrop(0.4)(weight)
    torch.manual_seed(2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        masked = WeightDrop(0.4)(weight)
    assert masked.dtype == torch.bfloat16 and torch.equal(masked, plain.bfloat16())
    (grad,) = torch.autograd.grad(masked.float().sum(), weight)
    assert grad.dtype == torch.float32 and torch.equal(grad != 0, plain != 0)


def test_embedding_dropout_equals_looking_up_in_the_masked_matrix():
    """Masking the looked-up rows must give what awd's form (weight * mask, then look up) gives for
    the same draw: every occurrence of a word dropped or kept together, values and gradients."""
    embedding = nn.Embedding(30, 5)
    tokens = torch.randint(0, 30, (40, 3), generator=torch.Generator().manual_seed(1))  # words repeat
    torch.manual_seed(4)
    out = embedding_dropout(embedding, tokens, 0.4, training=True)
    torch.manual_seed(4)
    keep = embedding.weight.new_empty(30, 1).bernoulli_(0.6) / 0.6
    expected = nn.functional.embedding(tokens, embedding.weight * keep)
    assert torch.equal(out, expected)
    upstream = torch.randn(out.shape)
    (got,) = torch.autograd.grad((out * upstream).sum(), embedding.weight)
    (want,) = torch.autograd.grad((expected * upstream).sum(), embedding.weight)
    torch.testing.assert_close(got, want)
