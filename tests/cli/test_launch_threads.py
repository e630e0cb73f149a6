"""``qrnn-lm train --nproc N`` shares the machine's cores between the ranks: PyTorch's and numba's
thread pools of every rank together use the cores once, unless the user set the counts."""

import os

import torch.distributed.run

from qrnn_lm.cli.train import launch_local


def launched_env(monkeypatch, **preset):
    """The thread counts the ranks would inherit from ``launch_local(2, ...)``."""
    seen = {}
    # A copy of the environment: a NUMBA_* variable changed in the real one makes numba reload its
    # config at the next compile, and a thread count other than the one it launched is an error.
    environ = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS")}
    monkeypatch.setattr(os, "environ", {**environ, **preset})
    monkeypatch.setattr(torch.distributed.run, "main",
                        lambda args: seen.update({v: os.environ.get(v) for v in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS")}))
    assert launch_local(2, ["train"]) == 0
    return seen


def test_each_rank_gets_its_share_of_the_cores_for_both_pools(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert launched_env(monkeypatch) == {"OMP_NUM_THREADS": "4", "NUMBA_NUM_THREADS": "4"}


def test_counts_the_user_set_are_kept(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert launched_env(monkeypatch, NUMBA_NUM_THREADS="3") == {"OMP_NUM_THREADS": "4", "NUMBA_NUM_THREADS": "3"}
