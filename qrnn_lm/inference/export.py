"""Export QRNN modules and trained language models for runtimes without Python.

Two formats:

- ``pt2``: ``torch.export.export`` with a dynamic sequence length (and batch size), saved with
  ``torch.export.save``; run it with ``torch.export.load(path).module()(...)``.
- ``onnx``: the same program with every ``qrnn_lm::forget_mult`` call rewritten as torch's scan
  higher-order op (``h_t = f_t * x_t + (1 - f_t) * h_{t-1}`` one step at a time), which
  ``torch.onnx.export(dynamo=True)`` translates to a standard ONNX ``Scan``: the file needs no
  custom domain, and onnxruntime runs it for any sequence length.

What is exported is inference: the model in eval mode, whole sequences (no ``lengths`` /
PackedSequence), and for the language model one segment from given hidden states. The inputs a
window > 1 saves between calls (``save_prev_x``) are not carried: every call starts the window
on zeros, as after ``model.reset()``.

An LSTM language model (``model.rnn = "lstm"``) exports to both formats: while exporting, each
LSTM layer runs its recurrence as the same scan (``qrnn_lm.models.lstm_layer.lstm_scan``; ONNX
``Scan``), since ``nn.LSTM``'s traced form would fix the sequence length. Its hidden inputs and
outputs are ``[B, 2H]``: h and c side by side.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from torch import nn

from ..config import UserError
from ..models.language_model import LanguageModel

__all__ = ["ExportError", "FORMATS", "LanguageModelForExport", "export_program", "export_onnx",
           "forget_mult_as_scan", "save_export"]

FORMATS = ("onnx", "pt2")
# Smallest sequence length the exported programs accept (torch.export specialises sizes 0 and 1
# only when asked to; 1 is a valid length for generation one token at a time).
_MIN_STEPS = 1


class ExportError(UserError, ValueError):
    """An export that cannot be done as asked; the message says what to do instead."""


def forget_mult_as_scan(f, x, h0, lengths, reverse, backend):
    """``qrnn_lm::forget_mult`` written with torch's scan op: h ``[T, B, H]`` from f, x ``[T, B, H]``
    and h0 ``[B, H]``. Used as the op's decomposition when exporting to ONNX."""
    from torch._higher_order_ops.scan import scan

    if lengths is not None:
        raise ExportError("export: sequences with lengths (PackedSequence) cannot be exported; export padded input")

    def step(h, f_x):
        f_t, x_t = f_x  # [B, H] each
        h = f_t * x_t + (1 - f_t) * h
        return h, h.clone()  # carry, and this step's output (scan needs two distinct tensors)

    _, h = scan(step, h0, (f, x), reverse=reverse)
    return h


class LanguageModelForExport(nn.Module):
    """A trained :class:`~qrnn_lm.models.LanguageModel` (QRNN or LSTM) with a flat, exportable signature.

    ``forward(tokens [T, B] long, hidden_0 [B, S_0], ..., hidden_{L-1}) -> (logits [T, B, V],
    hidden_out_0 [B, S_0], ...)``: one segment, as the model's own forward in eval mode (``S_l``:
    layer l's state size, :meth:`~qrnn_lm.models.LanguageModel.state_sizes`).
    """

    def __init__(self, model: LanguageModel):
        super().__init__()
        self.model = model

    def forward(self, tokens, *hidden):
        logits, new_hidden, _, _ = self.model(tokens, list(hidden))
        return (logits, *new_hidden)

    def example_inputs(self, seq_len: int = 3, batch_size: int = 2) -> tuple[torch.Tensor, ...]:
        """Inputs of the right dtypes and shapes: random tokens and zero hidden states."""
        weight = self.model.embedding.weight
        tokens = torch.randint(0, weight.shape[0], (seq_len, batch_size), device=weight.device)
        return (tokens, *self.model.init_hidden(batch_size))

    def input_names(self) -> list[str]:
        return ["tokens"] + [f"hidden_{index}" for index in range(len(self.model.layers))]

    def output_names(self) -> list[str]:
        return ["logits"] + [f"hidden_out_{index}" for index in range(len(self.model.layers))]


@contextlib.contextmanager
def _stateless(module: nn.Module):
    """Eval mode, saved window inputs forgotten and not saved (an exported program has no state)."""
    layers = [layer for layer in module.modules() if hasattr(layer, "save_prev_x") and hasattr(layer, "reset")]
    saved = [layer.save_prev_x for layer in layers]
    modes = [(sub, sub.training) for sub in module.modules()]  # each one's own, to put back
    module.eval()
    for layer in layers:
        layer.reset()
        layer.save_prev_x = False
    try:
        yield
    finally:
        for layer, value in zip(layers, saved):
            layer.save_prev_x = value
            layer.reset()
        for sub, training in modes:
            sub.training = training


def _dynamic_shapes(inputs, batch_dim: int):
    """Dim 0 of the first input is the sequence length (``batch_dim`` its batch dim); every other
    input is a ``[.., B, ..]`` state whose batch dim is given per input by the caller's layout."""
    steps = torch.export.Dim("steps", min=_MIN_STEPS)
    batch = torch.export.Dim("batch", min=1)
    first = {0: steps, batch_dim: batch} if batch_dim != 0 else {0: batch, 1: steps}
    return steps, batch, first


def export_program(module: nn.Module, inputs: tuple, dynamic_shapes=None) -> torch.export.ExportedProgram:
    """``torch.export.export`` of ``module`` in eval mode (see the module docstring).

    ``dynamic_shapes`` defaults to: for a :class:`LanguageModelForExport`, steps and batch of
    ``tokens`` and the batch of every hidden state; otherwise steps and batch of the first input
    (``[T, B, I]``, or ``[B, T, I]`` for a ``batch_first`` QRNN) and the batch of an optional
    hidden ``[L * D, B, H]``.
    """
    if dynamic_shapes is None:
        dynamic_shapes = default_dynamic_shapes(module, inputs)
    with _stateless(module), torch.no_grad():
        try:
            return torch.export.export(module, tuple(inputs), dynamic_shapes=dynamic_shapes)
        except UserError:
            raise
        except Exception as error:  # torch's export errors are long; keep the first line
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ExportError(f"torch.export failed: {first}") from error


def default_dynamic_shapes(module: nn.Module, inputs: tuple):
    """The dynamic dims :func:`export_program` uses by default (see there)."""
    batch_first = bool(getattr(module, "batch_first", False))
    steps, batch, first = _dynamic_shapes(inputs, 0 if batch_first else 1)
    if isinstance(module, LanguageModelForExport):
        return (first, tuple({0: batch} for _ in inputs[1:]))  # forward(tokens, *hidden)
    return (first, *({1: batch} if item is not None else None for item in inputs[1:]))


def export_onnx(module: nn.Module, inputs: tuple, path, *, input_names=None, output_names=None):
    """Write ``module`` as an ONNX file at ``path`` with ForgetMult as a standard ``Scan``.

    Returns the ``onnx.ModelProto`` written. Needs ``pip install qrnn-lm[export]``.
    """
    try:
        import onnx  # noqa: F401  (torch.onnx needs it; fail with the install command)
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise ExportError(f"ONNX export needs onnx and onnxscript ({error}): pip install 'qrnn-lm[export]'") from None
    program = export_program(module, inputs)
    program = program.run_decompositions({torch.ops.qrnn_lm.forget_mult.default: forget_mult_as_scan})
    onnx_program = torch.onnx.export(program, tuple(inputs), input_names=input_names,
                                     output_names=output_names, dynamo=True, verbose=False)
    onnx_program.save(str(path))
    return onnx_program.model_proto


def save_export(module: nn.Module, inputs: tuple, path, fmt: str, *, input_names=None, output_names=None):
    """Export ``module`` to ``path`` in format ``fmt`` (``"onnx"`` or ``"pt2"``); returns the path."""
    if fmt not in FORMATS:
        raise ExportError(f"export format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise ExportError(f"output folder {path.parent} does not exist: create it or choose another --out")
    if fmt == "pt2":
        torch.export.save(export_program(module, inputs), str(path))
    else:
        export_onnx(module, inputs, path, input_names=input_names, output_names=output_names)
    return path


def _name_dims(proto, names: dict[str, str]) -> None:
    """Rename the exporter's symbolic dims (``s52``) on the graph's inputs and outputs to ``names``'
    values, so users of the file see ``steps`` and ``batch``."""
    for value in list(proto.graph.input) + list(proto.graph.output):
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in names:
                dim.dim_param = names[dim.dim_param]


def export_checkpoint(checkpoint, out, fmt: str) -> list[tuple[str, str, list]]:
    """Export a trained checkpoint's language model to ``out`` as ``fmt`` (``"onnx"``/``"pt2"``).

    Returns the signature ``[(kind, name, shape)]`` with ``kind`` ``"input"``/``"output"`` and
    shapes as lists of ints and the dynamic dims ``"steps"`` and ``"batch"``.
    """
    from ..models.checkpoint_file import load_checkpoint, model_from_checkpoint

    if fmt not in FORMATS:
        raise ExportError(f"export format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    model, vocab, _ = model_from_checkpoint(load_checkpoint(checkpoint), device="cpu")
    wrapper = LanguageModelForExport(model)
    inputs = wrapper.example_inputs()
    save_export(wrapper, inputs, out, fmt, input_names=wrapper.input_names(), output_names=wrapper.output_names())
    if fmt == "onnx":
        import onnx

        proto = onnx.load(str(out))
        tokens_dims = proto.graph.input[0].type.tensor_type.shape.dim
        _name_dims(proto, {tokens_dims[0].dim_param: "steps", tokens_dims[1].dim_param: "batch"})
        onnx.save(proto, str(out))
    sizes = model.state_sizes()  # what each hidden input and output holds (h and c for an LSTM layer)
    signature = [("input", "tokens", ["steps", "batch"])]
    signature += [("input", f"hidden_{index}", ["batch", size]) for index, size in enumerate(sizes)]
    signature += [("output", "logits", ["steps", "batch", len(vocab)])]
    signature += [("output", f"hidden_out_{index}", ["batch", size]) for index, size in enumerate(sizes)]
    return signature
