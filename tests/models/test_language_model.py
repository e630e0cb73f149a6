"""The AWD language model with QRNN and with LSTM layers: shapes, tying, the three dropouts, weight
drop, the state carried across segments (save_prev_x; h and c), streaming, AR/TAR.

The LSTM layer's own behaviour (weight drop through nn.LSTM, state layout) is in test_lstm_layer.py."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from qrnn_lm.config import ConfigError, ModelConfig
from qrnn_lm.models import LanguageModel, LockedDropout, LSTMLayer, QRNNLanguageModel, embedding_dropout
from qrnn_lm.nn import QRNNLayer
from qrnn_lm.training.step import regularized_loss

VOCAB = 37
RNNS = ["qrnn", "lstm"]


def small_config(**changes) -> ModelConfig:
    base = ModelConfig(emb_size=8, hidden_size=12, num_layers=3, first_window=2, window=1, zoneout=0.0,
                       dropout_emb=0.1, dropout_input=0.2, dropout_hidden=0.2, dropout_output=0.2,
                       weight_drop=0.3, tie_weights=True)
    return dataclasses.replace(base, **changes)


def tokens(seq_len, batch_size, seed=0):
    return torch.randint(0, VOCAB, (seq_len, batch_size), generator=torch.Generator().manual_seed(seed))


def test_the_old_name_is_the_same_class():
    assert QRNNLanguageModel is LanguageModel
    assert isinstance(QRNNLanguageModel(VOCAB, small_config()), LanguageModel)


@pytest.mark.parametrize("rnn", RNNS)
def test_forward_shapes_and_layer_sizes(rnn):
    torch.manual_seed(0)
    model = LanguageModel(VOCAB, small_config(rnn=rnn))
    logits, hidden, raw, dropped = model(tokens(5, 3))
    assert logits.shape == (5, 3, VOCAB)
    assert model.layer_sizes() == [12, 12, 8]  # last layer = emb_size
    # The carried state: h for a QRNN layer, h and c side by side for an LSTM layer.
    states = [12, 12, 8] if rnn == "qrnn" else [24, 24, 16]
    assert model.state_sizes() == states
    assert [tuple(h.shape) for h in hidden] == [(3, size) for size in states]
    assert raw.shape == dropped.shape == (5, 3, 8)
    assert [tuple(h.shape) for h in model.init_hidden(4)] == [(4, size) for size in states]
    if rnn == "qrnn":
        assert all(type(layer) is QRNNLayer for layer in model.layers)
        assert [layer.window for layer in model.layers] == [2, 1, 1]
        assert all(layer.save_prev_x for layer in model.layers)
    else:  # awd-lstm-lm's stack: one single-layer nn.LSTM per depth, sized as the QRNN layers
        assert all(type(layer) is LSTMLayer for layer in model.layers)
        lstms = [layer.lstm for layer in model.layers]
        assert [(m.input_size, m.hidden_size, m.num_layers) for m in lstms] == [(8, 12, 1), (12, 12, 1), (12, 8, 1)]


@pytest.mark.parametrize("rnn", RNNS)
def test_untied_model_uses_hidden_size_for_the_last_layer(rnn):
    model = LanguageModel(VOCAB, small_config(rnn=rnn, tie_weights=False))
    assert model.layers[-1].hidden_size == 12 and model.decoder.weight.shape == (VOCAB, 12)
    assert model.decoder.weight is not model.embedding.weight
    model(tokens(4, 2))


def test_the_model_refuses_what_validate_refuses_without_a_config():
    with pytest.raises(ConfigError, match="model.rnn must be one of"):
        LanguageModel(VOCAB, small_config(rnn="gru"))
    with pytest.raises(ConfigError, match="model.zoneout = 0.1 is a QRNN setting"):
        LanguageModel(VOCAB, small_config(rnn="lstm", zoneout=0.1))


@pytest.mark.parametrize("rnn", RNNS)
def test_tied_weights_share_storage_and_get_one_gradient(rnn):
    model = LanguageModel(VOCAB, small_config(rnn=rnn))
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


@pytest.mark.parametrize("rnn", RNNS)
def test_no_weight_drop_parametrization_when_zero(rnn):
    model = LanguageModel(VOCAB, small_config(rnn=rnn, weight_drop=0.0))
    for layer in model.layers:
        assert not hasattr(layer.linear if rnn == "qrnn" else layer.lstm, "parametrizations")
    with_drop = LanguageModel(VOCAB, small_config(rnn=rnn, weight_drop=0.3))
    names = [name for name, _ in with_drop.named_parameters() if "parametrizations" in name]
    # the QRNN's gate weights; the LSTM's hidden-to-hidden weights only (awd-lstm-lm's WeightDrop)
    suffix = "linear.parametrizations.weight.original" if rnn == "qrnn" else "lstm.parametrizations.weight_hh_l0.original"
    assert names == [f"layers.{index}.{suffix}" for index in range(3)]


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


def test_the_lstm_carries_h_and_c_across_segments():
    torch.manual_seed(0)
    model = LanguageModel(VOCAB, small_config(rnn="lstm")).eval()
    ids = tokens(9, 2, seed=3)
    with torch.no_grad():
        whole, whole_hidden, *_ = model(ids)
        first, hidden, *_ = model(ids[:4])
        second, last_hidden, *_ = model(ids[4:], hidden)
        torch.testing.assert_close(torch.cat([first, second]), whole)
        for a, b in zip(last_hidden, whole_hidden):
            torch.testing.assert_close(a, b)
        # h alone is not enough: with c zeroed the second segment differs.
        h_only = [torch.cat([h[:, : h.size(1) // 2], torch.zeros_like(h[:, h.size(1) // 2:])], dim=1) for h in hidden]
        without_c, *_ = model(ids[4:], h_only)
    assert not torch.allclose(without_c[0], second[0])


@pytest.mark.parametrize("rnn", RNNS)
def test_stream_chunk_by_chunk_equals_one_forward(rnn):
    torch.manual_seed(0)
    model = LanguageModel(VOCAB, small_config(rnn=rnn)).eval()
    ids = tokens(7, 2, seed=4)
    with torch.no_grad():
        model.reset()
        whole, whole_hidden, *_ = model(ids)
        state, pieces = None, []
        for chunk in (ids[:1], ids[1:4], ids[4:5], ids[5:]):
            logits, state = model.stream(chunk, state)
            pieces.append(logits)
    torch.testing.assert_close(torch.cat(pieces), whole)
    for a, b in zip(state.hidden, whole_hidden):
        torch.testing.assert_close(a, b)
    if rnn == "lstm":
        assert state.inputs == (None, None, None)  # an LSTM layer keeps no inputs


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


@pytest.mark.parametrize("rnn", RNNS)
def test_bad_inputs_raise_value_errors(rnn):
    model = LanguageModel(VOCAB, small_config(rnn=rnn))
    with pytest.raises(ValueError, match=r"\[T, B\]"):
        model(torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="3 tensors"):
        model(tokens(2, 2), [torch.zeros(2, 12)])
    with pytest.raises(ValueError, match="vocab_size"):
        LanguageModel(0, small_config(rnn=rnn))
    if rnn == "lstm":  # a QRNN-sized state ([B, H], h without c)
        with pytest.raises(ValueError, match=r"state must have shape \[B, 2 \* hidden_size\] = \(2, 24\)"):
            model(tokens(2, 2), [torch.zeros(2, 12), torch.zeros(2, 12), torch.zeros(2, 8)])
