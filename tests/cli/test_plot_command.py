"""``qrnn-lm plot``: one PNG, two panels, one labelled line per run (name and model type), character
runs in bits per character, subword runs per word, and one-line errors for a missing matplotlib, a
folder without metrics.csv or without validations, and bits beside perplexities."""

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qrnn_lm.cli import plot as plot_module
from qrnn_lm.cli.commands import app
from qrnn_lm.cli.plot import Curve, log_ticks, plot_curves, read_curve

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"
HEADER = "step,epoch,tokens,wall_s,train_loss,valid_ppl,lr\n"


def write_run(folder: Path, config: str, rows: str) -> Path:
    folder.mkdir()
    (folder / "config.toml").write_text(config)
    (folder / "metrics.csv").write_text(HEADER + rows)
    return folder


@pytest.fixture
def runs(tmp_path):
    qrnn = write_run(tmp_path / "qrnn-run", 'name = "ptb-small"\n[model]\nhidden_size = 8\n',
                     "10,1,400,30.000,5.1,,30\n17,1,624,60.000,,250.5,30\n34,2,1248,120.000,,180.25,30\n")
    lstm = write_run(tmp_path / "lstm-run", 'name = "ptb-small-lstm"\n[model]\nrnn = "lstm"\n',
                     "17,1,700,90.000,,300,30\n")
    return qrnn, lstm


def assert_one_line_error(result, *fragments):
    assert result.exit_code == 1, (result.exit_code, result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output and result.stdout == ""
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_plot_writes_one_png_with_a_line_per_run(runs, tmp_path):
    out = tmp_path / "curves.png"
    result = runner.invoke(app, ["plot", *map(str, runs), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(PNG) and f"wrote {out} (2 runs)" in result.stdout


def test_the_panels_plot_perplexity_against_minutes_and_tokens_labelled_by_name_and_model(runs, tmp_path):
    figure = plot_curves([read_curve(folder) for folder in runs], tmp_path / "curves.png")
    by_time, by_tokens = figure.axes
    for axes in (by_time, by_tokens):
        assert axes.get_legend_handles_labels()[1] == ["ptb-small (qrnn)", "ptb-small-lstm (lstm)"]
        assert axes.get_yscale() == "log"
    assert "minutes" in by_time.get_xlabel() and "tokens" in by_tokens.get_xlabel()
    assert "perplexity" in by_time.get_ylabel()
    qrnn_time, qrnn_tokens = by_time.lines[0], by_tokens.lines[0]
    assert list(qrnn_time.get_xdata()) == [1.0, 2.0] and list(qrnn_time.get_ydata()) == [250.5, 180.25]
    assert list(qrnn_tokens.get_xdata()) == [624, 1248]  # validation rows only
    assert by_time.lines[1].get_xdata()[0] == 1.5


def test_two_runs_of_one_recipe_are_told_apart(runs, tmp_path, monkeypatch):
    other = write_run(tmp_path / "again", 'name = "ptb-small"\n', "17,1,624,30.000,,240,30\n")
    seen, real = [], plot_module.plot_curves
    monkeypatch.setattr(plot_module, "plot_curves", lambda curves, out: seen.append(curves) or real(curves, out))
    result = runner.invoke(app, ["plot", str(runs[0]), str(other), "-o", str(tmp_path / "x.png")])
    assert result.exit_code == 0, result.output
    assert [curve.label for curve in seen[0]] == [f"ptb-small (qrnn) {runs[0]}", f"ptb-small (qrnn) {other}"]


def test_without_matplotlib_plot_says_what_to_install(runs, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = runner.invoke(app, ["plot", str(runs[0]), "--out", str(tmp_path / "x.png")])
    assert_one_line_error(result, "matplotlib", "pip install 'qrnn-lm[plot]'")
    assert not (tmp_path / "x.png").exists()


def test_runs_without_validations_are_one_line_errors_naming_the_folder(runs, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["plot", str(runs[0]), str(empty), "--out", str(tmp_path / "x.png")])
    assert_one_line_error(result, str(empty), "no metrics.csv")
    young = write_run(tmp_path / "young", 'name = "young"\n', "10,1,400,30.000,5.1,,30\n")
    result = runner.invoke(app, ["plot", str(young), "--out", str(tmp_path / "x.png")])
    assert_one_line_error(result, str(young), "no validation rows")
    result = runner.invoke(app, ["plot", str(tmp_path / "missing"), "--out", str(tmp_path / "x.png")])
    assert_one_line_error(result, str(tmp_path / "missing"), "not a run folder")
    result = runner.invoke(app, ["plot", str(runs[0]), "--out", str(tmp_path / "x.unknown")])
    assert_one_line_error(result, "x.unknown", ".png")
    assert not (tmp_path / "x.png").exists()


def test_character_runs_are_drawn_in_bits_per_character(tmp_path):
    """The valid_bpc column on a linear axis; a file written before it: log2 of its perplexity."""
    char = tmp_path / "char"
    char.mkdir()
    (char / "config.toml").write_text('name = "ptb-char"\n[data]\ntokenizer = "char"\n')
    (char / "metrics.csv").write_text(HEADER.strip() + ",valid_bpc\n10,1,400,30.000,1.2,,30,\n"
                                      "17,1,624,60.000,,8,30,\n"  # logged before the column, kept by a resume
                                      "34,2,1248,90.000,,3.2,30,1.678\n")
    old = write_run(tmp_path / "old", 'name = "old-char"\n[data]\ntokenizer = "byte"\n', "17,1,624,60.000,,4,30\n")
    figure = plot_curves([read_curve(char), read_curve(old)], tmp_path / "bits.png")
    by_time, _ = figure.axes
    assert by_time.get_ylabel() == "validation bits per character" and by_time.get_yscale() == "linear"
    assert list(by_time.lines[0].get_ydata()) == [3.0, 1.678] and list(by_time.lines[1].get_ydata()) == [2.0]


def test_subword_runs_are_drawn_per_word_beside_word_runs_but_never_beside_bits(runs, tmp_path):
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "config.toml").write_text('name = "wt2-bpe"\n[data]\ntokenizer = "subword"\n')
    (sub / "metrics.csv").write_text(HEADER.strip() + ",valid_word_ppl\n10,1,400,30.000,,50,30,\n"
                                     "17,1,624,60.000,,40.5,30,200.25\n")  # its first row: no word count, no point
    figure = plot_curves([read_curve(runs[0]), read_curve(sub)], tmp_path / "words.png")
    by_time, _ = figure.axes
    assert by_time.get_ylabel() == "validation perplexity per word" and by_time.get_yscale() == "log"
    assert list(by_time.lines[1].get_ydata()) == [200.25]
    old = write_run(tmp_path / "old-sub", '[data]\ntokenizer = "subword"\n', "17,1,624,60.000,,40.5,30\n")
    assert read_curve(old).label.endswith("per token") and read_curve(old).values == [40.5]
    char = write_run(tmp_path / "char", '[data]\ntokenizer = "char"\n', "17,1,624,60.000,,4,30\n")
    result = runner.invoke(app, ["plot", str(runs[0]), str(char), "--out", str(tmp_path / "x.png")])
    assert_one_line_error(result, "bits per character", "perplexity", "apart")
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("low, high, ticks", [
    (96, 205, [100, 120, 150, 200]),  # matplotlib's log ticks label 100 and 200 alone here
    (55, 1300, [70, 100, 150, 200, 300, 500, 700, 1000]),
    (1200, 12500, [1500, 2000, 3000, 5000, 7000, 10000]),
    (40, 60, [40, 50, 60]),
    (101, 119, [101, 119]),  # no round number inside: the ends
    (1.5, 1e9, [10.0 ** e for e in range(1, 10)]),  # more than 8 even by decades: the decades
])
def test_log_ticks_are_the_finest_round_numbers_that_fit(low, high, ticks):
    assert log_ticks(low, high) == ticks


def test_a_perplexity_axis_is_labelled_with_plain_round_numbers(tmp_path):
    curves = [Curve("narrow", [1.0, 2.0, 3.0], [10, 20, 30], [199.0, 140.0, 101.0]),
              Curve("wide", [1.0, 2.0], [10, 20], [1100.0, 65.0])]
    for shown, want in ((curves[:1], ["100", "120", "150", "200"]),
                        (curves[1:], ["70", "100", "150", "200", "300", "500", "700", "1000"])):
        by_time, by_tokens = plot_curves(shown, tmp_path / "curves.png").axes
        assert [label.get_text() for label in by_time.get_yticklabels()] == want
        assert list(by_tokens.get_yticks()) == [float(text) for text in want]  # shared; labels on the left only
