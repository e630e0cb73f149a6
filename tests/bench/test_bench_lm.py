"""``qrnn-lm bench lm``: the recipe's shape and settings, the instrumented step, the FLOP/s report
and the command. Tiny shapes, one timed repeat, no timing assertions."""

import copy
import dataclasses
import json

import pytest
import torch
from typer.testing import CliRunner

from qrnn_lm.bench import lm as lm_bench
from qrnn_lm.bench import lm_report
from qrnn_lm.bench.lm_config import bench_config
from qrnn_lm.models.lstm_layer import LSTMLayer
from qrnn_lm.cli.bench import bench_app
from qrnn_lm.config import Config, ConfigError, ModelConfig, TrainConfig
from qrnn_lm.nn import QRNNLayer
from qrnn_lm.training import step as training_step
from qrnn_lm.training.schedule import Schedule

runner = CliRunner()
TINY = dict(emb_size=8, hidden_size=12, num_layers=2, bptt=5, batch_size=3)
FAST = dict(vocab_size=50, repeats=1, warmup=0, peak_size=32)
RECIPE = """
name = "bench-recipe"
[data]
bptt = 6
batch_size = 4
[model]
emb_size = 16
hidden_size = 20
num_layers = 3
first_window = 3
window = 2
zoneout = 0.1
dropout_input = 0.25
dropout_hidden = 0.15
dropout_output = 0.35
weight_drop = 0.3
tie_weights = false
decoder = "adaptive"
adaptive_cutoffs = [10, 30]
[train]
optimizer = "adamw"
lr = 0.001
weight_decay = 0.01
precision = "bf16"
softmax = "chunked"
"""


@pytest.fixture
def recipe(tmp_path):
    path = tmp_path / "bench.toml"
    path.write_text(RECIPE, encoding="utf-8")
    return path


def test_without_a_recipe_the_bench_times_the_defaults():
    assert bench_config() == Config()  # PTB's AWD-QRNN: what the bench timed before --config existed


def test_the_recipe_gives_the_shape_and_the_training_settings(recipe):
    config = bench_config(recipe)
    assert (config.model.emb_size, config.model.hidden_size, config.model.num_layers) == (16, 20, 3)
    assert (config.model.first_window, config.model.window, config.model.decoder) == (3, 2, "adaptive")
    assert (config.data.bptt, config.data.batch_size) == (6, 4)
    assert (config.train.optimizer, config.train.precision) == ("adamw", "bf16")


def test_size_options_win_over_set_which_wins_over_the_recipe(recipe):
    config = bench_config(recipe, ["model.emb_size=10", "train.precision=fp32", "data.bptt=9"], emb_size=12, bptt=None)
    assert config.model.emb_size == 12  # the option, over --set and the recipe
    assert config.data.bptt == 9  # not given as an option: --set's
    assert config.train.precision == "fp32"  # --set over the recipe
    assert config.model.hidden_size == 20  # the recipe's
    options = bench_config(recipe, hidden_size=24, num_layers=2, batch_size=2)
    assert (options.model.hidden_size, options.model.num_layers, options.data.batch_size) == (24, 2, 2)


@pytest.mark.parametrize("sets,message", [
    (["train.precision=fp16"], "times train.precision 'fp32' or 'bf16', got 'fp16'"),
    (["model.colour=1"], "unknown config key 'model.colour'"),
])
def test_bad_settings_are_one_line_config_errors(sets, message):
    with pytest.raises(ConfigError, match=message):
        bench_config(None, sets)


def test_a_missing_recipe_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist; pick one from configs/"):
        bench_config(tmp_path / "nope.toml")


@pytest.fixture
def built(monkeypatch):
    """The trainers ``lm_bench.run`` builds, in order (QRNN, LSTM), appended as they are made."""
    trainers = []

    class Recorded(lm_bench._Trainer):
        def __init__(self, *args):
            super().__init__(*args)
            trainers.append(self)

    monkeypatch.setattr(lm_bench, "_Trainer", Recorded)
    return trainers


def test_run_builds_the_recipes_models_and_optimizer(recipe, built):
    report = lm_bench.run(bench_config(recipe, emb_size=12), **FAST)
    qrnn, lstm = (trainer.model for trainer in built)
    assert [(layer.input_size, layer.hidden_size, layer.window) for layer in qrnn.layers] == [
        (12, 20, 3), (20, 20, 2), (20, 20, 2)]  # untied: the last layer is hidden_size wide
    assert all(layer.zoneout == 0.1 for layer in qrnn.layers)
    assert not any(torch.nn.utils.parametrize.is_parametrized(layer.linear) for layer in qrnn.layers)  # weight drop off
    assert [(layer.lstm.input_size, layer.lstm.hidden_size) for layer in lstm.layers] == [(12, 20), (20, 20), (20, 20)]
    assert (qrnn.drop_input.p, qrnn.drop_hidden.p, qrnn.drop_output.p) == (0.25, 0.15, 0.35)
    assert isinstance(qrnn.decoder, torch.nn.AdaptiveLogSoftmaxWithLoss) and qrnn.decoder.cutoffs == [10, 30, 50]
    assert qrnn.softmax == lstm.softmax == "chunked"  # train.softmax reaches the models
    assert all(isinstance(trainer.optimizer, torch.optim.AdamW) for trainer in built)
    assert built[0].optimizer.param_groups[0]["weight_decay"] == 0.01
    assert tuple(built[0].tokens.shape) == (6, 4)
    assert report["shape"]["emb_size"] == 12 and report["shape"]["weight_drop"] == 0.0
    assert report["dtype"] == "bfloat16"


def test_weight_drop_keeps_the_recipes_dropconnect_on_both_models(recipe, built):
    report = lm_bench.run(bench_config(recipe, ["model.weight_drop=0.2"], emb_size=12), weight_drop=True, **FAST)
    qrnn, lstm = (trainer.model for trainer in built)
    assert all(torch.nn.utils.parametrize.is_parametrized(layer.linear) for layer in qrnn.layers)
    assert all(torch.nn.utils.parametrize.is_parametrized(layer.lstm) for layer in lstm.layers)
    assert report["shape"]["weight_drop"] == 0.2
    assert "weight drop 0.2" in lm_report.format_report(report)


@pytest.mark.parametrize("step", ["step", "timed_step"])
def test_bf16_runs_the_step_under_autocast(step):
    train = TrainConfig(precision="bf16")
    config = dataclasses.replace(ModelConfig(), emb_size=8, hidden_size=12, num_layers=2, weight_drop=0.0)
    model = lm_bench.build_models(50, config, "cpu", train)["qrnn"]
    seen = []
    model.layers[0].register_forward_hook(lambda module, args, output: seen.append(output[0].dtype))
    tokens = torch.randint(50, (6, 3))
    trainer = lm_bench._Trainer(model, train, tokens[:-1], tokens[1:])
    getattr(trainer, step)()
    assert seen == [torch.bfloat16]
    assert model.embedding.weight.dtype == torch.float32  # autocast: the weights stay float32


def test_bf16_measures_the_peak_in_bf16(monkeypatch):
    dtypes = []
    for name in ("matmul_gflops", "matmul_spread"):
        real = getattr(lm_bench, name)
        monkeypatch.setattr(lm_bench, name, lambda *args, real=real: dtypes.append(args[4]) or real(*args))
    config = bench_config(None, ["train.precision=bf16"], **TINY)
    lm_bench.run(config, **FAST)
    # The peak and the step's 3 product shapes, before and after the models.
    assert len(dtypes) == 2 * (1 + 3) and set(dtypes) == {torch.bfloat16}


def test_a_peak_measured_while_the_machine_was_slow_is_reported_bad(monkeypatch):
    """Both yardsticks (before and after the models) far below the step's achieved rate."""
    calls = []
    monkeypatch.setattr(lm_bench, "matmul_spread", lambda *args: calls.append("spread") or dict(rates=[1e-9]))
    monkeypatch.setattr(lm_bench, "matmul_gflops", lambda *args: calls.append("product") or 1e-9)
    report = lm_bench.run(bench_config(None, [], **TINY), **FAST)
    assert calls == ["spread"] + ["product"] * 3 + ["spread"] + ["product"] * 3
    assert report["peak"]["repeats"] == 2 and report["peak"]["bad"].startswith("bad measurement: the ")
    assert "above the peak" in report["peak"]["bad"] and report["peak"]["bad"] in lm_report.format_report(report)


SETTINGS = {
    "sgd, full softmax": dict(),
    "adam, adaptive, bf16": dict(optimizer="adam", precision="bf16", decoder="adaptive"),
    "adamw, chunked": dict(optimizer="adamw", softmax="chunked"),
}


@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("kind", ["qrnn", "lstm"])
def test_the_instrumented_step_updates_the_parameters_like_the_plain_step(kind, setting):
    """The hooks that time the parts must not change what the step computes."""
    options = dict(SETTINGS[setting])
    decoder = options.pop("decoder", "softmax")
    torch.manual_seed(0)
    config = dataclasses.replace(ModelConfig(), emb_size=8, hidden_size=16, num_layers=2, weight_drop=0.0,
                                 decoder=decoder, adaptive_cutoffs=[10, 30], tie_weights=decoder == "softmax")
    train = TrainConfig(lr=0.5, **options)
    model = lm_bench.build_models(50, config, "cpu", train)[kind]
    tokens = torch.randint(50, (6, 3))
    trainers = [lm_bench._Trainer(copy.deepcopy(model), train, tokens[:-1], tokens[1:]) for _ in range(2)]
    torch.manual_seed(1)
    trainers[0].step()
    torch.manual_seed(1)
    trainers[1].timed_step()
    before = dict(model.named_parameters())
    for (name, plain), (_, timed) in zip(trainers[0].model.named_parameters(), trainers[1].model.named_parameters()):
        assert not torch.equal(plain, before[name]), name  # the step changed it
        torch.testing.assert_close(timed, plain, msg=name)


def test_the_bench_times_the_trainers_own_step(monkeypatch):
    """Both the round-robin step time and the parts come from training.step.train_step and the
    trainer's Schedule.step, on each of the two models, once per round."""
    calls = {"train_step": [], "schedule": 0}
    real_step, real_schedule_step = training_step.train_step, Schedule.step

    def counted_step(model, *args, **kwargs):
        calls["train_step"].append(model.config.rnn)
        return real_step(model, *args, **kwargs)

    def counted_schedule_step(self, *args):
        calls["schedule"] += 1
        return real_schedule_step(self, *args)

    monkeypatch.setattr(training_step, "train_step", counted_step)
    monkeypatch.setattr(Schedule, "step", counted_schedule_step)
    report = lm_bench.run(bench_config(None, **TINY), vocab_size=50, repeats=2, warmup=1, peak_size=32)
    rounds = 3  # warmup + repeats, for the step time and again for the parts
    assert sorted(calls["train_step"]) == ["lstm"] * 2 * rounds + ["qrnn"] * 2 * rounds
    assert calls["schedule"] == 2 * 2 * rounds
    assert all(row["parts"][part]["ms"] > 0 for row in report["models"] for part in lm_bench.SECTIONS)


def test_part_marks_must_come_in_the_step_order():
    marks = [(name, float(index)) for index, name in enumerate(lm_bench._MARKS)]
    assert lm_bench._part_seconds(marks) == {"embedding": 2.0, "recurrent": 2.0, "softmax": 1.0, "optimizer": 2.0}
    with pytest.raises(RuntimeError, match="the hooks no longer match the model"):
        lm_bench._part_seconds(marks[:3] + marks[4:])


def test_the_lstm_twin_is_the_model_rnn_lstm_language_model_without_qrnn_keys():
    config = bench_config(None, ["model.zoneout=0.2", "model.window=2"], **TINY).model
    models = lm_bench.build_models(50, config, "cpu")
    assert models["qrnn"].config.rnn == "qrnn" and models["qrnn"].config.zoneout == 0.2
    lstm = models["lstm"]
    assert lstm.config.rnn == "lstm" and lstm.config.zoneout == 0.0 and lstm.config.window == 1
    assert all(isinstance(layer, LSTMLayer) for layer in lstm.layers)
    assert lstm.state_sizes() == [2 * size for size in lstm.layer_sizes()]  # h and c carried


@pytest.fixture(scope="module")
def report():
    return lm_bench.run(bench_config(None, **TINY), **FAST)


def test_report_rows_have_throughput_shares_and_consistent_flop_rates(report):
    rows, peak = report["models"], report["peak"]["gflops"]
    assert [row["model"] for row in rows] == ["qrnn", "lstm"]
    assert report["peak"]["size"] == 32 and peak > 0
    spread = report["peak"]
    assert spread["repeats"] >= 10 and 0 < spread["min"] <= spread["median"] <= spread["best"] <= peak
    # The higher, if the square product was slow:
    assert peak == max([spread["best"]] + [p["gflops"] for p in report["products"]])
    for row in rows:
        assert row["tokens_per_s"] == pytest.approx(5 * 3 / (row["step_ms"] / 1e3))
        assert sum(row[f"share_{s}"] for s in lm_bench.SECTIONS) == pytest.approx(1.0)
        assert row["gflop"] == pytest.approx(sum(part["gflop"] for part in row["parts"].values()))
        assert row["gflops"] == pytest.approx(row["gflop"] / (row["step_ms"] / 1e3))
        assert row["peak_fraction"] == pytest.approx(row["gflops"] / peak)
        for part in row["parts"].values():
            assert part["gflops"] == pytest.approx(part["gflop"] / (part["ms"] / 1e3))
            assert part["peak_fraction"] == pytest.approx(part["gflops"] / peak)
        assert row["parts"]["embedding"]["gflop"] == 0 and row["parts"]["recurrent"]["gflop"] > 0
    assert rows[0]["parts"]["softmax"]["matmul_gflop"] == pytest.approx(3 * 2 * 15 * 8 * 50 / 1e9)
    assert report["speedup"] == pytest.approx(rows[1]["step_ms"] / rows[0]["step_ms"])
    assert [(p["name"], p["m"], p["k"], p["n"]) for p in report["products"]] == [
        ("decoder", 15, 8, 50), ("QRNN gates", 15, 8, 36), ("LSTM step", 3, 12, 48)]
    assert all(p["gflops"] > 0 for p in report["products"])


def test_text_report_has_the_peak_the_new_columns_and_the_parts(report):
    text = lm_report.format_report(report)
    lines = text.splitlines()
    assert lines[0].startswith("shape: vocab 50, emb 8, hidden 12, 2 layers (QRNN windows 2, 1), bptt 5, batch 3")
    assert lines[1].startswith("matmul peak (32 x 32 x 32, float32): ")
    assert "at the step's decoder shape [15 x 8] x [8 x 50]" in text
    header = lm_report.format_table(report["models"]).splitlines()[0].split()
    assert header == ["model", "step", "ms", "tokens/s", "embedding", "%", "recurrent", "%", "softmax", "%",
                      "optimizer", "%", "GFLOP/step", "GFLOP/s", "%", "of", "peak"]
    parts = lm_report.format_parts(report["models"]).splitlines()
    assert parts[0].split() == ["model", "part", "ms", "GFLOP", "GFLOP/s", "%", "of", "peak"]
    assert len(parts) == 1 + 2 * 4 and parts[1].split()[:2] == ["qrnn", "embedding"]
    assert parts[1].split()[-2:] == ["-", "-"]  # no FLOPs counted: no rate
    assert lines[-1] == f"QRNN/LSTM training throughput: {report['speedup']:.2f}x"


def test_cli_lm_prints_the_flop_report_and_writes_json(tmp_path):
    options = [f"--{key.replace('_', '-')}={value}" for key, value in {**TINY, "vocab_size": 50}.items()]
    result = runner.invoke(bench_app, ["lm", *options, "--repeats", "1", "--warmup", "0", "--device", "cpu",
                                       "--peak-size", "32", "--json", str(tmp_path / "out" / "lm.json")])
    assert result.exit_code == 0, result.output
    for text in ("matmul peak (32 x 32 x 32, float32)", "GFLOP/s", "% of peak", "recurrent", "QRNN/LSTM training throughput"):
        assert text in result.output
    saved = json.loads((tmp_path / "out" / "lm.json").read_text())
    assert saved["machine"].startswith("CPU ") and saved["peak"]["gflops"] > 0
    assert {"gflop", "gflops", "peak_fraction", "parts"} <= set(saved["models"][0])


def test_cli_lm_takes_the_recipe_and_options_win(recipe):
    result = runner.invoke(bench_app, ["lm", "--config", str(recipe), "--hidden-size", "24", "--vocab-size", "60",
                                       "--set", "train.precision=fp32", "--repeats", "1", "--warmup", "0",
                                       "--device", "cpu", "--peak-size", "32"])
    assert result.exit_code == 0, result.output
    assert ("shape: vocab 60, emb 16, hidden 24, 3 layers (QRNN windows 3, 2, 2), bptt 6, batch 4, "
            "adaptive decoder (cutoffs [10, 30]), adamw, fp32") in result.output


@pytest.mark.parametrize("args,message", [
    (["--config", "nope.toml"], "error: config file nope.toml does not exist; pick one from configs/"),
    (["--set", "train.precision=fp16"], "error: qrnn-lm bench lm times train.precision 'fp32' or 'bf16'"),
    (["--set", "model.decoder=adaptive"], "error: model.adaptive_cutoffs [2800, 20000, 76000] must all be below"),
    (["--peak-size", "0"], "error: --peak-size must be >= 1, got 0"),
])
def test_cli_lm_user_errors_are_one_line(args, message):
    result = runner.invoke(bench_app, ["lm", *args, "--device", "cpu", *[f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]])
    assert result.exit_code == 1, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len([line for line in result.output.splitlines() if line.startswith("error:")]) == 1
