"""The optimizer step alone: torch's for-loop, foreach and fused Adam/AdamW on a recipe's parameters.

  python scripts/bench_optimizer.py [--config configs/ptb-cpu-bf16.toml] [--repeats 30] [--warmup 5]
                                    [--vocab-size 10000] [--step-ms 160.3]

Builds the recipe's model (ptb-cpu-bf16: 10.6M fp32 parameters), gives every parameter a fixed random
gradient, and times ``optimizer.step()`` for each implementation (median of ``--repeats`` after
``--warmup`` untimed steps, round-robin in one run so background load hits them alike). Prints ms
and the ratio to the for-loop, and, with ``--step-ms`` (a training step's time from
``qrnn-lm bench lm`` on the same machine), each one's share of the step.

Then the exactness check the training optimizer relies on (``training/optimizer.py``): from the
same parameters and the same gradients, a few steps of each variant against the for-loop, compared
with ``torch.testing.assert_close`` at tight tolerance, and whether they are bit-for-bit equal.

Timings are only honest on an idle machine (check ``uptime``).
"""

from __future__ import annotations

import argparse
import copy

import torch

from qrnn_lm.bench.timing import machine_description, time_round_robin
from qrnn_lm.config import load_config
from qrnn_lm.models import LanguageModel

VARIANTS = {"for-loop": dict(foreach=False), "foreach": dict(foreach=True), "fused": dict(fused=True)}
OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


def _with_grads(model: torch.nn.Module, seed: int) -> list[torch.nn.Parameter]:
    """The model's parameters, each given a fixed random gradient (like a clipped one: small)."""
    generator = torch.Generator().manual_seed(seed)
    params = list(model.parameters())
    for param in params:
        param.grad = 1e-3 * torch.randn(param.shape, generator=generator)
    return params


def _optimizers(model: torch.nn.Module, name: str, lr: float, weight_decay: float) -> dict:
    """One deep copy of ``model`` per variant, each with its optimizer: ``{variant: optimizer}``."""
    return {variant: OPTIMIZERS[name](_with_grads(copy.deepcopy(model), seed=1), lr=lr,
                                      weight_decay=weight_decay, **kwargs)
            for variant, kwargs in VARIANTS.items()}


def exactness(model: torch.nn.Module, name: str, lr: float, weight_decay: float, steps: int = 5) -> dict:
    """``{variant: (max |difference| to the for-loop, bit-for-bit?)}`` after ``steps`` steps with
    new gradients each step; raises AssertionError if a variant is not within 1e-6 relative."""
    optimizers = _optimizers(model, name, lr, weight_decay)
    for step in range(steps):
        for optimizer in optimizers.values():
            _with_grads_of(optimizer, seed=100 + step)
            optimizer.step()
    reference = _params(optimizers["for-loop"])
    result = {}
    for variant, optimizer in optimizers.items():
        params = _params(optimizer)
        for ref, got in zip(reference, params):
            torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-8)
        result[variant] = (max(float((got - ref).abs().max()) for ref, got in zip(reference, params)),
                           all(torch.equal(got, ref) for ref, got in zip(reference, params)))
    return result


def _params(optimizer) -> list[torch.Tensor]:
    return [p.detach() for group in optimizer.param_groups for p in group["params"]]


def _with_grads_of(optimizer, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    for param in _params(optimizer):
        param.grad = 1e-3 * torch.randn(param.shape, generator=generator)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/ptb-cpu-bf16.toml")
    parser.add_argument("--vocab-size", type=int, default=10000)  # PTB's
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--step-ms", type=float, default=None, help="a training step's ms from `bench lm`")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    torch.manual_seed(0)
    model = LanguageModel(args.vocab_size, config.model, config.train.softmax, config.train.softmax_memory_mb)
    name = config.train.optimizer if config.train.optimizer in OPTIMIZERS else "adam"
    print(machine_description("cpu"))
    print(f"{args.config}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M fp32 parameters "
          f"in {len(list(model.parameters()))} tensors, torch.optim.{OPTIMIZERS[name].__name__}")
    for variant, (diff, exact) in exactness(model, name, config.train.lr, config.train.weight_decay).items():
        print(f"  {variant} after 5 steps vs the for-loop: max |diff| {diff:.3g}, bit-for-bit {exact}")
    optimizers = _optimizers(model, name, config.train.lr, config.train.weight_decay)
    medians = time_round_robin({v: o.step for v, o in optimizers.items()}, args.repeats, args.warmup)
    print(f"optimizer.step(), median of {args.repeats} after {args.warmup} warm-up steps:")
    for variant, seconds in medians.items():
        share = f", {100 * seconds * 1e3 / args.step_ms:.1f}% of a {args.step_ms} ms step" if args.step_ms else ""
        print(f"  {variant:9s} {seconds * 1e3:7.2f} ms  {seconds / medians['for-loop']:.2f}x the for-loop{share}")


if __name__ == "__main__":
    main()
