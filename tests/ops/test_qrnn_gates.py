"""The fused QRNN gates op (numba) against the reference (torch activations + reference ForgetMult).

Shape legend: T = time steps, B = batch, H = hidden lanes; ``y`` is [T, B, k*H].

Each case compares the outputs (h, c, c_n) and all gradients (y, h0, bias), with upstream
gradients on h, c and the final state c_n, with ``naive.qrnn_gates_reference`` differentiated by
autograd; the backward runs both from the activations saved by the forward and recomputing them. The kernels' outputs are
poisoned with NaN before they write, so an element a kernel forgets shows up as a mismatch.
"""


import pytest
import torch

from qrnn_lm.ops.qrnn_gates import cpu, qrnn_gates
from qrnn_lm.ops.qrnn_gates.function import qrnn_gates_op
from qrnn_lm.ops.qrnn_gates.naive import qrnn_gates_reference
from _poison import nan_poisoned_allocations  # tests/ops/_poison.py

SHAPES = [(1, 1, 1), (1, 3, 500), (2, 1, 7), (2, 4, 500), (63, 1, 7), (63, 3, 1), (63, 2, 500)]
TOLERANCES = {
    torch.float64: dict(atol=1e-10, rtol=1e-10),
    torch.float32: dict(atol=2e-5, rtol=2e-5),
    torch.float16: dict(atol=2e-2, rtol=1e-2),
    torch.bfloat16: dict(atol=1e-1, rtol=5e-2),
}


def make_inputs(shape, output_gate, dtype=torch.float32, zoneout_mask=False, lengths=None, seed=0):
    seq_len, batch_size, hidden_size = shape
    generator = torch.Generator().manual_seed(seed)
    num_gates = 3 if output_gate else 2
    # Scaled so the activations reach their saturated ends too.
    y = 3 * torch.randn(seq_len, batch_size, num_gates * hidden_size, generator=generator)
    h0 = torch.randn(batch_size, hidden_size, generator=generator)
    bias = torch.randn(num_gates * hidden_size, generator=generator)
    keep = (torch.rand(seq_len, batch_size, hidden_size, generator=generator) > 0.3).to(dtype) if zoneout_mask else None
    upstream = [torch.randn(seq_len, batch_size, hidden_size, generator=generator) for _ in range(2)]
    upstream.append(torch.randn(batch_size, hidden_size, generator=generator))
    lengths = None if lengths is None else torch.tensor(lengths)
    return y.to(dtype), h0.to(dtype), keep, bias.to(dtype), [u.to(dtype) for u in upstream], lengths


def recomputing(y, h0, keep, bias, *, zoneout_scale=1.0, output_gate=True, reverse=False, lengths=None):
    """The op without saved activations: its backward recomputes them from y."""
    h, c, c_n, acts = qrnn_gates_op(y, h0, keep, bias, lengths, zoneout_scale, output_gate, reverse, False)
    assert acts.numel() == 0
    return h, c, c_n


FUSED = {"saved": qrnn_gates, "recomputed": recomputing}
NAMES = ("out", "c", "c_n", "grad_y", "grad_h0", "grad_bias")


def outputs_and_grads(fn, y, h0, keep, bias, upstream, output_gate, **kwargs):
    y, h0, bias = y.clone().requires_grad_(), h0.clone().requires_grad_(), bias.clone().requires_grad_()
    h, c, c_n = fn(y, h0, keep, bias, output_gate=output_gate, **kwargs)
    out = h if output_gate else c
    loss = sum((t.float() * u.float()).sum() for t, u in zip((out, c, c_n), upstream))
    return (out.detach(), c.detach(), c_n.detach(), *torch.autograd.grad(loss, (y, h0, bias)))


_EXPECTED = {}


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("output_gate", [True, False], ids=["fo", "f"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("parallel", [False, True], ids=["serial", "parallel"])
@pytest.mark.parametrize("fused", list(FUSED))
def test_outputs_and_all_gradients_match_the_reference(shape, output_gate, reverse, parallel, fused, monkeypatch):
    if parallel:
        monkeypatch.setattr(cpu, "SERIAL_MAX_ELEMENTS", 0)
    y, h0, keep, bias, upstream, _ = make_inputs(shape, output_gate)
    key = (shape, output_gate, reverse)
    if key not in _EXPECTED:  # the reference loop is the slow part: once for all four kernel variants
        _EXPECTED[key] = outputs_and_grads(qrnn_gates_reference, y, h0, keep, bias, upstream, output_gate,
                                           reverse=reverse)
    expected = _EXPECTED[key]
    with nan_poisoned_allocations(monkeypatch):
        got = outputs_and_grads(FUSED[fused], y, h0, keep, bias, upstream, output_gate, reverse=reverse)
    for name, g, e in zip(NAMES, got, expected):
        torch.testing.assert_close(g, e, **TOLERANCES[torch.float32], msg=name)


@pytest.mark.parametrize("output_gate", [True, False], ids=["fo", "f"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("parallel", [False, True], ids=["serial", "parallel"])
@pytest.mark.parametrize("fused", list(FUSED))
def test_zoneout_mask_scale_and_lengths(output_gate, reverse, parallel, fused, monkeypatch):
    if parallel:
        monkeypatch.setattr(cpu, "SERIAL_MAX_ELEMENTS", 0)
    y, h0, keep, bias, upstream, lengths = make_inputs((9, 4, 37), output_gate, zoneout_mask=True,
                                                       lengths=[9, 0, 4, 1])
    kwargs = dict(reverse=reverse, lengths=lengths, zoneout_scale=0.7)
    expected = outputs_and_grads(qrnn_gates_reference, y, h0, keep, bias, upstream, output_gate, **kwargs)
    with nan_poisoned_allocations(monkeypatch):
        got = outputs_and_grads(FUSED[fused], y, h0, keep, bias, upstream, output_gate, **kwargs)
    for name, g, e in zip(NAMES, got, expected):
        torch.testing.assert_close(g, e, **TOLERANCES[torch.float32], msg=name)
    assert (got[3][4:, 2] == 0).all() and (got[3][:, 1] == 0).all()  # padding gets no gradient
    torch.testing.assert_close(got[2][1], h0[1])  # an empty sequence keeps its initial state


def test_unused_outputs_need_no_upstream_gradient():
    """Only c_n used (no zero tensors are built for h and c): gradients still match."""
    y, h0, keep, bias, upstream, _ = make_inputs((5, 2, 6), True)
    upstream = [torch.zeros_like(upstream[0]), torch.zeros_like(upstream[1]), upstream[2]]
    expected = outputs_and_grads(qrnn_gates_reference, y, h0, keep, bias, upstream, True)
    y, h0 = y.requires_grad_(), h0.requires_grad_()
    grads = torch.autograd.grad((qrnn_gates(y, h0, bias=bias)[2] * upstream[2]).sum(), (y, h0))
    torch.testing.assert_close(grads[0], expected[3])
    torch.testing.assert_close(grads[1], expected[4])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16], ids=str)
def test_other_dtypes_match_the_reference(dtype):
    y, h0, keep, bias, upstream, lengths = make_inputs((5, 3, 20), True, dtype=dtype, zoneout_mask=True,
                                                       lengths=[5, 2, 3])
    expected = outputs_and_grads(qrnn_gates_reference, y, h0, keep, bias, upstream, True, lengths=lengths)
    got = outputs_and_grads(qrnn_gates, y, h0, keep, bias, upstream, True, lengths=lengths)
    for name, g, e in zip(NAMES, got, expected):
        assert g.dtype == dtype, name
        torch.testing.assert_close(g, e.to(dtype), **TOLERANCES[dtype], msg=name)


@pytest.mark.parametrize("output_gate", [True, False], ids=["fo", "f"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("fused", list(FUSED))
def test_gradcheck_float64(output_gate, reverse, fused):
    y, h0, keep, bias, _, lengths = make_inputs((4, 3, 2), output_gate, dtype=torch.float64, zoneout_mask=True,
                                                lengths=[4, 0, 2])
    y, h0, bias = y.requires_grad_(), h0.requires_grad_(), bias.requires_grad_()

    def op(y, h0, bias):
        h, c, c_n = FUSED[fused](y, h0, keep, bias, zoneout_scale=0.9, output_gate=output_gate, reverse=reverse,
                                 lengths=lengths)
        return (h if output_gate else c), c_n

    assert torch.autograd.gradcheck(op, (y, h0, bias))


def test_opcheck():
    y, h0, keep, bias, upstream, lengths = make_inputs((4, 3, 5), True, zoneout_mask=True, lengths=[4, 0, 2])
    y, h0, bias = y.requires_grad_(), h0.requires_grad_(), bias.requires_grad_()
    two_gates = y[..., :10].detach().requires_grad_()
    for args in [(y, h0, keep, bias, lengths, 0.8, True, False, True), (y, h0, None, None, None, 1.0, True, True, False),
                 (two_gates, h0, None, bias[:10], None, 1.0, False, False, True)]:
        torch.library.opcheck(torch.ops.qrnn_lm.qrnn_gates.default, args)
    h, c, c_n, acts = qrnn_gates_op(y, h0, keep, bias, lengths, 1.0, True, False, True)
    for backward_args in [(upstream[0], upstream[1], upstream[2], acts, True, bias, c, h0, keep, lengths, 1.0, True, False),
                          (None, upstream[1], None, y.detach(), False, None, c, h0, None, None, 1.0, True, False)]:
        backward_args = tuple(t.detach() if isinstance(t, torch.Tensor) else t for t in backward_args)
        torch.library.opcheck(torch.ops.qrnn_lm.qrnn_gates_backward.default, backward_args)


def test_torch_compile_fullgraph_matches_eager():
    y, h0, _, bias, _, _ = make_inputs((6, 2, 4), True)

    def fn(y, h0):
        h, c, c_n = qrnn_gates(y, h0, bias=bias)
        return h.sum() + c[-1].sum() + c_n.sum()

    compiled = torch.compile(fn, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(y, h0), fn(y, h0))


@pytest.mark.parametrize("call,message", [
    (lambda: qrnn_gates(torch.randn(3, 2)), r"shape \[T, B, k\*H\] \(3 dims\), got \(3, 2\)"),
    (lambda: qrnn_gates(torch.randn(3, 2, 7)), "last dim must be 3 \\* hidden_size \\(output_gate=True\\), got 7"),
    (lambda: qrnn_gates(torch.randn(3, 2, 6), torch.zeros(2, 3)), r"h0 must be \[B, H\] = \(2, 2\)"),
    (lambda: qrnn_gates(torch.randn(3, 2, 6), keep=torch.ones(3, 2, 3)), r"keep must be \[T, B, H\] = \(3, 2, 2\)"),
    (lambda: qrnn_gates(torch.randn(3, 2, 6), bias=torch.zeros(4)), r"bias must be \[k\*H\] = \(6,\)"),
    (lambda: qrnn_gates(torch.randn(3, 2, 6), zoneout_scale=1.5), r"zoneout_scale must lie in \[0, 1\], got 1.5"),
    (lambda: qrnn_gates(torch.randn(3, 2, 6), lengths=torch.tensor([1, 4])), r"lengths must lie in \[0, T=3\]"),
    (lambda: qrnn_gates(torch.ones(3, 2, 6, dtype=torch.int32)), "float16, bfloat16, float32 or float64"),
])
def test_bad_arguments_raise_value_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()
