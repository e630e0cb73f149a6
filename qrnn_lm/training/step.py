"""One training step: forward, the regularised loss (cross-entropy + AR + TAR), backward, clipping.

Mixed precision (``train.precision``, decided for the device by :mod:`qrnn_lm.device`): the
forward and the loss run in :func:`precision_context` (autocast to bfloat16 or float16); fp16 adds
:func:`make_scaler`'s gradient scaler against underflow. Weights, optimiser state and
checkpoints stay float32.

``train_step`` leaves the optimiser step (and the learning-rate rescaling) to the caller.

Data parallel: ``model`` is then the DistributedDataParallel wrapper, whose backward averages the
gradients over ranks. Each rank's loss is the mean over its own tokens (cross-entropy, AR and TAR
alike) and every rank holds the same number of tokens (equal stream blocks, equal segment length),
so the average of the ranks' gradients is the gradient of the mean over the global batch. Before
backward the ranks exchange their losses and segment lengths in one small all-gather: a NaN on any
rank stops every rank with the same TrainingError (no rank is left waiting in an all-reduce), and
lengths that differ (diverged BPTT generators) are a RuntimeError.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import TrainConfig, UserError
from ..device import check_precision, resolve_precision
from . import distributed

__all__ = ["TrainingError", "StepResult", "regularized_loss", "train_step", "clip_gradients", "precision_context",
           "step_settings", "make_scaler"]

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class TrainingError(UserError):
    """Training cannot go on, e.g. the loss became NaN or infinite."""


@dataclass
class StepResult:
    loss: float  # the step's cross-entropy (nats per token, mean over every rank's tokens), without AR/TAR
    grad_norm: float  # total gradient norm before clipping
    hidden: list[torch.Tensor]  # the new hidden state, detached from the graph


def regularized_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    raw_output: torch.Tensor,
    dropped_output: torch.Tensor,
    alpha: float,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cross_entropy, cross_entropy + AR + TAR)``.

    AR = ``alpha * mean(dropped_output ** 2)`` (activation regularisation on the last layer's
    dropped output); TAR = ``beta * mean((raw_output[t] - raw_output[t-1]) ** 2)`` (temporal
    activation regularisation on its raw output; skipped for a one-step segment).
    Shapes: logits ``[T, B, V]``, targets ``[T, B]``, outputs ``[T, B, E]``. ``logits`` may also be
    the model's summed ``-log p(target)`` (a scalar: ``model(inputs, hidden, targets)[0]``, which
    never holds all logits when chunked), whose mean over the targets is then the cross-entropy.
    """
    if logits.dim() == 0:  # already the summed negative log-likelihood
        cross_entropy = logits.float() / targets.numel()
    else:
        cross_entropy = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1))
    loss = cross_entropy
    if alpha:
        loss = loss + alpha * dropped_output.float().pow(2).mean()
    if beta and raw_output.size(0) > 1:
        loss = loss + beta * (raw_output[1:] - raw_output[:-1]).float().pow(2).mean()
    return cross_entropy, loss


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    hidden: list[torch.Tensor] | None,
    train: TrainConfig,
    where: str = "",
    scaler: torch.amp.GradScaler | None = None,
) -> StepResult:
    """Forward, regularised loss, backward and gradient clipping on one segment (no optimiser step).

    The forward and the loss run under ``train.precision``'s autocast. With a ``scaler`` (fp16)
    the loss is scaled for backward and the gradients unscaled before clipping; a step whose
    scaled gradients overflowed lowers the scale and leaves no gradient (``optimizer.step()``
    then changes nothing), as ``GradScaler.step`` would skip it.

    Raises :class:`TrainingError` when the loss or (without a scaler) the gradient norm is not
    finite; nothing has been applied to the weights then.
    """
    model.train()
    optimizer.zero_grad(set_to_none=True)
    with precision_context(inputs.device, train.precision):
        # The model sums -log p(target) itself, so a chunked softmax never holds all logits.
        nll_sum, new_hidden, raw_output, dropped_output = model(inputs, hidden, targets)
        cross_entropy, loss = regularized_loss(nll_sum, targets, raw_output, dropped_output, train.alpha, train.beta)
    loss_value = _checked_loss(cross_entropy.item(), loss.item(), inputs.size(0), where)
    max_norm = train.clip if train.clip > 0 else math.inf
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        grad_norm = clip_gradients(model, max_norm)
        scaler.update()  # lowers the scale after an overflow, raises it after enough good steps
        if not math.isfinite(grad_norm):
            optimizer.zero_grad(set_to_none=True)  # skip this step: the optimisers ignore absent grads
        return StepResult(loss_value, grad_norm, [h.detach() for h in new_hidden])
    loss.backward()
    grad_norm = clip_gradients(model, max_norm)
    if not math.isfinite(grad_norm):
        raise TrainingError(
            f"the gradient norm became {grad_norm} {where}; lower train.lr (or train.clip) and "
            "resume from the run's last.pt, which is kept as it was"
        )
    return StepResult(loss_value, grad_norm, [h.detach() for h in new_hidden])


def clip_gradients(model: nn.Module, max_norm: float) -> float:
    """``torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)`` as a float, without its
    multiply when it would multiply by 1.

    torch multiplies every gradient by ``min(max_norm / (norm + 1e-6), 1)`` unconditionally (a test
    of the factor would synchronise a GPU); the trainer reads the norm anyway, so the factor is
    tested here and the pass over the gradients (1.2 ms of ptb-cpu-bf16's step on a Zen 4) runs
    only when it changes them. Same results bit for bit: a product by 1 is the identity.
    """
    parameters = [p for p in model.parameters() if p.grad is not None]
    if not parameters:
        return 0.0
    total_norm = torch.nn.utils.get_total_norm([p.grad for p in parameters])
    norm = float(total_norm)  # the one read of the device (clip_grad_norm_'s caller made it too)
    # torch's factor, in the norm's dtype as clip_grads_with_norm_ forms it, here on the host.
    clip_coef = max_norm / (torch.tensor(norm, dtype=total_norm.dtype) + 1e-6)
    if not float(clip_coef) >= 1.0:  # also when the norm is NaN or infinite, as torch does
        torch.nn.utils.clip_grads_with_norm_(parameters, max_norm, total_norm)
    return norm


def _checked_loss(cross_entropy: float, loss: float, seq_len: int, where: str) -> float:
    """The cross-entropy averaged over all ranks (equal token counts); raises TrainingError on
    every rank when the loss is not finite on any rank."""
    rows = distributed.all_gather_floats([cross_entropy, loss, seq_len])  # one row per rank
    lengths = {int(row[2]) for row in rows}
    if len(lengths) > 1:
        raise RuntimeError(f"the ranks drew different BPTT lengths {[int(row[2]) for row in rows]} {where}: "
                           "their BPTT generators diverged")
    for rank, (value, total, _) in enumerate(rows):
        if not math.isfinite(value) or not math.isfinite(total):
            on_rank = f" on rank {rank}" if len(rows) > 1 else ""
            shown = value if not math.isfinite(value) else total
            raise TrainingError(
                f"the training loss became {shown}{on_rank} {where}; "
                + ("every rank stopped; " if len(rows) > 1 else "")
                + "lower train.lr (or train.clip) and resume from the run's last.pt, which is kept as it was"
            )
    return sum(row[0] for row in rows) / len(rows)


def precision_context(device: torch.device, precision: str):
    """The autocast context for the forward and the loss (a no-op context for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=_DTYPES[precision])


def step_settings(train: TrainConfig, device: torch.device) -> tuple[TrainConfig, torch.amp.GradScaler | None]:
    """The ``[train]`` section the steps on ``device`` run with, its "auto" precision decided once
    (config.toml keeps what the user asked for), and their gradient scaler (fp16 only)."""
    resolved = dataclasses.replace(train, precision=resolve_precision(train.precision, device))
    return resolved, make_scaler(resolved.precision, device)


def make_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """A GradScaler for fp16, None otherwise."""
    check_precision(precision, device)
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None
