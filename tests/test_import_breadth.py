"""ONNX import beyond image classifiers (issue 14 item 4): 1-D convolutions and pooling, ConvTranspose,
Resize, MatMul of two activations, Gather, Slice, Split, LSTM/GRU. Each graph is checked against ONNX
Runtime; the zoo's 1-D classifier round-trips export -> import -> save/load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_import_onnx import GraphWriter, assert_parity, ort_run
from torch import nn

from edgeopt.errors import UnsupportedOpError
from edgeopt.interop import import_model
from edgeopt.model import load_model, save_model
from edgeopt.models import create_model


def ts_export(net: nn.Module, x: torch.Tensor, path: Path, batch_axis: bool = True) -> Path:
    """torch.onnx's TorchScript exporter (fast; emits ONNX LSTM/GRU nodes)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net.eval(), (x,), str(path), dynamo=False, opset_version=17, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "N"}} if batch_axis else None)  # fmt: skip
    return path


def test_zoo_cnn1d_round_trips(tmp_path: Path) -> None:
    """The zoo's Conv1d classifier, exported to ONNX, imports as Conv1d layers and computes what ORT does."""
    zoo = create_model("cnn1d", input_shape=(1, 40), num_classes=10, seed=0)
    path = ts_export(zoo.module, torch.randn(2, 1, 40), tmp_path / "cnn1d.onnx")
    em = import_model(path)
    assert em.meta.input.shape == (1, 40) and em.meta.input.layout == "NCL" and em.meta.num_classes == 10
    assert [type(m) for m in em.module.mods.values()].count(nn.Conv1d) == 3
    assert_parity(path, (4, 1, 40))
    x = torch.randn(3, 1, 40)
    with torch.no_grad():
        assert torch.allclose(em.module(x), zoo.module.eval()(x), atol=1e-5)
    save_model(em, tmp_path / "m.edgeopt")
    back = load_model(tmp_path / "m.edgeopt")
    with torch.no_grad():
        assert torch.equal(back.module(x), em.module(x))

    from edgeopt.compress.prune import prune_channels

    pruned, report = prune_channels(em, ratio=0.5)  # the imported Conv1d layers are in the dependency graph
    widths = [m.out_channels for m in pruned.module.mods.values() if isinstance(m, nn.Conv1d)]
    assert report.mac_ratio <= 0.55 and sum(widths) < 0.8 * (32 + 64 + 64)
    save_model(pruned, tmp_path / "p.edgeopt")
    with torch.no_grad():
        assert torch.equal(load_model(tmp_path / "p.edgeopt").module(x), pruned.module(x))


def sequence_net(path: Path) -> Path:
    """1-D ops on (N, 4, 16): Conv1d (asymmetric pads, SAME_UPPER, groups, dilation), BN, 1-D pools, ConvTranspose
    1-D, Split, Slice, Resize, MatMul of two activations, Gather, GlobalMaxPool, ReduceSum."""
    g = GraphWriter(3)
    t = g.node("Conv", ["x", g.rand(8, 4, 3), g.rand(8)], pads=[0, 2])  # 16 -> 16
    t = g.node("Conv", [t, g.rand(8, 2, 3)], group=4, strides=[2], auto_pad="SAME_UPPER")  # 16 -> 8
    t = g.node("BatchNormalization", [t, g.rand(8), g.rand(8), g.rand(8), g.init(g.rng.uniform(0.5, 2, 8))])
    t = g.node("Conv", [g.node("Relu", [t]), g.rand(8, 8, 3, scale=0.3)], dilations=[2], pads=[2, 2])
    a = g.node("MaxPool", [t], kernel_shape=[3], strides=[2], pads=[1, 0])  # 8 -> 4
    b = g.node("AveragePool", [t], kernel_shape=[2], strides=[2], pads=[0, 1])  # 8 -> 4
    t = g.node("ConvTranspose", [g.node("Concat", [a, b], axis=1), g.rand(16, 6, 3), g.rand(6)],
               strides=[2], pads=[1, 0], output_padding=[1])  # 4 -> 9   # fmt: skip
    left, right = g.node("Split", [t, g.init([2, 4], np.int64)], n_out=2, axis=1), f"split{g.n}_1"
    t = g.node("Mul", [g.node("Slice", [right, g.init([1], np.int64), g.init([2**63 - 1], np.int64),
                                        g.init([2], np.int64), g.init([2], np.int64)]), g.init(0.5)])  # N x 4 x 4
    t = g.node("Resize", [t, "", g.init([1, 1, 2], np.float32)], mode="linear")  # N x 4 x 8
    att = g.node("MatMul", [g.node("Transpose", [left], perm=[0, 2, 1]), left])  # two activations: N x 9 x 9
    picked = g.node("Gather", [att, g.init([3, 0, -1], np.int64)], axis=2)  # N x 9 x 3
    row = g.node("Gather", [att, g.init(1, np.int64)], axis=1)  # N x 9
    t = g.node("Concat", [g.node("Flatten", [picked]), row, g.node("Flatten", [g.node("GlobalMaxPool", [t])]),
                          g.node("ReduceSum", [t, g.init([2], np.int64)], keepdims=0)], axis=1)  # fmt: skip
    out = g.node("Gemm", [t, g.rand(5, 27 + 9 + 4 + 4, scale=0.2)], transB=1)
    return g.save(path, ["N", 4, 16], out, ["N", 5], opset=18)


def test_sequence_ops_match_onnxruntime(tmp_path: Path) -> None:
    path = sequence_net(tmp_path / "seq.onnx")
    assert_parity(path, (3, 4, 16))
    em = import_model(path)
    ops = {n["op"] for n in em.meta.arch["ir"]["nodes"]}
    assert {"conv1d", "max_pool1d", "avg_pool1d", "conv_transpose", "matmul", "gather", "slice", "resize"} <= ops


def image_decoder_net(path: Path) -> Path:
    """2-D ConvTranspose (asymmetric pads, groups), nearest Resize by sizes and by scales."""
    g = GraphWriter(4)
    t = g.node("ConvTranspose", ["x", g.rand(4, 3, 3, 3)], group=2, strides=[2, 2], pads=[0, 1, 1, 0])  # 5 -> 10
    t = g.node("Resize", [t, "", "", g.init([1, 6, 20, 15], np.int64)], mode="nearest",
               coordinate_transformation_mode="asymmetric", nearest_mode="floor")  # fmt: skip
    t = g.node("Resize", [t, "", g.init([1, 1, 0.5, 2], np.float32)], mode="nearest",
               coordinate_transformation_mode="half_pixel", nearest_mode="round_prefer_ceil")  # fmt: skip
    t = g.node("Resize", [t, "", g.init([1, 1, 2, 2], np.float32)], mode="linear",
               coordinate_transformation_mode="align_corners")  # fmt: skip
    return g.save(path, [1, 4, 5, 5], t, [1, 6, 20, 60], opset=18)


def test_decoder_ops_match_onnxruntime(tmp_path: Path) -> None:
    assert_parity(image_decoder_net(tmp_path / "dec.onnx"), (1, 4, 5, 5))
    g = GraphWriter(6)  # opset 10's Resize: scales as input 1, asymmetric coordinates, nearest rounds down
    up = g.node("Resize", ["x", g.init([1, 1, 1.5, 1.5], np.float32)], mode="nearest")
    assert_parity(g.save(tmp_path / "up10.onnx", [1, 2, 5, 5], up, [1, 2, 7, 7], opset=10), (1, 2, 5, 5))


class Recurrent(nn.Module):
    def __init__(self, cell: type[nn.Module], bidirectional: bool, batch_first: bool) -> None:
        super().__init__()
        self.batch_first = batch_first
        self.rnn = cell(6, 5, batch_first=batch_first, bidirectional=bidirectional)
        self.fc = nn.Linear(10 if bidirectional else 5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, h = self.rnn(x)
        h = h[0] if isinstance(h, tuple) else h
        return self.fc(y[:, -1] if self.batch_first else y[-1]) + h.sum(0).mean()


@pytest.mark.parametrize(
    "cell, bidirectional, batch_first", [(nn.LSTM, True, True), (nn.GRU, False, True), (nn.LSTM, False, False)]
)
def test_recurrent_layers_match_onnxruntime(
    tmp_path: Path, cell: type[nn.Module], bidirectional: bool, batch_first: bool
) -> None:
    """torch's exporter writes ONNX LSTM/GRU nodes (gates in ONNX order, one bias row); Y and Y_h both used. With a
    dynamic batch the zero initial state is ConstantOfShape(Shape(x)): read as the layer's default state."""
    net = Recurrent(cell, bidirectional, batch_first)
    x = torch.randn(2, 7, 6)
    path = ts_export(net, x, tmp_path / "rnn.onnx", batch_axis=batch_first)
    em = import_model(path)
    assert any(isinstance(m, cell) for m in em.module.mods.values())
    with torch.no_grad():
        assert torch.allclose(em.module(x), net(x), atol=1e-5)
    assert_parity(path, tuple(x.shape))


def test_reverse_lstm_and_refusals(tmp_path: Path) -> None:
    """A reverse-direction LSTM (no nn.LSTM mode: time is flipped) matches ORT; a used cell state is refused."""
    g = GraphWriter(5)
    w, r, b = g.rand(1, 16, 3), g.rand(1, 16, 4), g.rand(1, 32)
    y, y_h = g.node("LSTM", ["x", w, r, b], n_out=2, hidden_size=4, direction="reverse"), f"lstm{g.n}_1"
    out = g.node("Concat", [g.node("Squeeze", [y, g.init([1], np.int64)]), y_h], axis=0)  # (T + 1) x N x 4
    path = g.save(tmp_path / "rev.onnx", [6, 2, 3], out, [7, 2, 4], opset=18)
    x = np.random.default_rng(1).standard_normal((6, 2, 3)).astype(np.float32)
    with torch.no_grad():
        got = import_model(path).module(torch.from_numpy(x)).numpy()
    assert np.abs(got - ort_run(path, x)).max() < 1e-5

    g = GraphWriter(5)
    _, _, y_c = g.node("LSTM", ["x", g.rand(1, 16, 3), g.rand(1, 16, 4)], n_out=3, hidden_size=4), "", f"lstm{g.n}_2"
    bad = g.save(tmp_path / "cell.onnx", [6, 2, 3], y_c, [1, 2, 4], opset=18)
    with pytest.raises(UnsupportedOpError, match="LSTM whose cell state Y_c is used"):
        import_model(bad)


class Flatten(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.size(0), -1) * 2


def test_dynamic_shape_arithmetic_is_refused_where_an_activation_uses_it(tmp_path: Path) -> None:
    """A reshape to the run-time batch size (Shape -> Gather -> Concat -> Reshape) is still one clear error."""
    path = ts_export(Flatten(), torch.randn(2, 3, 4), tmp_path / "flat.onnx")
    with pytest.raises(UnsupportedOpError, match="Shape of a dynamic tensor"):
        import_model(path)


def test_embedded_record_keeps_the_task(tmp_path: Path) -> None:
    """An edgeopt ONNX artifact of an autoencoder imports as an anomaly model, not a 640-class classifier."""
    from edgeopt.interop.embedded import embed_metadata
    from edgeopt.interop.export import embedded_record

    ae = create_model("fc_autoencoder", input_shape=(640,), seed=0, hidden=16, bottleneck=4)
    ae.meta.input.value_range = (-3.0, 5.0)
    path = ts_export(ae.module, torch.randn(2, 640), tmp_path / "ae.onnx")
    path.write_bytes(embed_metadata("onnx", path.read_bytes(), embedded_record(ae.meta, {"format": "onnx"})))
    em = import_model(path)
    assert (em.meta.task, em.meta.num_classes, em.meta.input.layout) == ("anomaly", 640, "NC")
    assert em.meta.input.value_range == (-3.0, 5.0)
    assert_parity(path, (3, 640))


def test_imported_1d_pools_let_pruning_through(tmp_path: Path) -> None:
    from edgeopt.compress.prune import prune_channels

    net = nn.Sequential(nn.Conv1d(2, 16, 3, padding=1), nn.ReLU(), nn.MaxPool1d(2), nn.Conv1d(16, 16, 3),
                        nn.AvgPool1d(2), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 7, 4))  # fmt: skip
    em = import_model(ts_export(net, torch.randn(1, 2, 32), tmp_path / "pools.onnx"))
    pruned, report = prune_channels(em, ratio=0.5)
    widths = [m.out_channels for m in pruned.module.mods.values() if isinstance(m, nn.Conv1d)]
    assert report.mac_ratio <= 0.55 and max(widths) < 16
    assert pruned.module(torch.randn(3, 2, 32)).shape == (3, 4)


def qdq_net(path: Path, act_type: type = np.uint8) -> Path:
    """A QDQ graph as ONNX Runtime's quantizer and edgeopt's int8 export write it: per-channel int8 weights behind
    DequantizeLinear, per-tensor activations behind QuantizeLinear -> DequantizeLinear pairs."""
    g = GraphWriter(7)
    zero = 128 if act_type == np.uint8 else 0

    def qdq(t: str, scale: float) -> str:
        s, z = g.init(scale), g.init(zero, act_type)
        return g.node("DequantizeLinear", [g.node("QuantizeLinear", [t, s, z]), s, z])

    def weight(*shape: int) -> str:
        # 7-bit codes: with full-range ones, ONNX Runtime's u8s8 kernels saturate on x86 without VNNI (two products of
        # 223 x 127 exceed int16; see int8_kernels_saturate) and differed by 16 output codes on CI's AVX2 CPU
        codes = g.init(g.rng.integers(-63, 64, shape), np.int8)
        scales = g.init(g.rng.uniform(0.004, 0.02, shape[0]))
        return g.node("DequantizeLinear", [codes, scales, g.init(np.zeros(shape[0]), np.int8)], axis=0)

    # scales with no common factor: an average of codes on one grid seldom lands on a rounding tie of the next
    t = qdq("x", 0.021)
    t = qdq(g.node("Relu", [g.node("Conv", [t, weight(8, 2, 3), g.rand(8, scale=0.1)], pads=[1, 1])]), 0.019)
    t = qdq(g.node("Flatten", [g.node("GlobalAveragePool", [t])]), 0.0137)
    out = qdq(g.node("Gemm", [t, weight(4, 8), g.rand(4, scale=0.1)], transB=1), 0.0053)
    return g.save(path, ["N", 2, 12], out, ["N", 4], opset=18)


@pytest.mark.parametrize("act_type", [np.uint8, np.int8])
def test_qdq_onnx_imports_as_an_int8_model(tmp_path: Path, act_type: type) -> None:
    """QuantizeLinear becomes a `quant` node (uint8 as the same grid in int8), weights keep their int8 grid."""
    path = qdq_net(tmp_path / "qdq.onnx", act_type)
    em = import_model(path)
    assert em.module.quantized and em.meta.lineage[0]["quantization"]["kind"] == "int8"
    layers = [n for n in em.meta.arch["ir"]["nodes"] if n["op"] in ("conv1d", "linear")]
    assert len(layers) == 2 and all("weight_quant" in n["attrs"] for n in layers)
    x = np.random.default_rng(2).uniform(-1, 2, (256, 2, 12)).astype(np.float32)
    with torch.no_grad():
        got = em.module(torch.from_numpy(x)).numpy()
    codes = np.abs(got - ort_run(path, x)) / 0.0053
    assert codes.max() <= 1.0 + 1e-3 and (codes < 0.5).mean() >= 0.99  # a rounding tie may fall apart
