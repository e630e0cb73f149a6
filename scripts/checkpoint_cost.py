"""What one training checkpoint costs: seconds per ``last.pt`` write of a recipe's run (default the
small CPU recipe, configs/ptb-small.toml), as the trainer writes it (state dicts, RNG and carried
state, atomic write with fsync, keeping the previous file as ``last.prev.pt``).

Run on an idle machine (timings on a shared one mean nothing):

    QRNN_LM_DATA=/work/shared/data python scripts/checkpoint_cost.py --config configs/ptb-small.toml --repeats 10

Prints the file size and the median / min / max seconds per save.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from qrnn_lm.config import load_config
from qrnn_lm.training.trainer import Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/ptb-small.toml")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", default=None, help="run folder to write into (default: a temp folder)")
    args = parser.parse_args()
    config = load_config(args.config, [])
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        trainer = Trainer(config, out, torch.device("cpu"), progress=False)
        trainer._step(None)  # one real step: optimiser state and carried hidden state exist
        seconds = []
        for _ in range(args.repeats):
            trainer.checkpointer.last_counters = None  # write even though the state did not change
            started = time.perf_counter()
            trainer._save("last")
            seconds.append(time.perf_counter() - started)
        size = (out / "last.pt").stat().st_size / 2**20
        print(f"{args.config}: last.pt {size:.1f} MiB; seconds per save: median {statistics.median(seconds):.3f}, "
              f"min {min(seconds):.3f}, max {max(seconds):.3f} ({args.repeats} saves)")


if __name__ == "__main__":
    main()
