"""The CPU gated-recurrence kernel (qrnn_lm/ops/gated_recurrence.py) against the QRNN's gates and
recurrence written as a float64 loop: outputs, final state and the gradients of the
pre-activations and of h0, over dtypes, directions, the output gate, zoneout and sizes that are
not a multiple of the vector width, serial and parallel; then the layer's choice of it (qrnn_lm/nn/gates.py)."""

import pytest
import torch

from qrnn_lm import QRNN, QRNNLayer
from qrnn_lm.nn import gates as gates_module
from qrnn_lm.ops import gated_recurrence as op
from qrnn_lm.ops.gated_recurrence import gated_recurrence

from _poison import nan_poisoned_allocations  # tests/ops/_poison.py

# (T, B, H): one step, one sequence, more sequences than threads, lanes past a vector's width.
SHAPES = [(1, 1, 5), (7, 3, 33), (12, 5, 70)]


def reference(Y, h0, keep, scale, output_gate, reverse):
    """``(H, h_n)`` in float64, as the torch path defines them, one step at a time."""
    hidden = h0.shape[1]
    z = torch.tanh(Y[..., :hidden])
    f = torch.sigmoid(Y[..., hidden:2 * hidden]) * scale * (1 if keep is None else keep)
    states, c = [None] * Y.shape[0], h0
    for t in (reversed(range(Y.shape[0])) if reverse else range(Y.shape[0])):
        c = f[t] * z[t] + (1 - f[t]) * c
        states[t] = c
    C = torch.stack(states)
    return (torch.sigmoid(Y[..., 2 * hidden:]) * C if output_gate else C), c


def results(function, Y, h0, keep, scale, output_gate, reverse, upstream):
    """Outputs and the gradients of Y and h0 for the loss ``sum(H * up_H) + sum(h_n * up_n)``."""
    Y, h0 = Y.detach().requires_grad_(), h0.detach().requires_grad_()
    H, h_n = function(Y, h0, keep, scale, output_gate, reverse)
    loss = (H.double() * upstream[0]).sum() + (h_n.double() * upstream[1]).sum()
    grad_Y, grad_h0 = torch.autograd.grad(loss, [Y, h0])
    return H.detach(), h_n.detach(), grad_Y, grad_h0


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("output_gate", [True, False], ids=["output-gate", "no-output-gate"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("zoneout", ["none", "train-mask", "eval-scale"])
@pytest.mark.parametrize("launch", ["serial", "parallel"])
def test_matches_the_float64_loop(monkeypatch, shape, dtype, output_gate, reverse, zoneout, launch):
    monkeypatch.setattr(op, "PARALLEL_MIN_ELEMENTS", 0 if launch == "parallel" else 2 ** 62)
    steps, batch, hidden = shape
    g = torch.Generator().manual_seed(steps * 100 + hidden)
    width = (3 if output_gate else 2) * hidden
    # Rounded to the dtype first, so that the reference sees exactly the kernel's inputs.
    Y = (torch.randn(steps, batch, width, generator=g) * 3).to(dtype)
    h0 = torch.randn(batch, hidden, generator=g).to(dtype)
    keep = (torch.rand(steps, batch, hidden, generator=g) > 0.3).to(dtype) if zoneout == "train-mask" else None
    scale = 0.7 if zoneout == "eval-scale" else 1.0
    upstream = (torch.randn(steps, batch, hidden, generator=g, dtype=torch.float64),
                torch.randn(batch, hidden, generator=g, dtype=torch.float64))
    assert op.supports(Y, None)
    with nan_poisoned_allocations(monkeypatch):
        got = results(gated_recurrence, Y, h0, keep, scale, output_gate, reverse, upstream)
    want = results(reference, Y.double(), h0.double(), None if keep is None else keep.double(), scale,
                   output_gate, reverse, upstream)
    # bfloat16: each output rounded once (2^-9 relative), and the backward reads the states rounded.
    tolerance = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=2 ** -7, atol=2e-2)
    for name, a, b in zip(["H", "h_n", "grad_Y", "grad_h0"], got, want):
        assert a.dtype == dtype, name
        torch.testing.assert_close(a.double(), b, **tolerance, msg=name)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("output_gate", [True, False], ids=["output-gate", "no-output-gate"])
@pytest.mark.parametrize("launch", ["serial", "parallel"])
def test_a_bias_is_added_in_float32_and_its_gradient_summed_over_steps_and_sequences(monkeypatch, dtype,
                                                                                       output_gate, launch):
    monkeypatch.setattr(op, "PARALLEL_MIN_ELEMENTS", 0 if launch == "parallel" else 2 ** 62)
    steps, batch, hidden = 12, 5, 70
    g = torch.Generator().manual_seed(11)
    width = (3 if output_gate else 2) * hidden
    Y = (torch.randn(steps, batch, width, generator=g) * 3).to(dtype).requires_grad_()
    h0 = torch.randn(batch, hidden, generator=g).to(dtype)
    bias = torch.randn(width, generator=g).requires_grad_()  # float32, as the layer's parameter
    upstream = torch.randn(steps, batch, hidden, generator=g, dtype=torch.float64)
    H, h_n = gated_recurrence(Y, h0, None, 1.0, output_gate, False, bias)
    grad_Y, grad_bias = torch.autograd.grad((H.double() * upstream).sum() + h_n.double().sum(), [Y, bias])
    Y64, bias64 = Y.detach().double().requires_grad_(), bias.detach().double().requires_grad_()
    want_H, want_n = reference(Y64 + bias64, h0.double(), None, 1.0, output_gate, False)
    want_Y, want_bias = torch.autograd.grad((want_H * upstream).sum() + want_n.sum(), [Y64, bias64])
    tolerance = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=2 ** -7, atol=2e-2)
    torch.testing.assert_close(H.double(), want_H, **tolerance)
    torch.testing.assert_close(grad_Y.double(), want_Y, **tolerance)
    assert grad_bias.dtype == torch.float32
    # Summed in float32 from the unrounded gradients: close to float64 in either dtype but for the
    # bf16 states the backward reads.
    torch.testing.assert_close(grad_bias.double(), want_bias, rtol=1e-5 if dtype == torch.float32 else 2e-2,
                               atol=1e-4 if dtype == torch.float32 else 5e-2)
    with pytest.raises(ValueError, match="bias must have shape"):
        gated_recurrence(Y, h0, None, 1.0, output_gate, False, bias[1:])


def test_without_h0_starts_from_zeros():
    Y = torch.randn(4, 2, 3 * 6)
    H, h_n = gated_recurrence(Y, None, None, 1.0, True, False)
    want_H, want_n = reference(Y.double(), torch.zeros(2, 6, dtype=torch.float64), None, 1.0, True, False)
    torch.testing.assert_close(H.double(), want_H, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(h_n.double(), want_n, rtol=1e-5, atol=1e-6)


def test_supports_only_what_the_kernel_runs():
    Y = torch.randn(3, 2, 12)
    assert op.supports(Y, None) and op.supports(Y.bfloat16(), None)
    assert not op.supports(Y, torch.tensor([3, 2]))  # variable lengths: the torch path
    assert not op.supports(Y.double(), None) and not op.supports(Y.half(), None)
    assert not op.supports(Y[:0], None)


def count_kernel_calls(monkeypatch):
    calls = []
    real = op.gated_recurrence
    monkeypatch.setattr(op, "gated_recurrence", lambda *a: calls.append(1) or real(*a))
    return calls


@pytest.mark.parametrize("window", [1, 2])
def test_the_layer_under_bf16_autocast_takes_the_kernel_and_matches_the_torch_path(monkeypatch, window):
    calls = count_kernel_calls(monkeypatch)
    results_by_choice = {}
    for choice in ("auto", "unfused"):
        monkeypatch.setenv(gates_module.ENV_GATES, choice)
        calls.clear()
        torch.manual_seed(0)
        layer = QRNNLayer(24, 40, window=window, zoneout=0.2)
        X = torch.randn(9, 3, 24, requires_grad=True)
        torch.manual_seed(1)  # the same zoneout draws on both paths
        with torch.autocast("cpu", dtype=torch.bfloat16):
            output, h_n = layer(X)
        assert len(calls) == (1 if choice == "auto" else 0), choice
        loss = output.float().square().sum() + h_n.float().sum()
        results_by_choice[choice] = [output.detach(), h_n.detach(),
                                     *torch.autograd.grad(loss, [X, *layer.parameters()])]
    for index, (got, want) in enumerate(zip(results_by_choice["auto"], results_by_choice["unfused"])):
        assert got.dtype == want.dtype, index
        # Both round to bf16 at different points (the torch path after each op).
        torch.testing.assert_close(got.float(), want.float(), rtol=3e-2, atol=3e-2, msg=f"item {index}")


@pytest.mark.parametrize("window", [1, 2])
def test_the_layer_hands_its_bias_to_the_kernel_instead_of_its_linear_map(monkeypatch, window):
    """Under bf16 autocast the kernel adds the float32 bias and sums its gradient: no pass of the
    backward sums dL/dY's [T*B, 3H] columns (0.66 ms per large layer of ptb-cpu-bf16 on a Zen 4)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    biases = []
    real = op.gated_recurrence
    monkeypatch.setattr(op, "gated_recurrence", lambda *a: biases.append(a[6]) or real(*a))
    layer = QRNNLayer(24, 40, window=window)
    X = torch.randn(9, 3, 24, requires_grad=True)
    column_sums = []

    class Watch(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten.sum.dim_IntList and tuple(args[0].shape) == (27, 120):
                column_sums.append(func)
            return func(*args, **(kwargs or {}))

    with Watch():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            output, _ = layer(X)
        output.float().sum().backward()
    assert len(biases) == 1 and biases[0] is layer.linear.bias
    assert column_sums == []
    assert layer.linear.bias.grad.dtype == torch.float32


def test_the_layer_keeps_the_torch_path_for_variable_lengths(monkeypatch):
    calls = count_kernel_calls(monkeypatch)
    layer = QRNN(8, 10)
    packed = torch.nn.utils.rnn.pack_padded_sequence(torch.randn(5, 2, 8), torch.tensor([5, 3]))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        layer(packed)
    assert calls == []
