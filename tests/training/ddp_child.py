"""The rank side of ``test_distributed.py``: each of 2 gloo ranks runs this module (launched by
``qrnn_lm.cli.train.launch_local``), does the jobs listed in the spec file given as argument,
and writes what it measured to ``rank<N>.json``; the assertions are made in the test module.
Not a test module itself (pytest does not collect it).
"""

import json
import os
import sys
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

import qrnn_lm.training.trainer as train_module
import qrnn_lm.training.metrics as metrics_module
import qrnn_lm.training.step as train_step_module
import qrnn_lm.training.data_stream as stream_module
from qrnn_lm.training import TrainingError, distributed, train
from qrnn_lm.config import load_config

torch.set_num_threads(1)  # two ranks share the machine's cores
TINY = None  # the tiny recipe's path, set from the spec


def qrnn_grads(rank):
    """The plain QRNN module (window 2, save_prev_x, two chunks) in DDP vs the whole batch."""
    from qrnn_lm import QRNN
    torch.manual_seed(0)
    qrnn = QRNN(5, 7, num_layers=2, window=2, save_prev_x=True)
    reference = QRNN(5, 7, num_layers=2, window=2, save_prev_x=True)
    reference.load_state_dict(qrnn.state_dict())
    chunks = torch.randn(2, 6, 4, 5, generator=torch.Generator().manual_seed(1))  # 2 x [T, B, I]
    start, stop = distributed.column_range(4, rank, 2)
    ddp = DDP(qrnn)
    for chunk in chunks:
        ddp(chunk[:, start:stop])[0].pow(2).mean().backward()
    for chunk in chunks:
        reference(chunk)[0].pow(2).mean().backward()
    return {name: [p.grad.tolist(), dict(reference.named_parameters())[name].grad.tolist()]
            for name, p in qrnn.named_parameters()}


def weight_drop_grads(rank, p, rnn="qrnn"):
    """The language model (QRNN or LSTM layers) with weight drop p (shared masks) in DDP vs the whole batch."""
    from qrnn_lm.config import ModelConfig
    from qrnn_lm.models import LanguageModel, WeightDrop
    from qrnn_lm.training.state import SharedMasks
    from qrnn_lm.training.step import regularized_loss
    config = ModelConfig(rnn=rnn, emb_size=6, hidden_size=8, num_layers=2, dropout_emb=0, dropout_input=0,
                         dropout_hidden=0, dropout_output=0, zoneout=0, weight_drop=p)

    def build():
        torch.manual_seed(0)
        model = LanguageModel(11, config)
        SharedMasks([m for m in model.modules() if isinstance(m, WeightDrop)], torch.device("cpu"), seed=5)
        return model

    model, reference = build(), build()
    torch.manual_seed(100 + rank)  # each rank's own stream differs, as in training
    tokens = torch.randint(11, (9, 4), generator=torch.Generator().manual_seed(3))
    start, stop = distributed.column_range(4, rank, 2)
    for net, columns in ((DDP(model), slice(start, stop)), (reference, slice(None))):
        logits, _, raw, dropped = net(tokens[:-1, columns])
        regularized_loss(logits, tokens[1:, columns], raw, dropped, 2.0, 1.0)[1].backward()
    return {name: [p.grad.tolist(), dict(reference.named_parameters())[name].grad.tolist()]
            for name, p in model.named_parameters()}


def run_train(rank, overrides, out, resume=None, nan_at=0, skew=False):
    """train() on 2 ranks; the per-step losses (global means) as the meter got them."""
    losses = []
    real_add = metrics_module.Meter.add
    metrics_module.Meter.add = lambda self, loss, *a: (losses.append(loss), real_add(self, loss, *a))[1]
    if nan_at and rank == 1:
        real_loss, calls = train_step_module.regularized_loss, []
        def nan_loss(*args):
            calls.append(1)
            ce, loss = real_loss(*args)
            return (ce, loss * float("nan")) if len(calls) == nan_at else (ce, loss)
        train_step_module.regularized_loss = nan_loss
    real_length = stream_module.sample_seq_len
    if skew and rank == 1:  # a BPTT generator that drifted on one rank
        stream_module.sample_seq_len = lambda *args: real_length(*args) + 1
    try:
        results = train(load_config(TINY, overrides), Path(out), device="cpu", progress=False,
                                     resume=resume)
        return {"losses": losses, "results": results}
    except (TrainingError, RuntimeError) as error:
        return {"losses": losses, "error": f"{type(error).__name__}: {error}"}
    finally:
        stream_module.sample_seq_len = real_length
        metrics_module.Meter.add = real_add
        if nan_at and rank == 1:
            train_step_module.regularized_loss = real_loss


def timed(rank, overrides, out):
    """max_minutes on fake clocks that run at different speeds on the two ranks (6 and 9 s a
    step): the steps done, each step's budget progress and the metrics.csv path, as this rank saw them."""
    import qrnn_lm.training.stopping as budget_module
    import qrnn_lm.training.schedule as schedule_module
    real_step, real_schedule_step, real_clock = train_module.train_step, schedule_module.Schedule.step, budget_module.wall_clock
    real_csv = metrics_module.MetricsCsv
    calls, progress, csv_paths = [], [], []
    def step(*args):
        calls.append(1)
        return real_step(*args)
    def schedule_step(self, ratio, at):
        progress.append(at)
        return real_schedule_step(self, ratio, at)
    def metrics_csv(path, *args):
        csv_paths.append(None if path is None else str(path))
        return real_csv(path, *args)
    train_module.train_step, schedule_module.Schedule.step = step, schedule_step
    metrics_module.MetricsCsv = metrics_csv
    budget_module.wall_clock = lambda: (6.0 + 3.0 * rank) * len(calls)
    try:
        results = train(load_config(TINY, overrides), Path(out), device="cpu", progress=False)
        return {"results": results, "progress": progress, "csv_paths": csv_paths}
    finally:
        train_module.train_step, schedule_module.Schedule.step = real_step, real_schedule_step
        metrics_module.MetricsCsv, budget_module.wall_clock = real_csv, real_clock


def stop_one_rank(rank, overrides, out, at):
    """Rank 1 alone gets SIGTERM, in the middle of its step ``at``: which step each rank stopped at."""
    import signal
    from qrnn_lm.training.stopping import Interrupted
    real_step, calls = train_module.train_step, []
    def step(*args):
        calls.append(1)
        if rank == 1 and len(calls) == at:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_step(*args)
    train_module.train_step = step
    try:
        train(load_config(TINY, overrides), Path(out), device="cpu", progress=False)
        return {"stopped_after": None}
    except Interrupted as error:
        return {"stopped_after": len(calls), "signum": error.signum}
    finally:
        train_module.train_step = real_step


def die(rank, overrides, out, at):
    """Rank 1 raises in the middle of training; the group is made by train() itself."""
    real_step, calls = train_module.train_step, []
    def step(*args):
        calls.append(1)
        if rank == 1 and len(calls) == at:
            raise RuntimeError(f"rank 1 fails on purpose at step {at}")
        return real_step(*args)
    train_module.train_step = step
    train(load_config(TINY, overrides), Path(out), device="cpu", progress=False)


if __name__ == "__main__":
    spec = json.loads(Path(sys.argv[1]).read_text())
    TINY = spec["tiny"]
    rank = int(os.environ["RANK"])
    if spec["jobs"][0]["kind"] == "die":
        die(rank, **spec["jobs"][0]["args"])
        distributed.exit_rank(0)
    with distributed.session(torch.device("cpu")):
        report = {job["name"]: globals()[job["kind"]](rank, **job["args"]) for job in spec["jobs"]}
    Path(spec["report"], f"rank{rank}.json").write_text(json.dumps(report))
    distributed.exit_rank(0)  # as qrnn-lm's ranks do: skip the teardown that can abort
