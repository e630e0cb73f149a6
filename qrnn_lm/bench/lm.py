"""``qrnn-lm bench lm``: training throughput of the language model, QRNN against LSTM layers.

Shape letters: T = BPTT length, B = batch size, E = embedding size, V = vocabulary size.

Both models are :class:`qrnn_lm.models.QRNNLanguageModel` with the same sizes, embedding,
dropouts, tied decoder and loss (cross-entropy + AR/TAR); in the LSTM model every QRNN layer is
replaced by an ``nn.LSTM`` layer of the same input and hidden size. Weight drop is off in both
(DropConnect on an ``nn.LSTM``'s weights would take it off PyTorch's fused LSTM kernels).

A training step is: forward, loss, backward, gradient clipping, SGD step, on random tokens.
Throughput = ``T * B / median step time``; both models are timed round-robin in the same run.

Time shares (the paper's Figure 4, left) come from a separately instrumented step: the graph is
cut at the boundaries of the parts (``detach().requires_grad_()``), so each part's forward and
backward run on their own between synchronised timers: embedding (lookup + embedding and input
dropout), recurrent layers (+ dropout between them), softmax (output dropout, decoder, loss),
optimizer (clipping + SGD step + zeroing the gradients).
"""

from __future__ import annotations

import dataclasses
import statistics

import torch
from torch import nn

from ..config import ModelConfig, TrainConfig
from ..models import QRNNLanguageModel, embedding_dropout
from ..training.step import regularized_loss
from .timing import SectionTimer, time_round_robin

__all__ = ["LSTMLayer", "build_models", "run", "format_table", "SECTIONS"]

SECTIONS = ("embedding", "recurrent", "softmax", "optimizer")


class LSTMLayer(nn.Module):
    """An ``nn.LSTM`` layer with the QRNN layer's interface inside the language model:
    ``(x [T, B, I], h0 [B, H]) -> (output [T, B, H], h_n [1, B, H])``; the cell starts at zero."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.lstm = nn.LSTM(input_size, hidden_size)

    def reset(self) -> None:
        """Nothing to forget (the QRNN layer's ``save_prev_x`` counterpart)."""

    def forward(self, x, hidden):
        h0 = hidden.unsqueeze(0)  # [1, B, H]
        output, (h_n, _) = self.lstm(x, (h0, torch.zeros_like(h0)))
        return output, h_n


def build_models(vocab_size: int, config: ModelConfig, device) -> dict[str, QRNNLanguageModel]:
    """``{"qrnn": model, "lstm": the same model with LSTM layers}``, both in training mode."""
    qrnn = QRNNLanguageModel(vocab_size, config).to(device)
    lstm = QRNNLanguageModel(vocab_size, config).to(device)
    lstm.layers = nn.ModuleList(
        LSTMLayer(layer.input_size, layer.hidden_size) for layer in qrnn.layers
    ).to(device)
    return {"qrnn": qrnn.train(), "lstm": lstm.train()}


class _Trainer:
    """One model, its SGD optimizer, and a fixed batch of random tokens."""

    def __init__(self, model, train: TrainConfig, tokens, targets):
        self.model, self.train, self.tokens, self.targets = model, train, tokens, targets
        self.optimizer = torch.optim.SGD(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
        self.hidden = [h.detach() for h in model.init_hidden(tokens.shape[1])]

    def _finish(self) -> None:
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.train.clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def step(self) -> None:
        """forward, loss, backward, clip, SGD step (what training runs)."""
        self.model.reset()
        logits, _, raw, dropped = self.model(self.tokens, self.hidden)
        _, loss = regularized_loss(logits, self.targets, raw, dropped, self.train.alpha, self.train.beta)
        loss.backward()
        self._finish()

    def timed_step(self, timer: SectionTimer) -> None:
        """The same step cut into parts, each part's forward and backward timed (mirrors
        ``QRNNLanguageModel.forward``)."""
        model, config = self.model, self.model.config
        model.reset()
        with timer("embedding"):
            embedded = model.drop_input(embedding_dropout(model.embedding, self.tokens, config.dropout_emb, True))
        x = embedded.detach().requires_grad_()
        with timer("recurrent"):
            layer_input = x
            for index, layer in enumerate(model.layers):
                raw, _ = layer(layer_input, self.hidden[index])
                layer_input = model.drop_hidden(raw) if index < len(model.layers) - 1 else raw
        raw_cut = raw.detach().requires_grad_()
        with timer("softmax"):
            dropped = model.drop_output(raw_cut)
            logits = model.decoder(dropped)  # [T, B, V]
            _, loss = regularized_loss(logits, self.targets, raw_cut, dropped, self.train.alpha, self.train.beta)
            loss.backward()
        with timer("recurrent"):
            raw.backward(raw_cut.grad)
        with timer("embedding"):
            embedded.backward(x.grad)
        with timer("optimizer"):
            self._finish()


def run(vocab_size: int = 10000, emb_size: int = 400, hidden_size: int = 1550, num_layers: int = 4,
        bptt: int = 70, batch_size: int = 20, repeats: int = 5, warmup: int = 2, device: str = "cpu",
        seed: int = 0) -> list[dict]:
    """Time both models. Returns one row per model: ``model``, ``step_ms``, ``tokens_per_s``,
    ``speedup`` (QRNN tokens/s over LSTM tokens/s, on both rows), and the share of each part in
    ``share_<part>`` (fractions summing to 1) with the instrumented step's time ``parts_ms``."""
    device = torch.device(device)
    torch.manual_seed(seed)
    config = dataclasses.replace(ModelConfig(), emb_size=emb_size, hidden_size=hidden_size,
                                 num_layers=num_layers, weight_drop=0.0)
    train = TrainConfig()
    tokens = torch.randint(vocab_size, (bptt + 1, batch_size), device=device)
    inputs, targets = tokens[:-1], tokens[1:]  # [T, B] each
    trainers = {name: _Trainer(model, train, inputs, targets)
                for name, model in build_models(vocab_size, config, device).items()}
    medians = time_round_robin({name: t.step for name, t in trainers.items()}, repeats, warmup, device)
    rows = []
    for name, trainer in trainers.items():
        per_round = {section: [] for section in SECTIONS}
        for round_index in range(warmup + repeats):
            timer = SectionTimer(device)
            trainer.timed_step(timer)
            if round_index >= warmup:
                for section in SECTIONS:
                    per_round[section].append(timer.totals.get(section, 0.0))
        parts = {section: statistics.median(values) for section, values in per_round.items()}
        total = sum(parts.values())
        row = {"model": name, "step_ms": medians[name] * 1e3,
               "tokens_per_s": bptt * batch_size / medians[name],
               "speedup": medians["lstm"] / medians["qrnn"], "parts_ms": total * 1e3}
        row.update({f"share_{section}": parts[section] / total for section in SECTIONS})
        rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    header = ["model", "step ms", "tokens/s"] + [f"{s} %" for s in SECTIONS]
    lines = [header] + [[row["model"], f"{row['step_ms']:.1f}", f"{row['tokens_per_s']:.0f}"]
                        + [f"{100 * row[f'share_{s}']:.1f}" for s in SECTIONS] for row in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    table = "\n".join("  ".join(cell.rjust(w) for cell, w in zip(line, widths)) for line in lines)
    return table + f"\nQRNN/LSTM training throughput: {rows[0]['speedup']:.2f}x"
