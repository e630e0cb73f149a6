"""The public ForgetMult op: autograd (gradcheck), registration (opcheck), torch.compile,
autocast, validation errors, backend choice, and the original's module form.

Shape legend: T = time steps, B = batch, H = hidden lanes; tensors are [T, B, H].
"""

import logging

import pytest
import torch

from qrnn_lm import ForgetMult, forget_mult
from qrnn_lm.ops.forget_mult import function
from qrnn_lm.ops.forget_mult.naive import forget_mult_reference

CPU_BACKENDS = ["numba", "numba-chunked", "torch"]


def pick(backend, monkeypatch):
    """The backend= argument; "numba-chunked" forces the numba chunked scan."""
    if backend == "numba-chunked":
        monkeypatch.setenv("QRNN_LM_FORGET_MULT_CPU_STRATEGY", "chunked")
        return "numba"
    return backend


def random_inputs(seq_len=5, batch_size=3, hidden_size=4, dtype=torch.float32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    f = 0.05 + 0.9 * torch.rand(seq_len, batch_size, hidden_size, generator=generator, dtype=dtype)
    x = torch.randn(seq_len, batch_size, hidden_size, generator=generator, dtype=dtype)
    h0 = torch.randn(batch_size, hidden_size, generator=generator, dtype=dtype)
    return f, x, h0


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("lengths", [None, [5, 0, 3]], ids=["full", "lengths"])
def test_gradcheck_float64(backend, reverse, lengths, monkeypatch):
    backend = pick(backend, monkeypatch)
    f, x, h0 = (t.requires_grad_(True) for t in random_inputs(dtype=torch.float64))
    lengths = None if lengths is None else torch.tensor(lengths)

    def op(f, x, h0):
        return forget_mult(f, x, h0, reverse=reverse, lengths=lengths, backend=backend)

    assert torch.autograd.gradcheck(op, (f, x, h0))


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_opcheck(reverse):
    f, x, h0 = (t.requires_grad_(True) for t in random_inputs())
    lengths = torch.tensor([5, 0, 2])
    for args in [(f, x, h0, None, reverse, "auto"), (f, x, h0, lengths, reverse, "torch")]:
        torch.library.opcheck(torch.ops.qrnn_lm.forget_mult.default, args)
    h = forget_mult(f, x, h0, reverse=reverse).detach()
    backward_args = (torch.randn_like(h), f.detach(), x.detach(), h, h0.detach(), lengths, reverse, "auto")
    torch.library.opcheck(torch.ops.qrnn_lm.forget_mult_backward.default, backward_args)


class TinyQRNN(torch.nn.Module):
    """A one-layer QRNN-like module: gates from a linear layer, then forget_mult."""

    def __init__(self, input_size=6, hidden_size=5):
        super().__init__()
        self.linear = torch.nn.Linear(input_size, 2 * hidden_size)

    def forward(self, inputs, lengths=None):
        z, f = self.linear(inputs).chunk(2, dim=-1)  # [T, B, H] each
        return forget_mult(torch.sigmoid(f), torch.tanh(z), lengths=lengths, reverse=lengths is not None)


@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
def test_torch_compile_fullgraph_matches_eager(with_lengths):
    torch.manual_seed(0)
    module = TinyQRNN()
    inputs = torch.randn(7, 3, 6)
    lengths = torch.tensor([7, 2, 0]) if with_lengths else None
    compiled = torch.compile(module, backend="aot_eager", fullgraph=True)
    for run in (module, compiled):
        run.zero_grad()
        out = run(inputs, lengths)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        if run is module:
            expected_out, expected_grad = out.detach(), module.linear.weight.grad.clone()
    torch.testing.assert_close(out.detach(), expected_out)
    torch.testing.assert_close(module.linear.weight.grad, expected_grad)


def test_autocast_runs_in_the_dtype_of_the_gates():
    """No autocast rule: under CPU bf16 autocast the gates come out of the linear layer in bf16,
    the op computes in fp32 inside, and output and grads are bf16 like its inputs."""
    torch.manual_seed(0)
    module, inputs = TinyQRNN(), torch.randn(4, 2, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = module(inputs)
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert module.linear.weight.grad.dtype == torch.float32  # master weights stay fp32
    expected = TinyQRNN()
    expected.load_state_dict(module.state_dict())
    torch.testing.assert_close(out.float(), expected(inputs), atol=3e-2, rtol=3e-2)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
def test_grads_come_back_in_input_dtype_and_shape(dtype):
    f, x, h0 = (t.to(dtype).requires_grad_(True) for t in random_inputs())
    h = forget_mult(f, x, h0)
    assert h.dtype == dtype and h.shape == x.shape
    h.float().pow(2).sum().backward()
    for tensor in (f, x, h0):
        assert tensor.grad.dtype == dtype and tensor.grad.shape == tensor.shape


def test_inputs_without_requires_grad_and_mixed_requires_grad():
    f, x, h0 = random_inputs()
    expected = forget_mult_reference(f, x, h0)
    torch.testing.assert_close(forget_mult(f, x, h0), expected)
    x.requires_grad_(True)
    h = forget_mult(f, x)  # h0 None -> zeros
    h.sum().backward()
    assert x.grad is not None and f.grad is None
    torch.testing.assert_close(h, forget_mult_reference(f, x), atol=1e-6, rtol=1e-6)


def test_non_contiguous_inputs_and_upstream_grad():
    f, x, h0 = random_inputs(seq_len=4, batch_size=3, hidden_size=6)
    f_t, x_t = (t.transpose(0, 1).contiguous().transpose(0, 1).requires_grad_(True) for t in (f, x))
    f_nc = f_t[:, :, ::2]  # non-contiguous views [4, 3, 3]
    x_nc = x_t[:, :, ::2]
    h = forget_mult(f_nc, x_nc, h0[:, ::2])
    torch.testing.assert_close(h, forget_mult_reference(f_nc, x_nc, h0[:, ::2]))
    # An expanded (stride-0 along B) upstream grad that differs per step and lane.
    grad_h = torch.randn(4, 1, 3, generator=torch.Generator().manual_seed(1)).expand(4, 3, 3)
    assert grad_h.stride(1) == 0
    h.backward(grad_h)
    assert f_t.grad.shape == f_t.shape and torch.equal(f_t.grad[:, :, 1::2], torch.zeros(4, 3, 3))
    leaves = [t.detach()[:, :, ::2].clone().requires_grad_(True) for t in (f_t, x_t)]
    h0_ref = h0[:, ::2].clone().requires_grad_(True)
    expected = torch.autograd.grad(forget_mult_reference(*leaves, h0_ref), [*leaves, h0_ref],
                                   grad_h.contiguous())
    torch.testing.assert_close(f_t.grad[:, :, ::2], expected[0])
    torch.testing.assert_close(x_t.grad[:, :, ::2], expected[1])


def test_validation_errors_name_expected_and_actual():
    f, x, h0 = random_inputs()
    cases = [
        (dict(f=f[0]), r"f must have shape \[T, B, H\] \(3 dims\), got \(3, 4\)"),
        (dict(x=x[:, :2]), r"same shape, got \(5, 3, 4\) and \(5, 2, 4\)"),
        (dict(x=x.double()), r"same dtype, got torch.float32 and torch.float64"),
        (dict(x=x.int()), r"float16, bfloat16, float32 or float64, got torch.int32"),
        (dict(f=[1.0]), r"f must be a torch.Tensor, got list"),
        (dict(h0=h0[:2]), r"h0 must have shape \[B, H\] = \(3, 4\), got \(2, 4\)"),
        (dict(h0=h0.double()), r"h0 must have the dtype of x \(torch.float32\), got torch.float64"),
        (dict(lengths=torch.tensor([5, 0])), r"lengths must have shape \[B\] = \[3\], got \(2,\)"),
        (dict(lengths=torch.tensor([5, 0, 6])), r"lengths must lie in \[0, T=5\], got values from 0 to 6"),
        (dict(lengths=torch.tensor([5, -1, 2])), r"lengths must lie in \[0, T=5\], got values from -1 to 5"),
        (dict(lengths=torch.tensor([5.0, 1.0, 2.0])), r"lengths must hold integers, got torch.float32"),
        (dict(backend="cuda"), r"backend must be one of .*'numba'.*, got 'cuda'"),
    ]
    for overrides, message in cases:
        kwargs = dict(f=f, x=x, h0=h0) | overrides
        with pytest.raises(ValueError, match=message):
            forget_mult(kwargs.pop("f"), kwargs.pop("x"), **kwargs)


def test_module_form_matches_function_and_use_cuda_false_uses_torch_loop(monkeypatch):
    f, x, h0 = random_inputs()
    module = ForgetMult()
    torch.testing.assert_close(module(f, x, h0), forget_mult(f, x, h0))
    torch.testing.assert_close(module(f, x), forget_mult(f, x))
    chosen = []
    real_resolve = function.resolve_backend
    monkeypatch.setattr(function, "resolve_backend", lambda d, b: chosen.append(b) or real_resolve(d, b))
    torch.testing.assert_close(module(f, x, hidden_init=h0, use_cuda=False), forget_mult(f, x, h0))
    assert chosen[0] == "torch"


def test_backend_choice_env_var_and_errors(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.delenv(function.ENV_BACKEND, raising=False)
    assert function.resolve_backend(cpu, "auto") == "numba"
    assert function.resolve_backend(torch.device("meta"), "auto") == "torch"
    monkeypatch.setenv(function.ENV_BACKEND, "torch")
    assert function.resolve_backend(cpu, "auto") == "torch"
    assert function.resolve_backend(cpu, "numba") == "numba"  # an explicit argument wins
    monkeypatch.setenv(function.ENV_BACKEND, "fast")
    with pytest.raises(ValueError, match="QRNN_LM_FORGET_MULT_BACKEND must be one of .*got 'fast'"):
        function.resolve_backend(cpu, "auto")
    monkeypatch.delenv(function.ENV_BACKEND)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    for name in ("triton", "cupy"):
        with pytest.raises(RuntimeError, match=f"backend '{name}' runs on cuda tensors, got tensors on cpu"):
            forget_mult(*random_inputs(), backend=name)


def test_missing_backend_raises_with_install_command_and_auto_falls_back_once(monkeypatch, caplog):
    monkeypatch.delenv(function.ENV_BACKEND, raising=False)
    monkeypatch.setitem(function._loaded, "numba", (None, "No module named 'numba'"))
    monkeypatch.setattr(function, "_logged_fallbacks", set())
    with pytest.raises(RuntimeError, match="backend 'numba' is not available .*`pip install numba`"):
        forget_mult(*random_inputs(), backend="numba")
    f, x, h0 = random_inputs()
    with caplog.at_level(logging.WARNING, logger=function.logger.name):
        for _ in range(3):
            torch.testing.assert_close(forget_mult(f, x, h0), forget_mult_reference(f, x, h0))
    fallback_logs = [r for r in caplog.records if "using the 'torch' backend" in r.getMessage()]
    assert len(fallback_logs) == 1 and "pip install numba" in fallback_logs[0].getMessage()
