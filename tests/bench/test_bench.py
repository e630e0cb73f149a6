"""Smoke tests of the benchmark code paths on tiny shapes: they run and report the right columns.

No timing assertions: the numbers themselves are only checked for being positive and consistent.
"""

import csv
import sys

import pytest
import torch
from typer.testing import CliRunner

from qrnn_lm.bench import layer as layer_bench
from qrnn_lm.cli.bench import bench_app
from qrnn_lm.bench.timing import machine_description, round_robin_samples, time_round_robin

runner = CliRunner()


def test_time_round_robin_interleaves_warmup_and_repeats():
    calls = []
    medians = time_round_robin({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, warmup=2)
    assert calls == ["a", "b", "b", "a"] * 2 + ["a", "b"]  # the order rotates every round
    assert set(medians) == {"a", "b"} and all(value >= 0 for value in medians.values())
    with pytest.raises(ValueError, match="repeats must be >= 1, got 0"):
        time_round_robin({}, repeats=0, warmup=0)


def test_round_robin_samples_runs_setups_untimed_and_caps_the_slow_candidate():
    calls = []
    samples = round_robin_samples({"fast": lambda: calls.append("fast"), "naive": lambda: calls.append("naive")},
                                  repeats=6, warmup=2, setups={"fast": lambda: calls.append("setup")},
                                  capped=("naive",), cap=3)
    assert len(samples["fast"]) == 6 and len(samples["naive"]) == 3  # 3 of the 6 timed rounds
    assert calls.count("naive") == 4  # and the first warm-up round
    assert all(calls[i - 1] == "setup" for i, call in enumerate(calls) if call == "fast")
    assert calls.count("setup") == 8


def test_machine_description_names_the_cpu_threads_and_torch():
    text = machine_description("cpu")
    assert text.startswith("CPU ") and f"{torch.get_num_threads()} torch threads" in text
    assert text.endswith(f"torch {torch.__version__}")
    if sys.platform.startswith("linux"):  # read from /proc/cpuinfo: family, model and vector extensions
        assert "family " in text and any(v in text for v in ("AVX-512", "AVX2", "no AVX2"))


@pytest.fixture(scope="module")
def layer_rows():
    return layer_bench.run(hidden_size=8, batch_sizes=[2, 3], seq_lens=[4], windows=(1, 2), repeats=1, warmup=0)


def test_layer_grid_rows_table_and_summary(layer_rows):
    assert [(r["mode"], r["batch_size"], r["seq_len"]) for r in layer_rows] == [
        ("inference", 2, 4), ("inference", 3, 4), ("training", 2, 4), ("training", 3, 4)]
    for row in layer_rows:
        for w in (1, 2):
            assert row[f"qrnn_w{w}_ms"] > 0
            assert row[f"speedup_w{w}"] == pytest.approx(row["lstm_ms"] / row[f"qrnn_w{w}_ms"])
    table = layer_bench.format_table(layer_rows)
    assert table.splitlines()[0].split() == ["mode", "B", "T", "LSTM", "ms", "QRNN", "w1", "ms", "QRNN", "w2", "ms",
                                             "LSTM/QRNN", "w1", "LSTM/QRNN", "w2"]
    assert len(table.splitlines()) == 1 + len(layer_rows)
    summary = layer_bench.summarize(layer_rows)
    assert [(s["mode"], s["window"]) for s in summary] == [("inference", 1), ("inference", 2), ("training", 1), ("training", 2)]


def test_layer_gemm_floor_adds_products_times_and_ceilings():
    rows = layer_bench.run(hidden_size=8, batch_sizes=[2], seq_lens=[4], windows=(1, 2), repeats=1, warmup=0,
                           gemm_floor=True)
    for row in rows:
        for w in (1, 2):
            assert row[f"gemm_w{w}_ms"] > 0
            assert row[f"ceiling_w{w}"] == pytest.approx(row["lstm_ms"] / row[f"gemm_w{w}_ms"])
    assert layer_bench.format_table(rows).splitlines()[0].split()[-6:] == [
        "w1", "ms", "products", "w2", "ms", "ceiling", "w1", "ceiling", "w2"][-6:]
    assert all("ceiling_median" in entry for entry in layer_bench.summarize(rows))
    assert "products-only ceiling median" in layer_bench.format_summary(rows)


def test_products_only_runs_the_layers_three_products():
    products = layer_bench._products_only(rows=6, in_features=4, out_features=9, mode="training", device="cpu")
    calls = []
    real_mm = torch.mm
    try:
        torch.mm = lambda *a, **k: calls.append(tuple(a[0].shape) + tuple(a[1].shape)) or real_mm(*a, **k)
        products()
    finally:
        torch.mm = real_mm
    assert calls == [(6, 4, 4, 9), (6, 9, 9, 4), (9, 6, 6, 4)]  # forward, input gradient, weight gradient


def test_layer_csv_and_no_heatmap_without_matplotlib(layer_rows, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    text = layer_bench.report(layer_rows, tmp_path / "out" / "grid.csv", tmp_path / "grid.png")
    assert "heatmap: skipped (matplotlib is not installed" in text
    assert not (tmp_path / "grid.png").exists()
    with (tmp_path / "out" / "grid.csv").open() as handle:
        read = list(csv.DictReader(handle))
    assert list(read[0]) == ["device", "mode", "hidden_size", "batch_size", "seq_len", "lstm_ms",
                             "qrnn_w1_ms", "speedup_w1", "qrnn_w2_ms", "speedup_w2"]
    assert len(read) == len(layer_rows) and read[2]["mode"] == "training"


def test_parse_int_list_names_the_option():
    assert layer_bench.parse_int_list("8, 16,32", "--batch-sizes") == [8, 16, 32]
    with pytest.raises(ValueError, match="--seq-lens must be a comma-separated list of positive integers, got '0'"):
        layer_bench.parse_int_list("0", "--seq-lens")


def test_cli_layer_writes_csv_and_says_why_there_is_no_heatmap(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = runner.invoke(bench_app, ["layer", "--hidden-size", "8", "--batch-sizes", "2", "--seq-lens", "3",
                                       "--modes", "training", "--repeats", "1", "--warmup", "0", "--device", "cpu",
                                       "--csv", str(tmp_path / "l.csv"), "--png", str(tmp_path / "l.png")])
    assert result.exit_code == 0, result.output
    assert "LSTM/QRNN w2" in result.output and "heatmap: skipped" in result.output
    assert (tmp_path / "l.csv").exists()


def test_cli_layer_empty_png_writes_no_heatmap_and_gemm_floor_adds_ceilings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(bench_app, ["layer", "--hidden-size", "8", "--batch-sizes", "2", "--seq-lens", "3",
                                       "--modes", "inference", "--repeats", "1", "--warmup", "0", "--device", "cpu",
                                       "--csv", "l.csv", "--png", "", "--gemm-floor"])
    assert result.exit_code == 0, result.output
    assert "heatmap" not in result.output and sorted(p.name for p in tmp_path.iterdir()) == ["l.csv"]
    assert "ceiling w1" in result.output and "products-only ceiling median" in result.output


def test_cli_forget_mult_calls_the_benchmark_module(monkeypatch):
    from qrnn_lm.bench import forget_mult

    seen = []
    monkeypatch.setattr(forget_mult, "main", seen.append)
    result = runner.invoke(bench_app, ["forget-mult", "--repeats", "3", "--quick", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert seen == [["--repeats", "3", "--device", "cpu", "--quick"]]


@pytest.mark.parametrize("args,message", [
    (["layer", "--batch-sizes", "8,x"], "--batch-sizes must be a comma-separated list of positive integers"),
    (["layer", "--modes", "fast"], "--modes must be a comma-separated subset of inference,training"),
    (["layer", "--repeats", "0"], "--repeats must be >= 1, got 0"),
    (["lm", "--hidden-size", "0"], "--hidden-size must be >= 1, got 0"),
])
def test_cli_user_errors_are_one_line_with_exit_code_1(args, message):
    result = runner.invoke(bench_app, args)
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("script,command", [("bench_layer.py", "layer"), ("bench_lm.py", "lm"),
                                            ("bench_forget_mult.py", "forget-mult")])
def test_scripts_run_the_qrnn_lm_bench_commands(script, command):
    import subprocess
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "scripts" / script
    result = subprocess.run([sys.executable, str(path), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"qrnn-lm bench {command}" in result.stdout
