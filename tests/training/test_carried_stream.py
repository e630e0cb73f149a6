"""The carried stream state (training/data_stream.py) for both model types: what a checkpoint captures,
and a restore that puts each QRNN layer's saved inputs back and leaves LSTM layers alone."""

import pytest
import torch

from qrnn_lm.config import ModelConfig
from qrnn_lm.models import LanguageModel
from qrnn_lm.training.checkpointer import to_cpu
from qrnn_lm.training.data_stream import capture_stream, concat_streams, restore_stream, stream_columns

VOCAB = 13


def model_and_state(rnn):
    """A model (first window 2) that ran one segment, and its carried hidden state."""
    torch.manual_seed(0)
    model = LanguageModel(VOCAB, ModelConfig(rnn=rnn, emb_size=4, hidden_size=6, num_layers=2, first_window=2))
    model.eval()
    with torch.no_grad():
        _, hidden, *_ = model(torch.randint(VOCAB, (5, 4), generator=torch.Generator().manual_seed(1)))
    return model, hidden


@pytest.mark.parametrize("rnn", ["qrnn", "lstm"])
def test_capture_then_restore_gives_back_the_carried_state(rnn):
    model, hidden = model_and_state(rnn)
    saved = to_cpu(capture_stream(model, hidden))
    assert [tuple(h.shape) for h in saved["hidden"]] == ([(4, 6), (4, 4)] if rnn == "qrnn" else [(4, 12), (4, 8)])
    if rnn == "qrnn":
        assert saved["prev_x"][0].shape == (1, 4, 4) and saved["prev_x"][1] is None  # window 2, window 1
    else:
        assert saved["prev_x"] == [None, None]  # an LSTM layer keeps no inputs
    model.reset()
    restored = restore_stream(model, saved, torch.device("cpu"))
    for a, b in zip(restored, hidden):
        assert torch.equal(a, b)
    if rnn == "qrnn":
        assert torch.equal(model.layers[0].prevX, saved["prev_x"][0])
    else:
        for layer in model.layers:  # no stray attribute on the adapter or on its nn.LSTM
            assert "prevX" not in vars(layer) and "prevX" not in vars(layer.lstm)


@pytest.mark.parametrize("rnn", ["qrnn", "lstm"])
def test_rank_columns_split_and_join_the_state_rows(rnn):
    model, hidden = model_and_state(rnn)
    saved = to_cpu(capture_stream(model, hidden))
    parts = [stream_columns(saved, 0, 1), stream_columns(saved, 1, 4)]
    assert parts[0]["hidden"][0].shape[1] == saved["hidden"][0].shape[1]  # whole rows: h and c stay together
    joined = concat_streams(parts)
    for a, b in zip(joined["hidden"], saved["hidden"]):
        assert torch.equal(a, b)
