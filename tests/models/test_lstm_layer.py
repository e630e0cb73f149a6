"""The AWD-LSTM layer: weight drop on weight_hh_l0 really reaches nn.LSTM's recurrence each
forward (nn.LSTM caches its weights in ``_flat_weights``), eval is a plain nn.LSTM, the state
layout is h then c, and the shared mask generator draws its masks. (The export scan, lstm_scan, is
checked through exported programs in tests/inference/test_export.py: called eagerly, torch's scan
compiles itself with dynamo and leaves state behind that breaks a later ONNX export of a scan.)"""

import pytest
import torch
from torch import nn

from qrnn_lm.config import ModelConfig
from qrnn_lm.models import LanguageModel, LSTMLayer, WeightDrop
from qrnn_lm.training.state import SharedMasks

I, H, T, B = 4, 5, 6, 3


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(T, B, I, generator=g), torch.randn(B, 2 * H, generator=g)


def plain_lstm(layer: LSTMLayer, weight_hh: torch.Tensor) -> nn.LSTM:
    """An nn.LSTM with ``layer``'s weights and ``weight_hh`` as its hidden-to-hidden weight."""
    plain = nn.LSTM(I, H)
    with torch.no_grad():
        for name in ("weight_ih_l0", "bias_ih_l0", "bias_hh_l0"):
            getattr(plain, name).copy_(getattr(layer.lstm, name))
        plain.weight_hh_l0.copy_(weight_hh)
    return plain


def record_masks(layer: LSTMLayer) -> list[torch.Tensor]:
    """Each weight the WeightDrop parametrization hands out, in order."""
    drawn = []
    layer.lstm.parametrizations.weight_hh_l0[0].register_forward_hook(lambda m, args, out: drawn.append(out.detach()))
    return drawn


def run(module, x, state):
    h0, c0 = state.unsqueeze(0).chunk(2, dim=-1)
    output, (h_n, c_n) = module(x, (h0.contiguous(), c0.contiguous()))
    return output, h_n, c_n


def test_training_forwards_each_use_their_own_freshly_dropped_weight():
    torch.manual_seed(0)
    layer = LSTMLayer(I, H, weight_drop=0.5).train()
    drawn = record_masks(layer)
    x, state = inputs()
    first, _ = layer(x, state)
    second, _ = layer(x, state)
    assert not torch.allclose(first, second)  # a new mask per forward, not the weight cached at registration
    assert len(drawn) == 2  # one mask per forward (nn.LSTM reads the weight 4 times a call)
    raw = layer.lstm.parametrizations.weight_hh_l0.original
    for weight, output in zip(drawn, (first, second)):
        assert (weight == 0).any() and not torch.equal(weight, raw)
        expected, *_ = run(plain_lstm(layer, weight), x, state)
        torch.testing.assert_close(output, expected)  # the recurrence ran on exactly that weight


def test_eval_is_deterministic_and_a_plain_lstm_with_the_raw_weight():
    torch.manual_seed(0)
    layer = LSTMLayer(I, H, weight_drop=0.5)
    x, state = inputs()
    layer(x, state)  # a training forward first: eval must not keep its dropped weight
    layer.eval()
    first, first_state = layer(x, state)
    second, _ = layer(x, state)
    assert torch.equal(first, second)
    expected, h_n, c_n = run(plain_lstm(layer, layer.lstm.parametrizations.weight_hh_l0.original), x, state)
    torch.testing.assert_close(first, expected)
    torch.testing.assert_close(first_state, torch.cat([h_n, c_n], dim=-1))


def test_the_gradient_reaches_the_raw_weight_through_the_mask():
    torch.manual_seed(0)
    layer = LSTMLayer(I, H, weight_drop=0.5).train()
    drawn = record_masks(layer)
    x, state = inputs()
    output, new_state = layer(x, state)
    (output.pow(2).sum() + new_state.pow(2).sum()).backward()
    grad = layer.lstm.parametrizations.weight_hh_l0.original.grad
    dropped = drawn[0] == 0
    assert grad is not None and grad[~dropped].abs().sum() > 0
    assert torch.equal(grad[dropped], torch.zeros_like(grad[dropped]))  # a dropped weight gets no gradient


def test_the_state_is_h_then_c_in_and_out():
    torch.manual_seed(0)
    layer = LSTMLayer(I, H).eval()
    x, state = inputs(seed=1)
    output, new_state = layer(x, state)
    assert output.shape == (T, B, H) and new_state.shape == (1, B, 2 * H) and layer.state_size == 2 * H
    h0, c0 = state[:, :H], state[:, H:]
    expected, (h_n, c_n) = layer.lstm(x, (h0.unsqueeze(0).contiguous(), c0.unsqueeze(0).contiguous()))
    torch.testing.assert_close(output, expected)
    torch.testing.assert_close(new_state[0, :, :H], h_n[0])
    torch.testing.assert_close(new_state[0, :, H:], c_n[0])
    torch.testing.assert_close(new_state[0, :, :H], output[-1])  # h_n is the last output
    zeros, _ = layer(x, None)
    torch.testing.assert_close(zeros, layer(x, torch.zeros(B, 2 * H))[0])
    layer.reset()  # nothing to forget; no stray attribute
    assert not hasattr(layer, "prevX") and not hasattr(layer.lstm, "prevX")


def test_the_shared_generator_draws_the_lstm_masks():
    """Two ranks' models with differently seeded own streams draw the same weight-drop masks."""
    config = ModelConfig(rnn="lstm", emb_size=6, hidden_size=8, num_layers=2, dropout_emb=0, dropout_input=0,
                         dropout_hidden=0, dropout_output=0, weight_drop=0.5)
    tokens = torch.randint(11, (5, 2), generator=torch.Generator().manual_seed(3))
    outputs = []
    for own_seed in (100, 101):
        torch.manual_seed(0)
        model = LanguageModel(11, config)
        drops = [m for m in model.modules() if isinstance(m, WeightDrop)]
        assert len(drops) == 2  # what the trainer hands SharedMasks: one per LSTM
        SharedMasks(drops, torch.device("cpu"), seed=5)
        torch.manual_seed(own_seed)
        outputs.append([model(tokens)[0] for _ in range(2)])
    torch.testing.assert_close(outputs[0], outputs[1])
    assert not torch.allclose(outputs[0][0], outputs[0][1])  # still a fresh mask per step


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (cuDNN re-flattens the dropped weight)")
def test_weight_drop_through_cudnn():
    torch.manual_seed(0)
    layer = LSTMLayer(I, H, weight_drop=0.5).cuda().train()
    drawn = record_masks(layer)
    x, state = (t.cuda() for t in inputs())
    first, _ = layer(x, state)
    second, _ = layer(x, state)
    assert not torch.allclose(first, second) and len(drawn) == 2
    expected, *_ = run(plain_lstm(layer.cpu(), drawn[1].cpu()), x.cpu(), state.cpu())
    torch.testing.assert_close(second.cpu(), expected, rtol=1e-4, atol=1e-5)
    layer.cuda()
    second.pow(2).sum().backward()
    assert layer.lstm.parametrizations.weight_hh_l0.original.grad.abs().sum() > 0
    layer.eval()
    torch.testing.assert_close(layer(x, state)[0], layer(x, state)[0])


def test_bf16_autocast_runs_the_lstm_in_fp32_where_the_cpu_cannot(monkeypatch):
    # oneDNN cannot build a bf16 LSTM on AVX2-only CPUs (AMD Zen 2/3): nn.LSTM under bf16 autocast
    # raises there. The layer must run the recurrence in fp32 instead, and hand back bf16 as
    # autocast would (the adaptive softmax after it needs its input's dtype to match its products).
    from qrnn_lm.models import lstm_layer

    monkeypatch.setattr(lstm_layer, "_cpu_can_run_bf16_lstm", lambda: False)
    torch.manual_seed(0)
    layer = lstm_layer.LSTMLayer(5, 7)
    x, state = torch.randn(4, 3, 5), torch.randn(3, 14)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output, new_state = layer(x.to(torch.bfloat16), state)
    reference, reference_state = layer(x.to(torch.bfloat16).float(), state)
    assert output.dtype == new_state.dtype == torch.bfloat16
    torch.testing.assert_close(output, reference.to(torch.bfloat16), rtol=0, atol=0)
    torch.testing.assert_close(new_state, reference_state.to(torch.bfloat16), rtol=0, atol=0)
