"""The trainer with the softmax options, mixed precision and torch.compile (tiny runs on the CPU)."""

import math
import types
from pathlib import Path

import pytest
import torch

import qrnn_lm.training.metrics as metrics_module
import qrnn_lm.device as device_module
from qrnn_lm.config import UserError
from qrnn_lm.inference.evaluate import evaluate_checkpoint
from qrnn_lm.inference.generate import generate
from qrnn_lm.models.checkpoint_file import load_checkpoint, model_from_checkpoint
from qrnn_lm.training import train

from qrnn_lm.config import load_config

TINY = Path(__file__).resolve().parents[2] / "configs" / "tiny.toml"




def tiny(corpus, *overrides):
    return load_config(TINY, [f'data.dataset="{corpus}"', "train.epochs=2", *overrides])

# Dropouts off: eager/compiled (and full/chunked) runs then see the same computation.
NO_DROPOUT = ["model.dropout_emb=0", "model.dropout_input=0", "model.dropout_hidden=0",
              "model.dropout_output=0", "model.zoneout=0", "model.weight_drop=0", "train.max_steps=6",
              "train.log_interval=1", "train.epochs=1"]


def run_losses(corpus, out, *overrides, monkeypatch):
    """Train; return the per-step losses the meter received and the results."""
    losses = []
    real_add = metrics_module.Meter.add
    monkeypatch.setattr(metrics_module.Meter, "add",
                        lambda self, loss, *a: (losses.append(loss), real_add(self, loss, *a))[1])
    results = train(tiny(corpus, *NO_DROPOUT, *overrides), out, device="cpu", progress=False)
    monkeypatch.setattr(metrics_module.Meter, "add", real_add)
    return losses, results


def test_chunked_softmax_trains_as_the_full_one(corpus, tmp_path, monkeypatch):
    full, full_results = run_losses(corpus, tmp_path / "full", "train.softmax=full", monkeypatch=monkeypatch)
    chunked, chunked_results = run_losses(corpus, tmp_path / "chunked", "train.softmax=chunked",
                                          monkeypatch=monkeypatch)
    assert len(full) == 6
    torch.testing.assert_close(torch.tensor(chunked), torch.tensor(full), rtol=1e-5, atol=1e-5)
    assert chunked_results["test_loss"] == pytest.approx(full_results["test_loss"], rel=1e-5)


def unigram_loss(folder: Path) -> float:
    """Mean ``-log p`` of the test tokens under the training text's word frequencies (each line
    ends with an <eos>): what a model that ignores the context can reach."""
    def tokens(split):
        return [w for line in (folder / f"{split}.txt").read_text().splitlines() for w in line.split() + ["<eos>"]]
    train_tokens = tokens("train")
    counts = {word: train_tokens.count(word) for word in set(train_tokens)}
    test_tokens = tokens("test")
    return -sum(math.log(counts[w] / len(train_tokens)) for w in test_tokens) / len(test_tokens)


def test_adaptive_softmax_learns_evaluates_and_generates(tmp_path, monkeypatch):
    """On a text whose next word follows from the current one (w0 w1 ... w15 on every line), the
    adaptive decoder must get far below the unigram loss, which ignores the context: a head or a
    cluster that receives no gradient, or targets sent to the wrong cluster, stay near it."""
    corpus = tmp_path / "cycle"
    corpus.mkdir()
    line = " ".join(f"w{i}" for i in range(16))
    for split, lines in (("train", 90), ("valid", 12), ("test", 12)):
        (corpus / f"{split}.txt").write_text("\n".join([line] * lines) + "\n")
    baseline = unigram_loss(corpus)  # ln 17 here: 17 equally frequent tokens
    losses, results = run_losses(corpus, tmp_path / "run", "model.decoder=adaptive", "model.adaptive_cutoffs=[4, 10]",
                                 'train.optimizer="adam"', "train.lr=0.05", "train.asgd=false", "train.max_steps=12",
                                 monkeypatch=monkeypatch)
    assert len(losses) == 12 and all(math.isfinite(loss) for loss in losses)
    assert losses[0] > 0.9 * baseline  # it starts near the context-free loss ...
    assert results["test_loss"] < 0.75 * baseline  # ... and learns the context (measured: 1.76 vs 2.83)
    evaluated = evaluate_checkpoint(tmp_path / "run" / "best.pt", split="test", data=corpus, progress=False)
    assert evaluated["loss"] == pytest.approx(results["test_loss"], rel=1e-6)
    model, vocab, _ = model_from_checkpoint(load_checkpoint(tmp_path / "run" / "best.pt"))
    words = list(generate(model, vocab, "w0 w1", num_tokens=5, seed=0))
    assert len(words) == 5 and all(word in vocab.stoi for word in words)


def test_bf16_trains_on_the_cpu_and_keeps_float32_checkpoints(corpus, tmp_path, monkeypatch):
    fp32, _ = run_losses(corpus, tmp_path / "fp32", monkeypatch=monkeypatch)
    bf16, results = run_losses(corpus, tmp_path / "bf16", "train.precision=bf16", monkeypatch=monkeypatch)
    assert bf16 != fp32  # autocast really ran in bfloat16 ...
    torch.testing.assert_close(torch.tensor(bf16), torch.tensor(fp32), rtol=2e-2, atol=2e-2)  # ... and is close
    payload = load_checkpoint(tmp_path / "bf16" / "last.pt")
    assert all(t.dtype == torch.float32 for t in payload["model"].values() if t.is_floating_point())
    # eval is unchanged (float32): the checkpoint evaluates to the run's own test loss.
    evaluated = evaluate_checkpoint(tmp_path / "bf16" / "best.pt", split="test", data=corpus, progress=False)
    assert evaluated["loss"] == pytest.approx(results["test_loss"], rel=1e-6)


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_validation_runs_in_the_training_precision_and_the_test_in_float32(corpus, tmp_path, monkeypatch, precision):
    """The evaluations of a two-epoch run, in order, as (split, bf16 autocast on): the two
    validations under the steps' autocast, the final test without."""
    from qrnn_lm.training import data_stream

    seen = []
    real_mean_loss = data_stream.Evaluator.mean_loss

    def spy(self, model, source, progress=False):
        split = "valid" if source is self.valid else "test"
        seen.append((split, torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16))
        return real_mean_loss(self, model, source, progress)

    monkeypatch.setattr(data_stream.Evaluator, "mean_loss", spy)
    train(tiny(corpus, f"train.precision={precision}", "train.max_steps=0"), tmp_path / "run", device="cpu", progress=False)
    bf16 = precision == "bf16"
    assert seen == [("valid", bf16), ("valid", bf16), ("test", False)]


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_trains_in_bf16_only_where_the_cpu_has_it(corpus, tmp_path, monkeypatch, native):
    monkeypatch.setattr(device_module, "cpu_has_native_bf16", lambda: native)
    expected, _ = run_losses(corpus, tmp_path / "explicit", f"train.precision={'bf16' if native else 'fp32'}",
                             monkeypatch=monkeypatch)
    auto, _ = run_losses(corpus, tmp_path / "auto", "train.precision=auto", monkeypatch=monkeypatch)
    assert auto == expected
    assert 'precision = "auto"' in (tmp_path / "auto" / "config.toml").read_text()  # what the user asked for


def test_cpu_bf16_detection_reads_the_cpu_flags(tmp_path):
    zen4 = tmp_path / "zen4"
    zen4.write_text("processor : 0\nflags : fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n")
    zen3 = tmp_path / "zen3"
    zen3.write_text("processor : 0\nflags : fpu sse2 avx2 fma\n")
    assert device_module.cpu_has_native_bf16(zen4)
    assert not device_module.cpu_has_native_bf16(zen3)
    assert not device_module.cpu_has_native_bf16(tmp_path / "missing")
    assert device_module.resolve_precision("fp32", torch.device("cpu")) == "fp32"


@pytest.mark.parametrize("gpu, capability, expected", [
    ("Tesla V100", (7, 0), "fp32"), ("Tesla T4", (7, 5), "fp32"),  # bf16 only emulated there
    ("A100", (8, 0), "bf16"), ("H100", (9, 0), "bf16"),
])
def test_auto_precision_on_cuda_is_bf16_only_where_native(monkeypatch, gpu, capability, expected):
    """The device properties are mocked; is_bf16_supported() says True on every one of them, as
    it does on a real V100 or T4 (it counts emulation), so it cannot be what decides."""
    properties = types.SimpleNamespace(name=gpu, major=capability[0], minor=capability[1])
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: properties)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert device_module.resolve_precision("auto", torch.device("cuda")) == expected
    assert device_module.resolve_precision("auto", torch.device("cuda", 0)) == expected


def test_fp16_on_the_cpu_is_a_user_error(corpus, tmp_path):
    with pytest.raises(UserError, match="bf16") as info:
        train(tiny(corpus, "train.precision=fp16"), tmp_path / "run", device="cpu", progress=False)
    assert "\n" not in str(info.value)


def compiled_against_eager(corpus, tmp_path, monkeypatch):
    eager, _ = run_losses(corpus, tmp_path / "eager", monkeypatch=monkeypatch)
    calls = []
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda *a, **k: (calls.append(1), real_compile(*a, **k))[1])
    compiled, _ = run_losses(corpus, tmp_path / "compiled", "train.compile=true", monkeypatch=monkeypatch)
    assert calls == [1]
    torch.testing.assert_close(torch.tensor(compiled), torch.tensor(eager), rtol=1e-4, atol=1e-4)


def test_compiled_training_matches_eager(corpus, tmp_path, monkeypatch):
    """Dynamo captures the model (QRNN ops included) and AOTAutograd differentiates it; the
    aot_eager backend skips inductor's C++ code generation, which takes ~50 s on a small CPU."""
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **k: real_compile(model, backend="aot_eager", **k))
    compiled_against_eager(corpus, tmp_path, monkeypatch)


@pytest.mark.slow  # inductor's C++ code generation: 78 s of CPU, 5.4 min on a busy 2-core machine
def test_inductor_compiled_training_matches_eager(corpus, tmp_path, monkeypatch):
    """The default torch.compile backend, the one users get: part of `make test` and `.ci/run`;
    `pytest -m "not slow"` leaves it out of a quick local run."""
    compiled_against_eager(corpus, tmp_path, monkeypatch)


def test_a_gradient_scaler_skips_an_overflowed_step_and_lowers_its_scale():
    """The fp16 path's logic, run in fp32 on the CPU: a hook makes one step's gradient overflow."""
    import dataclasses

    from qrnn_lm.config import ModelConfig, TrainConfig
    from qrnn_lm.models import QRNNLanguageModel
    from qrnn_lm.training.step import train_step

    torch.manual_seed(0)
    small = ModelConfig(emb_size=8, hidden_size=8, num_layers=1, weight_drop=0.0, dropout_emb=0.0,
                        dropout_input=0.0, dropout_hidden=0.0, dropout_output=0.0)
    model = QRNNLanguageModel(20, small)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16, growth_interval=1000)
    overflow = [True]
    model.embedding.weight.register_hook(lambda grad: grad * float("inf") if overflow[0] else grad)
    inputs, targets = torch.randint(0, 20, (5, 2)), torch.randint(0, 20, (5, 2))
    train = dataclasses.replace(TrainConfig(), alpha=0.0, beta=0.0)
    before = [p.detach().clone() for p in model.parameters()]
    result = train_step(model, optimizer, inputs, targets, None, train, scaler=scaler)
    assert result.grad_norm != result.grad_norm or result.grad_norm == float("inf")  # overflowed
    assert all(p.grad is None for p in model.parameters())  # nothing for the optimiser to apply
    optimizer.step()
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters()))
    assert scaler.get_scale() == 2.0**15  # halved after the overflow
    overflow[0] = False  # the next step applies unscaled gradients
    model.reset()
    result = train_step(model, optimizer, inputs, targets, None, train, scaler=scaler)
    plain = QRNNLanguageModel(20, small)
    plain.load_state_dict(model.state_dict())
    expected = train_step(plain, torch.optim.SGD(plain.parameters(), lr=0.1), inputs, targets, None, train)
    assert result.grad_norm == pytest.approx(expected.grad_norm, rel=1e-5)
