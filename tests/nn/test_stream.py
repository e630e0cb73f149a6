"""Streaming (``QRNN.stream``, ``QRNNLanguageModel.stream``): a sequence fed chunk by chunk with the
carried state (hidden states and the windows' kept inputs) gives the outputs of one call on it."""

import dataclasses
from pathlib import Path

import pytest
import torch

from qrnn_lm import QRNN
from qrnn_lm.config import ModelConfig
from qrnn_lm.models import QRNNLanguageModel

README = Path(__file__).resolve().parents[2] / "README.md"

STREAMING = '''\
import torch
from qrnn_lm import QRNN

qrnn = QRNN(16, 32, num_layers=2, window=2).eval()
sequence = torch.randn(10, 1, 16)  # [T, B, features], arriving one step at a time
state = None  # hidden states and each layer's last window - 1 inputs, carried between calls
with torch.no_grad():
    outputs = []
    for step in sequence.split(1):
        output, state = qrnn.stream(step, state)
        outputs.append(output)
    whole, hidden = qrnn(sequence)  # the same outputs as one call on the whole sequence
'''

# Chunk lengths of a 9-step sequence: one step at a time, uneven, chunks shorter than the window, one call.
CHUNKINGS = [[1] * 9, [2, 3, 4], [4, 1, 1, 3], [9]]


def split(sequence, sizes, dim=0):
    return torch.split(sequence, sizes, dim=dim)


@pytest.mark.parametrize("window", [1, 2, 3])
@pytest.mark.parametrize("sizes", CHUNKINGS)
@pytest.mark.parametrize("gates", ["auto", "unfused"])
def test_qrnn_stream_equals_one_call(window, sizes, gates, monkeypatch):
    monkeypatch.setenv("QRNN_LM_QRNN_GATES", gates)
    torch.manual_seed(window)
    qrnn = QRNN(5, 6, num_layers=2, window=window, dropout=0.3).eval()
    X, h0 = torch.randn(9, 3, 5), torch.randn(2, 3, 6)
    expected, expected_hidden = qrnn(X, h0)
    state = None
    outputs = []
    for index, chunk in enumerate(split(X, sizes)):
        if index == 0:
            output, state = qrnn.stream(chunk, (h0, (None, None)))  # a given initial state
        else:
            output, state = qrnn.stream(chunk, state)
        outputs.append(output)
    torch.testing.assert_close(torch.cat(outputs), expected)
    torch.testing.assert_close(state.hidden, expected_hidden)


def test_stream_with_batch_first_and_no_module_state():
    torch.manual_seed(0)
    qrnn = QRNN(5, 6, num_layers=2, window=3, batch_first=True, save_prev_x=True)
    X = torch.randn(2, 7, 5)  # [B, T, I]
    expected, _ = qrnn(X)
    qrnn.reset()
    state, outputs = None, []
    for chunk in split(X, [3, 1, 3], dim=1):
        output, state = qrnn.stream(chunk, state)
        outputs.append(output)
    torch.testing.assert_close(torch.cat(outputs, dim=1), expected)
    assert all(layer.prevX is None for layer in qrnn.layers)  # save_prev_x buffers untouched


def test_stream_refuses_bidirectional_and_a_mismatched_state():
    with pytest.raises(ValueError, match="bidirectional=False.*run the whole sequence through forward"):
        QRNN(4, 4, bidirectional=True).stream(torch.randn(2, 1, 4))
    qrnn = QRNN(4, 4, window=2)
    _, state = qrnn.stream(torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match=r"kept inputs must have shape .* = \(1, 2, 4\), got \(1, 3, 4\)"):
        qrnn.stream(torch.randn(2, 2, 4), (None, state.inputs))


@pytest.mark.parametrize("first_window,window", [(1, 1), (2, 1), (3, 2)])
@pytest.mark.parametrize("sizes", CHUNKINGS)
def test_language_model_stream_equals_one_call(first_window, window, sizes):
    torch.manual_seed(first_window)
    config = dataclasses.replace(ModelConfig(), emb_size=8, hidden_size=12, num_layers=3, first_window=first_window,
                                 window=window, weight_drop=0.3, tie_weights=True)
    model = QRNNLanguageModel(23, config).eval()
    tokens = torch.randint(0, 23, (9, 2))
    model.reset()
    expected, expected_hidden, _, _ = model(tokens)
    state, outputs = None, []
    for chunk in split(tokens, sizes):
        logits, state = model.stream(chunk, state)
        outputs.append(logits)
    torch.testing.assert_close(torch.cat(outputs), expected)
    for got, want in zip(state.hidden, expected_hidden):
        torch.testing.assert_close(got, want)


def test_readme_streaming_example_runs_and_matches_one_call():
    namespace = {"__name__": "readme_example"}
    exec(compile(STREAMING, "<README snippet>", "exec"), namespace)
    torch.testing.assert_close(torch.cat(namespace["outputs"]), namespace["whole"])
    torch.testing.assert_close(namespace["state"].hidden, namespace["hidden"])
    assert STREAMING in README.read_text(encoding="utf-8"), "README.md must show the streaming snippet verbatim"
