"""The matmul peak of ``qrnn-lm bench lm``: a positive rate in each dtype, the best of the repeats
and their spread (with the timer mocked), the bad-measurement check; no timing assertions."""

import pytest
import torch

from qrnn_lm.bench import lm_report, peak as peak_module
from qrnn_lm.bench.peak import default_peak_size, matmul_gflops, matmul_spread, settle_peak


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
    assert spread == dict(min=pytest.approx(2000 / 4 / 1e9), median=pytest.approx(2000 / 2 / 1e9),
                          best=pytest.approx(2000 / 1 / 1e9), repeats=3)
    _fake_clock(monkeypatch, [2.0, 1.0, 4.0])
    assert matmul_gflops(10, 10, 10, repeats=3, warmup=0) == pytest.approx(2000 / 1 / 1e9)


SPREAD = dict(min=100.0, median=180.0, best=200.0, repeats=10)
PRODUCTS = [dict(name="decoder", m=700, k=400, n=10000, gflops=150.0),
            dict(name="QRNN gates", m=700, k=400, n=3450, gflops=120.0)]


def test_a_good_peak_is_the_square_products_best_with_its_spread_reported():
    peak = settle_peak(2048, SPREAD, PRODUCTS)
    assert peak == dict(size=2048, **SPREAD, gflops=200.0, bad=None)
    products = [dict(item, peak_fraction=item["gflops"] / 200) for item in PRODUCTS]
    report = dict(peak=peak, dtype="float32", products=products)
    lines = lm_report.format_peak(report).splitlines()
    assert lines[0] == "matmul peak (2048 x 2048 x 2048, float32): 200.0 GFLOP/s best of 10 (min 100.0, median 180.0)"
    assert lines[1].startswith("  at the step's decoder shape") and "75.0% of peak" in lines[1]


def test_a_peak_below_the_steps_own_shapes_is_called_bad_and_the_higher_is_used():
    products = [dict(PRODUCTS[0], gflops=250.0), dict(PRODUCTS[1], gflops=260.0)]
    peak = settle_peak(2048, SPREAD, products)
    assert peak["gflops"] == 260.0 and peak["best"] == 200.0
    assert peak["bad"] == ("bad measurement: the 2048^3 product's best (200.0 GFLOP/s) is below the step's "
                           "QRNN gates shape (260.0 GFLOP/s); using the higher as the peak")
    report = dict(peak=peak, dtype="float32", products=[])
    assert lm_report.format_peak(report).splitlines()[1] == peak["bad"]
