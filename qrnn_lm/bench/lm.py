"""``qrnn-lm bench lm``: training throughput of the language model, QRNN against LSTM layers, and
the FLOP/s each part of a step achieves against the machine's matmul peak.

Shape letters: T = BPTT length, B = batch size, E = embedding size, V = vocabulary size, N = T * B.

The shape and the training settings come from a :class:`qrnn_lm.config.Config` (a recipe, see
``lm_config.py``; the defaults are PTB's AWD-QRNN). Both models are
:class:`qrnn_lm.models.LanguageModel` with the recipe's sizes, embedding, dropouts, decoder and
loss (cross-entropy + AR/TAR): the recipe's ``model.rnn = "qrnn"`` one and its ``"lstm"`` twin
(AWD-LSTM layers of the same input and hidden size; the QRNN-only window and zoneout keys dropped).
Weight drop is off in both, whatever the recipe says: one mask per gate weight and step, it costs
both sides little and alike, and without it the step is the plain matrix products the FLOP count
describes.

A training step is the trainer's own: ``training.step.train_step`` (forward and loss under
``train.precision``'s autocast, fp32 or bf16, backward, gradient clipping), then the run's
``Schedule.step`` (the recipe's optimizer step: SGD, Adam or AdamW), on random
tokens drawn uniformly from the vocabulary. (Uniform targets fall mostly in an adaptive decoder's
tail clusters, unlike real text, where the head covers most tokens: its FLOPs are counted from the
actual targets, but its time is pessimistic.) Throughput = ``N / median step time``; both models are
timed round-robin in the same run.

Time shares (the paper's Figure 4, left) come from the same step, run again with hooks on the
model (:func:`_part_marks`: forward hooks at the parts' boundaries, gradient hooks on the boundary
tensors, the embedding weight's post-accumulate hook) that take a synchronised timestamp as the step
crosses each boundary, forward and backward; nothing of the step is re-implemented. The parts:
embedding (lookup + embedding and input dropout, forward and backward), recurrent layers (+ dropout
between them), softmax (output dropout, decoder, loss with AR/TAR, and their backward), optimizer
(zeroing the gradients, clipping, the optimizer step).

FLOPs per part are counted analytically (``flops.py``, ``model_flops.py``); achieved GFLOP/s =
FLOPs / median time (the whole step: over the round-robin median; a part: over its instrumented
median), and the fraction of the matmul peak measured before and after the models' round robin, on
the same device, in the step's dtype (``peak.py``: the best of at least 2 x 10 calls after 3
warm-ups each, checked against the step's own product shapes and against the step's achieved rate).
"""

from __future__ import annotations

import contextlib
import dataclasses
import statistics
import time

import torch
from torch import nn

from ..config import QRNN_ONLY_KEYS, Config, ModelConfig, TrainConfig
from ..models import LanguageModel
from ..nn import QRNNLayer
from ..device import resolve_precision
from ..training import step as training_step  # looked up at each call: a test counts the calls
from ..training.schedule import Schedule
from ..training.state import History
from .lm_config import check_bench_precision
from .model_flops import find_lstm, step_flops
from .peak import (PEAK_REPEATS, PEAK_WARMUP, check_achieved, default_peak_size, matmul_gflops, matmul_spread,
                   merge_spreads, settle_peak)
from .timing import synchronize, time_round_robin

__all__ = ["build_models", "run", "SECTIONS", "DTYPES"]

SECTIONS = ("embedding", "recurrent", "softmax", "optimizer")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}  # what the step's matrix products run in


def build_models(vocab_size: int, config: ModelConfig, device, train: TrainConfig | None = None) -> dict[str, LanguageModel]:
    """``{"qrnn": model, "lstm": the same model with model.rnn = "lstm"}``, both in training mode;
    ``config`` is the ``[model]`` section (its QRNN-only keys are dropped for the LSTM model),
    ``train`` gives the softmax's mode (default: auto)."""
    train = train or TrainConfig()
    qrnn_config = dataclasses.replace(config, rnn="qrnn")
    defaults = ModelConfig()
    lstm_config = dataclasses.replace(config, rnn="lstm", **{key: getattr(defaults, key) for key in QRNN_ONLY_KEYS})
    qrnn, lstm = (LanguageModel(vocab_size, model_config, train.softmax, train.softmax_memory_mb).to(device)
                  for model_config in (qrnn_config, lstm_config))
    return {"qrnn": qrnn.train(), "lstm": lstm.train()}


class _Trainer:
    """One model, the trainer's optimiser schedule (:class:`~qrnn_lm.training.schedule.Schedule`)
    and a fixed batch of random tokens. :meth:`step` is the trainer's step; :meth:`timed_step` the
    same call, timed in parts by hooks."""

    def __init__(self, model, train: TrainConfig, tokens, targets):
        self.model, self.train, self.tokens, self.targets = model, train, tokens, targets
        self.schedule = Schedule(model, train, History())
        self.optimizer = self.schedule.optimizer
        self.hidden = [h.detach() for h in model.init_hidden(tokens.shape[1])]

    def step(self) -> None:
        """What ``Trainer._step`` runs: :func:`~qrnn_lm.training.step.train_step` (zeroing the
        gradients, forward and loss under autocast, backward, clipping), then the schedule's
        optimizer step for a full-length segment (``progress`` mid-run: past any warm-up)."""
        self.model.reset()
        training_step.train_step(self.model, self.optimizer, self.tokens, self.targets, self.hidden, self.train)
        self.schedule.step(1.0, 0.5)

    def timed_step(self) -> dict[str, float]:
        """:meth:`step` once, with the seconds it spent in each of :data:`SECTIONS`."""
        device = self.tokens.device
        with _part_marks(self.model, device) as marks:
            marks.append(("start", _now(device)))
            self.step()
            marks.append(("end", _now(device)))
        return _part_seconds(marks)


def _now(device) -> float:
    synchronize(device)
    return time.perf_counter()


# The boundaries a step crosses, in order, and the part each interval between two of them belongs to.
_MARKS = ("start", "forward", "layers", "layers_end", "output_grad", "layers_grad", "embedding_grad", "end")
_PARTS = ("optimizer", "embedding", "recurrent", "softmax", "recurrent", "embedding", "optimizer")


@contextlib.contextmanager
def _part_marks(model: LanguageModel, device):
    """Hooks that append ``(boundary, time)`` to the yielded list as a step crosses the boundaries
    of :data:`_MARKS`: the model's forward starts (the gradients were zeroed), the first layer
    starts (embedding done), the last layer ends; backward: the gradient reaches the last layer's
    output (softmax done), the first layer's input (layers done), the embedding weight (backward
    done). Removed on exit."""
    marks: list[tuple[str, float]] = []

    def mark(name):
        return lambda *args: marks.append((name, _now(device)))

    def first_layer(module, args):
        mark("layers")()
        args[0].register_hook(mark("layers_grad"))

    def last_layer(module, args, output):
        mark("layers_end")()
        output[0].register_hook(mark("output_grad"))

    handles = [model.register_forward_pre_hook(mark("forward")),
               model.layers[0].register_forward_pre_hook(first_layer),
               model.layers[-1].register_forward_hook(last_layer),
               model.embedding.weight.register_post_accumulate_grad_hook(mark("embedding_grad"))]
    try:
        yield marks
    finally:
        for handle in handles:
            handle.remove()


def _part_seconds(marks: list[tuple[str, float]]) -> dict[str, float]:
    """Seconds per part of :data:`SECTIONS` from one step's ``(boundary, time)`` marks."""
    names = tuple(name for name, _ in marks)
    if names != _MARKS:
        raise RuntimeError(f"the step crossed {names}, expected {_MARKS}: the hooks no longer match the model")
    seconds = dict.fromkeys(SECTIONS, 0.0)
    for part, (_, begin), (_, finish) in zip(_PARTS, marks, marks[1:]):
        seconds[part] += finish - begin
    return seconds


def run(config: Config | None = None, vocab_size: int = 10000, repeats: int = 5, warmup: int = 2,
        device: str = "cpu", seed: int = 0, peak_size: int | None = None, weight_drop: bool = False) -> dict:
    """Measure the matmul peak, time both models, measure the peak again (``config``: default the
    defaults; the recipe's ``model.weight_drop`` on both models with ``weight_drop``, else none).

    Returns a report: ``shape`` (what was timed), ``dtype``, ``peak`` (``peak.settle_peak``: the
    square product's ``min``/``median``/``best`` GFLOP/s and ``rates`` over both measurements,
    ``gflops`` the rate divided by, ``bad`` None or the line saying the square's best fell below a
    step shape's or the step's own rate, ``peak.check_achieved``), ``products`` (the step's
    own product shapes timed alone, best of the repeats: ``name``, ``m``, ``k``, ``n``, ``gflops``,
    ``peak_fraction``), ``speedup`` (QRNN tokens/s over LSTM
    tokens/s) and ``models``: one row per model with ``model``, ``step_ms``, ``tokens_per_s``,
    ``speedup``, ``share_<part>`` (fractions summing to 1), ``parts_ms`` (the instrumented step's
    time), ``gflop`` (FLOPs per step / 1e9), ``gflops``, ``peak_fraction`` and ``parts``:
    ``{part: {ms, gflop, matmul_gflop, gflops, peak_fraction}}``.
    """
    config = config or Config()
    device = torch.device(device)
    config = dataclasses.replace(config, train=dataclasses.replace(
        config.train, precision=resolve_precision(config.train.precision, device)))
    check_bench_precision(config.train.precision)
    dtype = DTYPES[config.train.precision]
    model_config = config.model if weight_drop else dataclasses.replace(config.model, weight_drop=0.0)
    bptt, batch_size, train = config.data.bptt, config.data.batch_size, config.train
    peak_size = peak_size or default_peak_size(device)
    torch.manual_seed(seed)
    tokens = torch.randint(vocab_size, (bptt + 1, batch_size), device=device)
    inputs, targets = tokens[:-1], tokens[1:]  # [T, B] each
    models = build_models(vocab_size, model_config, device, train)
    shapes = _step_products(models, bptt, batch_size, vocab_size)

    def yardstick():
        """The square product's spread and the step's product shapes' best rates."""
        spread = matmul_spread(peak_size, peak_size, peak_size, device, dtype,
                               max(repeats, PEAK_REPEATS), max(warmup, PEAK_WARMUP))
        return spread, [matmul_gflops(m, k, n, device, dtype, repeats, warmup) for _, m, k, n in shapes]

    # The yardstick before and after the models' round robin, pooled: a machine that slows down
    # for a while (another tenant of a VM's host) cannot lower the peak of both.
    spread_before, rates_before = yardstick()
    trainers = {name: _Trainer(model, train, inputs, targets) for name, model in models.items()}
    medians = time_round_robin({name: t.step for name, t in trainers.items()}, repeats, warmup, device)
    spread_after, rates_after = yardstick()
    products = [dict(name=name, m=m, k=k, n=n, gflops=max(before, after))
                for (name, m, k, n), before, after in zip(shapes, rates_before, rates_after)]
    peak_report = settle_peak(peak_size, merge_spreads(spread_before, spread_after), products)
    peak = peak_report["gflops"]
    for item in products:
        item["peak_fraction"] = item["gflops"] / peak
    rows = [_row(name, trainer, medians, peak, repeats, warmup, device) for name, trainer in trainers.items()]
    achieved = {f"{row['model']} step": row["gflops"] for row in rows}
    achieved.update({f"{row['model']} step's {part} part": values["gflops"]
                     for row in rows for part, values in row["parts"].items()})
    peak_report = check_achieved(peak_report, achieved)
    shape = dict(vocab_size=vocab_size, **dataclasses.asdict(model_config), bptt=bptt, batch_size=batch_size,
                 optimizer=train.optimizer, softmax=train.softmax, precision=train.precision)
    return dict(shape=shape, device=str(device), dtype=str(dtype).removeprefix("torch."),
                peak=peak_report, products=products,
                speedup=medians["lstm"] / medians["qrnn"], models=rows)


def _row(name: str, trainer: _Trainer, medians: dict, peak: float, repeats: int, warmup: int, device) -> dict:
    """One model's report row: throughput, time shares, FLOPs, achieved FLOP/s."""
    per_round = {section: [] for section in SECTIONS}
    for round_index in range(warmup + repeats):
        parts = trainer.timed_step()
        if round_index >= warmup:
            for section in SECTIONS:
                per_round[section].append(parts[section])
    seconds = {section: statistics.median(values) for section, values in per_round.items()}
    total = sum(seconds.values())
    counts = step_flops(trainer.model, trainer.targets, trainer.train.optimizer, trainer.train.weight_decay)
    row = {"model": name, "step_ms": medians[name] * 1e3,
           "tokens_per_s": trainer.targets.numel() / medians[name],
           "speedup": medians["lstm"] / medians["qrnn"], "parts_ms": total * 1e3,
           **_rates(sum(count.total for count in counts.values()), medians[name], peak)}
    row.update({f"share_{section}": seconds[section] / total for section in SECTIONS})
    row["parts"] = {section: {"ms": seconds[section] * 1e3, "matmul_gflop": counts[section].matmul / 1e9,
                              **_rates(counts[section].total, seconds[section], peak)}
                    for section in SECTIONS}
    return row


def _rates(flop: int, seconds: float, peak: float) -> dict:
    """``gflop``, ``gflops`` (achieved in ``seconds``) and ``peak_fraction`` (of ``peak`` GFLOP/s)."""
    gflops = flop / max(seconds, 1e-12) / 1e9
    return {"gflop": flop / 1e9, "gflops": gflops, "peak_fraction": gflops / peak}


def _step_products(models: dict, bptt: int, batch_size: int, vocab_size: int) -> list[tuple[str, int, int, int]]:
    """``(name, m, k, n)`` of the step's main forward products: the decoder's (or the adaptive
    head's), the gates of the QRNN layer with the most FLOPs (one window block's product) and the
    largest LSTM layer's step."""
    tokens = bptt * batch_size
    qrnn, lstm = models["qrnn"], models["lstm"]
    decoder = qrnn.decoder
    if isinstance(decoder, nn.AdaptiveLogSoftmaxWithLoss):
        products = [("adaptive head", tokens, decoder.in_features, decoder.head_size)]
    else:
        products = [("decoder", tokens, decoder.in_features, vocab_size)]
    gates = max((layer for layer in qrnn.layers if isinstance(layer, QRNNLayer)),
                key=lambda layer: layer.window * layer.input_size * layer.hidden_size)  # the most FLOPs
    products.append(("QRNN gates", tokens, gates.input_size, (3 if gates.output_gate else 2) * gates.hidden_size))
    cell = max((find_lstm(layer) for layer in lstm.layers), key=lambda cell: cell.hidden_size)
    products.append(("LSTM step", batch_size, cell.hidden_size, 4 * cell.hidden_size))
    return products
