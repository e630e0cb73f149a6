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
