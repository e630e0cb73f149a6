"""The property that matters: a run killed at random moments and resumed each time ends bit for
bit with the weights and perplexities of the uninterrupted run.

Real processes (``python -m qrnn_lm train``, and ``--nproc 2`` on gloo), real signals: SIGKILL to
every process of the run at a random moment after the launch wrote a checkpoint of its own, SIGKILL
while a checkpoint is being written (the temp file is seen in the folder), and SIGTERM, which must
end the run with 143 and a resume command. Each killed launch is followed by ``--resume RUN``.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from qrnn_lm.models.checkpoint_file import load_checkpoint

pytestmark = pytest.mark.slow  # real processes killed and resumed: `pytest -m "not slow"` skips it

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "tiny.toml"
# A checkpoint after every step, so kills land anywhere, writes included; 20 epochs of ~16 steps
# (about 2 s of training on this machine: the kills land in it, not after it).
SETTINGS = ["train.epochs=20", "train.checkpoint_every_steps=1", "train.log_interval=5"]
WRITE_TRIES = 4  # launches per "write" kill until one lands during a write (see killed_and_resumed)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}




def command(corpus, out, nproc, resume):
    base = [sys.executable, "-m", "qrnn_lm", "train", "--device", "cpu", "--no-progress"]
    if nproc > 1:
        base += ["--nproc", str(nproc)]
    if resume:
        return base + ["--resume", str(out)]
    sets = [arg for item in [f'data.dataset="{corpus}"', *SETTINGS] for arg in ("--set", item)]
    return base + ["--config", str(TINY), *sets, "--out", str(out)]


def signature(path: Path):
    """Which file ``last.pt`` is now (a new write replaces it: another inode or mtime)."""
    try:
        stat = path.stat()
        return stat.st_ino, stat.st_mtime_ns
    except FileNotFoundError:
        return None


def temp_files(out: Path):
    return [p for p in out.glob(".*.tmp")] if out.exists() else []


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (torchrun starts each rank in a session of its own, so a
    process group does not hold them)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo += children.get(tree[-1], [])
    return tree


def kill_all(pid: int, tree: list[int] | None = None) -> None:
    """SIGKILL ``pid`` and every descendant (``tree``, when already listed), as when the machine dies."""
    for member in tree or process_tree(pid):
        try:
            os.kill(member, signal.SIGKILL)
        except ProcessLookupError:
            pass


def launch(corpus, out, nproc, how, rng):
    """One launch (fresh when nothing is saved yet, else ``--resume``), stopped by ``how``:
    "random" (SIGKILL a random moment after this launch wrote a checkpoint), "write" (SIGKILL as
    soon as a checkpoint's temp file shows), "term" (SIGTERM to the leader), "term-one-rank" (SIGTERM to one rank alone) or "finish".
    Returns (exit code, stderr, whether a temp file was left behind)."""
    resume = (out / "last.pt").exists() or (out / "last.prev.pt").exists()
    before = signature(out / "last.pt")
    process = subprocess.Popen(command(corpus, out, nproc, resume), env=ENV, cwd=REPO, start_new_session=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        if how in ("random", "term", "term-one-rank"):
            while signature(out / "last.pt") == before and process.poll() is None:
                assert time.monotonic() < deadline, "no checkpoint within 120 s"
                time.sleep(0.002)
            time.sleep(rng.uniform(0.0, 0.4))
        tree = None
        if how == "write":
            # List the processes first (walking /proc takes milliseconds, longer than a tiny
            # checkpoint's write), once this launch has written a checkpoint: its ranks all run.
            while signature(out / "last.pt") == before and process.poll() is None:
                assert time.monotonic() < deadline, "no checkpoint within 120 s"
                time.sleep(0.002)
            tree = process_tree(process.pid)
            while not temp_files(out) and process.poll() is None:
                assert time.monotonic() < deadline, "no checkpoint write within 120 s"
                time.sleep(0.0002)
        if how == "term":
            process.send_signal(signal.SIGTERM)
        elif how == "term-one-rank":  # e.g. a scheduler signalling tasks one by one
            os.kill(process_tree(process.pid)[-1], signal.SIGTERM)
        elif how != "finish" and process.poll() is None:
            kill_all(process.pid, tree)  # the machine dies: every process at once
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            kill_all(process.pid)
            process.wait()
    return process.returncode, stderr, bool(temp_files(out))


def final_state(out: Path):
    results = json.loads((out / "results.json").read_text())
    return {key: results[key] for key in ("steps", "best_val_loss", "test_loss", "epochs_completed")}


def assert_same_weights(a: Path, b: Path):
    first, second = load_checkpoint(a), load_checkpoint(b)
    assert first["counters"] == second["counters"]
    for key in first["model"]:
        assert torch.equal(first["model"][key], second["model"][key]), key


def killed_and_resumed(corpus, tmp_path, nproc, plan, seed):
    reference = tmp_path / "reference"
    code, stderr, _ = launch(corpus, reference, nproc, "finish", None)
    assert code == 0, stderr[-3000:]
    out, rng, left_temp, interrupted = tmp_path / "killed", random.Random(seed), False, 0
    # A "write" kill aims at a write in progress, but on a loaded machine the write may complete
    # between seeing its temp file and the kill: then that launch was killed at another moment
    # (still a valid interruption) and the kill is tried again, up to WRITE_TRIES launches.
    finished = False
    for how in plan:
        for _ in range(WRITE_TRIES if how == "write" else 1):
            code, stderr, temp = launch(corpus, out, nproc, how, rng)
            finished = (out / "results.json").exists()
            if finished:
                break  # this launch finished before its signal: nothing more to interrupt
            if how.startswith("term"):
                assert code == 143, stderr[-3000:]
                assert "resume with:" in stderr and "--resume" in stderr, stderr[-3000:]
            left_temp |= how == "write" and temp
            interrupted += 1
            step = load_checkpoint(out / "last.pt")["counters"]["step"] if (out / "last.pt").exists() else None
            print(f"{how}: exit {code}, last.pt at step {step}, temp file left: {temp}")
            if how != "write" or temp:
                break
        if finished:
            break
    else:
        code, stderr, _ = launch(corpus, out, nproc, "finish", rng)
        assert code == 0, stderr[-3000:]
    assert final_state(out) == final_state(reference)  # the perplexities too, exactly
    for name in ("last.pt", "best.pt"):
        assert_same_weights(out / name, reference / name)
    assert interrupted >= len(plan), "a launch finished before its interruption: make the run longer"
    assert left_temp, "no kill landed during a checkpoint write"


def test_one_process_killed_at_random_moments_ends_bit_for_bit(corpus, tmp_path):
    plan = ["random", "write", "term", "write"]
    killed_and_resumed(corpus, tmp_path, 1, plan, seed=1)


def test_two_gloo_processes_killed_at_random_moments_end_bit_for_bit(corpus, tmp_path):
    plan = ["random", "write", "term", "term-one-rank"]
    killed_and_resumed(corpus, tmp_path, 2, plan, seed=2)
