"""The matmul peak of ``qrnn-lm bench lm``: a positive rate in each dtype, the best of the repeats
and their spread (with the timer mocked), the bad-measurement check; no timing assertions."""

import pytest
import torch

from qrnn_lm.bench import lm_report, peak as peak_module
from qrnn_lm.bench.peak import check_achieved, default_peak_size, matmul_gflops, matmul_spread, merge_spreads, settle_peak


def _fake_clock(monkeypatch, seconds_per_call):
    """Each timed call takes the next of ``seconds_per_call`` on the mocked timer."""
    ticks = iter([t for i, d in enumerate(seconds_per_call) for t in (10.0 * i, 10.0 * i + d)])
    monkeypatch.setattr(peak_module, "_clock", lambda: next(ticks))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_matmul_rate_is_positive_and_finite(dtype):
    rate = matmul_gflops(16, 24, 8, "cpu", dtype, repeats=2, warmup=0)
    assert 0 < rate < float("inf")


def test_matmul_rate_times_the_asked_product(monkeypatch):
    shapes = []
    real_mm = torch.mm
    monkeypatch.setattr(torch, "mm", lambda a, b, **kwargs: shapes.append((a.shape, b.shape, a.dtype)) or real_mm(a, b, **kwargs))
    matmul_gflops(5, 6, 7, "cpu", torch.bfloat16, repeats=3, warmup=0)
    assert shapes == [((5, 6), (6, 7), torch.bfloat16)] * 4  # one warm-up call always, then the repeats


def test_peak_size_fits_the_device_and_bad_sizes_are_refused():
    assert default_peak_size("cpu") == 2048 and default_peak_size("cuda") == 8192
    with pytest.raises(ValueError, match=r"matrix sizes must be >= 1, got \(0, 2, 2\)"):
        matmul_gflops(0, 2, 2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_matmul_rate_on_cuda():
    assert matmul_gflops(256, 256, 256, "cuda", torch.bfloat16, repeats=2, warmup=1) > 0


def test_the_spread_of_the_calls_and_the_best_is_the_rate(monkeypatch):
    _fake_clock(monkeypatch, [2.0, 1.0, 4.0])  # 2*10*10*10 = 2000 FLOPs per call
    spread = matmul_spread(10, 10, 10, repeats=3, warmup=0)
    rates = [2000 / 2 / 1e9, 2000 / 1 / 1e9, 2000 / 4 / 1e9]
    assert spread == dict(min=pytest.approx(rates[2]), median=pytest.approx(rates[0]), best=pytest.approx(rates[1]),
                          repeats=3, rates=pytest.approx(rates))
    _fake_clock(monkeypatch, [2.0, 1.0, 4.0])
    assert matmul_gflops(10, 10, 10, repeats=3, warmup=0) == pytest.approx(2000 / 1 / 1e9)


def test_two_measurements_pool_their_calls():
    before, after = dict(rates=[100.0, 120.0, 110.0]), dict(rates=[200.0, 190.0])
    assert merge_spreads(before, after) == dict(min=100.0, median=120.0, best=200.0, repeats=5,
                                                rates=[100.0, 120.0, 110.0, 200.0, 190.0])


SPREAD = dict(min=100.0, median=180.0, best=200.0, repeats=10)
PRODUCTS = [dict(name="decoder", m=700, k=400, n=10000, gflops=150.0),
            dict(name="QRNN gates", m=700, k=400, n=3450, gflops=120.0)]


def test_a_good_peak_is_the_square_products_best_with_its_spread_reported():
    peak = settle_peak(2048, SPREAD, PRODUCTS)
    assert peak == dict(size=2048, **SPREAD, gflops=200.0, bad=None)
    products = [dict(item, peak_fraction=item["gflops"] / 200) for item in PRODUCTS]
    report = dict(peak=peak, dtype="float32", products=products)
    lines = lm_report.format_peak(report).splitlines()
    assert lines[0] == ("matmul peak (2048 x 2048 x 2048, float32): 200.0 GFLOP/s best of 10 calls before and after "
                        "the models (min 100.0, median 180.0)")
    assert lines[1].startswith("  at the step's decoder shape") and "75.0% of peak" in lines[1]


def test_a_peak_below_the_steps_own_shapes_is_called_bad_and_the_higher_is_used():
    products = [dict(PRODUCTS[0], gflops=250.0), dict(PRODUCTS[1], gflops=260.0)]
    peak = settle_peak(2048, SPREAD, products)
    assert peak["gflops"] == 260.0 and peak["best"] == 200.0
    assert peak["bad"] == ("bad measurement: the 2048^3 product's best (200.0 GFLOP/s) is below the step's "
                           "QRNN gates shape (260.0 GFLOP/s); using the higher as the peak")
    report = dict(peak=peak, dtype="float32", products=[])
    assert lm_report.format_peak(report).splitlines()[1] == peak["bad"]


def test_a_step_faster_than_the_peak_makes_the_peak_bad():
    peak = settle_peak(2048, SPREAD, PRODUCTS)
    assert check_achieved(peak, {"qrnn step": 150.0, "qrnn step's softmax part": 199.0}) == peak  # below: fine
    checked = check_achieved(peak, {"qrnn step": 150.0, "qrnn step's recurrent part": 297.5})
    assert checked["gflops"] == 200.0
    assert checked["bad"] == ("bad measurement: the qrnn step's recurrent part ran at 297.5 GFLOP/s, above the peak "
                              "(200.0 GFLOP/s): the machine was slower while the peak was measured, so the % of "
                              "peak figures are not meaningful; run again on an idle machine")


def test_an_earlier_bad_line_is_kept():
    peak = settle_peak(2048, SPREAD, [dict(PRODUCTS[0], gflops=250.0)])
    assert check_achieved(peak, {"qrnn step": 900.0})["bad"] == peak["bad"]
