"""Sampling: filtering, reproducibility, prompt handling and state carrying, on a tiny fake model.

The vocabulary is the real ``qrnn_lm.data.Vocab``; the fake model exposes the documented
interface (``reset()``, ``forward(tokens [T, B], hidden) -> (logits [T, B, V], hidden, raw,
dropped)``) and records its calls, so these tests need neither the real model nor data files.
"""

import math

import pytest
import torch

from qrnn_lm.inference.generate import (
    GenerationError,
    check_sampling,
    encode_prompt,
    filter_logits,
    generate,
    render,
)
from qrnn_lm.config import UserError
from qrnn_lm.data import Vocab

WORDS = ["<eos>", "<unk>", "the", "cat", "sat", "on", "a", "mat", "dog", "ran"]


class FakeModel(torch.nn.Module):
    """Random but fixed logits per (previous token, number of tokens seen so far).

    The hidden state is the count of tokens seen, so the output depends on it being carried.
    """

    def __init__(self, vocab_size, seed=0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.table = torch.nn.Parameter(torch.randn(vocab_size, 64, vocab_size, generator=generator))
        self.calls = []  # (input ids, hidden given)
        self.resets = 0

    def reset(self):
        self.resets += 1

    def forward(self, tokens, hidden=None):
        assert tokens.dtype == torch.long and tokens.dim() == 2 and tokens.shape[1] == 1
        self.calls.append((tokens[:, 0].tolist(), hidden))
        seen = 0 if hidden is None else int(hidden)
        logits = []
        for t, token in enumerate(tokens[:, 0].tolist()):
            logits.append(self.table[token, (seen + t) % 64])
        logits = torch.stack(logits).unsqueeze(1)  # [T, 1, V]
        new_hidden = torch.tensor(seen + tokens.shape[0])
        return logits, new_hidden, None, None


@pytest.fixture
def vocab():
    return Vocab(WORDS)


def test_same_seed_gives_the_same_text_and_different_seeds_differ(vocab):
    model = FakeModel(len(vocab))
    first = list(generate(model, vocab, "the cat", num_tokens=40, seed=7))
    again = list(generate(model, vocab, "the cat", num_tokens=40, seed=7))
    other = list(generate(model, vocab, "the cat", num_tokens=40, seed=8))
    assert len(first) == 40 and all(token in WORDS for token in first)
    assert first == again
    assert first != other


def test_prompt_is_fed_once_then_one_token_at_a_time_carrying_the_hidden_state(vocab):
    model = FakeModel(len(vocab))
    tokens = list(generate(model, vocab, "the cat sat", num_tokens=3, seed=0))
    assert model.resets == 1
    # The prompt in one call with no hidden state, then each sampled token (but the last) fed back.
    assert [ids for ids, _ in model.calls] == [
        [2, 3, 4],
        [vocab.stoi[tokens[0]]],
        [vocab.stoi[tokens[1]]],
    ]
    assert [None if h is None else int(h) for _, h in model.calls] == [None, 3, 4]


@pytest.mark.parametrize("rnn", ["qrnn", "lstm"])
def test_a_real_model_samples_from_the_logits_of_the_whole_text_so_far(vocab, rnn):
    """The state carried from call to call (h and c for an LSTM) stands for all the text so far."""
    from qrnn_lm.config import ModelConfig
    from qrnn_lm.models import LanguageModel

    torch.manual_seed(0)
    model = LanguageModel(len(vocab), ModelConfig(rnn=rnn, emb_size=8, hidden_size=12, num_layers=2)).eval()
    seen = []  # the last position's logits of each call generation makes
    hook = model.register_forward_hook(lambda module, args, output: seen.append(output[0][-1, 0].detach()))
    words = list(generate(model, vocab, "the cat", num_tokens=6, seed=0))
    hook.remove()
    ids = [vocab.stoi[word] for word in ["the", "cat", *words]]
    assert len(seen) == 6
    for step, logits in enumerate(seen):
        model.reset()
        with torch.no_grad():
            whole = model(torch.tensor(ids[: 2 + step]).view(-1, 1))[0]  # [T, 1, V]: the text from zeros
        torch.testing.assert_close(logits, whole[-1, 0])


def test_generation_is_lazy(vocab):
    model = FakeModel(len(vocab))
    stream = generate(model, vocab, "the", num_tokens=1000, seed=0)
    assert model.calls == []  # nothing runs before the first token is asked for
    next(stream), next(stream)
    assert len(model.calls) == 2


def test_top_k_one_is_greedy_whatever_the_seed(vocab):
    model = FakeModel(len(vocab))
    runs = [list(generate(model, vocab, "a dog", num_tokens=12, top_k=1, seed=seed)) for seed in range(3)]
    assert runs[0] == runs[1] == runs[2]
    # Greedy by hand: follow the argmax of the fake model's table.
    token, seen, expected = vocab.stoi["dog"], 2, []
    for _ in range(12):
        token = int(model.table[token, (seen - 1) % 64].argmax())
        expected.append(WORDS[token])
        seen += 1
    assert runs[0] == expected


def test_filter_logits_top_k_keeps_exactly_k_even_with_ties():
    logits = torch.tensor([1.0, 3.0, 3.0, 3.0, 0.5])
    kept = torch.isfinite(filter_logits(logits, top_k=2))
    assert int(kept.sum()) == 2 and not kept[0] and not kept[4]
    assert torch.isfinite(filter_logits(logits, top_k=0)).all()
    assert torch.isfinite(filter_logits(logits, top_k=99)).all()


@pytest.mark.parametrize("top_p, kept", [(0.4, [0]), (0.75, [0, 1]), (0.85, [0, 1, 2]), (1.0, [0, 1, 2, 3])])
def test_filter_logits_top_p_keeps_the_smallest_nucleus(top_p, kept):
    probs = torch.tensor([0.15, 0.5, 0.05, 0.3])  # sorted: index 1, 3, 0, 2
    order = [1, 3, 0, 2]
    filtered = filter_logits(probs.log(), top_p=top_p)
    assert sorted(torch.isfinite(filtered).nonzero().flatten().tolist()) == sorted(order[i] for i in kept)


def test_filter_logits_temperature_scales():
    logits = torch.tensor([2.0, -4.0, 1.0])
    assert torch.allclose(torch.softmax(filter_logits(logits, temperature=0.5), -1), torch.softmax(logits * 2, -1))


@pytest.mark.parametrize("temperature", [1e-45, 1e-30, 1e-8])
def test_a_tiny_temperature_samples_greedily_without_nan(vocab, temperature):
    """logits / 1e-45 overflowed to inf and inf - inf to NaN, which crashed the sampling."""
    model = FakeModel(len(vocab))
    logits = model.table[vocab.stoi["the"], 0].detach()
    filtered = filter_logits(logits, temperature=temperature, top_p=0.9)
    assert not filtered.isnan().any() and torch.softmax(filtered, -1).max() == 1.0
    first = next(generate(model, vocab, "the", num_tokens=1, temperature=temperature, seed=0))
    assert vocab.stoi[first] == int(logits.argmax())


def test_sampled_tokens_stay_inside_the_nucleus(vocab):
    model = FakeModel(len(vocab))
    logits = model.table[vocab.stoi["the"], 0].detach()  # what the model gives after the prompt "the"
    allowed = set(torch.isfinite(filter_logits(logits, top_p=0.5)).nonzero().flatten().tolist())
    assert len(allowed) < len(vocab)
    firsts = {vocab.stoi[next(generate(model, vocab, "the", num_tokens=1, top_p=0.5, seed=s))] for s in range(30)}
    assert firsts <= allowed


def test_unknown_prompt_words_map_to_unk_and_are_reported(vocab):
    encoded = encode_prompt(vocab, "the zebra sat  quietly")
    assert encoded.ids == [2, 1, 4, 1]
    assert encoded.unknown == ["zebra", "quietly"]


def test_unknown_words_without_unk_in_the_vocabulary_are_an_error():
    vocab = Vocab([word for word in WORDS if word != "<unk>"])
    with pytest.raises(GenerationError, match="zebra, quietly are not in the vocabulary"):
        encode_prompt(vocab, "the zebra quietly")
    assert encode_prompt(vocab, "the cat").ids == [1, 2]


def test_no_prompt_starts_a_fresh_line(vocab):
    assert encode_prompt(vocab, None).ids == [vocab.stoi["<eos>"]]


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t"])
def test_empty_prompt_is_a_one_line_user_error(vocab, prompt):
    with pytest.raises(GenerationError, match="empty after tokenisation") as info:
        list(generate(FakeModel(len(vocab)), vocab, prompt, num_tokens=1))
    assert isinstance(info.value, UserError) and isinstance(info.value, ValueError)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(num_tokens=0), "tokens must be >= 1, got 0"),
        (dict(temperature=0.0), "--temperature must be > 0, got 0.0"),
        (dict(temperature=math.inf), "--temperature must be > 0, got inf"),
        (dict(temperature=-1.0), "temperature"),
        (dict(temperature=math.nan), "temperature"),
        (dict(top_k=-1), "top-k must be >= 0"),
        (dict(top_p=0.0), r"top-p must be in \(0, 1\]"),
        (dict(top_p=1.5), "got 1.5"),
    ],
)
def test_bad_sampling_values_are_rejected_before_the_model_runs(vocab, options, message):
    values = dict(num_tokens=5, temperature=1.0, top_k=0, top_p=1.0) | options
    with pytest.raises(GenerationError, match=message):
        check_sampling(**values)
    model = FakeModel(len(vocab))
    with pytest.raises(GenerationError):
        generate(model, vocab, "the", **values)  # raised eagerly, not on first next()
    assert model.calls == []


def test_render_turns_eos_into_newlines():
    pieces = list(render(["the", "cat", "<eos>", "a", "dog", "<eos>", "<eos>", "ran"]))
    assert "".join(pieces) == "the cat\na dog\n\nran"
    assert "".join(render(["sat", "<eos>"], first=False)) == " sat\n"
