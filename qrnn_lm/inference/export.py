"""Export QRNN modules and trained language models for runtimes without Python.

Two formats:

- ``pt2``: ``torch.export.export`` with a dynamic sequence length (and batch size), saved with
  ``torch.export.save``; run it with ``torch.export.load(path).module()(...)``. The program calls
  the registered ``qrnn_lm::forget_mult`` op (``import qrnn_lm`` before loading it).
- ``onnx``: ``torch.onnx.export(dynamo=True)``, the call a user would make. While it traces, the
  ForgetMult op takes its ONNX form, torch's scan op (``qrnn_lm/ops/forget_mult/scan_form.py``),
  which becomes a standard ONNX ``Scan``: the file needs no custom domain, and onnxruntime runs it
  for any sequence length.

What is exported is inference: the model in eval mode, whole sequences (no ``lengths`` /
PackedSequence). An exported program keeps no state: a trained language model is exported as
:class:`LanguageModelForExport`, which takes and returns everything ``LanguageModel.stream``
carries (each layer's hidden state, and the last inputs of each layer whose window is > 1), so a
text fed in pieces gives the logits of the Python model on the whole text.

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

__all__ = ["ExportError", "FORMATS", "LanguageModelForExport", "export_program", "export_onnx", "save_export"]

FORMATS = ("onnx", "pt2")
# Smallest sequence length the exported programs accept (torch.export specialises sizes 0 and 1
# only when asked to; 1 is a valid length for generation one token at a time).
_MIN_STEPS = 1


class ExportError(UserError, ValueError):
    """An export that cannot be done as asked; the message says what to do instead."""


class LanguageModelForExport(nn.Module):
    """A trained :class:`~qrnn_lm.models.LanguageModel` (QRNN or LSTM) with a flat, exportable
    signature that carries everything :meth:`~qrnn_lm.models.LanguageModel.stream` carries.

    ``forward(tokens [T, B] long, hidden_0 [B, S_0], ..., hidden_{L-1}, kept_inputs_l [W_l - 1, B, I_l]
    for each layer l with a window W_l > 1) -> (logits [T, B, V], hidden_out_0 [B, S_0], ...,
    kept_inputs_out_l ...)``: one segment in eval mode. ``S_l`` is layer l's state size
    (:meth:`~qrnn_lm.models.LanguageModel.state_sizes`), ``I_l`` its input size. Feeding the
    outputs back as the next call's inputs, a text fed in pieces (one token at a time included)
    gives the logits of one forward over the whole text; zeros start a text.
    """

    def __init__(self, model: LanguageModel):
        super().__init__()
        self.model = model
        # The layers whose convolution window reads inputs of the previous call (not LSTM layers).
        self.windowed = [index for index, layer in enumerate(model.layers) if getattr(layer, "window", 1) > 1]

    def forward(self, tokens, *state):
        num_layers = len(self.model.layers)
        hidden, kept = list(state[:num_layers]), dict(zip(self.windowed, state[num_layers:]))
        inputs = tuple(kept.get(index) for index in range(num_layers))
        logits, (new_hidden, new_kept) = self.model.stream(tokens, (hidden, inputs))  # a StreamState
        return (logits, *new_hidden, *(new_kept[index] for index in self.windowed))

    def kept_input_shapes(self, batch_size) -> list[list]:
        """``[W_l - 1, batch_size, I_l]`` for each layer with a window > 1, bottom to top."""
        layers = self.model.layers
        return [[layers[index].window - 1, batch_size, layers[index].input_size] for index in self.windowed]

    def example_inputs(self, seq_len: int = 3, batch_size: int = 2) -> tuple[torch.Tensor, ...]:
        """Inputs of the right dtypes and shapes: random tokens, zero states and kept inputs."""
        weight = self.model.embedding.weight
        tokens = torch.randint(0, weight.shape[0], (seq_len, batch_size), device=weight.device)
        kept = [weight.new_zeros(shape) for shape in self.kept_input_shapes(batch_size)]
        return (tokens, *self.model.init_hidden(batch_size), *kept)

    def input_names(self) -> list[str]:
        return (["tokens"] + [f"hidden_{index}" for index in range(len(self.model.layers))]
                + [f"kept_inputs_{index}" for index in self.windowed])

    def output_names(self) -> list[str]:
        return (["logits"] + [f"hidden_out_{index}" for index in range(len(self.model.layers))]
                + [f"kept_inputs_out_{index}" for index in self.windowed])

    def dynamic_shapes(self):
        """Steps and batch of ``tokens``, the batch of every state."""
        steps, batch = torch.export.Dim("steps", min=_MIN_STEPS), torch.export.Dim("batch", min=1)
        hidden = tuple({0: batch} for _ in self.model.layers)
        kept = tuple({1: batch} for _ in self.windowed)
        return ({0: steps, 1: batch}, hidden + kept)  # forward(tokens, *state)


@contextlib.contextmanager
def _eval_mode(module: nn.Module):
    """Eval mode while exporting, each submodule's own mode put back after. (The QRNN layers'
    ``save_prev_x`` buffers are neither read nor written while exporting: see ``QRNNLayer``.)"""
    modes = [(sub, sub.training) for sub in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for sub, training in modes:
            sub.training = training


def default_dynamic_shapes(module: nn.Module, inputs: tuple):
    """The dynamic dims :func:`export_program` and :func:`export_onnx` use by default: for a
    :class:`LanguageModelForExport` its own (:meth:`~LanguageModelForExport.dynamic_shapes`);
    otherwise steps and batch of the first input (``[T, B, I]``, or ``[B, T, I]`` for a
    ``batch_first`` QRNN) and the batch of an optional hidden ``[L * D, B, H]``."""
    if isinstance(module, LanguageModelForExport):
        return module.dynamic_shapes()
    steps, batch = torch.export.Dim("steps", min=_MIN_STEPS), torch.export.Dim("batch", min=1)
    first = {0: batch, 1: steps} if getattr(module, "batch_first", False) else {0: steps, 1: batch}
    return (first, *({1: batch} if item is not None else None for item in inputs[1:]))


@contextlib.contextmanager
def _one_line_errors(what: str):
    """torch's export errors run to pages: raise an :class:`ExportError` with their first line."""
    try:
        yield
    except UserError:
        raise
    except Exception as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ExportError(f"{what} failed: {first}") from error


def export_program(module: nn.Module, inputs: tuple, dynamic_shapes=None) -> torch.export.ExportedProgram:
    """``torch.export.export`` of ``module`` in eval mode (see the module docstring); the program
    calls the registered ``qrnn_lm::forget_mult`` op. ``dynamic_shapes`` defaults to
    :func:`default_dynamic_shapes`."""
    if dynamic_shapes is None:
        dynamic_shapes = default_dynamic_shapes(module, inputs)
    with _eval_mode(module), torch.no_grad(), _one_line_errors("torch.export"):
        return torch.export.export(module, tuple(inputs), dynamic_shapes=dynamic_shapes)


def export_onnx(module: nn.Module, inputs: tuple, path, *, input_names=None, output_names=None, dynamic_shapes=None):
    """Write ``module`` as an ONNX file at ``path``: ``torch.onnx.export(dynamo=True)`` as a user
    would call it, in eval mode; ForgetMult becomes a standard ``Scan`` (the op's ONNX form,
    ``qrnn_lm/ops/forget_mult/scan_form.py``). ``dynamic_shapes`` defaults to
    :func:`default_dynamic_shapes`.

    Returns the ``onnx.ModelProto`` written. Needs ``pip install qrnn-lm[export]``.
    """
    try:
        import onnx  # noqa: F401  (torch.onnx needs it; fail with the install command)
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise ExportError(f"ONNX export needs onnx and onnxscript ({error}): pip install 'qrnn-lm[export]'") from None
    if dynamic_shapes is None:
        dynamic_shapes = default_dynamic_shapes(module, inputs)
    with _eval_mode(module), torch.no_grad(), _one_line_errors("torch.onnx.export"):
        onnx_program = torch.onnx.export(module, tuple(inputs), dynamic_shapes=dynamic_shapes, input_names=input_names,
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
    # What each state holds: a layer's hidden state (h and c for an LSTM layer), then the inputs
    # that a window > 1 reads from the previous call.
    states = [["batch", size] for size in model.state_sizes()] + wrapper.kept_input_shapes("batch")
    inputs, outputs = wrapper.input_names(), wrapper.output_names()
    signature = [("input", "tokens", ["steps", "batch"])]
    signature += [("input", name, shape) for name, shape in zip(inputs[1:], states)]
    signature += [("output", "logits", ["steps", "batch", len(vocab)])]
    signature += [("output", name, shape) for name, shape in zip(outputs[1:], states)]
    return signature
