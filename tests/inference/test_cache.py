"""The continuous cache pointer: lambda 0 is plain eval, repetition helps (QRNN and LSTM models), a
hand-computed mixture."""

import math

import pytest
import torch

from qrnn_lm.config import ModelConfig, UserError
from qrnn_lm.data import batchify
from qrnn_lm.inference.cache import CacheParams, Collected, cache_log_probs, collect, mixed_loss, search
from qrnn_lm.inference.evaluate import evaluate
from qrnn_lm.models import LanguageModel

VOCAB = 23
THETA = 10.0
RNNS = ["qrnn", "lstm"]


def context_model(rnn="qrnn"):
    """An untrained model whose final states depend enough on the recent words for a dot product
    to find the same context again: wider, one layer (a QRNN one seeing two words), a larger embedding."""
    torch.manual_seed(3)
    model = LanguageModel(VOCAB, ModelConfig(rnn=rnn, emb_size=64, hidden_size=64, num_layers=1, first_window=2))
    with torch.no_grad():
        model.embedding.weight.mul_(10)
    return model


def make_model(seed=0, rnn="qrnn"):
    torch.manual_seed(seed)
    config = ModelConfig(rnn=rnn, emb_size=8, hidden_size=10, num_layers=2, zoneout=0.2 if rnn == "qrnn" else 0.0,
                         weight_drop=0.3)
    return LanguageModel(VOCAB, config)


@pytest.mark.parametrize("rnn", RNNS)
@pytest.mark.parametrize("bptt", [7, 50])
def test_lambda_zero_equals_plain_eval_exactly(bptt, rnn):
    model = make_model(rnn=rnn)
    source = batchify(torch.randint(0, VOCAB, (301,), generator=torch.Generator().manual_seed(1)), 1)
    collected = collect(model, source, bptt)
    log_p_cache = cache_log_probs(collected, window=20, thetas=[1.0])[0]
    plain = evaluate(model, source, bptt)
    assert mixed_loss(collected, log_p_cache, 0.0) == plain
    # and the mixture is continuous there: the per-token path agrees with the segment sums
    assert mixed_loss(collected, log_p_cache, 1e-12) == pytest.approx(plain, rel=1e-6)


@pytest.mark.parametrize("rnn", RNNS)
def test_the_cache_lowers_perplexity_on_long_range_repetition(rnn):
    # A random 60-word "paragraph" said three times: an untrained model cannot predict it, the
    # cache (window 200 > 60) points at the earlier occurrences of the same context.
    model = context_model(rnn)
    block = torch.randint(0, VOCAB, (60,), generator=torch.Generator().manual_seed(2))
    source = batchify(torch.cat([block, block, block]), 1)
    collected = collect(model, source, 10)
    plain = mixed_loss(collected, torch.empty(0), 0.0)
    cached = mixed_loss(collected, cache_log_probs(collected, 200, [THETA])[0], 0.3)
    assert math.exp(cached) < 0.5 * math.exp(plain)  # about 26 -> 11 here


def test_a_hand_computed_mixture():
    # Three steps, E = 2. Step 2's cache holds steps 0 and 1 (targets 4, 5); its target is 4.
    hidden = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0]])
    targets = torch.tensor([4, 5, 4])
    p_model = torch.tensor([0.5, 0.25, 0.2], dtype=torch.float64)
    collected = Collected(hidden, targets, p_model.log(), bptt=10)
    theta, lambd = 0.5, 0.25
    # step 1: cache {step 0 -> 4}; target 5 not in it: p = (1 - l) * 0.25
    # step 2: scores theta * (h2 . h0, h2 . h1) = (1, 0); attention on step 0 = e / (e + 1)
    attention = math.e / (math.e + 1)
    expected = -(math.log(0.5) + math.log((1 - lambd) * 0.25)
                 + math.log((1 - lambd) * 0.2 + lambd * attention)) / 3
    log_p_cache = cache_log_probs(collected, window=5, thetas=[theta])[0]
    assert mixed_loss(collected, log_p_cache, lambd) == pytest.approx(expected, rel=1e-12)
    # a window of 1 sees only step 1 (target 5) at step 2: no hit there either
    log_p_cache = cache_log_probs(collected, window=1, thetas=[theta])[0]
    expected = -(math.log(0.5) + math.log(0.75 * 0.25) + math.log(0.75 * 0.2)) / 3
    assert mixed_loss(collected, log_p_cache, lambd) == pytest.approx(expected, rel=1e-12)


def test_blocks_do_not_change_the_result():
    torch.manual_seed(0)
    collected = Collected(torch.randn(50, 4), torch.randint(0, 3, (50,)), torch.full((50,), -1.0), bptt=7)
    whole = cache_log_probs(collected, 9, [0.5, 1.0], block=64)
    pieces = cache_log_probs(collected, 9, [0.5, 1.0], block=4)
    assert torch.allclose(whole, pieces, equal_nan=True, atol=1e-12)


def test_search_picks_the_best_pair_of_its_grid():
    model = context_model()
    block = torch.randint(0, VOCAB, (40,), generator=torch.Generator().manual_seed(2))
    collected = collect(model, batchify(torch.cat([block, block]), 1), 10)
    theta, lambd, loss, grid = search(collected, 100, thetas=(1.0, THETA), lambdas=(0.0, 0.2))
    assert loss == min(grid.values()) == grid[(theta, lambd)]
    assert lambd == 0.2  # repetition: some cache beats none


@pytest.mark.parametrize("params", [CacheParams(window=0), CacheParams(theta=-1), CacheParams(lambd=1.5)])
def test_bad_parameters_are_user_errors(params):
    with pytest.raises(UserError):
        params.check()


def test_eval_cli_with_the_cache_and_its_search(tmp_path):
    from typer.testing import CliRunner

    from qrnn_lm.cli.commands import app
    from qrnn_lm.inference.evaluate import evaluate_checkpoint

    from tests.inference.test_evaluate import write_checkpoint

    path, corpus, model = write_checkpoint(tmp_path)
    plain = evaluate_checkpoint(path, split="valid", device="cpu", progress=False)
    runner = CliRunner()
    result = runner.invoke(app, ["eval", str(path), "--split", "valid", "--cache-lambda", "0.2", "--no-progress",
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert f"ppl {plain['ppl']:.2f} -> " in result.output and "window 500, theta 1, lambda 0.2" in result.output
    result = runner.invoke(app, ["eval", str(path), "--cache-search", "--no-progress", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "valid: ppl" in result.output and "best of the grid" in result.output and "test: ppl" in result.output
    for args, fragment in ((["--cache", "-b", "2"], "--batch-size 1"), (["--cache-window", "0"], "--cache-window"),
                           (["--cache-search", "--cache-theta", "1"], "--cache-search")):
        result = runner.invoke(app, ["eval", str(path), "--no-progress", *args])
        assert result.exit_code == 1 and "error: " in result.stderr and fragment in result.stderr, result.output
