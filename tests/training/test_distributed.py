"""Data-parallel training on DDP: 2 gloo ranks on the CPU against one process with the whole batch.

Every multi-process case runs in a child module (``ddp_child.py`` beside this file) launched by
:func:`qrnn_lm.cli.train.launch_local` (torchrun's machinery) in a subprocess under a timeout;
the child writes what it measured to ``rank<N>.json`` and the assertions are made here. One launch
does all the cases that end normally; a second one has a rank die.

The equality runs switch off the per-stream dropouts (embedding, locked, zoneout): their masks
come from each rank's own random stream by design, so they cannot match one process's masks.
Weight drop stays on: its masks come from the shared generator, the same on every rank and in one
process, so the runs match with it. ``save_prev_x`` (first layer window 2) and variable BPTT
lengths are on. The weight-drop gradients and the whole-run equality are checked for the LSTM model
too (its weight drop on ``weight_hh_l0``, its carried h and c).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from _metrics_rows import read_rows
import qrnn_lm.training.metrics as metrics_module
from qrnn_lm.cli.train import launch_local
from qrnn_lm.training import distributed
from qrnn_lm.models.checkpoint_file import load_checkpoint
from qrnn_lm.config import UserError, load_config
from qrnn_lm.training import train
from qrnn_lm.training.data_stream import make_stream

pytestmark = pytest.mark.slow  # real torchrun processes (DDP on gloo): `pytest -m "not slow"` skips it

REPO = Path(__file__).resolve().parents[2]
CHILD_FOLDER = Path(__file__).resolve().parent  # holds ddp_child.py, the ranks' module
TINY = REPO / "configs" / "tiny.toml"
# Per-stream randomness off, weight drop on (shared masks); 2 epochs, so validation, NT-ASGD's
# switch (nonmono = 1) and the final test run too.
EXACT = ["model.dropout_emb=0", "model.dropout_input=0", "model.dropout_hidden=0", "model.dropout_output=0",
         "model.zoneout=0", "model.weight_drop=0.3", "model.first_window=2", "data.variable_bptt=true",
         "train.epochs=2", "train.log_interval=1"]
STOP = 6  # steps of the interrupted runs (the first epoch has about 15)
RTOL, ATOL = 1e-5, 1e-6
LSTM = ['model.rnn="lstm"']  # EXACT's QRNN keys (zoneout 0, first_window 2) are the defaults an LSTM accepts




def config_overrides(corpus, *extra):
    return [f'data.dataset="{corpus}"', *EXACT, *extra]


def launch(tmp: Path, name: str, jobs: list[dict], timeout: float = 240) -> subprocess.CompletedProcess:
    """``launch_local(2, ...)`` of the child module with ``jobs``, in a subprocess, under a timeout."""
    folder = tmp / name
    folder.mkdir()
    spec = folder / "spec.json"
    spec.write_text(json.dumps({"tiny": str(TINY), "jobs": jobs, "report": str(folder)}))
    # PYTHONFAULTHANDLER: a rank killed by a signal (e.g. SIGABRT) prints its Python stack.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1",
           "PYTHONPATH": os.pathsep.join([str(CHILD_FOLDER), os.environ.get("PYTHONPATH", "")])}
    code = ("import sys; from qrnn_lm.cli.train import launch_local; "
            "sys.exit(launch_local(2, sys.argv[1:], module='ddp_child'))")
    try:
        return subprocess.run([sys.executable, "-c", code, str(spec)], env=env, cwd=folder, timeout=timeout,
                              capture_output=True, text=True)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"the 2-rank launch {name} did not end within {timeout} s (a hang): {error.stderr}")


def single(corpus, out, *extra, resume=None, monkeypatch=None):
    """One process with the whole batch; returns (results, per-step losses)."""
    losses = []
    real_add = metrics_module.Meter.add
    monkeypatch.setattr(metrics_module.Meter, "add", lambda self, loss, *a: (losses.append(loss), real_add(self, loss, *a))[1])
    results = train(load_config(TINY, config_overrides(corpus, *extra)), out, device="cpu", progress=False, resume=resume)
    monkeypatch.setattr(metrics_module.Meter, "add", real_add)
    return results, losses


def assert_same_run(a: Path, b: Path):
    """Same counters, history and (to float tolerance) weights and optimiser state in two last.pt."""
    first, second = load_checkpoint(a), load_checkpoint(b)
    assert first["counters"] == second["counters"]
    assert first["optimizer"]["name"] == second["optimizer"]["name"]
    assert first["history"]["val_losses"] == pytest.approx(second["history"]["val_losses"], rel=RTOL)
    for key in first["model"]:
        torch.testing.assert_close(first["model"][key], second["model"][key], rtol=RTOL, atol=ATOL, msg=key)
    states = first["optimizer"]["state"]["state"], second["optimizer"]["state"]["state"]
    for index in states[0]:
        for name, value in states[0][index].items():
            torch.testing.assert_close(torch.as_tensor(value), torch.as_tensor(states[1][index][name]),
                                       rtol=RTOL, atol=ATOL, msg=f"{index} {name}")
    torch.testing.assert_close(first["stream"]["hidden"], second["stream"]["hidden"], rtol=RTOL, atol=ATOL)
    assert torch.equal(first["rng"]["bptt"], second["rng"]["bptt"])
    assert torch.equal(first["rng"]["shared"], second["rng"]["shared"])


@pytest.fixture(scope="module")
def two_ranks(corpus, tmp_path_factory):
    """Single-process references, then one 2-rank launch with every case that ends normally."""
    tmp = tmp_path_factory.mktemp("ddp")
    with pytest.MonkeyPatch.context() as patch:
        reference = single(corpus, tmp / "single", monkeypatch=patch)
        single(corpus, tmp / "single-stopped", f"train.max_steps={STOP}", monkeypatch=patch)
    jobs = [
        {"name": "qrnn", "kind": "qrnn_grads", "args": {}},
        {"name": "weight_drop", "kind": "weight_drop_grads", "args": {"p": 0.5}},
        {"name": "weight_drop_lstm", "kind": "weight_drop_grads", "args": {"p": 0.5, "rnn": "lstm"}},
        {"name": "full", "kind": "run_train", "args": {"overrides": config_overrides(corpus), "out": str(tmp / "full")}},
        {"name": "full_lstm", "kind": "run_train",
         "args": {"overrides": config_overrides(corpus, *LSTM), "out": str(tmp / "full-lstm")}},
        {"name": "stopped", "kind": "run_train",
         "args": {"overrides": config_overrides(corpus, f"train.max_steps={STOP}"), "out": str(tmp / "stopped")}},
        {"name": "resumed", "kind": "run_train",
         "args": {"overrides": config_overrides(corpus), "out": str(tmp / "single-stopped"),
                  "resume": str(tmp / "single-stopped")}},
        # All dropouts on (tiny.toml's): 2 ranks stopped and resumed by 2 ranks, bit for bit.
        {"name": "drop_full", "kind": "run_train",
         "args": {"overrides": [f'data.dataset="{corpus}"', "train.epochs=2"], "out": str(tmp / "drop-full")}},
        {"name": "drop_stopped", "kind": "run_train",
         "args": {"overrides": [f'data.dataset="{corpus}"', "train.epochs=2", f"train.max_steps={STOP}"],
                  "out": str(tmp / "drop")}},
        {"name": "drop_resumed", "kind": "run_train",
         "args": {"overrides": [f'data.dataset="{corpus}"', "train.epochs=2"], "out": str(tmp / "drop"),
                  "resume": str(tmp / "drop")}},
        # The chunked softmax on 2 ranks against the full one in one process.
        {"name": "chunked", "kind": "run_train",
         "args": {"overrides": config_overrides(corpus, "train.softmax=chunked"), "out": str(tmp / "chunked")}},
        {"name": "skew", "kind": "run_train",
         "args": {"overrides": config_overrides(corpus), "out": str(tmp / "skew"), "skew": True}},
        {"name": "nan", "kind": "run_train",
         "args": {"overrides": config_overrides(corpus), "out": str(tmp / "nan"), "nan_at": 4}},
        {"name": "timed", "kind": "timed",
         "args": {"overrides": config_overrides(corpus, "train.max_minutes=1", 'train.lr_schedule="cosine"'),
                  "out": str(tmp / "timed")}},
        {"name": "stop_one_rank", "kind": "stop_one_rank",
         "args": {"overrides": config_overrides(corpus), "out": str(tmp / "stop-one-rank"), "at": 4}},
    ]
    process = launch(tmp, "launch", jobs)
    reports = sorted(path.name for path in (tmp / "launch").glob("rank*.json"))
    assert process.returncode == 0, f"rank reports written: {reports}\n{process.stderr[-6000:]}"
    ranks = [json.loads((tmp / "launch" / f"rank{r}.json").read_text()) for r in range(2)]
    return tmp, reference, ranks


def assert_grads_match(report):
    assert report
    for name, (ddp_grad, single_grad) in report.items():
        torch.testing.assert_close(torch.tensor(ddp_grad), torch.tensor(single_grad), rtol=RTOL, atol=1e-7, msg=name)


def test_ddp_on_the_plain_qrnn_module_gives_the_whole_batch_gradients(two_ranks):
    _, _, ranks = two_ranks
    for report in ranks:
        assert_grads_match(report["qrnn"])


@pytest.mark.parametrize("job, weight", [("weight_drop", "layers.0.linear.parametrizations.weight.original"),
                                         ("weight_drop_lstm", "layers.0.lstm.parametrizations.weight_hh_l0.original")])
def test_weight_drop_masks_are_shared_so_ddp_gradients_of_the_original_weight_match(two_ranks, job, weight):
    _, _, ranks = two_ranks
    for report in ranks:
        grads = report[job]
        assert weight in grads
        assert_grads_match(grads)


@pytest.fixture(scope="module")
def lstm_reference(corpus, tmp_path_factory):
    """The LSTM model trained by one process with the whole batch: (folder, results, losses)."""
    out = tmp_path_factory.mktemp("ddp-lstm") / "single"
    with pytest.MonkeyPatch.context() as patch:
        return (out, *single(corpus, out, *LSTM, monkeypatch=patch))


@pytest.mark.parametrize("rnn", ["qrnn", "lstm"])
def test_two_ranks_train_the_same_model_as_one_process(two_ranks, rnn, request):
    tmp, (results, losses), ranks = two_ranks
    name, reference = "full", tmp / "single"
    if rnn == "lstm":
        name, (reference, results, losses) = "full_lstm", request.getfixturevalue("lstm_reference")
        assert load_checkpoint(tmp / "full-lstm" / "last.pt")["config"]["model"]["rnn"] == "lstm"
    for report in ranks:  # every rank sees the global loss of every step
        assert report[name]["losses"] == pytest.approx(losses, rel=RTOL)
        assert report[name]["results"]["steps"] == results["steps"] == len(losses)
        assert report[name]["results"]["test_loss"] == pytest.approx(results["test_loss"], rel=RTOL)
        assert report[name]["results"]["best_val_loss"] == pytest.approx(results["best_val_loss"], rel=RTOL)
        assert report[name]["results"]["test_tokens"] == results["test_tokens"]
    folder = tmp / ("full" if rnn == "qrnn" else "full-lstm")
    assert_same_run(folder / "last.pt", reference / "last.pt")
    assert json.loads((folder / "results.json").read_text())["steps"] == results["steps"]


def test_two_ranks_with_the_chunked_softmax_train_as_one_process_with_the_full_one(two_ranks):
    tmp, (results, losses), ranks = two_ranks
    for report in ranks:
        assert report["chunked"]["losses"] == pytest.approx(losses, rel=RTOL)
        assert report["chunked"]["results"]["test_loss"] == pytest.approx(results["test_loss"], rel=RTOL)
    assert load_checkpoint(tmp / "chunked" / "last.pt")["config"]["train"]["softmax"] == "chunked"
    assert_same_run(tmp / "chunked" / "last.pt", tmp / "single" / "last.pt")


def test_resume_with_another_number_of_ranks_continues_exactly(two_ranks, corpus, monkeypatch):
    tmp, (results, losses), ranks = two_ranks
    # Saved by 1 rank, resumed by 2: the 2-rank run ends where the uninterrupted one does.
    assert ranks[0]["resumed"]["losses"] == pytest.approx(losses[STOP:], rel=RTOL)
    assert_same_run(tmp / "single-stopped" / "last.pt", tmp / "single" / "last.pt")
    # Saved by 2 ranks (the carried state of all 4 streams gathered into last.pt), resumed by 1.
    stopped = load_checkpoint(tmp / "stopped" / "last.pt")
    assert stopped["counters"]["step"] == STOP and stopped["stream"]["hidden"][0].shape[0] == 4
    assert stopped["stream"]["prev_x"][0].shape[1] == 4 and len(stopped["rng"]["ranks"]) == 2
    _, resumed_losses = single(corpus, tmp / "stopped", resume=tmp / "stopped", monkeypatch=monkeypatch)
    assert resumed_losses == pytest.approx(losses[STOP:], rel=RTOL)
    assert_same_run(tmp / "stopped" / "last.pt", tmp / "single" / "last.pt")


def test_with_dropout_each_rank_has_its_own_masks_and_a_resume_on_as_many_ranks_is_exact(two_ranks):
    tmp, _, ranks = two_ranks
    assert ranks[0]["drop_resumed"]["losses"] == ranks[0]["drop_full"]["losses"][STOP:]
    first, second = load_checkpoint(tmp / "drop" / "last.pt"), load_checkpoint(tmp / "drop-full" / "last.pt")
    assert not torch.equal(first["rng"]["ranks"][0]["torch"], first["rng"]["ranks"][1]["torch"])  # own streams
    assert first["counters"] == second["counters"]
    for key in first["model"]:
        assert torch.equal(first["model"][key], second["model"][key]), key
    for a, b in zip(first["rng"]["ranks"], second["rng"]["ranks"]):
        assert torch.equal(a["torch"], b["torch"])


def test_a_nan_on_one_rank_stops_every_rank_with_the_same_error(two_ranks):
    tmp, _, ranks = two_ranks
    for report in ranks:
        message = report["nan"]["error"]
        assert "nan on rank 1" in message and "every rank stopped" in message and "\n" not in message
        assert len(report["nan"]["losses"]) == 3  # steps 1-3 done, step 4 refused on both ranks
    assert not (tmp / "nan" / "last.pt").exists()


def test_ranks_whose_bptt_lengths_differ_stop_at_the_first_step(two_ranks):
    _, _, ranks = two_ranks
    for report in ranks:
        assert report["skew"]["losses"] == []
        assert report["skew"]["error"].startswith("RuntimeError: the ranks drew different BPTT lengths")


def test_a_stop_signal_on_one_rank_stops_every_rank_at_the_same_step(two_ranks):
    tmp, _, ranks = two_ranks
    stops = [rank["stop_one_rank"] for rank in ranks]
    assert stops == [{"stopped_after": 4, "signum": 15}] * 2  # rank 0 was never signalled itself
    assert load_checkpoint(tmp / "stop-one-rank" / "last.pt")["counters"]["step"] == 4  # rank 0 saved


def test_a_time_budget_stops_every_rank_at_the_same_step_with_the_same_schedule(two_ranks):
    tmp, _, ranks = two_ranks
    timed = [rank["timed"] for rank in ranks]
    # Rank 1's clock says 9 s a step, rank 0's 6 s: both go by the slower one, 60 s after step 7.
    assert [report["results"]["steps"] for report in timed] == [7, 7]
    assert {report["results"]["status"] for report in timed} == {"max_minutes"}
    assert timed[0]["progress"] == timed[1]["progress"] == pytest.approx([9 * k / 60 for k in range(1, 7)] + [1.0])
    assert load_checkpoint(tmp / "timed" / "last.pt")["budget"]["elapsed_s"] >= 60.0  # resumes as stopped
    assert [report["csv_paths"] for report in timed] == [[str(tmp / "timed" / "metrics.csv")], [None]]
    text = (tmp / "timed" / "metrics.csv").read_text()  # rank 0 alone writes it: every step once
    assert text.count("step,") == 1 and [row["step"] for row in read_rows(tmp / "timed" / "metrics.csv")
                                        if row["train_loss"]] == [str(k) for k in range(1, 8)]


def test_a_rank_that_dies_stops_every_rank_without_a_hang(corpus, tmp_path):
    args = {"overrides": config_overrides(corpus), "out": str(tmp_path / "run"), "at": 3}
    process = launch(tmp_path, "die", [{"name": "die", "kind": "die", "args": args}], timeout=120)
    assert process.returncode != 0
    assert "rank 1 fails on purpose at step 3" in process.stderr
    assert "error: rank 1 of 2 failed" in process.stderr
    assert not (tmp_path / "run" / "last.pt").exists()


def test_streams_are_split_into_contiguous_rank_blocks():
    ids = torch.arange(40)
    whole = make_stream(ids, 4, torch.device("cpu"))  # [10, 4]
    blocks = [make_stream(ids, 4, torch.device("cpu"), rank, 2, even="data.batch_size") for rank in range(2)]
    assert torch.equal(torch.cat(blocks, dim=1), whole) and blocks[0].shape == (10, 2)
    with pytest.raises(UserError, match=r"data.batch_size = 4 must be divisible by the number of processes \(3\)"):
        make_stream(ids, 4, torch.device("cpu"), 0, 3, even="data.batch_size")
    # Evaluation shares may be uneven or empty; the token-weighted all-reduce keeps them exact.
    assert [distributed.column_range(1, rank, 2) for rank in range(2)] == [(0, 1), (1, 1)]
    assert [distributed.column_range(5, rank, 2) for rank in range(2)] == [(0, 3), (3, 5)]


def test_one_process_needs_no_process_group():
    assert not distributed.launched_by_torchrun() or os.environ.get("WORLD_SIZE") == "1"
    with distributed.session(torch.device("cpu")) as device:
        assert device == torch.device("cpu") and distributed.get_world_size() == 1 and distributed.is_main()
        assert distributed.all_reduce_sum([1.5, 2]) == [1.5, 2.0]
        assert distributed.gather_objects({"a": 1}) == [{"a": 1}]
    with pytest.raises(ValueError, match="nproc must be a positive int, got 0"):
        launch_local(0, ["train"])


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA devices")
def test_data_parallel_on_the_plain_qrnn_module():
    from qrnn_lm import QRNN

    torch.manual_seed(0)
    qrnn = QRNN(5, 7, num_layers=2, window=2).cuda()
    x = torch.randn(6, 4, 5, device="cuda")
    parallel = torch.nn.DataParallel(qrnn, dim=1)  # time-major input: split the batch dimension
    parallel(x)[0].pow(2).mean().backward()
    grads = [p.grad.clone() for p in qrnn.parameters()]
    qrnn.zero_grad()
    qrnn(x)[0].pow(2).mean().backward()
    for grad, param in zip(grads, qrnn.parameters()):
        torch.testing.assert_close(grad, param.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("code,status,stderr", [(None, 0, ""), (3, 3, ""), ("error: stop", 1, "error: stop\n")])
def test_exit_rank_flushes_and_ends_with_the_exit_status(code, status, stderr):
    program = ("import sys; from qrnn_lm.training.distributed import exit_rank; "
               f"print('unflushed', end=''); sys.stderr.write('-'); exit_rank({code!r})")
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stdout, result.stderr) == (status, "unflushed", "-" + stderr)
