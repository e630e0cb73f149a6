"""Training must learn on characters and on subwords too: QRNN and LSTM models fit a small
deterministic corpus far below its unigram perplexity within a few hundred steps (tiny models,
CPU). As tests/training/test_learning.py for words: a learning rate of 0, a tokenizer that scrambles
the ids or a model that ignores its input would stay near the unigram perplexity.
"""

import math
from pathlib import Path

import pytest

from qrnn_lm.config import load_config
from qrnn_lm.data import Corpus
from qrnn_lm.data.subword import SubwordTokenizer
from qrnn_lm.data.tokenizer import CharTokenizer
from qrnn_lm.training import train

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "tiny.toml"
SENTENCE = "the cat sat on the red mat then"
VOCAB_SIZE = 280  # the sentence's characters, 256 byte pieces, <unk>, <eos> and a few merges


@pytest.fixture(scope="module")
def cycle_corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data") / "cycle"
    folder.mkdir()
    for name, lines in (("train.txt", 100), ("valid.txt", 5), ("test.txt", 5)):
        (folder / name).write_text((SENTENCE + "\n") * lines, encoding="utf-8")
    return folder


def unigram_ppl(ids) -> float:
    """Perplexity of the test split's unigram distribution on itself."""
    ids = ids.tolist()
    counts = {i: ids.count(i) for i in set(ids)}
    return math.exp(-sum(c * math.log(c / len(ids)) for c in counts.values()) / len(ids))


EPOCHS = {"char": 5, "subword": 15}  # about 400 and 550 steps (a subword line is fewer tokens)
LSTM = ['model.rnn="lstm"', "model.zoneout=0"]  # tiny.toml's zoneout is a QRNN setting


@pytest.mark.parametrize("tokenizer", ["char", "subword"])
@pytest.mark.parametrize("rnn", [[], LSTM], ids=["qrnn", "lstm"])
def test_training_on_characters_and_subwords_learns(cycle_corpus, tmp_path, tokenizer, rnn):
    config = load_config(TINY, [f'data.dataset="{cycle_corpus}"', f'data.tokenizer="{tokenizer}"',
                                f"data.vocab_size={VOCAB_SIZE}", 'train.optimizer="adam"', "train.lr=0.01",
                                f"train.epochs={EPOCHS[tokenizer]}", *rnn])
    results = train(config, tmp_path / "run", device="cpu", progress=False)
    reader = CharTokenizer() if tokenizer == "char" else SubwordTokenizer(VOCAB_SIZE)
    test = Corpus.load(cycle_corpus, tokenizer=reader, cache=False).test
    unigram = unigram_ppl(test)
    assert unigram > 4 and len(test) > 60  # the bar below is meaningful
    assert results["steps"] >= 300
    assert results["test_ppl"] < unigram / 3, (results["test_ppl"], unigram)
