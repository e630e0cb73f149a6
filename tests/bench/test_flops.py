"""The analytic FLOP counts of ``qrnn-lm bench lm``: hand-computed numbers for tiny shapes, and the
matrix-product part of a whole training step against torch's FlopCounterMode."""

import dataclasses

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from qrnn_lm.bench import flops
from qrnn_lm.bench import lm as lm_bench
from qrnn_lm.bench.model_flops import step_flops
from qrnn_lm.config import ModelConfig, TrainConfig


def test_products_count_two_flops_per_multiply_add_and_twice_that_backward():
    assert flops.product(2, 3, 4) == 48
    assert flops.trained_product(2, 3, 4) == 48 + 96  # forward + weight gradient + input gradient
    assert flops.trained_product(2, 3, 4, input_grad=False) == 96


def test_qrnn_layer_counts_the_window_blocks_rows_after_reset():
    # T=5, B=3, I=8, H=12, window 2: 3 gates (36 outputs); block 0 has 15 rows, block 1 (x_{t-1}) 12.
    assert flops.qrnn_layer(5, 3, 8, 12, window=2) == flops.Flops(matmul=3 * 2 * 27 * 8 * 36)  # 46656
    assert flops.qrnn_layer(5, 3, 8, 12, window=1).matmul == 3 * 2 * 15 * 8 * 36  # 25920
    assert flops.qrnn_layer(5, 3, 8, 12, window=1, output_gate=False).matmul == 3 * 2 * 15 * 8 * 24
    assert flops.qrnn_layer(2, 1, 1, 1, window=4).matmul == 3 * 2 * (2 + 1) * 3  # no rows for shifts >= T


def test_lstm_layer_counts_input_and_per_step_hidden_products():
    # T=3, B=2, I=4, H=6: input products 3 * 2*6*4*24 = 3456; the hidden product 2*2*6*24 = 576 runs
    # 3 times forward, 3 times for the weight gradient, 2 times for the state gradient.
    assert flops.lstm_layer(3, 2, 4, 6) == flops.Flops(matmul=3456 + 576 * 8)  # 8064


def test_softmax_decoder_counts_the_products_and_the_log_softmax():
    counted = flops.softmax_decoder(15, 8, 50)
    assert counted == flops.Flops(matmul=3 * 2 * 15 * 8 * 50, elementwise=7 * 15 * 50)  # 36000, 5250
    assert counted.total == 41250


def test_adaptive_decoder_counts_the_head_for_all_tokens_and_each_cluster_for_its_own():
    counted = flops.adaptive_decoder(10, 16, head_size=12, clusters=[(3, 4, 20), (0, 1, 30)])
    head = 3 * 2 * 10 * 16 * 12  # 11520
    cluster = 3 * 2 * 3 * 16 * 4 + 3 * 2 * 3 * 4 * 20  # 1152 + 1440
    assert counted == flops.Flops(matmul=head + cluster, elementwise=7 * 10 * 12 + 7 * 3 * 20)


def test_optimizer_counts_clipping_and_the_update_per_parameter():
    assert flops.optimizer(1000, "sgd", 0.0) == flops.Flops(elementwise=(3 + 2) * 1000)
    assert flops.optimizer(1000, "sgd", 1e-6).elementwise == (3 + 2 + 2) * 1000
    assert flops.optimizer(1000, "adam", 0.0).elementwise == (3 + 13) * 1000
    assert flops.optimizer(1000, "adamw", 0.01).elementwise == (3 + 13 + 1) * 1000
    with pytest.raises(ValueError, match="optimizer must be one of"):
        flops.optimizer(1000, "asgd", 0.0)


def _addmm_in_place(self_shape, a_shape, b_shape, *args, out_shape=None, **kwargs):
    """FlopCounterMode's table has addmm but not the in-place addmm_ the layers accumulate with."""
    return 2 * a_shape[0] * a_shape[1] * b_shape[1]


SHAPES = {
    "softmax": dict(),
    "windows 3 and 2, untied": dict(first_window=3, window=2, tie_weights=False),
    "adaptive": dict(decoder="adaptive", adaptive_cutoffs=[10, 30], tie_weights=False, hidden_size=16),
    "one layer": dict(num_layers=1),
}


@pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN")
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("softmax", ["full", "chunked"])
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("kind", ["qrnn", "lstm"])
def test_step_products_match_flop_counter_mode(kind, shape, softmax, precision):
    """The counted matrix products of a whole training step are the ones the step runs."""
    if softmax == "chunked" and SHAPES[shape].get("decoder") == "adaptive":
        pytest.skip("the adaptive decoder has no chunked mode")
    if kind == "lstm" and precision == "bf16" and SHAPES[shape].get("decoder") == "adaptive":
        # torch's own LSTM (oneDNN off, below) stays float32 under CPU autocast, and the adaptive
        # softmax then mixes float32 and bfloat16 tensors; oneDNN's LSTM (what the bench runs) does not.
        pytest.skip("torch's unfused CPU LSTM under bf16 autocast feeds the adaptive softmax float32")
    torch.manual_seed(0)
    config = dataclasses.replace(ModelConfig(), **{**dict(emb_size=8, hidden_size=12, num_layers=2, weight_drop=0.0),
                                                   **SHAPES[shape]})
    train = TrainConfig(softmax=softmax, precision=precision, optimizer="adam")
    model = lm_bench.build_models(60, config, "cpu", train)[kind]
    tokens = torch.randint(60, (6, 3))  # T = 5, B = 3
    trainer = lm_bench._Trainer(model, train, tokens[:-1], tokens[1:])
    # FlopCounterMode sees no products inside oneDNN's fused LSTM: run torch's own LSTM instead.
    with torch.backends.mkldnn.flags(enabled=False):
        with FlopCounterMode(display=False, custom_mapping={torch.ops.aten.addmm_: _addmm_in_place}) as counter:
            trainer.step()
    counted = step_flops(model, tokens[1:], train.optimizer, train.weight_decay)
    assert list(counted) == list(lm_bench.SECTIONS)
    assert counted["embedding"].total == 0
    assert sum(part.matmul for part in counted.values()) == counter.get_total_flops()


def test_step_flops_counts_a_tied_matrix_once_for_the_optimizer():
    config = dataclasses.replace(ModelConfig(), emb_size=8, hidden_size=12, num_layers=2, weight_drop=0.0)
    model = lm_bench.build_models(60, config, "cpu")["qrnn"]
    parameters = sum(p.numel() for p in model.parameters())
    assert parameters < sum(p.numel() for p in model.state_dict().values())  # the tied matrix is in both
    counted = step_flops(model, torch.zeros(5, 3, dtype=torch.long), "sgd", 0.0)
    assert counted["optimizer"] == flops.optimizer(parameters, "sgd", 0.0)


def test_step_flops_refuses_a_layer_it_cannot_count():
    config = dataclasses.replace(ModelConfig(), emb_size=8, hidden_size=12, num_layers=2, weight_drop=0.0)
    model = lm_bench.build_models(60, config, "cpu")["qrnn"]
    model.layers[0] = torch.nn.GRU(8, 12)
    with pytest.raises(ValueError, match="cannot count the FLOPs of a GRU layer"):
        step_flops(model, torch.zeros(5, 3, dtype=torch.long), "sgd", 0.0)
