"""The model's decoders: full, chunked and auto softmax give the same loss and gradients; the
adaptive softmax gives exact (normalised) log-probabilities; bad cut-offs are user errors."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from qrnn_lm.config import ConfigError, ModelConfig, UserError
from qrnn_lm.models import LanguageModel

VOCAB = 41
RNNS = ["qrnn", "lstm"]  # the decoders sit on either stack


def config(**changes) -> ModelConfig:
    base = ModelConfig(emb_size=8, hidden_size=12, num_layers=2, first_window=2, window=1, zoneout=0.0,
                       dropout_emb=0.0, dropout_input=0.0, dropout_hidden=0.0, dropout_output=0.0,
                       weight_drop=0.0, tie_weights=True)
    return dataclasses.replace(base, **changes)


def batch(seq_len=6, batch_size=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (seq_len, batch_size), generator=g), torch.randint(0, VOCAB, (seq_len, batch_size), generator=g)


def loss_and_grads(model, inputs, targets):
    model.zero_grad()
    model.reset()
    nll, *_ = model(inputs, None, targets)
    nll.backward()
    return nll.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("rnn", RNNS)
def test_full_and_chunked_give_the_logits_cross_entropy_and_the_same_gradients(rnn):
    torch.manual_seed(0)
    model = LanguageModel(VOCAB, config(rnn=rnn), softmax="full")
    inputs, targets = batch()
    model.reset()
    logits = model(inputs)[0]
    expected = F.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1), reduction="sum")
    full, full_grads = loss_and_grads(model, inputs, targets)
    model.softmax = "chunked"
    chunked, chunked_grads = loss_and_grads(model, inputs, targets)
    torch.testing.assert_close(full, expected.detach())
    torch.testing.assert_close(chunked, full)
    assert full_grads.keys() == chunked_grads.keys()
    for name in full_grads:  # the tied embedding/decoder weight included
        torch.testing.assert_close(chunked_grads[name], full_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_chunked_never_runs_the_decoder_on_all_tokens():
    model = LanguageModel(VOCAB, config(), softmax="chunked")
    calls = []
    model.decoder.register_forward_hook(lambda *args: calls.append(1))
    inputs, targets = batch()
    model(inputs, None, targets)[0].backward()
    assert calls == []  # no [T * B, V] logits from the nn.Linear
    model.softmax = "full"
    with torch.no_grad():  # (in training on the CPU the full loss multiplies by decoder.weight itself)
        model(inputs, None, targets)
    assert calls == [1]  # the hook does see the decoder when it runs


def test_auto_chunks_only_above_the_memory_threshold():
    model = LanguageModel(VOCAB, config(), softmax="auto", softmax_memory_mb=1)
    # 1 MiB of float32 logits is 2**18 / VOCAB tokens.
    limit = 2**18 // VOCAB
    assert not model.uses_chunks(limit)
    assert model.uses_chunks(limit + 1)
    model.softmax = "full"
    assert not model.uses_chunks(10**9)
    model.softmax = "chunked"
    assert model.uses_chunks(1)


@pytest.mark.parametrize("rnn", RNNS)
def test_adaptive_log_probabilities_are_normalised_and_match_its_loss(rnn):
    torch.manual_seed(0)
    model = LanguageModel(VOCAB, config(rnn=rnn, emb_size=16, decoder="adaptive", adaptive_cutoffs=[5, 20]))
    assert isinstance(model.decoder, torch.nn.AdaptiveLogSoftmaxWithLoss)
    model.eval()
    inputs, targets = batch()
    log_probs = model(inputs)[0]  # [T, B, V]
    assert log_probs.shape == (6, 3, VOCAB)
    torch.testing.assert_close(log_probs.logsumexp(-1), torch.zeros(6, 3), atol=1e-5, rtol=0)
    model.reset()
    nll = model(inputs, None, targets)[0]
    expected = -log_probs.gather(2, targets.unsqueeze(2)).sum()
    torch.testing.assert_close(nll, expected)
    nll.backward()
    assert model.decoder.head.weight.grad is not None


def test_adaptive_cutoffs_beyond_the_vocabulary_are_a_user_error():
    with pytest.raises(ConfigError, match="adaptive_cutoffs") as info:
        LanguageModel(VOCAB, config(decoder="adaptive", adaptive_cutoffs=[5, 41]))
    with pytest.raises(ConfigError, match="no features"):
        LanguageModel(VOCAB, config(decoder="adaptive", adaptive_cutoffs=[5, 10, 20]))  # 8 // 64
    assert isinstance(info.value, UserError) and "\n" not in str(info.value)


@pytest.mark.parametrize("rnn", RNNS)
@pytest.mark.parametrize("decoder", ["softmax", "adaptive"])
def test_generation_decodes_only_the_last_position_of_a_long_prompt(decoder, rnn):
    from qrnn_lm.data import Vocab
    from qrnn_lm.inference.generate import generate

    torch.manual_seed(0)
    model = LanguageModel(VOCAB, config(rnn=rnn, emb_size=16, decoder=decoder, adaptive_cutoffs=[5, 20]))
    rows = []
    model.decoder.register_forward_pre_hook(lambda module, args: rows.append(args[0].reshape(-1, 16).size(0)))
    if decoder == "adaptive":  # log_prob, not forward, is what decode calls
        real = model.decoder.log_prob
        model.decoder.log_prob = lambda x: (rows.append(x.size(0)), real(x))[1]
    vocab = Vocab.from_list(["<eos>", "<unk>"] + [f"w{i}" for i in range(VOCAB - 2)])
    prompt = " ".join(f"w{i % 30}" for i in range(50))
    words = list(generate(model, vocab, prompt, num_tokens=3, seed=0))
    assert len(words) == 3 and rows == [1, 1, 1]  # the 50-word prompt, then 2 fed-back tokens
    with torch.no_grad():
        model.reset()
        full = model(torch.tensor([[1], [2], [3]]))[0]
        model.reset()
        last = model(torch.tensor([[1], [2], [3]]), last_only=True)[0]
    assert last.shape == (1, 1, VOCAB)
    torch.testing.assert_close(last, full[-1:])
