"""The AWD-QRNN language model: shapes, tying, the three dropouts, weight drop, save_prev_x, AR/TAR."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from qrnn_lm.config import ModelConfig
from qrnn_lm.models import LockedDropout, QRNNLanguageModel, embedding_dropout
from qrnn_lm.training.step import regularized_loss

VOCAB = 37


def small_config(**changes) -> ModelConfig:
    base = ModelConfig(emb_size=8, hidden_size=12, num_layers=3, first_window=2, window=1, zoneout=0.0,
                       dropout_emb=0.1, dropout_input=0.2, dropout_hidden=0.2, dropout_output=0.2,
                       weight_drop=0.3, tie_weights=True)
    return dataclasses.replace(base, **changes)


def tokens(seq_len, batch_size, seed=0):
    return torch.randint(0, VOCAB, (seq_len, batch_size), generator=torch.Generator().manual_seed(seed))


def test_forward_shapes_and_layer_sizes():
    torch.manual_seed(0)
    model = QRNNLanguageModel(VOCAB, small_config())
    logits, hidden, raw, dropped = model(tokens(5, 3))
    assert logits.shape == (5, 3, VOCAB)
    assert [tuple(h.shape) for h in hidden] == [(3, 12), (3, 12), (3, 8)]  # last layer = emb_size
    assert raw.shape == dropped.shape == (5, 3, 8)
    assert [layer.window for layer in model.layers] == [2, 1, 1]
    assert all(layer.save_prev_x for layer in model.layers)
    assert [tuple(h.shape) for h in model.init_hidden(4)] == [(4, 12), (4, 12), (4, 8)]


def test_untied_model_uses_hidden_size_for_the_last_layer():
    model = QRNNLanguageModel(VOCAB, small_config(tie_weights=False))
    assert model.layers[-1].hidden_size == 12 and model.decoder.weight.shape == (VOCAB, 12)
    assert model.decoder.weight is not model.embedding.weight
    model(tokens(4, 2))


def test_tied_weights_share_storage_and_get_one_gradient():
    model = QRNNLanguageModel(VOCAB, small_config())
    assert model.decoder.weight is model.embedding.weight
    assert model.decoder.weight.data_ptr() == model.embedding.weight.data_ptr()
    names = [name for name, _ in model.named_parameters()]
    assert "decoder.weight" not in names and "embedding.weight" in names  # counted once
    logits, *_ = model(tokens(4, 2))
    logits.sum().backward()
    assert model.embedding.weight.grad is not None


def test_weight_drop_only_in_training_and_gradients_reach_the_raw_weight():
    torch.manual_seed(0)
    model = QRNNLanguageModel(VOCAB, small_config(weight_drop=0.5))
    linear = model.layers[0].linear
    raw = linear.parametrizations.weight.original
    model.eval()
    assert torch.equal(linear.weight, raw)
    model.train()
    first, second = linear.weight, linear.weight
    zeros = first == 0
    assert zeros.any() and not torch.equal(first, second)  # a fresh mask per read (per forward)
    torch.testing.assert_close(first[~zeros], raw[~zeros] * 2.0)  # kept weights scaled by 1/(1-p)
    logits, *_ = model(tokens(6, 2))
    logits.pow(2).sum().backward()
    assert raw.grad is not None and raw.grad.abs().sum() > 0


def test_no_weight_drop_parametrization_when_zero():
    model = QRNNLanguageModel(VOCAB, small_config(weight_drop=0.0))
    assert not hasattr(model.layers[0].linear, "parametrizations")


def test_locked_dropout_mask_is_shared_over_time():
    torch.manual_seed(0)
    drop = LockedDropout(0.5)
    x = torch.ones(7, 3, 10)
    y = drop(x)
    assert (y == 0).any() and (y == 2.0).any()
    assert torch.equal(y, y[:1].expand_as(y))  # every time step has the same mask
    drop.eval()
    assert drop(x) is x


def test_embedding_dropout_drops_whole_words():
    torch.manual_seed(1)
    embedding = torch.nn.Embedding(5, 6)
    ids = torch.tensor([[0, 1], [0, 2], [1, 0]])  # words repeat across positions
    out = embedding_dropout(embedding, ids, 0.5, training=True)
    for word in range(3):
        rows = out[ids == word]
        assert torch.equal(rows, rows[:1].expand_as(rows))  # same word, same (dropped or kept) vector
        assert torch.equal(rows[0], torch.zeros(6)) or torch.allclose(rows[0], embedding.weight[word] * 2)
    assert torch.equal(embedding_dropout(embedding, ids, 0.5, training=False), embedding(ids))


def test_save_prev_x_carries_the_window_across_segments():
    torch.manual_seed(0)
    model = QRNNLanguageModel(VOCAB, small_config()).eval()
    ids = tokens(9, 2, seed=3)
    with torch.no_grad():
        model.reset()
        whole, *_ = model(ids)
        model.reset()
        first, hidden, *_ = model(ids[:4])
        second, *_ = model(ids[4:], hidden)
        torch.testing.assert_close(torch.cat([first, second]), whole)
        # Without the saved input, the second segment's first step sees a zero x_{t-1}: different.
        model.reset()
        fresh, *_ = model(ids[4:], hidden)
    assert not torch.allclose(fresh[0], second[0])


def test_regularized_loss_adds_ar_and_tar():
    torch.manual_seed(0)
    logits = torch.randn(5, 2, VOCAB)
    targets = tokens(5, 2)
    raw, dropped = torch.randn(5, 2, 8), torch.randn(5, 2, 8)
    cross_entropy, loss = regularized_loss(logits, targets, raw, dropped, alpha=2.0, beta=1.0)
    expected_ce = F.cross_entropy(logits.view(-1, VOCAB), targets.view(-1))
    ar = 2.0 * dropped.pow(2).mean()
    tar = 1.0 * (raw[1:] - raw[:-1]).pow(2).mean()
    torch.testing.assert_close(cross_entropy, expected_ce)
    torch.testing.assert_close(loss, expected_ce + ar + tar)
    _, plain = regularized_loss(logits, targets, raw, dropped, alpha=0.0, beta=0.0)
    torch.testing.assert_close(plain, expected_ce)
    # A one-step segment has no temporal difference: TAR is skipped rather than NaN.
    _, single = regularized_loss(logits[:1], targets[:1], raw[:1], dropped[:1], alpha=0.0, beta=1.0)
    assert torch.isfinite(single)


def test_bad_inputs_raise_value_errors():
    model = QRNNLanguageModel(VOCAB, small_config())
    with pytest.raises(ValueError, match=r"\[T, B\]"):
        model(torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="3 tensors"):
        model(tokens(2, 2), [torch.zeros(2, 12)])
    with pytest.raises(ValueError, match="vocab_size"):
        QRNNLanguageModel(0, small_config())
