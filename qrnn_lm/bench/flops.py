"""Floating-point operations of one training step of the language model, counted analytically.

Shape letters: T = BPTT length, B = batch size, N = T * B tokens, I = a layer's input size,
H = its hidden size, w = its window, E = the decoder's input size, V = vocabulary size.

What is counted (a multiply-add is 2 FLOPs):

* **Matrix products, exactly**: a product ``[M, K] x [K, N]`` is ``2*M*N*K`` forward; in the
  backward its input gradient and its weight gradient are one such product each (``4*M*N*K``),
  skipped where nothing needs them. These are the numbers ``FlopCounterMode`` reports for the
  step's ``mm``/``addmm`` calls (a test checks that, with ``addmm_`` added to its table).
  - QRNN layer: the gates' linear over the window, ``[N, w*I] x [w*I, k*H]`` with k = 3 gates (Z, F,
    O: the language model's layers have the output gate). The bench's step starts every segment
    after ``reset()``, so no inputs are kept from before it: the window block that looks s steps
    back has no product for the first s steps (those inputs are zeros), i.e. ``(T - s) * B`` rows.
  - LSTM layer: ``[N, I] x [I, 4H]`` over all steps at once, and ``[B, H] x [H, 4H]`` once per
    step; the first step's hidden-state gradient is not needed (the initial state is a constant).
  - softmax decoder: ``[N, E] x [E, V]``; adaptive decoder: its head ``[N, E] x [E, shortlist +
    clusters]`` and, for the tokens whose target falls in cluster i, the cluster's two products
    ``[n_i, E] x [E, E / 4^(i+1)] x [., size_i]``.
* **Elementwise work, where it is the part's work**, at the per-element rates below: the log-softmax
  over the decoder's logits, and the optimizer (gradient clipping and the update, per parameter).
* **Not counted**: biases, activations, the ForgetMult recurrence and the LSTM cell, dropout
  masks, the embedding lookup, AR/TAR. They move memory more than they compute: at the recipes'
  sizes the gate activations and the recurrence are a few FLOPs per hidden unit against
  ``2 * k * w * I`` per unit in the products (about 0.2% at PTB's shape), so the embedding part
  counts 0 FLOPs.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Flops", "product", "trained_product", "qrnn_layer", "lstm_layer", "softmax_decoder",
           "adaptive_decoder", "optimizer", "LOG_SOFTMAX_PER_LOGIT", "CLIP_PER_PARAMETER",
           "UPDATE_PER_PARAMETER", "WEIGHT_DECAY_PER_PARAMETER"]

# The log-softmax + negative log-likelihood per logit: forward max, subtract, exp, sum (4);
# backward softmax - one-hot, times the incoming gradient (3).
LOG_SOFTMAX_PER_LOGIT = 7
# Clipping (training.step.clip_gradients): square and add for the norm, one multiply to scale
# (counted always; it scales only the steps whose norm is over the bound).
CLIP_PER_PARAMETER = 3
# The update per parameter, without weight decay. SGD: p -= lr * g. Adam and AdamW: the two moment
# updates (3 + 4), sqrt / bias correction + eps (3), p -= step * m / denom (3).
UPDATE_PER_PARAMETER = {"sgd": 2, "adam": 13, "adamw": 13}
# Weight decay per parameter: SGD and Adam add wd * p to the gradient (2); AdamW scales p (1).
WEIGHT_DECAY_PER_PARAMETER = {"sgd": 2, "adam": 2, "adamw": 1}


@dataclass(frozen=True)
class Flops:
    """FLOPs of one part of a step, forward and backward together."""

    matmul: int = 0  # matrix products (exact)
    elementwise: int = 0  # the counted elementwise work (log-softmax, optimizer)

    @property
    def total(self) -> int:
        return self.matmul + self.elementwise

    def __add__(self, other: "Flops") -> "Flops":
        return Flops(self.matmul + other.matmul, self.elementwise + other.elementwise)


def product(m: int, k: int, n: int) -> int:
    """FLOPs of one ``[m, k] x [k, n]`` product: ``2*m*k*n``."""
    return 2 * m * k * n


def trained_product(m: int, k: int, n: int, input_grad: bool = True) -> int:
    """A product ``[m, k] x [k, n]`` forward and backward: the forward, the weight gradient
    ``[k, m] x [m, n]`` and (``input_grad``) the input gradient ``[m, n] x [n, k]``."""
    return product(m, k, n) * (3 if input_grad else 2)


def qrnn_layer(seq_len: int, batch_size: int, input_size: int, hidden_size: int, window: int,
               output_gate: bool = True) -> Flops:
    """One QRNN layer's gate products, forward and backward, on a segment started after ``reset()``:
    window block s (the inputs s steps back) multiplies ``(T - s) * B`` rows."""
    gates = (3 if output_gate else 2) * hidden_size
    rows = batch_size * sum(max(seq_len - shift, 0) for shift in range(window))
    return Flops(matmul=trained_product(rows, input_size, gates))


def lstm_layer(seq_len: int, batch_size: int, input_size: int, hidden_size: int) -> Flops:
    """One LSTM layer's products, forward and backward: the input products ``[T*B, I] x [I, 4H]``
    at once, the hidden products ``[B, H] x [H, 4H]`` per step (forward and weight gradient every
    step, the hidden-state gradient for steps 2..T: the initial state needs none)."""
    gates = 4 * hidden_size
    inputs = trained_product(seq_len * batch_size, input_size, gates)
    hidden = product(batch_size, hidden_size, gates) * (2 * seq_len + max(seq_len - 1, 0))
    return Flops(matmul=inputs + hidden)


def softmax_decoder(num_tokens: int, features: int, vocab_size: int) -> Flops:
    """The linear decoder ``[N, E] x [E, V]`` forward and backward (chunked or not: the same
    products) and the log-softmax over its ``N * V`` logits."""
    return Flops(matmul=trained_product(num_tokens, features, vocab_size),
                 elementwise=LOG_SOFTMAX_PER_LOGIT * num_tokens * vocab_size)


def adaptive_decoder(num_tokens: int, features: int, head_size: int,
                     clusters: list[tuple[int, int, int]]) -> Flops:
    """``torch.nn.AdaptiveLogSoftmaxWithLoss`` with targets, forward and backward.

    Args:
        num_tokens: N, the tokens (all go through the head).
        features: E, the decoder's input size.
        head_size: the head's outputs (shortlist + one per cluster).
        clusters: per tail cluster ``(tokens whose target is in it, projection size, cluster size)``.
    """
    flops = Flops(matmul=trained_product(num_tokens, features, head_size),
                  elementwise=LOG_SOFTMAX_PER_LOGIT * num_tokens * head_size)
    for tokens, projection, size in clusters:
        flops += Flops(matmul=trained_product(tokens, features, projection) + trained_product(tokens, projection, size),
                       elementwise=LOG_SOFTMAX_PER_LOGIT * tokens * size)
    return flops


def optimizer(num_parameters: int, kind: str, weight_decay: float) -> Flops:
    """Gradient clipping and the ``kind`` update ("sgd", "adam", "adamw") over every parameter."""
    if kind not in UPDATE_PER_PARAMETER:
        raise ValueError(f"optimizer must be one of {sorted(UPDATE_PER_PARAMETER)}, got {kind!r}")
    per_parameter = CLIP_PER_PARAMETER + UPDATE_PER_PARAMETER[kind]
    if weight_decay:
        per_parameter += WEIGHT_DECAY_PER_PARAMETER[kind]
    return Flops(elementwise=per_parameter * num_parameters)
