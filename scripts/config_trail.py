"""The config trail (issue 20): following ``config`` from ``qrnn_lm.training.train`` through the
calls that pass it, or one of its sections, on. How many distinct files does a reader visit, and how
many visits return to a file already left?

Measured, not read: a profile hook records every call into a qrnn_lm function that receives a
:class:`~qrnn_lm.config.Config` or one of its sections (``data``, ``model``, ``train``) as an
argument, during a tiny run of ``configs/tiny.toml`` on a small generated corpus: a fresh run
(stopped by ``max_steps``, with the end-of-run cache pointer), its resume, and a finetune of it.
A loop's repeats count once (each function where it is first met); consecutive calls in one file
are one visit.

    PYTHONPATH=. python scripts/config_trail.py

Prints per run the files in visiting order (with the functions), the count of distinct files,
visits and returns, then the files of all three runs together.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "training"))

from _corpus import write_corpus  # noqa: E402  (the training tests' small corpus)

import qrnn_lm  # noqa: E402
from qrnn_lm.config import Config, DataConfig, ModelConfig, TrainConfig, load_config  # noqa: E402
from qrnn_lm.training import train  # noqa: E402

PACKAGE = Path(qrnn_lm.__file__).resolve().parent
SECTIONS = (Config, DataConfig, ModelConfig, TrainConfig)


def calls_with_config(run) -> list[tuple[str, str]]:
    """``(file below qrnn_lm/, function)`` of each call, in order, whose arguments hold a config."""
    found = []

    def profile(frame, event, arg):
        if event != "call" or not frame.f_code.co_filename.startswith(str(PACKAGE)):
            return
        code = frame.f_code
        count = code.co_argcount + code.co_kwonlyargcount + bool(code.co_flags & 4) + bool(code.co_flags & 8)
        values = []
        for value in (frame.f_locals.get(name) for name in code.co_varnames[:count]):
            values.extend(value.values() if isinstance(value, dict) else value
                          if isinstance(value, (tuple, list)) else [value])
        if any(isinstance(value, SECTIONS) for value in values):
            found.append((Path(code.co_filename).relative_to(PACKAGE).as_posix(), code.co_name))

    sys.setprofile(profile)
    try:
        run()
    finally:
        sys.setprofile(None)
    return found


def report(label: str, calls: list[tuple[str, str]]) -> set[str]:
    """Print the trail; returns its files."""
    seen_calls: set[tuple[str, str]] = set()
    visits: list[tuple[str, list[str]]] = []
    for path, name in calls:
        if (path, name) in seen_calls:
            continue  # a loop's repeats count once
        seen_calls.add((path, name))
        if visits and visits[-1][0] == path:
            visits[-1][1].append(name)
        else:
            visits.append((path, [name]))
    files: set[str] = set()
    returns = 0
    for path, _ in visits:
        returns += path in files
        files.add(path)
    print(f"{label}: {len(files)} files, {len(visits)} visits, {returns} returns to a file already left")
    for path, names in visits:
        print(f"    {path}: {', '.join(names)}")
    return files


def main() -> None:
    folder = Path(tempfile.mkdtemp())
    corpus = write_corpus(folder / "corpus")
    tiny = ROOT / "configs" / "tiny.toml"
    base = [f'data.dataset="{corpus}"', "train.epochs=1", 'train.cache_at_end="search"']
    first = load_config(tiny, [*base, "train.max_steps=12"])
    files = report("fresh run", calls_with_config(lambda: train(first, folder / "run", device="cpu", progress=False)))
    longer = load_config(tiny, [*base, "train.max_steps=20"])
    files |= report("resume", calls_with_config(
        lambda: train(longer, folder / "run", device="cpu", progress=False, resume=folder / "run")))
    files |= report("finetune", calls_with_config(lambda: train(
        first, folder / "finetune", device="cpu", progress=False, init_from=folder / "run" / "best.pt")))
    print(f"all three: {len(files)} files: {', '.join(sorted(files))}")


if __name__ == "__main__":
    main()
