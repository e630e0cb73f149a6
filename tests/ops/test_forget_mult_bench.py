"""qrnn_lm.bench.forget_mult: run() on tiny shapes gives well-formed rows (no timing checks).

Shape legend: T = time steps, B = batch, H = hidden lanes.
"""

import pytest


@pytest.fixture(scope="module")
def bench():
    from qrnn_lm.bench import forget_mult

    return forget_mult


def test_run_gives_one_row_per_shape_pass_and_implementation(bench, monkeypatch):
    monkeypatch.setattr(bench, "BANDWIDTH_ELEMENTS", 1 << 16)  # keep the reference small here
    rows = bench.run(repeats=1, quick=True, kernel_shapes=[(3, 2, 5)], chunked_shapes=[(8, 1, 3)])
    keys = {(r["section"], r["T"], r["B"], r["H"], r["pass_"], r["impl"]) for r in rows}
    assert keys == {
        ("kernels", 3, 2, 5, p, impl) for p in ("fwd", "fwd+bwd") for impl in ("naive", "numba")
    } | {("chunked", 8, 1, 3, p, impl) for p in ("fwd", "fwd+bwd") for impl in ("sequential", "chunked")}
    for row in rows:
        assert row["ms"] >= row["best_ms"] > 0 and row["reference_gbs"] > 0
        assert row["bw_fraction"] == pytest.approx(row["gbs"] / row["reference_gbs"])
    naive = [r for r in rows if r["impl"] in ("naive", "sequential")]
    assert all(r["speedup"] == pytest.approx(1.0) for r in naive)
    table = bench.format_table(rows)
    assert len(table.splitlines()) == 2 + len(rows) and "median ms" in table
    assert "target: numba fwd+bwd >= 20x naive" in bench.target_summary(rows)


def test_bfloat16_rows_are_named_and_count_two_bytes_per_element():
    import torch

    from qrnn_lm.bench import forget_mult

    rows = forget_mult.run(repeats=1, quick=True, kernel_shapes=[(5, 2, 3)], chunked_shapes=[], dtype=torch.bfloat16)
    assert {r["section"] for r in rows} == {"kernels bfloat16"}
    for r in rows:
        moved = forget_mult.TENSORS_MOVED[r["pass_"]] * 5 * 2 * 3 * 2  # 2 bytes per bfloat16
        assert abs(r["gbs"] * 1e9 * r["ms"] / 1e3 - moved) < 1e-6 * moved
