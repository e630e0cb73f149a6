"""The AWD language model: embedding -> recurrent stack (QRNN or LSTM) -> decoder tied to the
embedding; ``model.rnn`` picks the layers: AWD-QRNN or AWD-LSTM.

Regularisation follows salesforce/awd-lstm-lm ("Regularizing and Optimizing LSTM Language
Models", Merity et al. 2017), the same for both layer types:

* embedding dropout drops whole words (rows of the embedding matrix) for a whole segment;
* locked (variational) dropout: one mask per sequence, shared over time, on the embedded input,
  between layers and on the last layer's output;
* weight drop (DropConnect) with a ``torch.nn.utils.parametrize`` parametrization: on each QRNN
  layer's gate weights ``layer.linear.weight``, or on each LSTM's hidden-to-hidden weights
  ``layer.lstm.weight_hh_l0`` (awd-lstm-lm's WeightDrop); a fresh mask per forward call in
  training, the plain weight in evaluation, and the gradient flows to the raw weight;
* zoneout inside the QRNN layers (QRNN only); AR and TAR terms are computed by the trainer from
  the last layer's outputs that ``forward`` returns.

Each layer carries one state tensor ``[B, S_l]`` from segment to segment: ``S_l = H_l`` for a QRNN
layer, ``S_l = 2 * H_l`` (h and c side by side) for an LSTM layer (:mod:`.lstm_layer`).

Shapes: T = time steps (segment length), B = batch (parallel streams), E = embedding size,
V = vocabulary size, H_l / S_l = layer l's output / state size. Everything is time-major,
``[T, B, ...]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from ..config import ConfigError, ModelConfig, check_rnn
from ..nn import QRNNLayer
from ..nn.incremental import StreamState, stream_layer
from .dropout import LockedDropout, WeightDrop, embedding_dropout
from .lstm_layer import LSTMLayer
from .softmax import blocked_cross_entropy, chunked_cross_entropy, logits_bytes

__all__ = ["LanguageModel", "QRNNLanguageModel"]


class LanguageModel(nn.Module):
    """Word-level language model with a QRNN or LSTM stack and AWD regularisation.

    Args:
        vocab_size: number of words ``V``.
        config: the ``[model]`` section (layer type, sizes, windows, dropouts, weight drop, tying,
            decoder).
        softmax: how the softmax decoder's loss is computed when ``forward`` gets targets:
            ``"full"``, ``"chunked"`` or ``"auto"`` (chunked above ``softmax_memory_mb`` MiB of
            logits); the ``[train]`` keys of the same names. A plain attribute, not a weight.
    """

    decodes_last_only = True  # forward takes last_only=True (generation asks for it)

    def __init__(self, vocab_size: int, config: ModelConfig, softmax: str = "auto", softmax_memory_mb: int = 1024):
        super().__init__()
        if vocab_size < 1:
            raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")
        check_rnn(config)  # a known layer type, no QRNN-only key set for an LSTM (also without a Config)
        self.vocab_size = vocab_size
        self.config = config
        # With tied weights the decoder reads the embedding matrix, so the last layer must
        # output emb_size features.
        last_size = config.emb_size if config.tie_weights else config.hidden_size
        self.output_size = last_size

        self.embedding = nn.Embedding(vocab_size, config.emb_size)
        self.drop_input = LockedDropout(config.dropout_input)
        self.drop_hidden = LockedDropout(config.dropout_hidden)
        self.drop_output = LockedDropout(config.dropout_output)
        self.layers = nn.ModuleList(_make_layer(config, index, last_size) for index in range(config.num_layers))
        self.softmax, self.softmax_memory_mb = softmax, softmax_memory_mb
        if config.decoder == "adaptive":
            if config.adaptive_cutoffs[-1] >= vocab_size:
                raise ConfigError(f"model.adaptive_cutoffs {config.adaptive_cutoffs} must all be below the "
                                  f"vocabulary size {vocab_size}; set smaller ones with --set model.adaptive_cutoffs=[...]")
            if last_size // 4 ** len(config.adaptive_cutoffs) < 1:
                raise ConfigError(f"the adaptive softmax's last cluster would have no features ({last_size} // "
                                  f"4**{len(config.adaptive_cutoffs)}); use fewer model.adaptive_cutoffs")
            # awd-lstm-lm's split softmax, as torch ships it (div_value 4: each tail cluster's
            # projection is 4x smaller than the previous one).
            self.decoder = nn.AdaptiveLogSoftmaxWithLoss(last_size, vocab_size, config.adaptive_cutoffs, div_value=4.0)
        else:
            self.decoder = nn.Linear(last_size, vocab_size)
            if config.tie_weights:
                self.decoder.weight = self.embedding.weight  # one Parameter, one storage
        self._init_weights()

    def _init_weights(self) -> None:
        # awd-lstm-lm's initialisation: small uniform embedding, zero decoder bias; the QRNN
        # linears keep nn.Linear's default.
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        if self.config.decoder == "adaptive":
            return  # AdaptiveLogSoftmaxWithLoss keeps its own initialisation
        nn.init.zeros_(self.decoder.bias)
        if not self.config.tie_weights:
            nn.init.uniform_(self.decoder.weight, -0.1, 0.1)

    def layer_sizes(self) -> list[int]:
        """Output (hidden) size ``H_l`` of each layer, bottom to top."""
        return [layer.hidden_size for layer in self.layers]

    def state_sizes(self) -> list[int]:
        """Size ``S_l`` of each layer's carried state, bottom to top: ``H_l`` for a QRNN layer,
        ``2 * H_l`` for an LSTM layer (h and c)."""
        return [layer.state_size if isinstance(layer, LSTMLayer) else layer.hidden_size for layer in self.layers]

    def init_hidden(self, batch_size: int) -> list[torch.Tensor]:
        """Zero hidden states: one ``[B, S_l]`` tensor per layer, on the model's device and dtype."""
        weight = self.embedding.weight
        return [weight.new_zeros(batch_size, size) for size in self.state_sizes()]

    def reset(self) -> None:
        """Forget the inputs saved for the convolution windows (``save_prev_x``; nothing for LSTM
        layers): call it at the start of each epoch, of each evaluation and of generation."""
        for layer in self.layers:
            layer.reset()

    def forward(
        self, tokens: torch.Tensor, hidden: list[torch.Tensor] | None = None, targets: torch.Tensor | None = None,
        last_only: bool = False,
    ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """Run one segment.

        Args:
            tokens: ``[T, B]`` token ids (long).
            hidden: the previous segment's ``new_hidden`` (a list of ``[B, S_l]``), or None for zeros.
            targets: ``[T, B]`` next-token ids, or None. Given, the first result is the summed loss
                instead of the logits, computed without all the logits where ``softmax`` says so.
            last_only: without targets, decode only the last position: logits ``[1, B, V]``
                (generation needs no more, and a long prompt's ``[T, 1, V]`` can be large).

        Returns:
            ``(logits [T, B, V], new_hidden, raw_output [T, B, E], dropped_output [T, B, E])``, or
            with ``targets`` ``(nll_sum, ...)``: the float32 scalar sum of ``-log p(target)`` over the
            ``T * B`` targets. With the adaptive decoder ``logits`` are its exact log-probabilities.
            ``raw_output``/``dropped_output`` are the last layer's output before/after the output
            dropout (TAR uses the first, AR the second; E is the last layer's size). ``new_hidden``
            is still attached to the graph: detach it before the next segment.
        """
        if tokens.dim() != 2:
            raise ValueError(f"tokens must have shape [T, B], got {tuple(tokens.shape)}")
        if hidden is None:
            hidden = self.init_hidden(tokens.size(1))
        if len(hidden) != len(self.layers):
            raise ValueError(f"hidden must hold {len(self.layers)} tensors (one per layer), got {len(hidden)}")
        x = embedding_dropout(self.embedding, tokens, self.config.dropout_emb, self.training)  # [T, B, E]
        x = self.drop_input(x)
        new_hidden = []
        raw_output = x
        for index, layer in enumerate(self.layers):
            raw_output, last_state = layer(x, hidden[index])  # [T, B, H_l], [1, B, S_l]
            new_hidden.append(last_state[0])  # [B, S_l]
            x = self.drop_hidden(raw_output) if index < len(self.layers) - 1 else raw_output
        dropped_output = self.drop_output(raw_output)  # [T, B, E]
        if targets is None:
            decoded = dropped_output[-1:] if last_only else dropped_output  # [1 or T, B, E]
            return self.decode(decoded), new_hidden, raw_output, dropped_output
        return self.nll_sum(dropped_output, targets), new_hidden, raw_output, dropped_output

    def decode(self, output: torch.Tensor) -> torch.Tensor:
        """``[T, B, E]`` -> ``[T, B, V]`` logits (the adaptive decoder: exact log-probabilities)."""
        if self.config.decoder == "adaptive":
            flat = output.reshape(-1, output.size(-1))  # [T * B, E]
            return self.decoder.log_prob(flat).view(*output.shape[:-1], self.vocab_size)
        return self.decoder(output)

    def uses_chunks(self, num_tokens: int) -> bool:
        """Whether the softmax decoder's loss over ``num_tokens`` targets goes over chunks."""
        if self.config.decoder != "softmax" or self.softmax == "full":
            return False
        return self.softmax == "chunked" or logits_bytes(num_tokens, self.vocab_size) > self.softmax_memory_mb * 2**20

    def nll_sum(self, output: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Summed ``-log p(target)`` (float32 scalar) of ``output [T, B, E]`` for ``targets [T, B]``."""
        flat = output.reshape(-1, output.size(-1))  # [T * B, E]
        flat_targets = targets.reshape(-1)  # [T * B]
        if self.config.decoder == "adaptive":
            return -self.decoder(flat, flat_targets).output.float().sum()  # output: log p(target) [T * B]
        if self.uses_chunks(flat_targets.numel()):
            return chunked_cross_entropy(flat, self.decoder.weight, self.decoder.bias, flat_targets)
        if self._blocked_loss(flat):  # the same loss and gradients, less memory traffic
            logits = F.linear(flat, self.decoder.weight)  # [T * B, V], the bias added block by block
            # The trainer's loss is this sum over the N targets divided by N (training.step's
            # regularized_loss): its backward brings 1 / N, folded into the gradients as they are formed.
            return blocked_cross_entropy(logits, flat_targets, self.decoder.bias, grad_scale=1.0 / flat_targets.numel())
        logits = self.decoder(flat)  # [T * B, V]
        return F.cross_entropy(logits.float(), flat_targets, reduction="sum")

    def _blocked_loss(self, flat: torch.Tensor) -> bool:
        """Whether the softmax loss over ``flat`` ``[N, E]`` goes through :func:`blocked_cross_entropy`:
        in training on the CPU where the logits come out in float32, bfloat16 or float16 (autocast
        or such parameters); float64 keeps autograd's path."""
        weight = self.decoder.weight
        if flat.device.type != "cpu" or not torch.is_grad_enabled() or not (flat.requires_grad or weight.requires_grad):
            return False
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else torch.result_type(flat, weight)
        return dtype in (torch.float32, torch.bfloat16, torch.float16)

    def stream(self, tokens: torch.Tensor, state: StreamState | None = None) -> tuple[torch.Tensor, StreamState]:
        """Run one chunk of a token stream with carried state, for online use (e.g. generation).

        Args:
            tokens: ``[T, B]`` token ids, the next T tokens of B streams.
            state: the previous call's state, or None to start (zero states and windows).

        Returns:
            ``(logits [T, B, V], state)``: in eval mode, feeding a sequence chunk by chunk (one
            token at a time included) gives the logits of one ``forward`` on it after ``reset()``.
            ``state.hidden`` is a list of ``[B, S_l]`` (``forward``'s ``new_hidden``) and
            ``state.inputs`` each QRNN layer's last ``window - 1`` inputs (None for an LSTM layer);
            the layers' ``save_prev_x`` buffers are not touched, so one model serves any number of
            streams.
        """
        if tokens.dim() != 2:
            raise ValueError(f"tokens must have shape [T, B], got {tuple(tokens.shape)}")
        hidden, inputs = (self.init_hidden(tokens.size(1)), (None,) * len(self.layers)) if state is None else state
        if len(hidden) != len(self.layers) or len(inputs) != len(self.layers):
            raise ValueError(f"state must hold {len(self.layers)} hidden states and kept inputs (one per layer), "
                             f"got {len(hidden)} and {len(inputs)}")
        x = embedding_dropout(self.embedding, tokens, self.config.dropout_emb, self.training)  # [T, B, E]
        x = self.drop_input(x)
        new_hidden, kept = [], []
        for index, layer in enumerate(self.layers):
            if isinstance(layer, LSTMLayer):  # all it carries is its state
                (output, last_state), prev = layer(x, hidden[index]), None  # [T, B, H_l], [1, B, S_l]
            else:
                output, last_state, prev = stream_layer(layer, x, hidden[index], inputs[index])  # [T, B, H_l]
            new_hidden.append(last_state[0])  # [B, S_l]
            kept.append(prev)
            x = self.drop_hidden(output) if index < len(self.layers) - 1 else output
        logits = self.decode(self.drop_output(x))  # [T, B, V]
        return logits, StreamState(new_hidden, tuple(kept))


QRNNLanguageModel = LanguageModel  # the name before LSTM layers existed: old imports keep working


def _make_layer(config: ModelConfig, index: int, last_size: int) -> nn.Module:
    """Layer ``index`` of the stack, of type ``config.rnn``: input ``emb_size`` for the first,
    ``hidden_size`` for the others; output ``hidden_size``, ``last_size`` for the last one."""
    input_size = config.emb_size if index == 0 else config.hidden_size
    hidden_size = last_size if index == config.num_layers - 1 else config.hidden_size
    if config.rnn == "lstm":
        return LSTMLayer(input_size, hidden_size, weight_drop=config.weight_drop)
    layer = QRNNLayer(
        input_size=input_size,
        hidden_size=hidden_size,
        # Every layer keeps its last input so a window > 1 sees the previous segment.
        save_prev_x=True,
        zoneout=config.zoneout,
        window=config.first_window if index == 0 else config.window,
        output_gate=True,
    )
    if config.weight_drop > 0:
        parametrize.register_parametrization(layer.linear, "weight", WeightDrop(config.weight_drop))
    return layer
