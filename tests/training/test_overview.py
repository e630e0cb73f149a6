"""The lines a training run prints before its first step (qrnn_lm/training/overview.py)."""

from pathlib import Path

import pytest
import torch
from _corpus import write_corpus

import qrnn_lm.device as device
import qrnn_lm.training.overview as overview
from qrnn_lm.config import load_config
from qrnn_lm.training import train

TINY = Path(__file__).resolve().parents[2] / "configs" / "tiny.toml"


def _lines(*overrides, device="cpu", world_size=1, parameters=1234):
    config = load_config(TINY, list(overrides))
    model = torch.nn.Linear(parameters, 1, bias=False)
    return overview.run_overview(config, 10_000, 929_589, model, "bf16", torch.device(device), world_size,
                                 Path("runs/tiny"))


def test_the_start_line_says_what_is_trained_on_what_and_where():
    line, = _lines(parameters=10_600_000)
    assert line == (f"training tiny: QRNN, 2 layers of 24 (emb 16), 10.6M parameters, vocabulary 10,000, "
                    f"929,589 training tokens; bf16 on {overview._device_name(torch.device('cpu'))}; "
                    f"run folder runs/tiny")
    assert "1,234 parameters" in _lines()[0]
    assert "LSTM, 2 layers" in _lines("model.rnn=\"lstm\"", "model.zoneout=0")[0]
    assert "on meta x 4 processes;" in _lines(device="meta", world_size=4)[0]


def test_the_cpu_is_named_with_its_threads(monkeypatch):
    for threads, text in ((1, "cpu (1 thread)"), (2, "cpu (2 threads)")):
        monkeypatch.setattr(torch, "get_num_threads", lambda threads=threads: threads)
        assert overview._device_name(torch.device("cpu")) == text


@pytest.mark.parametrize("bf16, tokenizer, recipe", [(True, "word", "ptb-cpu-bf16"), (False, "word", "ptb-cpu"),
                                                     (True, "char", "ptb-char-cpu"), (False, "byte", "ptb-char-cpu")])
def test_a_gpu_schedule_on_a_cpu_gets_a_note_naming_the_cpu_recipe(monkeypatch, bf16, tokenizer, recipe):
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda cpuinfo: bf16)
    lines = _lines("train.epochs=550", f'data.tokenizer="{tokenizer}"')
    assert lines[1] == (f"note: 550 epochs and no time limit, a GPU recipe's schedule; on a CPU, --max-minutes M "
                        f"sets a budget, and --config configs/{recipe}.toml is the 20-minute CPU recipe")
    assert (Path(__file__).resolve().parents[2] / "configs" / f"{recipe}.toml").is_file()


@pytest.mark.parametrize("overrides, device", [
    (["train.epochs=99"], "cpu"),  # a short schedule
    (["train.epochs=550", "train.max_minutes=20"], "cpu"),  # a budget
    (["train.epochs=550", "train.max_steps=1000"], "cpu"),
    (["train.epochs=550"], "meta"),  # not a CPU
])
def test_no_note_with_a_limit_a_short_schedule_or_off_the_cpu(overrides, device):
    assert len(_lines(*overrides, device=device)) == 1


def test_a_run_prints_the_start_line_first(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus")
    config = load_config(TINY, [f'data.dataset="{corpus}"', "train.max_steps=1"])
    train(config, tmp_path / "run", device="cpu", progress=False)
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("training tiny: QRNN, 2 layers of 24 (emb 16), ") and "vocabulary 17, " in first
    threads = torch.get_num_threads()
    assert first.endswith(f"fp32 on cpu ({threads} thread{'s' if threads != 1 else ''}); "
                          f"run folder {tmp_path / 'run'}")
