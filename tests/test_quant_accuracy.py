"""Issue 16: AdaRound, statistics alignment (AdaBN), meanmax ranges, float controls, per-runtime float ops.

Toy layers for the rounding math; the zoo ResNet-8 on 8x8 digits (batch norms, residual adds,
classifier), trained one epoch, for the PTQ flow. Offline and fast.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import edgeopt
from edgeopt.compress.quantize import calibration as cal
from edgeopt.compress.quantize.adaround import adaround_weights, nearest, reconstruction_error
from edgeopt.compress.quantize.align import adabn, align_to, layer_statistics
from edgeopt.compress.quantize.controls import clipped_float
from edgeopt.compress.quantize.ptq import QuantRecipe, calibration_batch, quantize_ptq, weight_grid
from edgeopt.data import load_dataset
from edgeopt.errors import EdgeoptError
from edgeopt.train import FitConfig, fit

# --- AdaRound on a toy layer ------------------------------------------------------------------------


def _toy(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(8, 24, generator=g)
    x = torch.randn(2048, 24, generator=g) @ torch.randn(24, 24, generator=g)  # correlated inputs
    scales = w.abs().amax(1) / 7  # 4 bits: rounding matters
    return w, x, scales


@pytest.mark.parametrize("bits", [4, 8])
def test_adaround_lands_on_the_integer_grid_next_to_nearest(bits: int) -> None:
    w, x, scales = _toy()
    if bits == 8:
        scales = w.abs().amax(1) / 127
    q = adaround_weights(w, scales, x, bits=bits, iters=200)
    qmax = 2 ** (bits - 1) - 1
    assert torch.equal(q, torch.round(q))
    assert q.abs().max() <= qmax
    # each weight rounds down or up from its own value: never further than one step from w / s
    assert ((q - w / scales.reshape(-1, 1)).abs() < 1.0 + 1e-5).all()


def test_adaround_reconstruction_error_at_most_round_to_nearest() -> None:
    w, x, scales = _toy(1)
    q_rtn = nearest(w, scales, 4)
    q_ada = adaround_weights(w, scales, x, bits=4, iters=400)
    s = scales.reshape(-1, 1)
    e_rtn = reconstruction_error(w, q_rtn * s, x)
    e_ada = reconstruction_error(w, q_ada * s, x)
    assert e_ada <= e_rtn
    assert e_ada < 0.95 * e_rtn  # and clearly below it on correlated inputs
    assert not torch.equal(q_ada, q_rtn)


# --- alignment ----------------------------------------------------------------------------------------


def _conv_bn() -> nn.Module:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 4, 3), nn.BatchNorm2d(4))
    for bn in (m[1], m[4]):
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.5, 0.5)
    return m.eval()


def test_adabn_gives_each_bn_output_its_affine_statistics_on_the_data() -> None:
    m = _conv_bn()
    x = torch.randn(64, 3, 10, 10) * 2 + 0.5  # a shifted domain
    adabn(m, x)
    outs = {}
    hooks = [m[i].register_forward_hook(lambda _m, _i, o, i=i: outs.__setitem__(i, o)) for i in (1, 4)]
    with torch.no_grad():
        m(x)
    for h in hooks:
        h.remove()
    for i in (1, 4):
        o = outs[i].double()
        mean, var = o.mean((0, 2, 3)), o.var((0, 2, 3), unbiased=False)
        bn = m[i]
        torch.testing.assert_close(mean, bn.bias.double(), atol=1e-4, rtol=0)
        torch.testing.assert_close(var, bn.weight.double() ** 2, atol=1e-3, rtol=1e-3)
    assert not m.training


def test_adabn_refuses_a_model_without_batch_norms() -> None:
    with pytest.raises(EdgeoptError, match="has none"):
        adabn(nn.Sequential(nn.Conv2d(3, 4, 3)), torch.randn(4, 3, 8, 8))


def test_align_to_matches_the_target_and_is_the_identity_on_matching_data() -> None:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.Conv2d(6, 4, 3), nn.Flatten(), nn.Linear(4 * 36, 5)).eval()
    x_ref = torch.randn(128, 3, 10, 10)
    target = layer_statistics(m, x_ref)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    align_to(m, x_ref, target)  # the data already has the target statistics: nothing moves
    for k, v in m.state_dict().items():
        torch.testing.assert_close(v, before[k], atol=1e-5, rtol=1e-5)
    x_new = torch.randn(128, 3, 10, 10) * 0.5 + 0.3
    align_to(m, x_new, target)
    got = layer_statistics(m, x_new)
    for name, (t_mean, t_var) in target.items():
        torch.testing.assert_close(got[name][0], t_mean, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(got[name][1], t_var, atol=1e-4, rtol=1e-3)


def test_meanmax_range_is_the_mean_of_each_samples_extremes() -> None:
    ex = cal.SampleExtremes({})
    ex.add(np.array([[1.0, 4.0], [2.0, 8.0]]))
    ex.add(np.array([[0.5, 3.0]]))
    assert cal.meanmax_range(ex) == (0.0, 5.0)  # min mean 3.5/3 > 0 is widened to hold 0
    ex.add(np.array([[-6.0, 0.0, 1.0]]))  # another shape (a shared observer): its own means
    assert cal.meanmax_range(ex) == (-6.0, 6.0)  # signed: symmetric


# --- PTQ on the digits ResNet-8 ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained():
    train = load_dataset("digits", "train")
    model = edgeopt.load_model("zoo:resnet8", input_shape=(1, 8, 8), num_classes=10)
    model, _ = fit(model, train, FitConfig(epochs=1, batch_size=64, seed=0))
    return model, train


@pytest.mark.parametrize("rounding", ["adaround", "brecq"])
def test_learned_rounding_ptq_pins_its_integers_in_the_program(trained, rounding: str) -> None:
    model, train = trained
    mix = {"stack2.conv2": 4} if rounding == "brecq" else {}  # a mix: only the 4-bit layers are learned
    recipe = QuantRecipe(calib_samples=64, weight_rounding=rounding, rounding_seconds=2.0, layer_bits=mix)
    q = quantize_ptq(model, train, recipe)
    learned = q.meta.lineage[-1]["metrics"][f"{rounding}_layers"]
    assert learned == (sorted(mix) if mix else learned) and learned
    grid = weight_grid(q.module)
    for layer in learned:
        assert torch.allclose(grid[layer], torch.round(grid[layer]), atol=1e-3), layer  # the float weights are q * s
    if mix:
        assert grid["stack2.conv2"].round().abs().max() <= 7


def test_per_runtime_float_ops_are_listed(trained) -> None:
    model, train = trained
    full = quantize_ptq(model, train, QuantRecipe(calib_samples=64))
    assert full.meta.lineage[-1]["metrics"]["float_ops"] == []
    mixed = quantize_ptq(model, train, QuantRecipe(calib_samples=64, float_ops=["add", "logits"]))
    ops = mixed.meta.lineage[-1]["metrics"]["float_ops"]
    assert any(o.startswith("aten.add") for o in ops)
    assert any(o.startswith("aten.linear") for o in ops)
    assert not any(o.startswith("aten.conv2d") for o in ops)
    for target in ("npu-int8", "mcu-int8"):  # integer-only presets refuse float ops
        with pytest.raises(EdgeoptError, match="no float fallback"):
            QuantRecipe(target=target, float_ops=["add"]).validate()
    with pytest.raises(EdgeoptError, match="unknown float ops"):
        QuantRecipe(float_ops=["conv"]).validate()


@pytest.mark.parametrize("method", ["ptq", "qat"])
def test_a_float_stem_reads_the_input_in_float_in_the_onnx_graph(trained, tmp_path, method: str) -> None:
    """``float_ops=["stem"]`` keeps the layer reading the input float (no fake quantization in QAT either); in the
    exported QDQ graph that one convolution reads the graph input with plain float weights, and every other one
    reads dequantized int8."""
    import onnx

    from edgeopt.compress.quantize.api import quantize
    from edgeopt.interop.export import QUANTIZED_RTOL, export_model

    model, train = trained
    q, _ = quantize(model, train, method=method, calib_samples=64, qat_epochs=1, float_ops=["stem"])
    assert [o for o in q.meta.lineage[-1]["metrics"]["float_ops"] if "conv" in o] == ["aten.conv2d (stem.0)"]
    graph = onnx.load(export_model(q, "onnx", tmp_path / "m.onnx", rtol=QUANTIZED_RTOL).path).graph
    made_by = {out: n.op_type for n in graph.node for out in n.output}
    convs = [(made_by.get(n.input[0], "input"), made_by.get(n.input[1], "float weights"))
             for n in graph.node if n.op_type == "Conv"]  # fmt: skip
    assert convs[0] == ("input", "float weights")
    assert len(convs) == 9 and all(c == ("DequantizeLinear", "DequantizeLinear") for c in convs[1:])


def test_a_float_classifier_does_not_widen_its_input_range() -> None:
    """Only the logits keep their full (minmax) range; with ``float_ops=["logits"]`` the features feeding
    the float classifier are no output and keep the recipe's range method (meanmax here), as NNCF's do."""
    from edgeopt.compress.quantize.ptq import output_observers, prepare

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    x = torch.randn(2, 1, 6, 6)
    full = prepare(net, x, QuantRecipe(calib="meanmax").validate())
    (name,) = output_observers(full)
    node = next(n for n in full.graph.nodes if n.op == "call_module" and n.target == name)
    assert str(node.args[0].target) == "aten.linear.default"  # the logits
    float_logits = prepare(net, x, QuantRecipe(calib="meanmax", layer_bits={"4": 0}).validate())
    assert output_observers(float_logits) == {}


def test_float_pool_gives_the_pooled_features_their_own_range() -> None:
    """``float_ops=["pool"]``: the avg pool is listed float and the tensor after it has an observer of its
    own (by default the pool shares its input's); integer-only targets refuse it."""
    from edgeopt.compress.quantize.ptq import observers, prepare
    from edgeopt.compress.quantize.targets import float_op_names

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AvgPool2d(4), nn.Flatten(), nn.Linear(4, 3)).eval()
    x = torch.randn(2, 1, 6, 6)
    shared = prepare(net, x, QuantRecipe().validate())
    own = prepare(net, x, QuantRecipe(float_ops=["pool"]).validate())
    assert float_op_names(shared) == []
    assert any(o.startswith("aten.avg_pool2d") for o in float_op_names(own))
    assert len(observers(own)) == len(observers(shared)) + 1
    with pytest.raises(EdgeoptError, match="no float fallback"):
        QuantRecipe(target="npu-int8", float_ops=["pool"]).validate()


def test_float_softmax_reads_the_int8_logits() -> None:
    """``float_ops=["softmax"]``: the softmax is listed float and has no fixed-range int8 output; the logits
    before it stay int8 with their full (minmax) range; integer-only targets refuse it."""
    from edgeopt.compress.quantize.ptq import observers, output_observers, prepare
    from edgeopt.compress.quantize.targets import float_op_names

    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(8, 3), nn.Softmax(dim=-1)).eval()
    x = torch.randn(2, 8)
    int8 = prepare(net, x, QuantRecipe().validate())
    own = prepare(net, x, QuantRecipe(float_ops=["softmax"]).validate())
    assert float_op_names(int8) == []
    assert [o for o in float_op_names(own) if "softmax" in o] and not [o for o in float_op_names(own) if "linear" in o]
    fixed = [[m for m in g.modules() if type(m).__name__ == "FixedQParamsObserver"] for g in (int8, own)]
    assert len(fixed[0]) == 1 and fixed[1] == []  # the int8 softmax's fixed 1/256 output is gone
    assert len(observers(own)) == len(observers(int8))
    (name,) = output_observers(own)
    node = next(n for n in own.graph.nodes if n.op == "call_module" and n.target == name)
    assert str(node.args[0].target) == "aten.linear.default"
    with pytest.raises(EdgeoptError, match="no float fallback"):
        QuantRecipe(target="mcu-int8", float_ops=["softmax"]).validate()


def test_clipped_float_control_and_adabn_recipe(trained) -> None:
    model, train = trained
    q = quantize_ptq(model, train, QuantRecipe(calib="meanmax", calib_samples=64, align="adabn"))
    assert "align" in q.meta.lineage[-1]["metrics"]
    x = calibration_batch(model, train, 64)
    with torch.no_grad():
        clip, flt, quant = clipped_float(q.module)(x), q.module.float_module(x), q.module(x)
    # the control is the quantized model without rounding: closer to it than the float model is
    assert (clip - quant).abs().mean() < (flt - quant).abs().mean()
    assert not torch.equal(clip, flt)  # meanmax clips


def test_cli_passes_rounding_float_ops_and_align(tmp_path, capfd) -> None:
    import json

    from edgeopt.cli import main

    out = tmp_path / "q.edgeopt"
    args = ["quantize", "zoo:mlp", "--data", "digits", "--out", str(out), "--calib-samples", "32", "--no-eval",
            "--rounding", "adaround", "--rounding-seconds", "1.5", "--float-ops", "logits", "--calib", "meanmax",
            "--json"]  # fmt: skip
    assert main(args) == 0
    result = json.loads(capfd.readouterr().out)
    assert result["calib"] == "meanmax"
    recipe = edgeopt.load_model(out).meta.arch["recipe"]
    assert recipe["weight_rounding"] == "adaround" and recipe["rounding_seconds"] == 1.5
    assert result["float_ops"] and all(o.startswith("aten.linear") for o in result["float_ops"])
    assert main([*args[:-1], "--align", "adabn"]) == 2  # an MLP without batch norms: a one-line refusal
    err = capfd.readouterr().err
    assert "Traceback" not in err and "has none" in err


# --- BRECQ / QDrop block reconstruction on a toy residual block -------------------------------------------


class _ToyResidual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = torch.relu(x + self.conv2(torch.relu(self.conv1(x))))
        return self.head(x.mean((2, 3)))


def test_brecq_finds_the_residual_block_and_lowers_its_output_error() -> None:
    from edgeopt.compress.quantize.blockrecon import apply_brecq, find_blocks, trace

    torch.manual_seed(0)
    model = _ToyResidual().eval()
    blocks = find_blocks(trace(model))
    assert [b.layers for b in blocks] == [["stem"], ["conv1", "conv2"], ["head"]]  # shortcut + add + ReLU in one
    x = torch.randn(128, 3, 6, 6)
    bits = {"stem": 8, "conv1": 4, "conv2": 4, "head": 8}
    w_before = {n: getattr(model, n).weight.detach().clone() for n in ("conv1", "conv2")}
    steps, report = apply_brecq(model, bits, ["conv1", "conv2"], x, iters=300, batch=64, time_budget_s=30.0)
    (blk,) = report
    assert blk["learned"] == ["conv1", "conv2"]
    assert blk["error_after"] <= blk["error_nearest"]  # the block's output error, hard rounding, no dropping
    for n, s in steps.items():  # the learned weights are q * s, each q one of the two grid points around w / s
        s = torch.tensor(s).reshape(-1, 1, 1, 1)
        q = getattr(model, n).weight.detach() / s
        assert torch.allclose(q, q.round(), atol=1e-4) and q.round().abs().max() <= 7
        assert ((q - w_before[n] / s).abs() < 1 + 1e-4).all()


def test_brecq_act_quant_masks_and_straight_through_gradient() -> None:
    from edgeopt.compress.quantize.blockrecon import ActQuant, DropMasks

    gen = torch.Generator().manual_seed(0)
    masks = DropMasks(0.5, gen, size=1 << 16)
    x = torch.randn(4, 8, 6, 6).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    m = masks.take(x)
    assert m.shape == x.shape and m.dtype == torch.bool and m.is_contiguous(memory_format=torch.channels_last)
    assert 0.4 < float(m.float().mean()) < 0.6
    assert not torch.equal(masks.take(x), m)  # another window
    big = torch.zeros(2, 1 << 16)
    assert masks.take(big).shape == big.shape  # larger than the pool: a fresh draw
    aq = ActQuant(0.05, 3, drop=0.5, masks=masks)
    aq.eval()
    ref = (torch.clamp(torch.round(x / 0.05) + 3, -128, 127) - 3) * 0.05
    assert torch.equal(aq(x), ref)  # evaluation: plain fake quantization, nothing dropped
    aq.train()
    y = aq(x)
    kept = y == x
    assert 0.3 < float(kept.float().mean()) < 0.7  # about half the elements left float
    assert torch.equal(y[~kept], ref[~kept])
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))  # straight through
