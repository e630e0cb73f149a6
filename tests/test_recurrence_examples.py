"""The library examples of the README and docs/recurrences.md, run as written and checked against
direct loops.

Each snippet below is the exact text of a code block there. The tests execute it and compare what
it computes with a plain step-by-step loop; the page that shows a snippet must show it verbatim.
"""

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
README, RECURRENCES = ROOT / "README.md", ROOT / "docs" / "recurrences.md"

REPLACE_LSTM = '''\
import torch
from qrnn_lm import QRNN

seq_len, batch_size, hidden_size = 7, 20, 256
device = "cuda" if torch.cuda.is_available() else "cpu"
X = torch.rand(seq_len, batch_size, hidden_size, device=device, requires_grad=True)

qrnn = QRNN(hidden_size, hidden_size, num_layers=2, dropout=0.4).to(device)
output, hidden = qrnn(X)

print(output.size(), hidden.size())
'''

BIDIRECTIONAL_PACKED = '''\
import torch
from torch.nn.utils.rnn import pack_sequence, pad_packed_sequence
from qrnn_lm import QRNN

sequences = [torch.randn(length, 32) for length in (5, 9, 3)]  # variable lengths
qrnn = QRNN(32, 64, num_layers=2, window=2, bidirectional=True)
packed_output, hidden = qrnn(pack_sequence(sequences, enforce_sorted=False))
output, lengths = pad_packed_sequence(packed_output)  # [9, 3, 128], zeros past each length
# hidden: [num_layers * 2, 3, 64], each sequence's own final state, in nn.LSTM's order
'''

EMA = '''\
import torch
from qrnn_lm import forget_mult

def ema(x, alpha, m0=None):
    """Exponential moving average of x [T, B, H] over time: m_t = alpha * x_t + (1 - alpha) * m_{t-1}."""
    return forget_mult(torch.full_like(x, alpha), x, m0)

prices = torch.randn(250, 4, 3).cumsum(0)  # [T, B, H]
smooth = ema(prices, alpha=0.1, m0=prices[0])
'''

MIN_GRU = '''\
import torch
from torch import nn
from qrnn_lm import forget_mult

class MinGRU(nn.Module):
    """minGRU: h_t = (1 - z_t) * h_{t-1} + z_t * h~_t, z_t = sigmoid(W_z x_t), h~_t = W_h x_t.

    That is ForgetMult with f = z and x = h~: both depend on x_t only, so one matrix product
    computes them for all steps and the recurrence is a single fast elementwise scan.
    """

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.linear = nn.Linear(input_size, 2 * hidden_size)  # [W_z; W_h] in one matmul

    def forward(self, x, h0=None):  # x: [T, B, input_size], h0: [B, hidden_size]
        z, h_tilde = self.linear(x).chunk(2, dim=-1)
        h = forget_mult(torch.sigmoid(z), h_tilde, h0)  # [T, B, hidden_size]
        return h, h[-1]
'''


def run(snippet):
    namespace = {"__name__": "readme_example"}
    exec(compile(snippet, "<README snippet>", "exec"), namespace)
    return namespace


def test_replace_your_lstm_example_runs(capsys):
    namespace = run(REPLACE_LSTM)
    assert capsys.readouterr().out.strip() == "torch.Size([7, 20, 256]) torch.Size([2, 20, 256])"
    namespace["output"].sum().backward()
    assert namespace["X"].grad is not None


def test_bidirectional_packed_example_gives_the_stated_shapes():
    namespace = run(BIDIRECTIONAL_PACKED)
    assert namespace["output"].shape == (9, 3, 128)
    assert namespace["hidden"].shape == (4, 3, 64)
    assert namespace["lengths"].tolist() == [5, 9, 3]
    assert (namespace["output"][5:, 0] == 0).all()


def test_ema_example_matches_a_direct_loop():
    namespace = run(EMA)
    prices, smooth = namespace["prices"], namespace["smooth"]
    average = prices[0]
    for t in range(prices.shape[0]):
        average = 0.1 * prices[t] + 0.9 * average
        torch.testing.assert_close(smooth[t], average)


def test_min_gru_example_matches_a_direct_loop():
    namespace = run(MIN_GRU)
    torch.manual_seed(0)
    layer = namespace["MinGRU"](5, 6)
    x, h0 = torch.randn(9, 3, 5), torch.randn(3, 6)
    h, last = layer(x, h0)
    state = h0
    for t in range(9):
        z = torch.sigmoid(x[t] @ layer.linear.weight[:6].T + layer.linear.bias[:6])
        h_tilde = x[t] @ layer.linear.weight[6:].T + layer.linear.bias[6:]
        state = (1 - z) * state + z * h_tilde
        torch.testing.assert_close(h[t], state)
    torch.testing.assert_close(last, state)
    h.sum().backward()
    assert layer.linear.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("snippet,marker,page", [
    (REPLACE_LSTM, "qrnn = QRNN(hidden_size, hidden_size, num_layers=2", README),
    (BIDIRECTIONAL_PACKED, "bidirectional=True)\npacked_output", README),
    (EMA, "def ema(", RECURRENCES),
    (MIN_GRU, "class MinGRU", RECURRENCES),
])
def test_the_pages_show_the_snippets_verbatim(snippet, marker, page):
    # Every example is on its page: one removed (or renamed) there fails here rather than
    # skipping, so the tested snippet and the shown one cannot part silently.
    text = page.read_text(encoding="utf-8")
    assert marker in text, (f"{page.name} no longer shows this example (no {marker!r}): put it back, "
                            "or remove it from tests/test_recurrence_examples.py too")
    assert snippet in text, f"{page.name} and tests/test_recurrence_examples.py disagree on this example"
