"""Evaluation: the exact per-token average over a whole split, and the device choice."""

import math
import random

import pytest
import torch
import torch.nn.functional as F

from qrnn_lm.models.checkpoint_file import save_checkpoint
from qrnn_lm.config import Config, DataConfig, ModelConfig, UserError, config_to_dict
from qrnn_lm.data import Corpus, batchify
from qrnn_lm.device import resolve_device
from qrnn_lm.inference.evaluate import evaluate, evaluate_checkpoint
from qrnn_lm.models import LanguageModel, LSTMLayer

VOCAB = 23


def make_model(seed=0):
    torch.manual_seed(seed)
    config = ModelConfig(emb_size=8, hidden_size=10, num_layers=2, zoneout=0.2, weight_drop=0.3)
    return LanguageModel(VOCAB, config)


def direct_mean_loss(model, source):
    """One forward pass over the whole stream: the sum of -log p over every target / their count."""
    model.eval()
    model.reset()
    with torch.no_grad():
        logits, *_ = model(source[:-1])
    losses = F.cross_entropy(logits.reshape(-1, VOCAB), source[1:].reshape(-1), reduction="none")
    return losses.double().mean().item(), losses.numel()


@pytest.mark.parametrize("batch_size, bptt", [(1, 7), (3, 4), (3, 100)])
def test_evaluate_equals_a_direct_computation(batch_size, bptt):
    model = make_model()
    ids = torch.randint(0, VOCAB, (101,), generator=torch.Generator().manual_seed(1))
    source = batchify(ids, batch_size)
    expected, count = direct_mean_loss(model, source)
    assert count == (source.size(0) - 1) * batch_size
    model.train()  # evaluate must switch dropout off itself ...
    got = evaluate(model, source, bptt)
    assert got == pytest.approx(expected, rel=1e-6)
    assert model.training  # ... and restore the mode afterwards


def test_evaluate_with_batch_size_one_scores_every_token_but_the_first():
    model = make_model(seed=2)
    ids = torch.randint(0, VOCAB, (40,), generator=torch.Generator().manual_seed(5))
    model.eval()
    with torch.no_grad():
        logits, *_ = model(ids[:-1, None])
    by_hand = sum(-torch.log_softmax(logits[t, 0], -1)[ids[t + 1]].item() for t in range(39)) / 39
    assert evaluate(model, batchify(ids, 1), 6) == pytest.approx(by_hand, rel=1e-5)


def test_evaluate_resets_the_saved_inputs_first():
    model = make_model()
    source = batchify(torch.randint(0, VOCAB, (30,), generator=torch.Generator().manual_seed(3)), 2)
    first = evaluate(model, source, 5)
    model.eval()
    with torch.no_grad():
        model(torch.randint(0, VOCAB, (4, 2)))  # leaves saved inputs behind
    assert evaluate(model, source, 5) == first


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(UserError, match="unknown device"):
        resolve_device("tpu-ish")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="--device cpu"):
            resolve_device("cuda")


def write_corpus(folder, seed=0):
    rng = random.Random(seed)
    words = "the a cat dog sat ran on mat".split()
    folder.mkdir()
    for name, lines in (("train.txt", 30), ("valid.txt", 8), ("test.txt", 8)):
        text = "\n".join(" ".join(rng.choices(words, k=rng.randint(2, 6))) for _ in range(lines))
        (folder / name).write_text(text + "\n", encoding="utf-8")
    return folder


def write_checkpoint(tmp_path, rnn="qrnn"):
    """A small untrained model (``rnn`` layers) saved as ``tmp_path/best.pt`` for the corpus of
    :func:`write_corpus`: ``(path, corpus, model)``."""
    folder = write_corpus(tmp_path / "corpus")
    corpus = Corpus.load(folder, cache=False)
    torch.manual_seed(0)
    config = Config(name="e", data=DataConfig(dataset=str(folder), bptt=5),
                    model=ModelConfig(rnn=rnn, emb_size=6, hidden_size=8, num_layers=2))
    model = LanguageModel(len(corpus.vocab), config.model)
    payload = {"config": config_to_dict(config), "vocab": corpus.vocab.to_list(), "model": model.state_dict()}
    path = save_checkpoint(tmp_path / "best.pt", payload)
    return path, corpus, model


@pytest.mark.parametrize("rnn", ["qrnn", "lstm"])
def test_evaluate_checkpoint_on_its_dataset(tmp_path, rnn, monkeypatch):
    import qrnn_lm.inference.evaluate as evaluate_module

    path, corpus, model = write_checkpoint(tmp_path, rnn)
    real_evaluate, evaluated = evaluate_module.evaluate, []
    monkeypatch.setattr(evaluate_module, "evaluate", lambda m, *a, **k: (evaluated.append(m), real_evaluate(m, *a, **k))[1])
    result = evaluate_checkpoint(path, split="valid", device="cpu", progress=False)
    # rebuilt from the checkpoint alone, with its own layer type
    assert any(isinstance(layer, LSTMLayer) for layer in evaluated[0].layers) == (rnn == "lstm")
    assert result["tokens"] == corpus.valid.numel() - 1 and result["split"] == "valid"
    assert result["loss"] == pytest.approx(evaluate(model, batchify(corpus.valid, 1), 5), rel=1e-6)
    assert result["ppl"] == pytest.approx(math.exp(result["loss"]))
    batched = evaluate_checkpoint(path, split="test", batch_size=2, device="cpu", progress=False)
    assert batched["tokens"] == (corpus.test.numel() // 2 - 1) * 2
    with pytest.raises(UserError, match="split"):
        evaluate_checkpoint(path, split="dev", progress=False)


def _checkpoint_with_vocab(tmp_path, folder, tokens):
    torch.manual_seed(0)
    config = Config(name="e", data=DataConfig(dataset=str(folder), bptt=5),
                    model=ModelConfig(emb_size=6, hidden_size=8, num_layers=2))
    model = LanguageModel(len(tokens), config.model)
    payload = {"config": config_to_dict(config), "vocab": tokens, "model": model.state_dict()}
    return save_checkpoint(tmp_path / "other.pt", payload)


def test_evaluate_checkpoint_counts_words_outside_its_vocabulary(tmp_path):
    """A checkpoint whose vocabulary lacks "mat" (another dataset's model): every "mat" of the
    split is scored as <unk>, and the result says how many."""
    folder = write_corpus(tmp_path / "corpus")
    own = Corpus.load(folder, cache=False).vocab.to_list()
    path = _checkpoint_with_vocab(tmp_path, folder, [w for w in own if w != "mat"] + ["<unk>"])
    result = evaluate_checkpoint(path, split="valid", device="cpu", progress=False)
    expected = (folder / "valid.txt").read_text().split().count("mat")
    assert expected > 0 and result["unknown_words"] == expected
    same = _checkpoint_with_vocab(tmp_path, folder, own)
    assert evaluate_checkpoint(same, split="valid", device="cpu", progress=False)["unknown_words"] == 0


def test_evaluate_checkpoint_without_unk_refuses_in_one_line(tmp_path):
    folder = write_corpus(tmp_path / "corpus")
    own = Corpus.load(folder, cache=False).vocab.to_list()
    path = _checkpoint_with_vocab(tmp_path, folder, [w for w in own if w not in ("mat", "<unk>")])
    with pytest.raises(UserError, match=r"tokens of .* valid are not in the checkpoint's vocabulary "
                                        r"\(e.g. 'mat'\) and it has no <unk>") as error:
        evaluate_checkpoint(path, split="valid", device="cpu", progress=False)
    assert "\n" not in str(error.value)


def test_eval_command_reports_the_count_and_refuses_without_unk(tmp_path):
    from typer.testing import CliRunner

    from qrnn_lm.cli.commands import app

    folder = write_corpus(tmp_path / "corpus")
    own = Corpus.load(folder, cache=False).vocab.to_list()
    runner = CliRunner()
    path = _checkpoint_with_vocab(tmp_path, folder, [w for w in own if w != "mat"] + ["<unk>"])
    result = runner.invoke(app, ["eval", str(path), "--split", "valid", "--device", "cpu", "--no-progress"])
    expected = (folder / "valid.txt").read_text().split().count("mat")
    assert result.exit_code == 0, result.output
    assert f"note: {expected} tokens are not in the checkpoint's vocabulary" in result.output
    path = _checkpoint_with_vocab(tmp_path, folder, [w for w in own if w not in ("mat", "<unk>")])
    result = runner.invoke(app, ["eval", str(path), "--split", "valid", "--device", "cpu", "--no-progress"])
    assert result.exit_code == 1 and result.output.startswith("error: ") and result.output.count("\n") == 1


def test_perplexity_is_exp_of_the_loss_clamped_against_overflow():
    from qrnn_lm.inference.evaluate import perplexity

    assert perplexity(math.log(5.0)) == pytest.approx(5.0)
    assert perplexity(1e6) == math.exp(700.0)  # a diverged loss: a number, not an OverflowError
