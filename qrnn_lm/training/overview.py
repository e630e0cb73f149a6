"""The lines a run prints before its first step: what is trained, on what, and where it goes.

A user who starts ``qrnn-lm train`` should see at once what the run is (a model's size decides
whether it takes minutes or days), not only at the first validation. On a CPU, a run with the
GPU recipes' schedule (hundreds of epochs, no time limit) also gets a note naming the way to a
budget: the AWD-QRNN defaults, which one's own text gets without ``--config``, train for days there.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..config import Config
from ..device import cpu_recipe

__all__ = ["run_overview", "GPU_SCHEDULE_EPOCHS"]

# A schedule of this many epochs or more without a time or step limit is a GPU recipe's
# (configs/ptb.toml: 550, wikitext-2.toml: 500, the defaults for one's own text: 550).
GPU_SCHEDULE_EPOCHS = 100


def run_overview(config: Config, vocab_size: int, train_tokens: int, model: torch.nn.Module, precision: str,
                 device: torch.device, world_size: int, out_dir: Path) -> list[str]:
    """The start line, and on a CPU with a GPU schedule a note naming a CPU recipe.

    ``train_tokens``: the training split's length; ``precision``: the step's resolved precision.
    """
    model_config = config.model
    parameters = sum(p.numel() for p in model.parameters())
    processes = f" x {world_size} processes" if world_size > 1 else ""
    lines = [f"training {config.name}: {model_config.rnn.upper()}, {model_config.num_layers} layers of "
             f"{model_config.hidden_size} (emb {model_config.emb_size}), {_millions(parameters)} parameters, "
             f"vocabulary {vocab_size:,}, {train_tokens:,} training tokens; {precision} on {_device_name(device)}"
             f"{processes}; run folder {out_dir}"]
    train = config.train
    if device.type == "cpu" and not train.max_minutes and not train.max_steps and train.epochs >= GPU_SCHEDULE_EPOCHS:
        lines.append(f"note: {train.epochs} epochs and no time limit, a GPU recipe's schedule; on a CPU, "
                     f"--max-minutes M sets a budget, and --config configs/{_cpu_recipe(config)}.toml is the "
                     f"20-minute CPU recipe")
    return lines


def _cpu_recipe(config: Config) -> str:
    """The CPU recipe for this kind of token: characters, or words as ``make train`` picks them."""
    if config.data.tokenizer in ("char", "byte"):
        return "ptb-char-cpu"
    return cpu_recipe()


def _millions(count: int) -> str:
    return f"{count / 1e6:.1f}M" if count >= 100_000 else f"{count:,}"


def _device_name(device: torch.device) -> str:
    if device.type == "cpu":
        threads = torch.get_num_threads()
        return f"cpu ({threads} thread{'s' if threads != 1 else ''})"
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)
