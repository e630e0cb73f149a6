"""``qrnn-lm export``: a trained checkpoint as an ONNX or a torch.export (pt2) file."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from ..config import UserError


class ExportFormat(str, Enum):
    onnx = "onnx"
    pt2 = "pt2"


def export_command(
    checkpoint: Annotated[Path, typer.Argument(metavar="CHECKPOINT", help="A .pt file, or a run folder (its best.pt).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write: the file (e.g. model.onnx, model.pt2).")],
    format: Annotated[ExportFormat, typer.Option("--format", "-f", help="onnx (onnxruntime etc.) or pt2 (torch.export).")] = ExportFormat.onnx,
):
    """Export a trained language model for inference without the training code; print its inputs and outputs.

    One call runs one segment: tokens [steps, batch], one hidden state per layer and the last inputs
    of each layer whose window is > 1 in; logits and the new states out. Feed the states back for
    the next segment (zeros start a text): token by token, the logits are those of the Python model
    on the whole text. An LSTM model's hidden states hold h and c side by side. Example:
    qrnn-lm export runs/ptb-small/best.pt --format onnx --out ptb.onnx
    """
    checkpoint = checkpoint / "best.pt" if checkpoint.is_dir() else checkpoint
    try:
        from ..inference.export import export_checkpoint

        signature = export_checkpoint(checkpoint, out, format.value)
    except UserError as error:
        message = " ".join(part.strip() for part in str(error).splitlines() if part.strip())
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"wrote {out} ({format.value})")
    for kind, name, shape in signature:
        dtype = "int64" if name == "tokens" else "float32"
        typer.echo(f"  {kind:<6} {name:<18} {dtype:<7} [{', '.join(str(dim) for dim in shape)}]")
