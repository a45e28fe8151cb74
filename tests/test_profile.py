"""Profiling: parameter/MAC/size counts and the peak-activation liveness walk."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from edgeopt.errors import EdgeoptError
from edgeopt.model import EdgeModel, InputSpec, ModelMeta
from edgeopt.models import create_model
from edgeopt.profile import (
    TensorRecord,
    activation_memory,
    activation_timeline,
    count_params,
    export_for_profile,
    peak_activation_bytes,
    profile_model,
    weight_bytes,
)


def _edge(module: nn.Module, shape: tuple[int, int, int]) -> EdgeModel:
    meta = ModelMeta(input=InputSpec(shape=shape), num_classes=10, arch={"kind": "test"})
    return EdgeModel(module, meta)


def test_resnet8_matches_mlperf_tiny_figures() -> None:
    p = profile_model(create_model("resnet8"))
    assert p.params == 78_666  # MLPerf Tiny "78.7K" (Keras count, BN statistics included)
    assert p.trainable_params == 78_186
    assert p.macs == 12_501_632  # "12.5M"
    assert p.size_bytes == 4 * 78_666
    assert p.input_shape == [3, 32, 32]
    # stack1 holds its residual input, conv1 output and BN output (16x32x32 float each)
    assert p.peak_activation_bytes == 3 * 16 * 32 * 32 * 4
    assert json.loads(json.dumps(p.to_json())) == p.to_json()


def test_depthwise_conv_macs() -> None:
    conv = nn.Conv2d(8, 8, 3, padding=1, groups=8)
    p = profile_model(_edge(nn.Sequential(conv), (8, 16, 16)))
    assert p.macs == 16 * 16 * 8 * 3 * 3  # one 3x3 filter per channel


def test_grouped_strided_conv_macs() -> None:
    conv = nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=4, bias=False)
    p = profile_model(_edge(nn.Sequential(conv), (8, 16, 16)))
    assert p.macs == (16 * 8 * 8) * (8 // 4) * 3 * 3
    assert p.params == 16 * 2 * 3 * 3


def test_transposed_conv_macs() -> None:
    p = profile_model(_edge(nn.Sequential(nn.ConvTranspose2d(4, 2, 2, stride=2)), (4, 4, 4)))
    assert p.macs == (4 * 4 * 4) * 2 * 2 * 2  # each input element scattered over Cout x 2x2


def test_linear_macs_with_and_without_leading_dims() -> None:
    p = profile_model(_edge(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), (1, 8, 8)))
    assert p.macs == 64 * 10

    class Rows(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(8, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.reshape(-1, 8, 8))  # (1, 8 rows, 8 features)

    p = profile_model(_edge(Rows(), (1, 8, 8)))
    assert p.macs == 8 * 8 * 5


def test_matmul_and_addmm_macs() -> None:
    class MM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.randn(8, 3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = x.reshape(1, 8, 8) @ self.w  # (1, 8, 3): 8*3 outputs x 8
            return torch.addmm(torch.zeros(8, 8), y[0], self.w.T)  # (8, 8) outputs x 3

    assert profile_model(_edge(MM(), (1, 8, 8))).macs == 8 * 3 * 8 + 8 * 8 * 3


def test_params_count_shared_tensors_once_and_skip_bn_counter() -> None:
    lin = nn.Linear(4, 4)
    shared = nn.Sequential(lin, nn.ReLU(), lin, nn.BatchNorm1d(4))
    assert count_params(shared) == 16 + 4 + 4 * 4  # weight+bias once; BN weight, bias, mean, var


def test_liveness_chain() -> None:
    # in -> a -> b -> out; each tensor dies after its only reader
    recs = [
        TensorRecord("in", 100),
        TensorRecord("a", 200, ("in", "w1")),  # 'w1' is a weight: not a record, ignored
        TensorRecord("b", 300, ("a",)),
        TensorRecord("out", 50, ("b",)),
    ]
    mem = activation_timeline(recs, outputs=["out"])
    assert mem.timeline == (100, 300, 500, 350)
    assert mem.peak_bytes == 500 and mem.peak_node == "b"


def test_liveness_residual_branch_keeps_input_alive() -> None:
    recs = [
        TensorRecord("in", 100),
        TensorRecord("a", 200, ("in",)),
        TensorRecord("b", 200, ("a",)),
        TensorRecord("add", 100, ("in", "b")),
    ]
    # at 'b': in (held for the add) + a + b
    assert activation_timeline(recs, ["add"]).timeline == (100, 300, 500, 400)
    assert peak_activation_bytes(recs, ["add"]) == 500
    chain = [recs[0], recs[1], recs[2], TensorRecord("add", 100, ("b",))]
    assert peak_activation_bytes(chain, ["add"]) == 400  # without the skip, 'in' dies after 'a'


def test_liveness_views_alias_and_extend_their_base() -> None:
    recs = [
        TensorRecord("in", 100),
        TensorRecord("a", 400, ("in",)),
        TensorRecord("flat", 999, ("a",), is_view=True),  # a view allocates nothing
        TensorRecord("b", 40, ("flat",)),
        TensorRecord("c", 40, ("b",)),
    ]
    # 'a' lives until 'b' reads its alias 'flat', then is freed
    assert activation_timeline(recs, ["c"]).timeline == (100, 500, 400, 440, 80)


def test_liveness_output_view_keeps_base_to_the_end_and_unread_tensor_dies() -> None:
    recs = [
        TensorRecord("in", 10),
        TensorRecord("dead", 1000, ("in",)),  # nobody reads it: counted at its step only
        TensorRecord("a", 20, ("in",)),
        TensorRecord("v", 0, ("a",), is_view=True),
        TensorRecord("z", 5, ("in",)),
    ]
    assert activation_timeline(recs, ["v", "z"]).timeline == (10, 1010, 30, 30, 35)


def test_peak_activation_of_tiny_sequential_model() -> None:
    module = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(256, 10))
    model = _edge(module, (1, 8, 8))
    x, conv, relu, logits = 1 * 64 * 4, 4 * 64 * 4, 4 * 64 * 4, 10 * 4
    # input+conv at the conv, conv+relu at the relu (input freed), flatten aliases relu
    assert profile_model(model).peak_activation_bytes == max(x + conv, conv + relu, relu + logits) == 2048
    fused = activation_memory(export_for_profile(model), fuse_elementwise=True)
    assert fused.peak_bytes == x + conv  # ReLU overwrites the conv output in place


def test_profile_restores_training_mode_and_reports_model_layout() -> None:
    module = nn.Sequential(nn.Flatten(), nn.Linear(12, 2)).train()
    model = _edge(module, (2, 2, 3))
    model.meta.input.layout = "NHWC"
    p = profile_model(model)
    assert module.training
    assert p.input_shape == [2, 2, 3]


def test_untraceable_model_is_one_clear_error() -> None:
    class Branchy(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2 if x.sum().item() > 0 else x

    with pytest.raises(EdgeoptError, match="cannot trace the model"):
        profile_model(_edge(Branchy(), (1, 4, 4)))


def _quantized_decomposed() -> object:
    pytest.importorskip("torch.ao.quantization.fx._decomposed")  # registers torch.ops.quantized_decomposed
    return torch.ops.quantized_decomposed


class _QDQConv(nn.Module):
    """A conv + ReLU in the QDQ form PT2E produces: int8 weights, int8 activations between ops."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("w_q", torch.randint(-127, 128, (4, 1, 3, 3), dtype=torch.int8))
        self.register_buffer("w_scale", torch.full((4,), 0.01))
        self.register_buffer("w_zp", torch.zeros(4, dtype=torch.int64))
        self.stale = nn.Parameter(torch.zeros(4, 1, 3, 3))  # like the float weight convert_pt2e leaves behind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qd = torch.ops.quantized_decomposed
        xq = qd.quantize_per_tensor(x, 0.05, 0, -128, 127, torch.int8)
        w = qd.dequantize_per_channel(self.w_q, self.w_scale, self.w_zp, 0, -127, 127, torch.int8)
        y = torch.relu(nn.functional.conv2d(qd.dequantize_per_tensor(xq, 0.05, 0, -128, 127, torch.int8), w, padding=1))
        yq = qd.quantize_per_tensor(y, 0.05, 0, -128, 127, torch.int8)
        return qd.dequantize_per_tensor(yq, 0.05, 0, -128, 127, torch.int8)


def test_qdq_graph_counts_int8_activations_and_folds_weight_dequant() -> None:
    _quantized_decomposed()
    model = _edge(_QDQConv(), (1, 8, 8))
    mem = activation_memory(export_for_profile(model))
    # input f32 (256 B) -> int8 copy (64) -> conv and relu computed in int8 (256 each);
    # the weight dequantize is a folded constant, dequantize / requantize alias their tensor
    assert mem.timeline == (256, 320, 64, 320, 512, 256, 256)
    assert mem.peak_bytes == 512


def test_graph_module_counts_only_what_its_graph_reads() -> None:
    _quantized_decomposed()
    gm = torch.export.export(_QDQConv(), (torch.rand(1, 1, 8, 8),)).module()  # an fx.GraphModule
    assert any(n == "stale" for n, _ in gm.named_parameters())  # kept, though the graph never reads it
    # int8 weights are parameters' worth of values; scales and zero points are metadata
    assert count_params(gm) == 36
    assert weight_bytes(gm) == 36 * 1 + 4 * 4 + 4 * 8
    assert count_params(_QDQConv()) == 36 + 4 + 4 + 36  # a plain module: everything it stores
