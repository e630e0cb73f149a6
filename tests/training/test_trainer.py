"""The training engine on configs/tiny.toml and a tiny generated corpus (CPU, seconds).

The central property: a run interrupted (by max_steps, or by Ctrl-C in the middle of a step) and
resumed ends with exactly the parameters and optimiser state of an uninterrupted run, for the QRNN
and the LSTM model.
"""

import json
from pathlib import Path

import pytest
from _corpus import WORDS, write_corpus
import torch

import qrnn_lm.training.trainer as train_module
import qrnn_lm.training.optimizer as optimizer_module
import qrnn_lm.training.step as train_step_module
from qrnn_lm.models.checkpoint_file import load_checkpoint
from qrnn_lm.config import UserError, load_config
from qrnn_lm.training.optimizer import averaged_weights, make_optimizer, should_switch_to_asgd
from qrnn_lm.training import TrainingError, train
from qrnn_lm.training.stopping import sigint_deferred

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "tiny.toml"


# The model types; tiny.toml's zoneout is a QRNN setting, so the LSTM runs set it back to 0.
RNNS = {"qrnn": [], "lstm": ['model.rnn="lstm"', "model.zoneout=0"]}


@pytest.fixture(scope="module", params=sorted(RNNS))
def rnn(request):
    """The overrides of one model type (the tests using it run for each)."""
    return RNNS[request.param]


def tiny(corpus, *overrides):
    return load_config(TINY, [f'data.dataset="{corpus}"', "train.epochs=2", *overrides])


def run(config, out, **kwargs):
    return train(config, out, device="cpu", progress=False, **kwargs)


def assert_same_state(a: Path, b: Path):
    """Same weights, optimiser state, counters and RNG in two last.pt files (bit for bit)."""
    first, second = load_checkpoint(a), load_checkpoint(b)
    assert first["counters"] == second["counters"]
    assert first["optimizer"]["name"] == second["optimizer"]["name"]
    assert first["model"].keys() == second["model"].keys()
    for key in first["model"]:
        assert torch.equal(first["model"][key], second["model"][key]), key
    states = first["optimizer"]["state"]["state"], second["optimizer"]["state"]["state"]
    assert states[0].keys() == states[1].keys()
    for index in states[0]:
        for name, value in states[0][index].items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(states[1][index][name])), (index, name)
    assert torch.equal(first["rng"]["torch"], second["rng"]["torch"])
    assert torch.equal(first["rng"]["bptt"], second["rng"]["bptt"])
    wall_clock = ("elapsed_s",)  # the run's wall-clock seconds: never equal
    assert {k: v for k, v in first["history"].items() if k not in wall_clock} == {
        k: v for k, v in second["history"].items() if k not in wall_clock}


@pytest.fixture(scope="module")
def reference(corpus, rnn, tmp_path_factory):
    """An uninterrupted two-epoch run, with NT-ASGD forced to switch after the first epoch."""
    out = tmp_path_factory.mktemp("reference")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(optimizer_module, "should_switch_to_asgd", lambda *args: True)
        results = run(tiny(corpus, *rnn), out)
    return out, results


def test_a_run_writes_checkpoints_config_logs_and_results(reference, corpus, rnn):
    out, results = reference
    for name in ("last.pt", "best.pt", "config.toml", "results.json"):
        assert (out / name).is_file(), name
    assert any((out / "tb").iterdir())
    assert load_config(out / "config.toml") == tiny(corpus, *rnn)
    saved = json.loads((out / "results.json").read_text())
    assert saved == results and results["status"] == "completed" and results["epochs_completed"] == 2
    assert results["optimizer"] == "asgd"
    assert 1 < results["test_ppl"] < 100 and results["best_val_ppl"] < 100
    last = load_checkpoint(out / "last.pt")
    assert last["kind"] == "last" and last["counters"]["epoch"] == 3 and last["counters"]["position"] == 0
    assert "ax" in next(iter(last["optimizer"]["state"]["state"].values()))  # ASGD's averages saved
    assert len(last["history"]["val_losses"]) == 2
    assert set(last["data"]["checksums"]) == {"train.txt", "valid.txt", "test.txt"}
    rnn_name = tiny(corpus, *rnn).model.rnn
    assert last["config"]["model"]["rnn"] == load_checkpoint(out / "best.pt")["config"]["model"]["rnn"] == rnn_name


def test_max_steps_then_resume_equals_an_uninterrupted_run(reference, corpus, rnn, tmp_path, monkeypatch):
    monkeypatch.setattr(optimizer_module, "should_switch_to_asgd", lambda *args: True)
    reference_out, reference_results = reference
    steps_per_epoch = reference_results["steps"] // 2
    stop = steps_per_epoch // 2 + 1  # in the middle of the first epoch
    out = tmp_path / "run"
    first = run(tiny(corpus, *rnn, f"train.max_steps={stop}"), out)
    assert first["status"] == "max_steps" and first["steps"] == stop
    stopped = load_checkpoint(out / "last.pt")
    assert stopped["counters"]["step"] == stop and 0 < stopped["counters"]["position"]
    # mid-epoch: the carried state is saved, h and c for an LSTM (tiny: hidden 24, emb 16, batch 4)
    sizes = [24, 16] if tiny(corpus, *rnn).model.rnn == "qrnn" else [48, 32]
    assert [tuple(h.shape) for h in stopped["stream"]["hidden"]] == [(4, size) for size in sizes]
    assert (out / "best.pt").is_file()  # validated once so that there is something to test
    # max_steps counts from the start of the run: 0 lifts the limit.
    resumed = run(tiny(corpus, *rnn, "train.max_steps=0"), out, resume=out)
    assert resumed["steps"] == reference_results["steps"]
    assert_same_state(out / "last.pt", reference_out / "last.pt")
    assert resumed["test_loss"] == reference_results["test_loss"]


def test_ctrl_c_mid_step_saves_a_checkpoint_that_resumes_exactly(reference, corpus, rnn, tmp_path, monkeypatch):
    monkeypatch.setattr(optimizer_module, "should_switch_to_asgd", lambda *args: True)
    reference_out, reference_results = reference
    interrupt_at = reference_results["steps"] // 2 + 3  # in the second epoch, with ASGD active
    real_step = train_step_module.train_step
    calls = []

    def step_then_ctrl_c(model, optimizer, inputs, targets, hidden, *args):
        calls.append(1)
        if len(calls) == interrupt_at:
            model(inputs, hidden)  # draws dropout masks and replaces the saved inputs: must be undone
            raise KeyboardInterrupt
        return real_step(model, optimizer, inputs, targets, hidden, *args)

    monkeypatch.setattr(train_module, "train_step", step_then_ctrl_c)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run(tiny(corpus, *rnn), out)
    saved = load_checkpoint(out / "last.pt")
    assert saved["counters"]["step"] == interrupt_at - 1 and saved["optimizer"]["name"] == "asgd"
    assert not (out / "results.json").exists()
    monkeypatch.setattr(train_module, "train_step", real_step)
    resumed = run(tiny(corpus, *rnn), out, resume=out / "last.pt")
    assert_same_state(out / "last.pt", reference_out / "last.pt")
    assert resumed["test_loss"] == reference_results["test_loss"]


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(corpus, tmp_path, monkeypatch):
    out = tmp_path / "run"
    run(tiny(corpus, "train.epochs=1"), out)
    before = (out / "last.pt").read_bytes()
    real_loss = train_step_module.regularized_loss
    calls = []

    def nan_after_a_while(*args, **kwargs):
        cross_entropy, loss = real_loss(*args, **kwargs)
        calls.append(1)
        return (cross_entropy * float("nan"), loss) if len(calls) == 5 else (cross_entropy, loss)

    monkeypatch.setattr(train_step_module, "regularized_loss", nan_after_a_while)
    with pytest.raises(TrainingError) as info:
        run(tiny(corpus, "train.epochs=2"), out, resume=out)
    assert isinstance(info.value, UserError) and "nan" in str(info.value) and "\n" not in str(info.value)
    assert (out / "last.pt").read_bytes() == before


def test_resume_with_other_data_is_a_user_error(corpus, tmp_path):
    out = tmp_path / "run"
    run(tiny(corpus, "train.max_steps=2"), out)
    other = write_corpus(tmp_path / "other", seed=1, words=WORDS + ["zebra"])
    with pytest.raises(UserError, match="other data"):
        run(tiny(other, "train.max_steps=4"), out, resume=out)
    with pytest.raises(UserError, match="model.hidden_size"):
        run(tiny(corpus, "model.hidden_size=30"), out, resume=out)
    with pytest.raises(UserError, match="already holds a run"):
        run(tiny(corpus), out)
    with pytest.raises(UserError, match="does not exist"):
        run(tiny(corpus), tmp_path / "new", resume=tmp_path / "missing.pt")


def test_nt_asgd_trigger_matches_awd():
    # Worse than the best of all validations but the last `nonmono` ones.
    assert should_switch_to_asgd([5.0, 4.0, 3.0], 6.0, nonmono=2)
    assert not should_switch_to_asgd([5.0, 4.0, 3.0], 4.5, nonmono=2)
    assert not should_switch_to_asgd([5.0, 4.0], 9.0, nonmono=2)  # too few validations yet


def test_averaged_weights_are_swapped_in_and_out():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = make_optimizer("asgd", model, lr=0.5, weight_decay=0.0)
    for _ in range(3):
        optimizer.zero_grad()
        model(torch.randn(4, 3)).pow(2).sum().backward()
        optimizer.step()
    raw = [p.detach().clone() for p in model.parameters()]
    with averaged_weights(model, optimizer) as swapped:
        assert swapped
        for param, before in zip(model.parameters(), raw):
            assert torch.equal(param, optimizer.state[param]["ax"]) and not torch.equal(param, before)
    for param, before in zip(model.parameters(), raw):
        assert torch.equal(param, before)
    sgd = make_optimizer("sgd", model, lr=0.5, weight_decay=0.0)
    with averaged_weights(model, sgd) as swapped:
        assert not swapped


def test_ctrl_c_is_held_until_the_weight_update_is_complete():
    import os
    import signal

    done = []
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN in a job started in the background
    with pytest.raises(KeyboardInterrupt):
        with sigint_deferred():
            os.kill(os.getpid(), signal.SIGINT)  # arrives in the middle of the "update"
            done.append("update finished")
    assert done == ["update finished"]
    assert signal.getsignal(signal.SIGINT) is before  # the caller's handler restored


RUN_SCRIPT = """
import sys
from pathlib import Path
from qrnn_lm.config import load_config
from qrnn_lm.training import train
try:
    train(load_config(sys.argv[1], sys.argv[3:]), Path(sys.argv[2]), device="cpu", progress=False)
except KeyboardInterrupt:
    sys.exit(130)
"""


@pytest.mark.slow  # a real process and a real SIGINT
def test_a_real_sigint_saves_the_exact_position_and_resumes_exactly(corpus, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    many_epochs = "train.epochs=100000"  # never finishes by itself
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-c", RUN_SCRIPT, str(TINY), str(out), f'data.dataset="{corpus}"',
                                many_epochs], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (out / "last.pt").exists():  # the first epoch is done: the run is in its loop
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no checkpoint after 300 s"
            time.sleep(0.05)
        time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        try:
            code = process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            pytest.fail(f"the run did not stop within 120 s of SIGINT: {process.communicate()[1][-2000:]}")
        assert code == 130, process.communicate()
    finally:
        if process.poll() is None:
            process.kill()
    saved = load_checkpoint(out / "last.pt")["counters"]
    assert saved["step"] > 0
    target = f"train.max_steps={saved['step'] + 15}"
    run(tiny(corpus, many_epochs, target), out, resume=out)
    run(tiny(corpus, many_epochs, target), tmp_path / "reference")
    assert_same_state(out / "last.pt", tmp_path / "reference" / "last.pt")


def test_next_segment_lengths():
    from qrnn_lm.config import DataConfig
    from qrnn_lm.training.data_stream import next_segment

    source = torch.arange(400).view(200, 2)
    fixed = DataConfig(bptt=12, variable_bptt=False)
    inputs, targets = next_segment(source, 10, fixed, torch.Generator().manual_seed(0))
    assert inputs.shape == (12, 2) and torch.equal(targets, source[11:23])
    variable = DataConfig(bptt=30, variable_bptt=True)

    def lengths(seed):
        generator = torch.Generator().manual_seed(seed)
        return [next_segment(source, 0, variable, generator)[0].size(0) for _ in range(40)]

    assert lengths(1) == lengths(1) and len(set(lengths(1))) > 3  # random, but only from the generator
    inputs, _ = next_segment(source, 195, fixed, torch.Generator())
    assert inputs.size(0) == 4  # cut at the end of the stream


def test_adam_with_lr_decay(corpus, tmp_path):
    results = run(tiny(corpus, 'train.optimizer="adam"', "train.lr=0.01", "train.lr_decay_epochs=[1]"), tmp_path / "run")
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    assert results["optimizer"] == "adam" and last["optimizer"]["name"] == "adam"
    assert last["optimizer"]["lr"] == pytest.approx(0.001)
    assert last["optimizer"]["state"]["param_groups"][0]["lr"] == pytest.approx(0.001)
    assert "exp_avg" in next(iter(last["optimizer"]["state"]["state"].values()))
