"""An independent, straightforward transcription of the original pytorch-qrnn forward, for tests.

It builds the concatenated window ``[x_t, x_{t-1}, ...]`` with ``torch.cat`` and runs one Linear over
it, as salesforce/pytorch-qrnn does, and the recurrence with the naive reference loop. The layers
under test compute the window differently (per-block matrix products, shifted), so agreement means
the same function.
"""

import torch
import torch.nn.functional as nnf

from qrnn_lm.ops.forget_mult.naive import forget_mult_reference


def window_source(X, window, prev=None, reverse=False):
    """``[T, B, window * I]``: ``[x_t, x_{t-1}, ...]`` (``[x_t, x_{t+1}, ...]`` if reverse), zeros outside."""
    seq_len = X.shape[0]
    pad = X.new_zeros(window - 1, *X.shape[1:])
    if reverse:
        future = torch.cat([X, pad])
        return torch.cat([future[s:s + seq_len] for s in range(window)], dim=2)
    past = torch.cat([pad if prev is None else prev, X])  # X[t] is past[window - 1 + t]
    return torch.cat([past[window - 1 - s:window - 1 - s + seq_len] for s in range(window)], dim=2)


def original_layer(X, weight, bias, hidden=None, window=1, output_gate=True, zoneout_eval=0.0,
                   prev=None, reverse=False):
    """One layer as the original computes it (eval mode). Returns ``(H [T, B, H], C[-1] [1, B, H])``."""
    Y = nnf.linear(window_source(X, window, prev, reverse), weight, bias)
    if output_gate:
        Z, F, O = Y.chunk(3, dim=2)
    else:
        Z, F = Y.chunk(2, dim=2)
    Z, F = torch.tanh(Z), torch.sigmoid(F)
    if zoneout_eval:
        F = F * (1 - zoneout_eval)
    C = forget_mult_reference(F, Z, hidden, reverse=reverse)
    H = torch.sigmoid(O) * C if output_gate else C
    return H, (C[:1] if reverse else C[-1:])


def original_qrnn(X, state_dict, num_layers, hidden=None, **layer_kwargs):
    """The original unidirectional ``QRNN`` stack over a state_dict with its key names."""
    final = []
    for i in range(num_layers):
        X, h_n = original_layer(
            X, state_dict[f"layers.{i}.linear.weight"], state_dict.get(f"layers.{i}.linear.bias"),
            None if hidden is None else hidden[i], **layer_kwargs)
        final.append(h_n)
    return X, torch.cat(final, 0)


def test_the_transcription_matches_a_hand_written_step_loop():
    """Guard the guard: window 2, every product written out per step with matrix products."""
    torch.manual_seed(0)
    X, prev = torch.randn(4, 2, 3), torch.randn(1, 2, 3)
    weight, bias, hidden = torch.randn(6, 6), torch.randn(6), torch.randn(2, 2)
    H, last = original_layer(X, weight, bias, hidden, window=2, prev=prev)
    c = hidden
    for t in range(4):
        x_before = prev[0] if t == 0 else X[t - 1]
        y = X[t] @ weight[:, :3].T + x_before @ weight[:, 3:].T + bias  # [B, 6]
        z, f, o = torch.tanh(y[:, 0:2]), torch.sigmoid(y[:, 2:4]), torch.sigmoid(y[:, 4:6])
        c = f * z + (1 - f) * c
        torch.testing.assert_close(H[t], o * c)
    torch.testing.assert_close(last[0], c)
