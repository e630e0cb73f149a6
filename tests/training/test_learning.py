"""Training must learn: each optimizer, and each model type (QRNN, LSTM), fits a small
deterministic corpus far below its unigram perplexity within a few hundred steps (tiny model, CPU,
seconds).

Every other training test compares two runs of the same code, so a learning rate of 0 or zeroed
gradients would pass them; these tests fail then. The corpus is one 8-word sentence repeated, so
the next word is determined by the previous two: unigram perplexity is about 7.7 (7 distinct words,
"the" twice, and the end of line) and a model that learned anything ends far below it (about 1.1).
"""

import math
from pathlib import Path

import pytest

from qrnn_lm.config import load_config
from qrnn_lm.training import train

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "tiny.toml"
SENTENCE = "the cat sat on the red mat then"


@pytest.fixture(scope="module")
def cycle_corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data") / "cycle"
    folder.mkdir()
    for name, lines in (("train.txt", 200), ("valid.txt", 10), ("test.txt", 10)):
        (folder / name).write_text((SENTENCE + "\n") * lines, encoding="utf-8")
    return folder


def unigram_ppl(folder: Path) -> float:
    """Perplexity of the unigram distribution of test.txt on itself (words plus <eos>)."""
    tokens = [w for line in (folder / "test.txt").read_text().splitlines() for w in line.split() + ["<eos>"]]
    counts = {w: tokens.count(w) for w in set(tokens)}
    return math.exp(-sum(c * math.log(c / len(tokens)) for c in counts.values()) / len(tokens))


SGD = ['train.optimizer="sgd"', "train.lr=5.0"]  # NT-ASGD as configs/tiny.toml
ADAM = ['train.optimizer="adam"', "train.lr=0.01"]
ADAMW = ['train.optimizer="adamw"', "train.lr=0.01", "train.weight_decay=0.01"]
LSTM = ['model.rnn="lstm"', "model.zoneout=0"]  # tiny.toml's zoneout is a QRNN setting


@pytest.mark.parametrize("rnn, optimizer", [
    ([], SGD), ([], ADAM), ([], ADAMW), (LSTM, SGD), (LSTM, ADAM),
], ids=["qrnn-sgd", "qrnn-adam", "qrnn-adamw", "lstm-sgd", "lstm-adam"])
def test_training_fits_a_deterministic_corpus_far_below_unigram(cycle_corpus, tmp_path, rnn, optimizer):
    config = load_config(TINY, [f'data.dataset="{cycle_corpus}"', "train.epochs=5", *rnn, *optimizer])
    results = train(config, tmp_path / "run", device="cpu", progress=False)
    unigram = unigram_ppl(cycle_corpus)
    assert unigram > 6  # the bar below is meaningful
    assert results["test_ppl"] < unigram / 3, (results["test_ppl"], unigram)


def test_adamw_decays_weights_decoupled_from_the_gradient():
    """With a zero gradient Adam's L2 term is normalised away into a step of ``lr``; AdamW's
    decoupled decay shrinks each weight by exactly ``lr * weight_decay`` times itself."""
    import torch

    from qrnn_lm.training.optimizer import make_optimizer

    model = torch.nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(2.0)
    optimizer = make_optimizer("adamw", model, lr=0.1, weight_decay=0.5)
    model.weight.grad = torch.zeros_like(model.weight)
    optimizer.step()
    assert torch.allclose(model.weight, torch.full_like(model.weight, 2.0 * (1 - 0.1 * 0.5)))
