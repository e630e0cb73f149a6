"""Bidirectional QRNNs, PackedSequence inputs, and the GPU-vs-CPU comparison."""

import pytest
import torch
from torch.nn.utils.rnn import PackedSequence, pack_sequence, pad_packed_sequence

from qrnn_lm import QRNN, QRNNLayer
from test_transcription import original_layer


def copy_layer(source, reverse=False):
    """A fresh QRNNLayer with the weights of ``source``."""
    layer = QRNNLayer(source.input_size, source.hidden_size, window=source.window,
                      output_gate=source.output_gate, reverse=reverse)
    layer.load_state_dict(source.state_dict())
    return layer


@pytest.mark.parametrize("window", [1, 2, 3])
def test_bidirectional_equals_a_forward_layer_plus_a_layer_on_the_reversed_sequence(window):
    torch.manual_seed(window)
    qrnn = QRNN(3, 4, num_layers=2, window=window, bidirectional=True)
    X, hidden = torch.randn(6, 2, 3), torch.randn(4, 2, 4)
    output, h_n = qrnn(X, hidden)
    assert output.shape == (6, 2, 8) and h_n.shape == (4, 2, 4)
    layer_input, expected_h = X, []
    for depth in range(2):
        forward = copy_layer(qrnn.layers[2 * depth])
        backward_as_forward = copy_layer(qrnn.layers[2 * depth + 1])  # a plain forward layer
        out_f, h_f = forward(layer_input, hidden[2 * depth])
        out_b, h_b = backward_as_forward(layer_input.flip(0), hidden[2 * depth + 1])
        layer_input = torch.cat([out_f, out_b.flip(0)], dim=2)
        expected_h += [h_f, h_b]
    torch.testing.assert_close(output, layer_input)
    torch.testing.assert_close(h_n, torch.cat(expected_h))  # nn.LSTM's order: l0 fwd, l0 bwd, l1 ...


def test_reversed_layer_window_looks_at_later_inputs():
    torch.manual_seed(4)
    layer = QRNNLayer(3, 4, window=3, reverse=True)
    X = torch.randn(5, 2, 3)
    expected, expected_h = original_layer(X, layer.linear.weight, layer.linear.bias, window=3, reverse=True)
    output, h_n = layer(X)
    torch.testing.assert_close(output, expected)
    torch.testing.assert_close(h_n, expected_h)


def test_bidirectional_with_bad_prebuilt_layers_raises():
    with pytest.raises(ValueError, match=r"forward/reversed pairs \(reverse flags \[False, True\]\), got reverse flags \[False, False\]"):
        QRNN(3, 3, bidirectional=True, layers=[QRNNLayer(3), QRNNLayer(3)])


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("window", [1, 3])
def test_packed_sequence_results_equal_each_sequence_run_alone(bidirectional, window):
    torch.manual_seed(window + 2 * bidirectional)
    directions = 2 if bidirectional else 1
    qrnn = QRNN(3, 4, num_layers=2, window=window, bidirectional=bidirectional)
    sequences = [torch.randn(length, 3) for length in (4, 6, 1, 4)]  # unsorted, with a tie
    hidden = torch.randn(2 * directions, 4, 4)
    packed = pack_sequence(sequences, enforce_sorted=False)
    output, h_n = qrnn(packed, hidden)
    assert isinstance(output, PackedSequence)
    assert torch.equal(output.sorted_indices, packed.sorted_indices)
    padded, lengths = pad_packed_sequence(output)
    assert lengths.tolist() == [4, 6, 1, 4]
    for b, sequence in enumerate(sequences):
        alone, alone_h = qrnn(sequence.unsqueeze(1), hidden[:, b:b + 1].contiguous())
        torch.testing.assert_close(padded[:len(sequence), b:b + 1], alone)
        torch.testing.assert_close(h_n[:, b:b + 1], alone_h)
        assert (padded[len(sequence):, b] == 0).all()


def test_layer_with_lengths_ignores_whatever_is_in_the_padding():
    torch.manual_seed(5)
    X = torch.randn(5, 3, 2)  # the padding past each length holds random values, not zeros
    lengths = torch.tensor([5, 2, 3])
    for reverse in (False, True):
        layer = QRNNLayer(2, 3, window=3, reverse=reverse)
        output, h_n = layer(X, lengths=lengths)
        for b, length in enumerate(lengths.tolist()):
            alone, alone_h = layer(X[:length, b:b + 1])
            torch.testing.assert_close(output[:length, b:b + 1], alone)
            torch.testing.assert_close(h_n[:, b:b + 1], alone_h)


def test_packed_chunks_with_save_prev_x_keep_each_sequences_own_last_inputs():
    torch.manual_seed(6)
    qrnn = QRNN(2, 3, window=3, save_prev_x=True)
    first = [torch.randn(length, 2) for length in (4, 1, 3)]
    second = [torch.randn(2, 2) for _ in range(3)]
    _, hidden = qrnn(pack_sequence(first, enforce_sorted=False))
    output, _ = qrnn(pack_sequence(second, enforce_sorted=False), hidden)
    padded, _ = pad_packed_sequence(output)
    for b in range(3):
        qrnn.reset()
        _, alone_hidden = qrnn(first[b].unsqueeze(1))
        alone, _ = qrnn(second[b].unsqueeze(1), alone_hidden)
        torch.testing.assert_close(padded[:, b:b + 1], alone)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
class TestGPUMatchesCPU:
    @pytest.mark.parametrize("bidirectional", [False, True])
    def test_outputs_and_gradients_match(self, bidirectional):
        torch.manual_seed(7)
        cpu = QRNN(16, 32, num_layers=2, window=2, bidirectional=bidirectional)
        gpu = QRNN(16, 32, num_layers=2, window=2, bidirectional=bidirectional).cuda()
        gpu.load_state_dict(cpu.state_dict())
        X = torch.randn(20, 4, 16)
        out_cpu, h_cpu = cpu(X)
        out_gpu, h_gpu = gpu(X.cuda())
        torch.testing.assert_close(out_gpu.cpu(), out_cpu, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(h_gpu.cpu(), h_cpu, atol=1e-4, rtol=1e-4)
        out_cpu.square().sum().backward()
        out_gpu.square().sum().backward()
        for (name, p_cpu), p_gpu in zip(cpu.named_parameters(), gpu.parameters()):
            torch.testing.assert_close(p_gpu.grad.cpu(), p_cpu.grad, atol=1e-3, rtol=1e-3, msg=name)

    def test_packed_sequence_on_gpu(self):
        torch.manual_seed(8)
        cpu = QRNN(4, 8, window=2, bidirectional=True)
        gpu = QRNN(4, 8, window=2, bidirectional=True).cuda()
        gpu.load_state_dict(cpu.state_dict())
        sequences = [torch.randn(length, 4) for length in (5, 2, 7)]
        out_cpu, h_cpu = cpu(pack_sequence(sequences, enforce_sorted=False))
        out_gpu, h_gpu = gpu(pack_sequence([s.cuda() for s in sequences], enforce_sorted=False))
        torch.testing.assert_close(out_gpu.data.cpu(), out_cpu.data, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(h_gpu.cpu(), h_cpu, atol=1e-4, rtol=1e-4)


def test_gradcheck_of_a_bidirectional_stack_on_a_packed_batch():
    torch.manual_seed(9)
    qrnn = QRNN(2, 3, num_layers=2, window=3, bidirectional=True).double()
    sequences = [torch.randn(length, 2, dtype=torch.float64, requires_grad=True) for length in (4, 2)]
    hidden = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)

    def run(first, second, hidden):
        output, h_n = qrnn(pack_sequence([first, second]), hidden)
        return output.data, h_n

    assert torch.autograd.gradcheck(run, (*sequences, hidden))
