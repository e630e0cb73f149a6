"""``qrnn-lm bench``: the benchmark commands (``layer``, ``lm``, ``forget-mult``) as a typer sub-app.

Mounted by the top-level CLI with ``app.add_typer(bench_app, name="bench")``. torch and the
benchmark modules are imported inside the commands, so ``--help`` stays instant.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

bench_app = typer.Typer(
    name="bench",
    no_args_is_help=True,
    help="Benchmarks: the QRNN layer against nn.LSTM, LM training throughput, the ForgetMult kernels.",
)


class Device(str, Enum):
    auto = "auto"  # CUDA when available, else CPU
    cpu = "cpu"
    cuda = "cuda"


def _device(device: Device) -> str:
    import torch

    if device == Device.auto:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == Device.cuda and not torch.cuda.is_available():
        _fail("--device cuda asked for, but no CUDA device is available; use --device cpu")
    return device.value


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def _int_list(text: str, option: str) -> list[int]:
    from ..bench.layer import parse_int_list

    try:
        return parse_int_list(text, option)
    except ValueError as error:
        _fail(str(error))


def _check(**options) -> None:
    """The options' ranges (``qrnn_lm.rules.OPTIONS``); exit 1 with one line for a bad one."""
    from ..config import UserError, check_options

    try:
        check_options(**options)
    except UserError as error:
        _fail(str(error))


@bench_app.command("layer")
def layer(
    hidden_size: Annotated[int, typer.Option(help="Hidden size (of the layers, also their input size).")] = 320,
    batch_sizes: Annotated[str, typer.Option(help="Comma-separated batch sizes.")] = "8,16,32,64,128,256",
    seq_lens: Annotated[str, typer.Option(help="Comma-separated sequence lengths.")] = "32,64,128,256,512",
    windows: Annotated[str, typer.Option(help="Comma-separated QRNN windows.")] = "1,2",
    modes: Annotated[str, typer.Option(help="inference, training, or both comma-separated.")] = "inference,training",
    repeats: Annotated[int, typer.Option(help="Timed repeats (median, per grid point).")] = 5,
    warmup: Annotated[int, typer.Option(help="Untimed warm-up rounds (per grid point).")] = 2,
    device: Annotated[Device, typer.Option(help="auto picks CUDA when available.")] = Device.auto,
    csv: Annotated[Path, typer.Option(help="Where to write the CSV.")] = Path("bench_layer.csv"),
    png: Annotated[Optional[Path], typer.Option(
        help="Where to write the heatmap (needs matplotlib); empty for none.")] = Path("bench_layer.png"),
    gemm_floor: Annotated[bool, typer.Option(
        help="Also time each QRNN's matrix products alone (same shapes): the floor no implementation "
             "beats, and LSTM time / that floor, the largest possible speed-up.")] = False,
) -> None:
    """One QRNN layer (window 1 and 2) against nn.LSTM of the same size over a grid of batch sizes
    and sequence lengths, in inference and training (the paper's Figure 4, right): median times
    and LSTM/QRNN speed-ups, a CSV, and a PNG heatmap when matplotlib is installed. A CPU run of
    the whole grid takes long: cut it with --batch-sizes, --seq-lens and --repeats."""
    from ..bench import layer as layer_bench
    from ..bench.timing import machine_description

    sizes, lens, wins = (_int_list(batch_sizes, "--batch-sizes"), _int_list(seq_lens, "--seq-lens"),
                         _int_list(windows, "--windows"))
    mode_list = [mode.strip() for mode in modes.split(",") if mode.strip()]
    if not mode_list or any(mode not in layer_bench.MODES for mode in mode_list):
        _fail(f"--modes must be a comma-separated subset of {','.join(layer_bench.MODES)}, got {modes!r}")
    _check(hidden_size=hidden_size, repeats=repeats, warmup=warmup)
    if png is not None and str(png) in ("", "."):  # typer turns an empty value into Path(".")
        png = None
    run_device = _device(device)
    typer.echo(machine_description(run_device))
    rows = layer_bench.run(hidden_size, sizes, lens, wins, mode_list, repeats, warmup, run_device,
                           progress=lambda row: typer.echo(
                               f"  {row['mode']} B={row['batch_size']} T={row['seq_len']} done"),
                           gemm_floor=gemm_floor)
    typer.echo(layer_bench.report(rows, csv, png))


@bench_app.command("lm")
def lm(
    config: Annotated[Optional[Path], typer.Option(
        "--config", "-c", metavar="FILE",
        help="TOML recipe (whose shape to time: sizes, windows, dropouts, decoder, data.bptt, data.batch_size, "
             "train.optimizer, train.softmax, train.precision; default: PTB's AWD-QRNN).")] = None,
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", "-s", metavar="SECTION.KEY=VALUE",
        help="Override one config value (repeatable), e.g. --set train.precision=bf16.")] = None,
    hidden_size: Annotated[Optional[int], typer.Option(
        help="Hidden size (of every layer but the last; default: the recipe's, 1550).")] = None,
    emb_size: Annotated[Optional[int], typer.Option(
        help="Embedding size, also the last layer's size (default: the recipe's, 400).")] = None,
    num_layers: Annotated[Optional[int], typer.Option(help="Recurrent layers (default: the recipe's, 4).")] = None,
    vocab_size: Annotated[int, typer.Option(help="Vocabulary size (PTB's by default).")] = 10000,
    bptt: Annotated[Optional[int], typer.Option(help="Segment length (default: the recipe's data.bptt, 70).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(
        help="Parallel streams (default: the recipe's data.batch_size, 20).")] = None,
    repeats: Annotated[int, typer.Option(
        help="Timed repeats: steps per model (median), calls per product shape (best; the peak at least 10).")] = 5,
    warmup: Annotated[int, typer.Option(help="Untimed warm-up rounds (steps per model).")] = 2,
    device: Annotated[Device, typer.Option(help="auto picks CUDA when available.")] = Device.auto,
    peak_size: Annotated[Optional[int], typer.Option(
        help="Size of the square product timed as the matmul peak (default: 2048 on CPU, 8192 on CUDA).")] = None,
    json_file: Annotated[Optional[Path], typer.Option(
        "--json", metavar="FILE", help="Also write the whole report (every number printed, and more) as JSON.")] = None,
    weight_drop: Annotated[bool, typer.Option(
        help="Keep the recipe's model.weight_drop on both models, as the trainer's step has it "
             "(default: off on both, as the tables in docs/performance.md).")] = False,
) -> None:
    """Training throughput (tokens/s of forward, backward and optimizer step) of the QRNN language
    model against the same model with nn.LSTM layers, at a recipe's shape (default PTB's), the
    share of each part of a step: embedding, recurrent layers, softmax (decoder + loss), optimizer
    (the paper's Figure 4, left), and the GFLOP/s each part and the step achieve against the
    machine's matmul peak, measured first in the same run. Size options win over the recipe.
    On CPU the default (hidden 1550) takes minutes: try --hidden-size 640."""
    from ..bench import lm as lm_bench
    from ..bench.lm_config import bench_config
    from ..bench.lm_report import format_report, write_json
    from ..bench.timing import machine_description
    from ..config import UserError

    _check(hidden_size=hidden_size, emb_size=emb_size, num_layers=num_layers, vocab_size=vocab_size, bptt=bptt,
           batch_size=batch_size, repeats=repeats, warmup=warmup, peak_size=peak_size)
    try:
        resolved = bench_config(config, set_ or [], emb_size=emb_size, hidden_size=hidden_size,
                                num_layers=num_layers, bptt=bptt, batch_size=batch_size)
        run_device = _device(device)
        machine = machine_description(run_device)
        typer.echo(machine)
        report = lm_bench.run(resolved, vocab_size, repeats, warmup, run_device, peak_size=peak_size,
                              weight_drop=weight_drop)
    except UserError as error:
        _fail(str(error))
    typer.echo(format_report(report))
    if json_file is not None:
        write_json(report, json_file, machine)
        typer.echo(f"report: {json_file}")


@bench_app.command("forget-mult")
def forget_mult(
    repeats: Annotated[int, typer.Option(help="Timed repeats (median; calls per candidate).")] = 20,
    quick: Annotated[bool, typer.Option(help="At most 5 repeats, fewer chunked shapes.")] = False,
    device: Annotated[Device, typer.Option(help="auto picks CUDA when available.")] = Device.auto,
) -> None:
    """The ForgetMult kernels against the naive loop and a memory-bandwidth reference."""
    _check(repeats=repeats)
    run_device = _device(device)
    from ..bench import forget_mult as forget_mult_bench

    argv = ["--repeats", str(repeats), "--device", run_device] + (["--quick"] if quick else [])
    forget_mult_bench.main(argv)
