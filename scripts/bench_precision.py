"""Training tokens/s for train.precision and train.compile (prints a table; no assertions).

  python scripts/bench_precision.py [--config configs/ptb-small.toml] [--steps 30] [--device cpu]

Each variant (fp32, bf16, fp32 + compile, bf16 + compile; fp16 on CUDA) trains the recipe's model
on random tokens at its batch and bptt with the trainer's own step (``train_step`` and an SGD
step), after warm-up steps (which include torch.compile's compilation), and prints tokens/s and
the ratio to fp32 eager measured in the same run. Only honest on an idle machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from qrnn_lm.bench.timing import machine_description, synchronize
from qrnn_lm.config import load_config
from qrnn_lm.models import LanguageModel
from qrnn_lm.training.step import make_scaler
from qrnn_lm.training.step import train_step

VOCAB = 10_000  # PTB's


def tokens_per_second(config, device, precision, compiled, steps, warmup) -> float:
    torch.manual_seed(0)
    model = LanguageModel(VOCAB, config.model, config.train.softmax, config.train.softmax_memory_mb).to(device)
    trained = torch.compile(model) if compiled else model
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    train = dataclasses.replace(config.train, precision=precision)
    scaler = make_scaler(precision, device)
    batch, bptt = config.data.batch_size, config.data.bptt
    inputs = torch.randint(0, VOCAB, (bptt, batch), device=device)
    targets = torch.randint(0, VOCAB, (bptt, batch), device=device)
    hidden = None
    for index in range(warmup + steps):
        if index == warmup:
            synchronize(device)
            start = time.perf_counter()
        result = train_step(trained, optimizer, inputs, targets, hidden, train)
        optimizer.step()
        hidden = result.hidden
    synchronize(device)
    return steps * batch * bptt / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/ptb-small.toml")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    config = load_config(args.config)
    variants = [("fp32", False), ("bf16", False), ("fp32", True), ("bf16", True)]
    if device.type == "cuda":
        variants += [("fp16", False), ("fp16", True)]
    print(machine_description(device))
    print(f"{args.config}: batch {config.data.batch_size}, bptt {config.data.bptt}, vocabulary {VOCAB}\n")
    print("| precision | compile | tokens/s | ratio to fp32 eager |")
    print("| --- | --- | ---: | ---: |")
    base = None
    for precision, compiled in variants:
        rate = tokens_per_second(config, device, precision, compiled, args.steps, args.warmup)
        base = base or rate
        print(f"| {precision} | {'yes' if compiled else 'no'} | {rate:,.0f} | {rate / base:.2f} |", flush=True)


if __name__ == "__main__":
    main()
