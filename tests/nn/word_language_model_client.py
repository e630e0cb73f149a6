"""A client written the way the common word-language-model examples are (pytorch/examples
``word_language_model``: a model class holding ``nn.GRU``, SGD with clipping, ``repackage_hidden``,
``torch.save(model)``, reload, evaluate, sample word by word).

tests/nn/test_drop_in_client.py runs this file's text as it is, and once more with the class
``nn.GRU`` swapped for ``QRNN`` in the model: the only change a user makes to swap the layer. Not collected
by pytest (no ``test_`` prefix).
"""

import math
import random

import torch
import torch.nn.functional as F
from torch import nn

from qrnn_lm import QRNN  # noqa: F401  (used once the class name is swapped)


class Dictionary:
    def __init__(self):
        self.word2idx, self.idx2word = {}, []

    def add_word(self, word):
        if word not in self.word2idx:
            self.idx2word.append(word)
            self.word2idx[word] = len(self.idx2word) - 1
        return self.word2idx[word]


def tokenize(dictionary, lines):
    ids = [dictionary.add_word(word) for line in lines for word in line.split() + ["<eos>"]]
    return torch.tensor(ids, dtype=torch.int64)


class RNNModel(nn.Module):
    """Container module with an encoder, a recurrent module, and a decoder."""

    def __init__(self, ntoken, ninp, nhid, nlayers, dropout=0.2):
        super().__init__()
        self.ntoken = ntoken
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(ntoken, ninp)
        self.rnn = nn.GRU(ninp, nhid, nlayers, dropout=dropout)
        self.decoder = nn.Linear(nhid, ntoken)
        self.nhid, self.nlayers = nhid, nlayers
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        nn.init.uniform_(self.decoder.weight, -0.1, 0.1)

    def forward(self, input, hidden):
        emb = self.drop(self.encoder(input))
        output, hidden = self.rnn(emb, hidden)
        output = self.drop(output)
        decoded = self.decoder(output).view(-1, self.ntoken)
        return F.log_softmax(decoded, dim=1), hidden

    def init_hidden(self, bsz):
        weight = next(self.parameters())
        return weight.new_zeros(self.nlayers, bsz, self.nhid)


def batchify(data, bsz):
    nbatch = data.size(0) // bsz
    return data.narrow(0, 0, nbatch * bsz).view(bsz, -1).t().contiguous()


def get_batch(source, i, bptt):
    seq_len = min(bptt, len(source) - 1 - i)
    return source[i:i + seq_len], source[i + 1:i + 1 + seq_len].reshape(-1)


def repackage_hidden(h):
    """Wraps hidden states in new Tensors, to detach them from their history."""
    if isinstance(h, torch.Tensor):
        return h.detach()
    return tuple(repackage_hidden(v) for v in h)


def evaluate(model, data_source, bptt, eval_batch_size):
    model.eval()
    total_loss = 0.0
    hidden = model.init_hidden(eval_batch_size)
    with torch.no_grad():
        for i in range(0, data_source.size(0) - 1, bptt):
            data, targets = get_batch(data_source, i, bptt)
            output, hidden = model(data, hidden)
            hidden = repackage_hidden(hidden)
            total_loss += len(data) * F.nll_loss(output, targets).item()
    return total_loss / (len(data_source) - 1)


def train(model, train_data, bptt, batch_size, lr, clip=0.25):
    model.train()
    hidden = model.init_hidden(batch_size)
    for i in range(0, train_data.size(0) - 1, bptt):
        data, targets = get_batch(train_data, i, bptt)
        model.zero_grad()
        hidden = repackage_hidden(hidden)
        output, hidden = model(data, hidden)
        loss = F.nll_loss(output, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        for p in model.parameters():
            p.data.add_(p.grad, alpha=-lr)


def generate(model, dictionary, words, temperature=1.0):
    model.eval()
    hidden = model.init_hidden(1)
    input = torch.randint(len(dictionary.idx2word), (1, 1), dtype=torch.long)
    out = []
    with torch.no_grad():
        for _ in range(words):
            output, hidden = model(input, hidden)
            word_weights = output.squeeze().div(temperature).exp().cpu()
            word_idx = torch.multinomial(word_weights, 1)[0]
            input.fill_(word_idx)
            out.append(dictionary.idx2word[word_idx])
    return out


def main(save_path, epochs=6):
    torch.manual_seed(1111)
    rng = random.Random(1111)
    sentences = ["the cat sat on the mat", "a dog ran in the park", "the bird sang a song",
                 "my friend read the book", "a fish swam in the sea"]
    dictionary = Dictionary()
    train_data = batchify(tokenize(dictionary, [rng.choice(sentences) for _ in range(500)]), 10)
    val_data = batchify(tokenize(dictionary, [rng.choice(sentences) for _ in range(60)]), 5)
    model = RNNModel(len(dictionary.idx2word), 32, 32, 2, dropout=0.1)
    before = evaluate(model, val_data, 10, 5)
    for _ in range(epochs):
        train(model, train_data, bptt=10, batch_size=10, lr=5.0)
    with open(save_path, "wb") as f:
        torch.save(model, f)
    with open(save_path, "rb") as f:
        # The allow-list names the classes of the model that was saved.
        with torch.serialization.safe_globals([type(module) for module in model.modules()]):
            model = torch.load(f, weights_only=True)
        # after load the rnn params are not a continuous chunk of memory
        model.rnn.flatten_parameters()
    after = evaluate(model, val_data, 10, 5)
    return {"model": model, "val_loss_before": before, "val_loss_after": after,
            "uniform_loss": math.log(len(dictionary.idx2word)), "words": generate(model, dictionary, 20)}
