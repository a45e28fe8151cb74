"""Hybrid .tflite import bit for bit as LiteRT runs it: the float average pool (or spatial MEAN) in
front of a hybrid layer sums as LiteRT's XNNPACK delegate does, and hybrid depthwise convs quantize
and rescale as TFLite's own kernel does (XNNPACK does not take them).

A hybrid fully-connected layer quantizes its input from the row's own range, so a pool output 1 ulp
off LiteRT's moves its scale or a code; ``quant_ops.xnnpack_avg_pool2d`` reproduces XNNPACK's window
order and summation tree, ``quant_ops.xnnpack_mean`` its row-by-row mean. The files are written with
the flatbuffer schema (``tflite_files``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from ai_edge_litert import schema_py_generated as fb
from tflite_files import AVG, CONV, FLOAT32, INT8, _Builder, _conv_opts, _weights, hybrid_fc_head

from edgeopt.interop import import_model
from edgeopt.interop.quant_ops import xnnpack_avg_pool2d, xnnpack_mean
from edgeopt.runtimes.litert_runner import LiteRTRunner

MEAN, DEPTHWISE = 40, 4


def _heavy_tailed(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    """Values over many binades: partial sums round differently under almost any other association."""
    rng = np.random.default_rng(seed)
    return (rng.normal(0, 1, shape) * np.exp(rng.normal(0, 3, shape))).astype(np.float32)


def _pool_opts(k: int, s: int, same: bool) -> fb.Pool2DOptionsT:
    o = fb.Pool2DOptionsT()
    o.padding, o.strideW, o.strideH, o.filterWidth, o.filterHeight = (0 if same else 1), s, s, k, k
    return o


def _pool_file(path: Path, size: int, channels: int, k: int, s: int, same: bool) -> Path:
    """One float AVERAGE_POOL_2D (``k`` x ``k``, stride ``s``, SAME or VALID padding)."""
    b = _Builder()
    out = math.ceil(size / s) if same else (size - k) // s + 1
    x = b.tensor("input", [1, size, size, channels], FLOAT32)
    y = b.tensor("pool", [1, out, out, channels], FLOAT32)
    b.op(AVG, [x], [y], fb.BuiltinOptions.Pool2DOptions, _pool_opts(k, s, same))
    return b.write(path, [x], [y])


def _mean_file(path: Path, size: int, channels: int, keep: bool) -> Path:
    """One float MEAN over the spatial axes [1, 2] of an NHWC input."""
    b = _Builder()
    x = b.tensor("input", [1, size, size, channels], FLOAT32)
    axes = b.tensor("axes", [2], 2, np.array([1, 2], np.int32))
    y = b.tensor("mean", [1, 1, 1, channels] if keep else [1, channels], FLOAT32)
    o = fb.ReducerOptionsT()
    o.keepDims = keep
    b.op(MEAN, [x, axes], [y], fb.BuiltinOptions.ReducerOptions, o)
    return b.write(path, [x], [y])


def _conv_pool_fc_file(path: Path, seed: int = 0, pool: str = "avg") -> Path:
    """Float input 8x8x3 -> CONV_2D (int8 weights, ReLU) -> AVERAGE_POOL_2D 8x8 (``pool="mean"``: MEAN over
    H, W) -> RESHAPE -> FULLY_CONNECTED (int8 weights): ResNet-8's head in small, both layers hybrid."""
    rng = np.random.default_rng(seed)
    b = _Builder()
    x = b.tensor("input", [1, 8, 8, 3], FLOAT32)
    w1, s1 = _weights(rng, (24, 3, 3, 3))
    wt1 = b.tensor("conv/w", [24, 3, 3, 3], INT8, w1, list(s1), [0] * 24)
    bt1 = b.tensor("conv/b", [24], FLOAT32, rng.normal(0, 0.1, 24).astype(np.float32))
    c1 = b.tensor("conv/relu", [1, 8, 8, 24], FLOAT32)
    b.op(CONV, [x, wt1, bt1], [c1], fb.BuiltinOptions.Conv2DOptions, _conv_opts(True))
    p = b.tensor("pool", [1, 1, 1, 24], FLOAT32)
    if pool == "avg":
        b.op(AVG, [c1], [p], fb.BuiltinOptions.Pool2DOptions, _pool_opts(8, 8, False))
    else:
        axes = b.tensor("axes", [2], 2, np.array([1, 2], np.int32))
        o = fb.ReducerOptionsT()
        o.keepDims = True
        b.op(MEAN, [c1, axes], [p], fb.BuiltinOptions.ReducerOptions, o)
    return b.write(path, [x], [hybrid_fc_head(b, rng, p, 24, 6)])


def _separable_file(path: Path, multiplier: int, seed: int = 0) -> Path:
    """Float input 8x8x8 -> DEPTHWISE_CONV_2D 3x3 stride 2 SAME (int8 per-channel weights, ReLU6) -> CONV_2D 1x1
    -> AVERAGE_POOL_2D 4x4 -> RESHAPE -> FULLY_CONNECTED, every layer hybrid: a MobileNet block and head."""
    rng = np.random.default_rng(seed)
    b = _Builder()
    x = b.tensor("input", [1, 8, 8, 8], FLOAT32)
    mid = 8 * multiplier
    w1, s1 = _weights(rng, (mid, 3, 3, 1))
    wt1 = b.tensor("dw/w", [1, 3, 3, mid], INT8, np.ascontiguousarray(w1.transpose(3, 1, 2, 0)), list(s1), [0] * mid, 3)
    bt1 = b.tensor("dw/b", [mid], FLOAT32, rng.normal(0, 0.1, mid).astype(np.float32))
    d = b.tensor("dw/relu6", [1, 4, 4, mid], FLOAT32)
    o = fb.DepthwiseConv2DOptionsT()
    o.padding, o.strideH, o.strideW, o.depthMultiplier, o.dilationHFactor, o.dilationWFactor = 0, 2, 2, multiplier, 1, 1
    o.fusedActivationFunction = 3
    b.op(DEPTHWISE, [x, wt1, bt1], [d], fb.BuiltinOptions.DepthwiseConv2DOptions, o)
    w2, s2 = _weights(rng, (16, 1, 1, mid))
    wt2 = b.tensor("pw/w", [16, 1, 1, mid], INT8, w2, list(s2), [0] * 16)
    bt2 = b.tensor("pw/b", [16], FLOAT32, rng.normal(0, 0.1, 16).astype(np.float32))
    c = b.tensor("pw/relu", [1, 4, 4, 16], FLOAT32)
    b.op(CONV, [d, wt2, bt2], [c], fb.BuiltinOptions.Conv2DOptions, _conv_opts(True))
    p = b.tensor("pool", [1, 1, 1, 16], FLOAT32)
    b.op(AVG, [c], [p], fb.BuiltinOptions.Pool2DOptions, _pool_opts(4, 4, False))
    return b.write(path, [x], [hybrid_fc_head(b, rng, p, 16, 5)])


@pytest.mark.parametrize(
    ("size", "k", "s", "same"),
    [(8, 8, 8, False), (7, 7, 7, False), (9, 3, 2, True), (10, 5, 1, True)],
    ids=["global8x8", "global7x7", "3x3s2same", "5x5s1same"],
)
def test_avg_pool_sums_in_xnnpack_order(tmp_path: Path, size: int, k: int, s: int, same: bool) -> None:
    path = _pool_file(tmp_path / "pool.tflite", size, 8, k, s, same)
    x = _heavy_tailed(k, (64, size, size, 8))
    lite = LiteRTRunner(path).run(x)
    total = max((math.ceil(size / s) - 1) * s + k - size, 0) if same else 0
    pads = (total // 2, total - total // 2) * 2  # left, right, top, bottom (square input)
    xt = torch.from_numpy(x).permute(0, 3, 1, 2)
    ours = xnnpack_avg_pool2d(xt, (k, k), (s, s), pads).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(ours.reshape(lite.shape), lite)
    if not same:  # PyTorch's own pool rounds apart on many outputs: what the emulation is for
        plain = F.avg_pool2d(xt, k, s).permute(0, 2, 3, 1).numpy().reshape(lite.shape)
        assert (plain != lite).mean() > 0.1


@pytest.mark.parametrize(("size", "keep"), [(8, True), (7, False)])
def test_spatial_mean_sums_rows_in_order(tmp_path: Path, size: int, keep: bool) -> None:
    path = _mean_file(tmp_path / "mean.tflite", size, 16, keep)
    x = _heavy_tailed(size, (64, size, size, 16))
    lite = LiteRTRunner(path).run(x)
    xt = torch.from_numpy(x).permute(0, 3, 1, 2)  # the import's NCHW: H, W are dims 2, 3
    ours = xnnpack_mean(xt, [2, 3], keep)
    np.testing.assert_array_equal(ours.permute(0, 2, 3, 1).numpy().reshape(lite.shape) if keep else ours.numpy(), lite)
    assert (xt.mean((2, 3)).numpy().reshape(64, -1) != lite.reshape(64, -1)).mean() > 0.1


@pytest.mark.parametrize("pool", ["avg", "mean"])
def test_hybrid_head_equals_litert_bit_for_bit(tmp_path: Path, pool: str) -> None:
    path = _conv_pool_fc_file(tmp_path / "head.tflite", pool=pool)
    model = import_model(path)
    op = "avg_pool2d" if pool == "avg" else "mean"
    pools = [n for n in model.meta.arch["ir"]["nodes"] if n["op"] == op]
    assert [n["attrs"].get("summation") for n in pools] == ["xnnpack"]
    x = np.random.default_rng(3).normal(0, 1, (512, 8, 8, 3)).astype(np.float32)
    lite = LiteRTRunner(path).run(x)
    with torch.no_grad():
        ours = model.module(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(ours, lite)
    plain = [n for n in import_model(path, dequantize=True).meta.arch["ir"]["nodes"] if n["op"] == op]
    assert "summation" not in plain[0]["attrs"]  # a float model keeps PyTorch's own pool


def test_hybrid_pool_trains_and_exports_with_plain_ops(tmp_path: Path) -> None:
    model = import_model(_conv_pool_fc_file(tmp_path / "head.tflite"))
    x = torch.from_numpy(np.random.default_rng(5).normal(0, 1, (4, 8, 8, 3)).astype(np.float32))
    model.module(x.requires_grad_()).sum().backward()  # gradients on: PyTorch's pool, fake quantization
    assert x.grad is not None and torch.isfinite(x.grad).all()
    program = torch.export.export(model.module.eval(), (x.detach(),))
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert any("avg_pool2d" in t for t in targets) and not any("im2col" in t or "unfold" in t for t in targets)
    # the hybrid layers export as float32 fake quantization, not their float64 integer emulation
    assert not any("float64" in str(n.meta.get("val", "")) for n in program.graph.nodes)


@pytest.mark.parametrize("multiplier", [1, 2])
def test_hybrid_depthwise_block_equals_litert_bit_for_bit(tmp_path: Path, multiplier: int) -> None:
    path = _separable_file(tmp_path / "block.tflite", multiplier)
    model = import_model(path)
    schemes = [
        n["attrs"]["weight_quant"]["dynamic"] for n in model.meta.arch["ir"]["nodes"] if "weight_quant" in n["attrs"]
    ]
    assert schemes == ["builtin_asymmetric", "asymmetric", "asymmetric"]  # depthwise: TFLite's kernel
    x = np.random.default_rng(5).normal(0, 1, (1000, 8, 8, 8)).astype(np.float32)
    x[0] = 0.0  # an all-zero image: TFLite's zero codes, scale 1
    lite = LiteRTRunner(path).run(x)
    with torch.no_grad():
        ours = model.module(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(ours, lite)
    # quantized as XNNPACK's qd8 instead (what the import did before), hundreds of the 1,000 rows differ
    for node in model.module.ir["nodes"]:
        if node["attrs"].get("weight_quant", {}).get("dynamic") == "builtin_asymmetric":
            node["attrs"]["weight_quant"]["dynamic"] = "asymmetric"
    with torch.no_grad():
        assert (model.module(torch.from_numpy(x)).numpy() != lite).any(1).sum() > 50
