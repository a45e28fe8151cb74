"""Hardware targets (xnnpack / npu-int8 / mcu-int8) and the HAQ-style float/int8 choice per layer.

Offline, digits-sized: the zoo ResNet-8 on 8x8 digits (batch norms, residual adds, classifier),
trained briefly, quantized per target and exported to .tflite. The .tflite files are read back
independently of edgeopt with the ``tflite`` flatbuffer package (no interpreter, no edgeopt code).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import edgeopt
from edgeopt.compress.quantize.float_mix import LayerChoice, choose_float_layers, float_int8_mix
from edgeopt.compress.quantize.ptq import QuantRecipe, quantize_ptq
from edgeopt.compress.quantize.targets import tflite_ops, tflite_report
from edgeopt.data import load_dataset
from edgeopt.errors import EdgeoptError
from edgeopt.interop.export import export_model
from edgeopt.model import EdgeModel
from edgeopt.train import FitConfig, evaluate, fit


@pytest.fixture(scope="module")
def trained():
    train = load_dataset("digits", "train")
    model = edgeopt.load_model("zoo:resnet8", input_shape=(1, 8, 8), num_classes=10)
    model, _ = fit(model, train, FitConfig(epochs=2, batch_size=64, seed=0))
    return model, train, load_dataset("digits", "test")


@pytest.fixture(scope="module")
def tflites(trained, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[EdgeModel, Path]]:
    model, train, _ = trained
    out = {}
    for target in ("npu-int8", "mcu-int8"):
        q = quantize_ptq(model, train, QuantRecipe(calib="entropy", calib_samples=64, target=target))
        path = export_model(q, "tflite", tmp_path_factory.mktemp(target) / "q.tflite").path
        out[target] = (q, path)
    return out


# --- reading a .tflite without edgeopt ------------------------------------------------------------


def _flatbuffer_ops(path: Path) -> list[dict]:
    """Each operator of the (single) subgraph: name, input/output tensors (type, scales, zero points)."""
    import tflite
    from tflite.BuiltinOperator import BuiltinOperator
    from tflite.TensorType import TensorType

    op_names = {v: k for k, v in vars(BuiltinOperator).items() if not k.startswith("_")}
    type_names = {v: k for k, v in vars(TensorType).items() if not k.startswith("_")}
    model = tflite.Model.GetRootAsModel(path.read_bytes(), 0)
    assert model.SubgraphsLength() == 1
    g = model.Subgraphs(0)

    def tensor(i: int) -> dict:
        t = g.Tensors(i)
        q = t.Quantization()
        scales = q.ScaleAsNumpy() if q is not None and q.ScaleLength() else np.zeros(0)
        zps = q.ZeroPointAsNumpy() if q is not None and q.ZeroPointLength() else np.zeros(0)
        return {"index": i, "type": type_names[t.Type()], "scales": np.asarray(scales), "zero_points": np.asarray(zps),
                "shape": list(t.ShapeAsNumpy()) if t.ShapeLength() else []}  # fmt: skip

    ops = []
    for k in range(g.OperatorsLength()):
        op = g.Operators(k)
        code = model.OperatorCodes(op.OpcodeIndex())
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        ops.append({
            "name": op_names[builtin],
            "inputs": [tensor(int(i)) for i in op.InputsAsNumpy() if i >= 0],
            "outputs": [tensor(int(i)) for i in op.OutputsAsNumpy() if i >= 0],
        })  # fmt: skip
    graph_io = {"inputs": {int(i) for i in g.InputsAsNumpy()}, "outputs": {int(i) for i in g.OutputsAsNumpy()}}
    return ops, graph_io


def _float_ops_between_io(path: Path) -> list[str]:
    ops, io = _flatbuffer_ops(path)
    bad = []
    for op in ops:
        tensors = op["inputs"] + op["outputs"]
        if not any(t["type"].startswith("FLOAT") for t in tensors):
            continue
        boundary = (op["name"] == "QUANTIZE" and op["inputs"][0]["index"] in io["inputs"]) or (
            op["name"] == "DEQUANTIZE" and op["outputs"][0]["index"] in io["outputs"]
        )
        if not boundary:
            bad.append(op["name"])
    return bad


# --- targets --------------------------------------------------------------------------------------


def test_npu_tflite_is_integer_from_input_to_output(tflites) -> None:
    _, path = tflites["npu-int8"]
    ops, _ = _flatbuffer_ops(path)
    assert any(o["name"] == "CONV_2D" for o in ops) and any(o["name"] == "FULLY_CONNECTED" for o in ops)
    assert _float_ops_between_io(path) == []
    for op in ops:
        if op["name"] in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            w = op["inputs"][1]
            assert w["type"] == "INT8" and w["scales"].size == 1, op["name"]  # per-tensor weights
            assert np.all(w["zero_points"] == 0)
    # edgeopt's own reading of the file agrees with the flatbuffer
    rep = tflite_report(path)
    assert rep["ops"] == [o["name"] for o in ops]
    assert rep["float_ops"] == [] and rep["integer_only"]


def test_mcu_tflite_follows_the_tflite_micro_int8_spec(tflites) -> None:
    q, path = tflites["mcu-int8"]
    ops, _ = _flatbuffer_ops(path)
    assert _float_ops_between_io(path) == []
    convs = [o for o in ops if o["name"] in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    fcs = [o for o in ops if o["name"] == "FULLY_CONNECTED"]
    assert len(convs) == 9 and len(fcs) == 1
    for op in convs + fcs:
        x, w, b, y = op["inputs"][0], op["inputs"][1], op["inputs"][2], op["outputs"][0]
        assert x["type"] == y["type"] == "INT8" and w["type"] == "INT8" and b["type"] == "INT32"
        assert np.all(w["zero_points"] == 0) and np.all(b["zero_points"] == 0)
        channels = w["shape"][3] if op["name"] == "DEPTHWISE_CONV_2D" else w["shape"][0]
        expect = 1 if op["name"] == "FULLY_CONNECTED" else channels  # CMSIS-NN FC: per-tensor
        assert w["scales"].size == expect, op["name"]
        np.testing.assert_allclose(b["scales"], x["scales"][0] * np.broadcast_to(w["scales"], b["scales"].shape),
                                   rtol=1e-5)  # fmt: skip
    assert q.module.recipe.target == "mcu-int8"
    assert tflite_report(path)["weights"]["layers"] == {"DEPTHWISE_CONV_2D per-channel int8": 1,
                                                        "CONV_2D per-channel int8": 8,
                                                        "FULLY_CONNECTED per-tensor int8": 1}  # fmt: skip


def test_targets_keep_accuracy_and_reload(trained, tflites, tmp_path: Path) -> None:
    from edgeopt.model import load_model, save_model
    from edgeopt.runtimes import open_runner

    model, _, test = trained
    f = evaluate(model, test).accuracy
    for target, (q, path) in tflites.items():
        with open_runner("litert", path, threads=1) as run:
            acc = evaluate(q.meta, test, predict=run.run).accuracy
        assert acc >= f - 0.05, target
        loaded = load_model(save_model(q, tmp_path / f"{target}.edgeopt"))
        assert loaded.module.recipe.target == target
        x = model.example_input(8)
        with torch.no_grad():
            torch.testing.assert_close(loaded.module(x), q.module(x), atol=0, rtol=0)


def test_default_target_is_unchanged(trained) -> None:
    assert QuantRecipe().target == "xnnpack"
    assert QuantRecipe.from_json({"calib": "minmax"}).target == "xnnpack"  # records written before targets
    from edgeopt.compress.quantize.ptq import observers, prepare

    model = trained[0]
    prep = prepare(model.module, model.example_input(1), QuantRecipe())
    weights = [o for o in observers(prep).values() if o.is_weight]
    assert weights and all(o.per_channel for o in weights)


class _Gated(nn.Module):
    """conv -> sigmoid gate -> classifier: sigmoid has no int8 pattern in the quantizer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.fc(torch.flatten(y * torch.sigmoid(y), 1))


def test_integer_only_target_refuses_a_float_op(trained) -> None:
    model, train, _ = trained
    gated = EdgeModel(_Gated().eval(), copy.deepcopy(model.meta))
    with pytest.raises(EdgeoptError, match=r"npu-int8 runs integer ops only, but op 'aten\.sigmoid'") as e:
        quantize_ptq(gated, train, QuantRecipe(calib_samples=16, target="npu-int8"))
    assert "\n" not in str(e.value)
    q = quantize_ptq(gated, train, QuantRecipe(calib_samples=16))  # xnnpack keeps it float
    assert q.module.recipe.target == "xnnpack"


class _NHWCInput(nn.Module):
    """An imported-graph shape: NHWC input permuted to NCHW before the first conv."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(torch.relu(self.conv(x.permute(0, 3, 1, 2))), 1))


def test_layout_ops_on_the_input_are_not_float_ops() -> None:
    from edgeopt.compress.quantize.ptq import prepare
    from edgeopt.compress.quantize.targets import float_nodes

    prep = prepare(_NHWCInput().eval(), torch.rand(1, 8, 8, 1), QuantRecipe(target="npu-int8"))
    assert any(str(n.target) == "aten.permute.default" for n in prep.graph.nodes)
    assert float_nodes(prep) == []
    prep = prepare(_Gated().eval(), torch.rand(1, 1, 8, 8), QuantRecipe(target="npu-int8"))
    assert [str(n.target) for n in float_nodes(prep)] == ["aten.sigmoid.default"]


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        ({"target": "gpu-fp16"}, "unknown quantization target 'gpu-fp16'"),
        ({"target": "npu-int8", "weights": "int4"}, "executes int8 weights only"),
        ({"target": "mcu-int8", "weights": "mixed"}, "executes int8 weights only"),
        ({"target": "npu-int8", "max_drop": 1.0}, "no float fallback"),
        ({"target": "mcu-int8", "mix_runtime": "onnxruntime", "max_drop": 1.0}, "no float fallback"),
        ({"target": "npu-int8", "method": "qat"}, "QAT learns per-channel weight steps"),
        ({"latency_budget_ms": 1.0}, "--latency-budget-ms needs --mix-runtime"),
        ({"mix_runtime": "litert", "max_drop": 1.0}, "does not mix float and int8"),
        ({"mix_runtime": "onnxruntime"}, "exactly one of --max-drop and --latency-budget-ms"),
        ({"mix_runtime": "onnxruntime", "weights": "int4", "max_drop": 1.0}, "use --weights int8"),
    ],
)
def test_preset_validation_errors(trained, kwargs: dict, fragment: str) -> None:
    from edgeopt.compress.quantize.api import quantize

    model, train, _ = trained
    with pytest.raises(EdgeoptError) as e:
        quantize(model, train, calib_samples=8, val_samples=8, **kwargs)
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_recipe_layer_bits_respect_the_target() -> None:
    with pytest.raises(EdgeoptError, match="no float fallback"):
        QuantRecipe(target="npu-int8", layer_bits={"fc": 0}).validate()
    with pytest.raises(EdgeoptError, match="int8 weights only"):
        QuantRecipe(target="mcu-int8", layer_bits={"fc": 4}).validate()
    QuantRecipe(target="mcu-int8", layer_bits={"fc": 8}).validate()


def test_cli_npu_target_reports_the_tflite_ops(tmp_path: Path, capfd) -> None:
    from edgeopt.cli import main

    rc = main(["quantize", "zoo:lenet5", "--data", "digits", "--target", "npu-int8", "--calib-samples", "32",
               "--no-eval", "--out", str(tmp_path / "q.edgeopt"), "--json"])  # fmt: skip
    out, err = capfd.readouterr()
    assert rc == 0, err
    d = json.loads(out)
    assert d["target"] == "npu-int8"
    t = d["tflite"]
    assert Path(t["path"]) == tmp_path / "q.tflite" and Path(t["path"]).is_file()
    assert t["float_ops"] == [] and t["integer_only"] and t["io_dtypes"] == {"input": "int8", "output": "int8"}
    assert t["ops"] == [o["op"] for o in tflite_ops(t["path"])] and "FULLY_CONNECTED" in t["ops"]
    assert _float_ops_between_io(Path(t["path"])) == []

    rc = main(["quantize", "zoo:lenet5", "--data", "digits", "--target", "npu-int8", "--weights", "int4",
               "--out", str(tmp_path / "r.edgeopt")])  # fmt: skip
    _, err = capfd.readouterr()
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("error:")]
    assert rc == 2 and len(lines) == 1 and "npu-int8 executes int8 weights only" in lines[0]
    assert not (tmp_path / "r.edgeopt").exists()


# --- float/int8 per layer (HAQ-style) ---------------------------------------------------------------


def _row(name: str, gain: float, cost_ms: float) -> LayerChoice:
    return LayerChoice(name, 0.9, 30.0, gain, 0.1 + cost_ms, cost_ms)


def test_choose_float_layers_under_drop_and_budget() -> None:
    rows = {"a": _row("a", 0.0, -0.02), "b": _row("b", 2.0, 0.01), "c": _row("c", 3.0, 0.03), "d": _row("d", 0.5, 0.0)}
    free, order = choose_float_layers(rows, 30.0, 0.1)
    assert free == ["a"]  # float measured faster than int8 by more than 3%: free
    assert order[:3] == ["d", "b", "c"]  # gain per ms of cost (d costs nothing)
    chosen, order = choose_float_layers(rows, 30.0, 0.1, budget_ms=0.1)
    assert chosen == ["a", "b", "d"] and order == []  # 0.1 - 0.02 + 0.01 + 0 <= 0.1; c does not fit with b
    chosen, _ = choose_float_layers(rows, 30.0, 0.1, budget_ms=0.13)
    assert chosen == ["a", "b", "c", "d"]
    with pytest.raises(EdgeoptError, match="cannot be met"):
        choose_float_layers(rows, 30.0, 0.1, budget_ms=0.05)


def test_float_mix_keeps_an_artificially_sensitive_layer_float(trained) -> None:
    """LeNet-5's last layer is made int8-hostile: hidden unit 0 of the layer before is made dead (zero
    weights, negative bias, ReLU), and the last layer reads it with a weight 1000x the others — the
    float function does not change, but its per-channel int8 scales round every other weight to 0."""
    _, train, _ = trained
    model = edgeopt.load_model("zoo:lenet5", input_shape=(1, 8, 8), num_classes=10)
    model, _ = fit(model, train, FitConfig(epochs=4, batch_size=64, optimizer="adam", seed=0))
    h, last = model.module.classifier[2], model.module.classifier[4]
    x = model.example_input(16)
    with torch.no_grad():
        h.weight[0].zero_()
        h.bias[0] = -1.0
        before = model.module(x)
        last.weight[:, 0] = 1000 * last.weight.abs().max()
        torch.testing.assert_close(model.module(x), before)  # the huge weight reads a dead unit: same function
    recipe = QuantRecipe(calib="entropy", calib_samples=64)
    assert evaluate(quantize_ptq(model, train, recipe), load_dataset("digits", "test")).accuracy < 0.3
    q, rep = float_int8_mix(model, train, recipe, "onnxruntime", max_drop=2.0, val_samples=300,
                            candidates=["features.0", "classifier.4"], rounds=1, runs=30)  # fmt: skip
    assert "classifier.4" in rep["float_layers"]
    assert rep["layers"]["classifier.4"]["gain_points"] > 20
    assert rep["drop_points"] <= 2.0
    assert q.module.recipe.layer_bits.get("classifier.4") == 0
    assert set(rep["measured_latency_ms"]) == {"int8", "chosen", "float"}
    assert all(v > 0 for v in rep["measured_latency_ms"].values())
