"""The text and JSON reports of ``qrnn-lm bench lm`` (``lm.run``'s report dict).

The text: what was timed, the matmul peak (best, min, median) and the step's own products timed alone, one row per
model (throughput, time shares, achieved GFLOP/s and % of the peak), one row per model and part,
and the QRNN/LSTM throughput ratio. The JSON file holds the whole report and the machine line.
"""

from __future__ import annotations

import json
from pathlib import Path

from .lm import SECTIONS

__all__ = ["format_report", "format_shape", "format_peak", "format_table", "format_parts", "write_json"]


def _table(header: list[str], lines: list[list[str]]) -> str:
    """Right-aligned columns, two spaces apart."""
    lines = [header] + lines
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(line, widths)) for line in lines)


def _number(value: float) -> str:
    """One decimal from 1 up, three significant digits below (tiny shapes' rates)."""
    return f"{value:.1f}" if abs(value) >= 1 else f"{value:.3g}"


def _rate(gflop: float, gflops: float, peak_fraction: float) -> list[str]:
    """GFLOP/s and % of peak cells; '-' for a part without counted FLOPs."""
    if gflop == 0:
        return ["-", "-"]
    return [_number(gflops), _number(100 * peak_fraction)]


def format_shape(report: dict) -> str:
    """One line naming what was timed."""
    shape = report["shape"]
    windows = ", ".join(str(shape["first_window"] if i == 0 else shape["window"]) for i in range(shape["num_layers"]))
    decoder = (f"adaptive decoder (cutoffs {shape['adaptive_cutoffs']})" if shape["decoder"] == "adaptive"
               else f"{'tied ' if shape['tie_weights'] else ''}softmax decoder ({shape['softmax']})")
    return (f"shape: vocab {shape['vocab_size']}, emb {shape['emb_size']}, hidden {shape['hidden_size']}, "
            f"{shape['num_layers']} layers (QRNN windows {windows}), bptt {shape['bptt']}, batch {shape['batch_size']}, "
            f"{decoder}, {shape['optimizer']}, {shape['precision']}"
            + (f", weight drop {shape['weight_drop']}" if shape.get("weight_drop") else ""))


def format_peak(report: dict) -> str:
    """The square product's best and spread, the bad-measurement line if any, the step's shapes."""
    peak, dtype = report["peak"], report["dtype"]
    size = peak["size"]
    lines = [f"matmul peak ({size} x {size} x {size}, {dtype}): {_number(peak['best'])} GFLOP/s best of "
             f"{peak['repeats']} calls before and after the models (min {_number(peak['min'])}, "
             f"median {_number(peak['median'])})"]
    if peak["bad"]:
        lines.append(peak["bad"])
    for item in report["products"]:
        lines.append(f"  at the step's {item['name']} shape [{item['m']} x {item['k']}] x [{item['k']} x {item['n']}]: "
                     f"{_number(item['gflops'])} GFLOP/s, {_number(100 * item['peak_fraction'])}% of peak")
    return "\n".join(lines)


def format_table(rows: list[dict]) -> str:
    """One row per model: step time, tokens/s, each part's share of the time, GFLOP per step,
    the step's achieved GFLOP/s and its % of the matmul peak."""
    header = ["model", "step ms", "tokens/s"] + [f"{s} %" for s in SECTIONS] + ["GFLOP/step", "GFLOP/s", "% of peak"]
    lines = [[row["model"], f"{row['step_ms']:.1f}", f"{row['tokens_per_s']:.0f}"]
             + [f"{100 * row[f'share_{s}']:.1f}" for s in SECTIONS]
             + [f"{row['gflop']:.3g}"] + _rate(row["gflop"], row["gflops"], row["peak_fraction"]) for row in rows]
    return _table(header, lines)


def format_parts(rows: list[dict]) -> str:
    """One row per model and part: its instrumented time, GFLOP, GFLOP/s and % of peak."""
    header = ["model", "part", "ms", "GFLOP", "GFLOP/s", "% of peak"]
    lines = []
    for row in rows:
        for section in SECTIONS:
            part = row["parts"][section]
            lines.append([row["model"], section, f"{part['ms']:.2f}", f"{part['gflop']:.3g}"]
                         + _rate(part["gflop"], part["gflops"], part["peak_fraction"]))
    return _table(header, lines)


def format_report(report: dict) -> str:
    """The whole text report; its last line is ``QRNN/LSTM training throughput: X.XXx``."""
    return "\n".join([format_shape(report), format_peak(report), format_table(report["models"]), "",
                      format_parts(report["models"]),
                      f"QRNN/LSTM training throughput: {report['speedup']:.2f}x"])


def write_json(report: dict, path: Path, machine: str) -> None:
    """The report and the machine line as one JSON object in ``path`` (folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"machine": machine, **report}, indent=2) + "\n", encoding="utf-8")
