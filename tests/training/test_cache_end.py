"""``train.cache_at_end``: the cache pointer scored on test after a run, beside the plain test ppl."""

import json
from pathlib import Path

import pytest

from qrnn_lm.config import ConfigError, load_config
from qrnn_lm.inference.cache import CacheParams, evaluate_cache_checkpoint
from qrnn_lm.training import train

TINY = Path(__file__).resolve().parents[2] / "configs" / "tiny.toml"
KEYS = {"cache_base_ppl", "test_cache_loss", "test_cache_ppl", "cache_window", "cache_theta", "cache_lambda",
        "cache_chosen_on", "cache_seconds"}


def run(corpus, out, *overrides):
    config = load_config(TINY, [f'data.dataset="{corpus}"', "train.epochs=1", *overrides])
    return train(config, out, device="cpu", progress=False)


@pytest.mark.parametrize("mode, overrides, params, grid", [
    ("search", [], CacheParams(), True),
    ("fixed", ["train.cache_window=7", "train.cache_theta=0.3", "train.cache_lambda=0.25"],
     CacheParams(window=7, theta=0.3, lambd=0.25), False),
])
def test_results_hold_what_eval_gives_on_best_pt(corpus, tmp_path, capsys, mode, overrides, params, grid):
    out = tmp_path / "run"
    results = run(corpus, out, f'train.cache_at_end="{mode}"', *overrides)
    written = json.loads((out / "results.json").read_text())
    assert KEYS <= written.keys() and written == results
    expected = evaluate_cache_checkpoint(out / "best.pt", params=params, search_grid=grid, data=str(corpus),
                                         device="cpu", progress=False)
    assert expected["split"] == "test"
    assert written["test_cache_ppl"] == expected["cache_ppl"] and written["test_cache_loss"] == expected["cache_loss"]
    assert (written["cache_window"], written["cache_theta"], written["cache_lambda"]) == (
        expected["window"], expected["theta"], expected["lambda"])
    # test_batch_size 1 in tiny.toml: the plain number the cache improves on is the run's test ppl
    assert written["cache_base_ppl"] == pytest.approx(written["test_ppl"], rel=1e-9)
    assert written["cache_chosen_on"] == ("valid" if grid else "config") and written["cache_seconds"] >= 0
    assert f"-> {written['test_cache_ppl']:.2f} with the cache pointer" in capsys.readouterr().out


def test_off_writes_no_cache_keys(corpus, tmp_path, capsys):
    results = run(corpus, tmp_path / "run")
    assert not KEYS & json.loads((tmp_path / "run" / "results.json").read_text()).keys()
    assert not KEYS & results.keys() and "cache pointer" not in capsys.readouterr().out


@pytest.mark.parametrize("override, key", [('train.cache_at_end="on"', "train.cache_at_end"),
                                           ("train.cache_window=0", "train.cache_window"),
                                           ("train.cache_theta=-1", "train.cache_theta"),
                                           ("train.cache_lambda=1.5", "train.cache_lambda")])
def test_bad_values_are_one_line_config_errors(override, key):
    with pytest.raises(ConfigError) as error:
        load_config(TINY, [override])
    assert key in str(error.value) and "\n" not in str(error.value)


def test_train_summary_line_carries_the_cache_ppl():
    from qrnn_lm.cli.train import _format_results

    line = _format_results({"status": "completed", "steps": 3, "test_ppl": 80.0, "test_cache_ppl": 70.5}, Path("r"))
    assert "test ppl 80.00, with the cache pointer 70.50" in line
    assert "cache" not in _format_results({"status": "completed", "steps": 3, "test_ppl": 80.0}, Path("r"))
