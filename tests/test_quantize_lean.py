"""Lean integer graphs, GPTQ rounding, single-pass bias correction and quantized profiles.

Offline and small: a toy residual CNN on sklearn's digits (8x8), trained for a few epochs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgeopt.compress.quantize import calibration as cal
from edgeopt.compress.quantize.gptq import gptq_quantize, layer_hessians
from edgeopt.compress.quantize.ptq import QuantRecipe, calibration_batch, quantize_ptq
from edgeopt.data import load_dataset
from edgeopt.model import EdgeModel, InputSpec, ModelMeta
from edgeopt.runtimes.onnxruntime_runner import int8_kernels_saturate
from edgeopt.train import FitConfig, evaluate, fit


class ResToy(nn.Module):
    """conv → explicit asymmetric pad → stride-2 conv, a 1x1 stride-2 skip, residual add, global
    average pool, flatten, linear (and optionally softmax): the shapes of the MLPerf ResNet-8 tail."""

    def __init__(self, softmax: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2)
        self.skip = nn.Conv2d(8, 8, 1, stride=2)
        self.fc = nn.Linear(8, 10)
        self.softmax = softmax

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.relu(self.conv1(x))
        b = F.relu(self.conv2(F.pad(a, (0, 1, 0, 1))))
        y = F.relu(b + self.skip(a))
        y = F.avg_pool2d(y, 4).flatten(1)
        y = self.fc(y)
        return torch.softmax(y, dim=1) if self.softmax else y


def _meta() -> ModelMeta:
    return ModelMeta(InputSpec((1, 8, 8)), 10, {"kind": "toy", "name": "restoy"})


@pytest.fixture(scope="module")
def toy():
    torch.manual_seed(0)
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    model, _ = fit(EdgeModel(ResToy(), _meta()), train, FitConfig(epochs=8, batch_size=32, seed=0))
    return model, train, test


# --- GPTQ (pure) ---------------------------------------------------------------------------------


def test_gptq_with_identity_hessian_is_round_to_nearest() -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 20, generator=g)
    s = torch.from_numpy(cal.weight_scales(w.numpy(), 4, "minmax"))
    q = gptq_quantize(w, s, torch.eye(20), bits=4, damp=0.0)
    rtn = torch.from_numpy(cal.quantize_weight(w.numpy(), s.numpy(), 4))
    torch.testing.assert_close(q, rtn)


def test_gptq_lands_on_the_grid_and_beats_nearest_on_correlated_inputs() -> None:
    g = torch.Generator().manual_seed(1)
    mix = torch.randn(24, 24, generator=g)
    x = torch.randn(2000, 24, generator=g) @ mix  # strongly correlated input columns
    h = 2 * x.T.double() @ x.double() / len(x)
    w = torch.randn(8, 24, generator=g)
    s = torch.from_numpy(cal.weight_scales(w.numpy(), 4, "mse"))
    q = gptq_quantize(w, s, h, bits=4)
    ints = q / s.reshape(-1, 1)
    torch.testing.assert_close(ints, ints.round(), atol=1e-4, rtol=0)
    assert ints.round().abs().max() <= 7
    rtn = torch.from_numpy(cal.quantize_weight(w.numpy(), s.numpy(), 4))

    def out_err(wq: torch.Tensor) -> float:
        return float(((x @ (wq - w).T) ** 2).mean())

    assert out_err(q) < 0.7 * out_err(rtn)


def test_hessian_matches_unfolded_inputs() -> None:
    conv = nn.Conv2d(2, 3, 3, stride=2, padding=1)
    x = torch.randn(5, 2, 7, 7)
    h = layer_hessians(nn.Sequential(conv), ["0"], x)["0"]
    cols = F.unfold(x, 3, padding=1, stride=2).transpose(1, 2).reshape(-1, 18).double()
    torch.testing.assert_close(h, 2 * cols.T @ cols / len(cols), rtol=1e-5, atol=1e-5)  # float32 products


# --- PTQ with GPTQ, single-pass bias correction -------------------------------------------------


def test_gptq_rounding_survives_convert_and_is_pinned(toy) -> None:
    model, train, _ = toy
    low = {"conv2": 4, "skip": 4}
    q = quantize_ptq(model, train, QuantRecipe(calib="minmax", calib_samples=200, layer_bits=low,
                                               weight_rounding="gptq", bias_correction=False))  # fmt: skip
    assert q.meta.lineage[-1]["metrics"]["gptq_layers"] == ["conv2", "skip"]
    fm = dict(q.module.float_module.named_modules())
    from edgeopt.compress.quantize.ptq import prepare, weight_observer_names

    names = weight_observer_names(prepare(q.module.float_module, model.example_input(1), q.module.recipe))
    for layer in low:
        s = torch.tensor(q.meta.arch["qparams"][names[layer]]["scale"]).reshape(-1, 1, 1, 1)
        ints = fm[layer].weight.detach() / s
        torch.testing.assert_close(ints, ints.round(), atol=1e-4, rtol=0)  # already on the int4 grid
        assert ints.round().abs().max() <= 7
    # the 4-bit layer's output on calibration images is closer to float than round-to-nearest's
    x = calibration_batch(model, train, 200, 0)
    f = model.module
    inp = F.pad(F.relu(f.conv1(x)), (0, 1, 0, 1)).detach()
    w = f.conv2.weight.detach().numpy()
    rtn = torch.from_numpy(cal.quantize_weight(w, cal.weight_scales(w, 4, "mse"), 4))

    def err(weight: torch.Tensor) -> float:
        return float(((F.conv2d(inp, weight, stride=2) - F.conv2d(inp, f.conv2.weight, stride=2)) ** 2).mean())

    assert err(fm["conv2"].weight.detach()) < 0.9 * err(rtn)


def test_int4_weights_default_to_gptq(toy) -> None:
    from edgeopt.compress.quantize.api import quantize

    model, train, _ = toy
    q, _ = quantize(model, train, weights="int4", calib="minmax", calib_samples=64)
    assert q.meta.arch["recipe"]["weight_rounding"] == "gptq"
    assert q.meta.lineage[-1]["metrics"]["gptq_layers"] == ["conv1", "conv2", "fc", "skip"]
    q8, _ = quantize(model, train, weights="int8", calib="minmax", calib_samples=64)
    assert q8.meta.arch["recipe"]["weight_rounding"] == "nearest"
    assert "gptq_layers" not in q8.meta.lineage[-1]["metrics"]
    qn, _ = quantize(model, train, weights="int4", calib="minmax", calib_samples=64, rounding="nearest")
    assert "gptq_layers" not in qn.meta.lineage[-1]["metrics"]


def test_bias_correction_zeroes_every_layers_mean_shift(toy) -> None:
    from edgeopt.compress.quantize.ptq import _layer_nodes

    model, train, _ = toy
    x = calibration_batch(model, train, 300, 0)
    recipe = QuantRecipe(calib="minmax", calib_samples=300, weight_bits=4, weight_method="mse")
    shifts = {}
    for bc in (False, True):
        q = quantize_ptq(model, train, QuantRecipe(**{**recipe.__dict__, "bias_correction": bc}))
        gm = q.module.program(True)
        nodes = _layer_nodes(gm)
        seen: dict[str, torch.Tensor] = {}
        interp = torch.fx.Interpreter(gm)
        orig = interp.run_node

        def run_node(n: torch.fx.Node, orig=orig, nodes=nodes, seen=seen) -> object:
            out = orig(n)
            for k, v in nodes.items():
                if v is n:
                    seen[k] = out.detach()
            return out

        interp.run_node = run_node  # type: ignore[method-assign]
        with torch.no_grad():
            interp.run(x)
            ref = {"conv1": model.module.conv1(x), "skip": model.module.skip(F.relu(model.module.conv1(x)))}
        shifts[bc] = {k: float((seen[k].mean((0, 2, 3)) - ref[k].mean((0, 2, 3))).abs().max()) for k in ref}
    assert shifts[False]["skip"] > 1e-3  # 4-bit weights do shift the mean...
    for k in ("conv1", "skip"):  # ...and one pass of correction removes it, later layers included
        assert shifts[True][k] < 1e-4 + 0.05 * shifts[False][k]


# --- lean integer graphs ------------------------------------------------------------------------


def test_shape_ops_share_qparams_and_softmax_is_int8() -> None:
    from edgeopt.compress.quantize.observers import SOFTMAX_SCALE, SOFTMAX_ZERO_POINT
    from edgeopt.compress.quantize.ptq import convert, prepare, run_batches

    model = EdgeModel(ResToy(softmax=True), _meta())
    x = torch.rand(16, 1, 8, 8)
    prepared = prepare(model.module, x[:1], QuantRecipe(calib="minmax"))
    run_batches(prepared, x)
    gm = convert(prepared)
    q_ops = [n for n in gm.graph.nodes if "quantize_per_tensor" in str(n.target) and "dequant" not in str(n.target)]
    # no requantize between the pool and the classifier: one set of parameters from the add to the linear
    by_node = {str(n.args[0]): tuple(n.args[1:3]) for n in q_ops}
    pool = next(k for k in by_node if k.startswith("avg_pool2d"))
    add_q = next(k for k in by_node if k.startswith("relu_2"))
    assert by_node[pool] == by_node[add_q]
    assert not any(k.startswith(("flatten", "view", "reshape")) and by_node[k] != by_node[pool] for k in by_node)
    soft = next(k for k in by_node if k.startswith("softmax"))
    assert by_node[soft] == (SOFTMAX_SCALE, SOFTMAX_ZERO_POINT)
    # records written before these rules rebuild without them (bit-for-bit reloads)
    assert QuantRecipe.from_json({"calib": "minmax"}).lean_graph is False
    assert QuantRecipe().lean_graph is True


def test_litert_graph_is_as_lean_as_tflites_own(tmp_path: Path) -> None:
    from ai_edge_litert.interpreter import Interpreter

    from edgeopt.compress.quantize.deploy import export_tflite
    from edgeopt.compress.quantize.ptq import convert, prepare, run_batches

    model = EdgeModel(ResToy(softmax=True), _meta())
    x = torch.rand(16, 1, 8, 8)
    prepared = prepare(model.module, x[:1], QuantRecipe(calib="minmax"))
    run_batches(prepared, x)
    path = tmp_path / "toy.tflite"
    path.write_bytes(export_tflite(convert(prepared, fold=False), x[:1]))
    it = Interpreter(model_path=str(path), experimental_preserve_all_tensors=False)
    ops = [o["op_name"] for o in it._get_ops_details()]
    assert "QUANTIZE" not in ops and "DEQUANTIZE" not in ops and "PAD" not in ops  # no requantize / float hops
    assert "MEAN" in ops and "AVERAGE_POOL_2D" not in ops  # global pool as MEAN: XNNPACK delegates it
    assert "SOFTMAX" in ops
    out = it.get_output_details()[0]
    assert out["dtype"] == np.int8 and out["quantization"] == (pytest.approx(1 / 256), -128)


def test_onnx_runtime_fuses_every_conv_and_add(tmp_path: Path, toy) -> None:
    import onnx
    import onnxruntime as ort

    from edgeopt.interop.export import export_model

    model, train, test = toy
    q = quantize_ptq(model, train, QuantRecipe(calib="entropy", calib_samples=200))
    res = export_model(q, "onnx", tmp_path / "q.onnx")
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    so.log_severity_level = 3
    ort.InferenceSession(str(res.path), so, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node]
    assert ops.count("QLinearConv") == 3 and ops.count("QLinearAdd") == 1
    assert not {"Conv", "Add", "Pad", "Relu"} & set(ops)  # nothing left in float between DQ and Q
    if int8_kernels_saturate():
        pytest.skip("ONNX Runtime's u8s8 kernels saturate on x86 without VNNI (int8_kernels_saturate)")
    from edgeopt.runtimes import open_runner

    sim = evaluate(q, test)
    with open_runner("onnxruntime", res.path, threads=1) as runner:
        got = evaluate(q.meta, test, predict=runner.run)
    assert float((got.predictions == sim.predictions).mean()) >= 0.97


def test_profile_reports_integer_weight_bytes(toy) -> None:
    from edgeopt.profile import profile_model

    model, train, _ = toy
    q = quantize_ptq(model, train, QuantRecipe(calib="minmax", calib_samples=64, layer_bits={"conv2": 4, "fc": 0}))
    pf, pq = profile_model(model), profile_model(q)
    numel = {n: m.weight.numel() for n, m in model.module.named_modules() if hasattr(m, "weight")}
    assert pq.weight_values_by_bits == {"8": numel["conv1"] + numel["skip"], "4": numel["conv2"], "32": numel["fc"]}
    # int8 weights at one byte (4-bit in int8 storage), the float layer and biases at four, plus scales/zero points
    weights = numel["conv1"] + numel["skip"] + numel["conv2"] + 4 * numel["fc"]
    biases = 4 * (8 + 8 + 8 + 10)
    assert weights + biases < pq.size_bytes < weights + biases + 12 * (8 + 8 + 8) + 64
    assert pf.size_bytes == 4 * pf.params and pq.size_bytes < 0.5 * pf.size_bytes
    assert pq.macs == pf.macs
