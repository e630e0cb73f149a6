"""The matmul peak of ``qrnn-lm bench lm``: a positive rate in each dtype; no timing assertions."""

import pytest
import torch

from qrnn_lm.bench.peak import default_peak_size, matmul_gflops


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
