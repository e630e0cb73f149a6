"""``qrnn-lm bench layer``: one QRNN layer against ``torch.nn.LSTM`` (the paper's Figure 4, right).

Shape letters: T = sequence length, B = batch size, H = hidden size; inputs are ``[T, B, H]``.

For every (B, T) of the grid, in inference (forward under ``torch.no_grad``) and training
(forward + backward to the input and all parameters, with a fixed random upstream gradient), it
times ``nn.LSTM(H, H)`` and ``QRNNLayer(H, H, window=w)`` for each window, interleaved, and reports
the median times and the speed-ups LSTM time / QRNN time. Writes a CSV, and a PNG heatmap of the
speed-ups when matplotlib is installed (``pip install qrnn-lm[plot]``).

With ``gemm_floor`` it also times, for each window, the QRNN layer's matrix products alone, on
tensors of the same shapes (forward ``[T*B, w*H] x [w*H, 3H]``; in training also the input and
weight gradients): the time no implementation of the layer can beat on that device. The
ratio ``LSTM time / products time`` is then the largest speed-up possible at that point.
"""

from __future__ import annotations

import csv
import statistics
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..nn import QRNNLayer
from .timing import time_round_robin

__all__ = ["BATCH_SIZES", "SEQ_LENS", "MODES", "run", "format_table", "summarize", "write_csv",
           "plot_heatmap", "report", "parse_int_list"]

BATCH_SIZES = (8, 16, 32, 64, 128, 256)  # the paper's grid
SEQ_LENS = (32, 64, 128, 256, 512)
MODES = ("inference", "training")


def _candidate(module: nn.Module, x: torch.Tensor, grad_out: torch.Tensor, mode: str):
    """A no-argument function running one forward (and backward in training) of ``module``."""
    if mode == "inference":
        def infer():
            with torch.no_grad():
                module(x)
        return infer
    inputs = [x, *module.parameters()]

    def train():
        output = module(x)[0]  # [T, B, H]
        torch.autograd.grad(output, inputs, grad_out)  # no accumulation into .grad between calls
    return train


def _products_only(rows: int, in_features: int, out_features: int, mode: str, device) -> Callable[[], None]:
    """The matrix products of a QRNN layer alone: ``[rows, in] x [in, out]`` forward, plus the input
    gradient ``[rows, out] x [out, in]`` and weight gradient ``[out, rows] x [rows, in]`` in
    training, into preallocated outputs."""
    X = torch.randn(rows, in_features, device=device)
    W = torch.randn(out_features, in_features, device=device)
    Y = torch.empty(rows, out_features, device=device)
    grad_X, grad_W = torch.empty_like(X), torch.empty_like(W)

    def products():
        torch.mm(X, W.t(), out=Y)
        if mode == "training":
            torch.mm(Y, W, out=grad_X)
            torch.mm(Y.t(), X, out=grad_W)
    return products


def run(hidden_size: int = 320, batch_sizes=BATCH_SIZES, seq_lens=SEQ_LENS, windows=(1, 2),
        modes=MODES, repeats: int = 5, warmup: int = 2, device: str = "cpu", seed: int = 0,
        progress=None, gemm_floor: bool = False) -> list[dict]:
    """Time the grid. Returns one row per (mode, batch_size, seq_len) with ``lstm_ms``,
    ``qrnn_w{w}_ms`` and ``speedup_w{w}`` (LSTM time / QRNN time) for each window ``w``; with
    ``gemm_floor`` also ``gemm_w{w}_ms`` (the layer's products alone) and ``ceiling_w{w}``
    (LSTM time / products time).

    ``progress``: optional callable receiving each row as it is finished.
    """
    for mode in modes:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    device = torch.device(device)
    torch.manual_seed(seed)
    lstm = nn.LSTM(hidden_size, hidden_size).to(device)
    qrnns = {w: QRNNLayer(hidden_size, hidden_size, window=w).to(device) for w in windows}
    rows = []
    for mode in modes:
        for batch_size in batch_sizes:
            for seq_len in seq_lens:
                x = torch.randn(seq_len, batch_size, hidden_size, device=device,
                                requires_grad=mode == "training")
                grad_out = torch.randn(seq_len, batch_size, hidden_size, device=device)
                candidates = {"lstm": _candidate(lstm, x, grad_out, mode)}
                for w, qrnn in qrnns.items():
                    candidates[f"qrnn_w{w}"] = _candidate(qrnn, x, grad_out, mode)
                    if gemm_floor:
                        candidates[f"gemm_w{w}"] = _products_only(seq_len * batch_size, w * hidden_size,
                                                                  3 * hidden_size, mode, device)
                medians = time_round_robin(candidates, repeats, warmup, device)
                row = {"device": device.type, "mode": mode, "hidden_size": hidden_size,
                       "batch_size": batch_size, "seq_len": seq_len, "lstm_ms": medians["lstm"] * 1e3}
                for w in windows:
                    row[f"qrnn_w{w}_ms"] = medians[f"qrnn_w{w}"] * 1e3
                    row[f"speedup_w{w}"] = medians["lstm"] / medians[f"qrnn_w{w}"]
                if gemm_floor:
                    for w in windows:
                        row[f"gemm_w{w}_ms"] = medians[f"gemm_w{w}"] * 1e3
                        row[f"ceiling_w{w}"] = medians["lstm"] / medians[f"gemm_w{w}"]
                rows.append(row)
                if progress is not None:
                    progress(row)
    return rows


def _windows(rows: list[dict]) -> list[int]:
    return sorted(int(key[len("speedup_w"):]) for key in rows[0] if key.startswith("speedup_w")) if rows else []


def format_table(rows: list[dict]) -> str:
    """A plain-text table: one line per grid point, times in ms and speed-ups ``x`` (and, when
    measured, the products-only times and ceilings)."""
    windows = _windows(rows)
    floor = bool(windows) and f"gemm_w{windows[0]}_ms" in rows[0]
    header = ["mode", "B", "T", "LSTM ms"] + [f"QRNN w{w} ms" for w in windows] + [f"LSTM/QRNN w{w}" for w in windows]
    if floor:
        header += [f"products w{w} ms" for w in windows] + [f"ceiling w{w}" for w in windows]
    lines = [header]
    for row in rows:
        line = ([row["mode"], str(row["batch_size"]), str(row["seq_len"]), f"{row['lstm_ms']:.2f}"]
                + [f"{row[f'qrnn_w{w}_ms']:.2f}" for w in windows]
                + [f"{row[f'speedup_w{w}']:.2f}x" for w in windows])
        if floor:
            line += [f"{row[f'gemm_w{w}_ms']:.2f}" for w in windows] + [f"{row[f'ceiling_w{w}']:.2f}x" for w in windows]
        lines.append(line)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.rjust(width) for cell, width in zip(line, widths)) for line in lines)


def summarize(rows: list[dict]) -> list[dict]:
    """Per mode and window: the median, smallest and largest speed-up over the grid (and the
    median ceiling, when measured)."""
    summary = []
    for mode in dict.fromkeys(row["mode"] for row in rows):
        for w in _windows(rows):
            of_mode = [row for row in rows if row["mode"] == mode]
            speedups = [row[f"speedup_w{w}"] for row in of_mode]
            entry = {"mode": mode, "window": w, "median": statistics.median(speedups),
                     "min": min(speedups), "max": max(speedups)}
            if f"ceiling_w{w}" in of_mode[0]:
                entry["ceiling_median"] = statistics.median(row[f"ceiling_w{w}"] for row in of_mode)
            summary.append(entry)
    return summary


def format_summary(rows: list[dict]) -> str:
    return "\n".join(f"{s['mode']:>9} window {s['window']}: LSTM/QRNN median {s['median']:.2f}x "
                     f"(min {s['min']:.2f}x, max {s['max']:.2f}x)"
                     + (f"; products-only ceiling median {s['ceiling_median']:.2f}x" if "ceiling_median" in s else "")
                     for s in summarize(rows))


def write_csv(rows: list[dict], path: str | Path) -> Path:
    """Write the rows (one per grid point and mode) to ``path``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({key: f"{value:.4f}" if isinstance(value, float) else value for key, value in row.items()})
    return path


def plot_heatmap(rows: list[dict], path: str | Path) -> Path | None:
    """A PNG heatmap of the speed-ups (batch size x sequence length, one panel per mode and
    window), like the paper's Figure 4. Returns None, writing nothing, without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    modes, windows = list(dict.fromkeys(row["mode"] for row in rows)), _windows(rows)
    batch_sizes = sorted({row["batch_size"] for row in rows})
    seq_lens = sorted({row["seq_len"] for row in rows})
    figure, axes = plt.subplots(len(modes), len(windows), squeeze=False,
                                figsize=(1.2 * len(seq_lens) * len(windows) + 1.5, 0.7 * len(batch_sizes) * len(modes) + 1.2))
    for i, mode in enumerate(modes):
        for j, w in enumerate(windows):
            grid = [[float("nan")] * len(seq_lens) for _ in batch_sizes]
            for row in rows:
                if row["mode"] == mode:
                    grid[batch_sizes.index(row["batch_size"])][seq_lens.index(row["seq_len"])] = row[f"speedup_w{w}"]
            axis = axes[i][j]
            axis.imshow(grid, cmap="viridis", aspect="auto")
            for r, values in enumerate(grid):
                for c, value in enumerate(values):
                    axis.text(c, r, f"{value:.2f}x", ha="center", va="center", color="white", fontsize=8)
            axis.set_xticks(range(len(seq_lens)), [str(t) for t in seq_lens])
            axis.set_yticks(range(len(batch_sizes)), [str(b) for b in batch_sizes])
            axis.set_xlabel("sequence length")
            axis.set_ylabel("batch size")
            axis.set_title(f"{mode}, QRNN window {w}: LSTM time / QRNN time", fontsize=9)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def parse_int_list(text: str, name: str) -> list[int]:
    """``"8,16,32"`` -> ``[8, 16, 32]``; ValueError naming the option for anything else."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise ValueError(f"{name} must be a comma-separated list of positive integers, got {text!r}")
    return values


def report(rows: list[dict], csv_path: str | Path | None, png_path: str | Path | None) -> str:
    """The table, the summary, and where the CSV/PNG went (or why there is no PNG)."""
    lines = [format_table(rows), "", format_summary(rows)]
    if csv_path:
        lines.append(f"CSV: {write_csv(rows, csv_path)}")
    if png_path:
        written = plot_heatmap(rows, png_path)
        lines.append(f"heatmap: {written}" if written else "heatmap: skipped (matplotlib is not installed; "
                     "pip install qrnn-lm[plot])")
    return "\n".join(lines)
