"""Full, chunked and adaptive softmax: speed ratios and peak memory (prints tables; no assertions).

  python scripts/bench_softmax.py ratio [--repeats 30]
      At the small PTB recipe's shape (configs/ptb-small.toml: emb 200, hidden 400, 2 layers,
      batch 20, bptt 35, PTB's 10,000 words): the decoder's loss + backward alone, and a whole
      training step, with the full softmax and with the chunked one at several chunk sizes.
      Prints each time as a ratio to the full softmax measured in the same run (< 1: chunked is
      faster). Decides whether train.softmax's "auto" should chunk at that shape.

  python scripts/bench_softmax.py wt103 [--batch-size 10] [--bptt 140] [--device cpu]
      At WikiText-103's vocabulary (267,735) and embedding size (400): peak memory and time of
      the decoder's loss + backward for full, chunked and adaptive (awd's cut-offs 2800, 20000,
      76000), each in its own subprocess so that the peaks do not mix (CPU: peak RSS growth;
      CUDA: torch.cuda.max_memory_allocated). Prints a Markdown table for docs/softmax.md.

Timings are only honest on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from qrnn_lm.bench.timing import machine_description, synchronize, time_round_robin
from qrnn_lm.config import load_config
from qrnn_lm.models import LanguageModel
from qrnn_lm.models.softmax import chunked_cross_entropy

WT103_VOCAB, WT103_EMB, AWD_CUTOFFS = 267_735, 400, [2800, 20000, 76000]


def ratio(args) -> None:
    torch.manual_seed(0)
    config = load_config("configs/ptb-small.toml")
    vocab, batch, bptt = 10_000, config.data.batch_size, config.data.bptt
    n, emb = batch * bptt, config.model.emb_size
    x = torch.randn(n, emb, requires_grad=True)
    weight = (torch.rand(vocab, emb) * 0.2 - 0.1).requires_grad_()
    bias = torch.zeros(vocab, requires_grad=True)
    targets = torch.randint(0, vocab, (n,))

    def decoder_full():
        F.cross_entropy(F.linear(x, weight, bias), targets).backward()

    def decoder_chunked(size):
        return lambda: (chunked_cross_entropy(x, weight, bias, targets, size) / n).backward()

    candidates = {"full": decoder_full}
    for size in (16, 64, 256, n):
        candidates[f"chunked {size}"] = decoder_chunked(size)
    print(machine_description("cpu"))
    print(f"decoder loss + backward, {n} tokens x {vocab} words, emb {emb} (median s; ratio to full)")
    _print_ratios(time_round_robin(candidates, args.repeats, 3))

    model = LanguageModel(vocab, config.model)
    inputs = torch.randint(0, vocab, (bptt, batch))
    step_targets = torch.randint(0, vocab, (bptt, batch))

    def step(mode, chunk=None):
        def run():
            model.softmax = mode
            model.zero_grad(set_to_none=True)
            model.reset()
            model(inputs, None, step_targets)[0].backward()
        return run

    print(f"\nwhole training step (forward + backward), ptb-small model, batch {batch}, bptt {bptt}")
    _print_ratios(time_round_robin({"full": step("full"), "chunked": step("chunked")}, args.repeats, 3))


def _print_ratios(times: dict[str, float]) -> None:
    base = times["full"]
    for name, seconds in times.items():
        print(f"  {name:14s} {seconds * 1e3:9.2f} ms   {seconds / base:5.2f}x")


def one(mode: str, batch: int, bptt: int, device: str, repeats: int) -> dict:
    """Runs in a subprocess: peak memory and median time of one mode's loss + backward."""
    torch.manual_seed(0)
    dev = torch.device(device)
    n = batch * bptt
    x = torch.randn(n, WT103_EMB, device=dev, requires_grad=True)
    targets = torch.randint(0, WT103_VOCAB, (n,), device=dev)
    if mode == "adaptive":
        head = torch.nn.AdaptiveLogSoftmaxWithLoss(WT103_EMB, WT103_VOCAB, AWD_CUTOFFS, div_value=4.0).to(dev)
        run = lambda: head(x, targets).loss.backward()  # noqa: E731
    else:
        weight = (torch.rand(WT103_VOCAB, WT103_EMB, device=dev) * 0.2 - 0.1).requires_grad_()
        bias = torch.zeros(WT103_VOCAB, device=dev, requires_grad=True)
        if mode == "full":
            run = lambda: F.cross_entropy(F.linear(x, weight, bias), targets).backward()  # noqa: E731
        else:
            run = lambda: (chunked_cross_entropy(x, weight, bias, targets) / n).backward()  # noqa: E731
    synchronize(dev)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        base_cuda = torch.cuda.memory_allocated(dev)
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        run()
        synchronize(dev)
        times.append(time.perf_counter() - start)
    times = sorted(times[1:])  # the first call warms up
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated(dev) - base_cuda
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base_rss
    return {"mode": mode, "seconds": times[len(times) // 2], "peak_bytes": peak}


def wt103(args) -> None:
    rows = []
    for mode in ("full", "chunked", "adaptive"):
        command = [sys.executable, __file__, "one", mode, str(args.batch_size), str(args.bptt), args.device,
                   str(args.repeats)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            rows.append({"mode": mode, "error": (done.stderr.strip().splitlines() or ["failed"])[-1]})
        else:
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    n = args.batch_size * args.bptt
    print(machine_description(args.device))
    print(f"\nWikiText-103 decoder, vocabulary {WT103_VOCAB:,}, emb {WT103_EMB}, {n} tokens "
          f"(batch {args.batch_size} x bptt {args.bptt}); loss + backward\n")
    print("| softmax | peak memory (MiB) | time (ms) | time / full |")
    print("| --- | ---: | ---: | ---: |")
    full = next((row["seconds"] for row in rows if row["mode"] == "full" and "seconds" in row), None)
    for row in rows:
        if "error" in row:
            print(f"| {row['mode']} | failed: {row['error']} | | |")
            continue
        share = f"{row['seconds'] / full:.2f}" if full else "-"
        print(f"| {row['mode']} | {row['peak_bytes'] / 2**20:,.0f} | {row['seconds'] * 1e3:,.1f} | {share} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    r = sub.add_parser("ratio")
    r.add_argument("--repeats", type=int, default=30)
    w = sub.add_parser("wt103")
    w.add_argument("--batch-size", type=int, default=10)
    w.add_argument("--bptt", type=int, default=140)
    w.add_argument("--device", default="cpu")
    w.add_argument("--repeats", type=int, default=3)
    o = sub.add_parser("one")
    for name in ("mode", "batch", "bptt", "device", "repeats"):
        o.add_argument(name)
    args = parser.parse_args()
    if args.what == "ratio":
        ratio(args)
    elif args.what == "wt103":
        wt103(args)
    else:
        print(json.dumps(one(args.mode, int(args.batch), int(args.bptt), args.device, int(args.repeats))))


if __name__ == "__main__":
    main()
