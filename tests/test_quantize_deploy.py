"""A small quantized model: PTQ, save/load without pickles, integer export to every runtime, CLI.

Offline (digits): the zoo ResNet-8 (batch norms, residual adds) on 8x8 digits, trained briefly and
quantized once (module fixture), exported to ExecuTorch, LiteRT and ONNX Runtime; each runtime must
agree with the PyTorch simulation on the test images, and each artifact must really be integer.
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeopt.compress.quantize.ptq import QuantizedModule, QuantRecipe, quantize_ptq
from edgeopt.data import load_dataset
from edgeopt.interop.export import export_model
from edgeopt.model import load_model, save_model
from edgeopt.models import create_model
from edgeopt.runtimes import open_runner
from edgeopt.runtimes.onnxruntime_runner import int8_kernels_saturate
from edgeopt.train import FitConfig, evaluate, fit


@pytest.fixture(scope="module")
def trained():
    train = load_dataset("digits", "train")
    model = create_model("resnet8", input_shape=(1, 8, 8), num_classes=10)
    model, _ = fit(model, train, FitConfig(epochs=2, batch_size=64, seed=0))
    return model, train, load_dataset("digits", "test")


@pytest.fixture(scope="module")
def quantized(trained):
    model, train, _ = trained
    return quantize_ptq(model, train, QuantRecipe(calib="entropy", calib_samples=128))


def test_ptq_keeps_accuracy_and_records_recipe(trained, quantized) -> None:
    model, _, test = trained
    f, q = evaluate(model, test).accuracy, evaluate(quantized, test).accuracy
    assert f > 0.8
    assert q >= f - 0.03
    arch = quantized.meta.arch
    assert arch["kind"] == "quantized" and arch["float"]["kind"] == "zoo"
    assert arch["recipe"]["calib"] == "entropy" and arch["qparams"]
    assert quantized.meta.lineage[-1]["pass"] == "quantize"
    assert quantized.meta.lineage[-1]["metrics"]["bn_folded"] > 0
    # the original float model is untouched
    assert not isinstance(model.module, QuantizedModule)


def test_save_load_round_trip_without_pickles(tmp_path: Path, trained, quantized) -> None:
    path = save_model(quantized, tmp_path / "q.edgeopt")
    with zipfile.ZipFile(path) as zf:
        meta = json.loads(zf.read("meta.json"))
        assert meta["arch"]["kind"] == "quantized"
    loaded = load_model(path)
    assert isinstance(loaded.module, QuantizedModule)
    x = trained[0].example_input(16)
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), quantized.module(x), atol=0, rtol=0)


@pytest.mark.parametrize("fmt", ["pte", "tflite", "onnx"])
def test_integer_export_agrees_with_simulation(tmp_path: Path, trained, quantized, fmt: str) -> None:
    _, _, test = trained
    res = export_model(quantized, fmt, tmp_path / f"q.{fmt}")
    _assert_integer_artifact(fmt, res.path)
    if fmt == "onnx" and int8_kernels_saturate():
        pytest.skip("ONNX Runtime's u8s8 kernels saturate on x86 without VNNI (int8_kernels_saturate)")
    # the parity inputs are random (near-tied logits): one top-1 flip of 8 is noise (it failed a run at 7/8 with
    # 1.6% relative error); the output error bounds them, and top-1 is checked on real digits below
    assert res.parity.rel_diff <= 0.05, res.parity
    sim = evaluate(quantized, test)
    with open_runner(res.runtime, res.path, threads=1) as runner:
        got = evaluate(quantized.meta, test, predict=runner.run)
    assert float((got.predictions == sim.predictions).mean()) >= 0.97
    assert abs(got.accuracy - sim.accuracy) <= 0.02
    if fmt == "pte":  # int8 weights: well under the 4 bytes per parameter any fp32 program stores
        assert res.path.stat().st_size < 0.4 * 4 * sum(p.numel() for p in trained[0].module.parameters())


def _assert_integer_artifact(fmt: str, path: Path) -> None:
    if fmt == "tflite":
        from ai_edge_litert.interpreter import Interpreter

        it = Interpreter(model_path=str(path))
        dtype = {t["index"]: np.dtype(t["dtype"]) for t in it.get_tensor_details()}
        ops = it._get_ops_details()
        # a float interface may be converted at the ends (QUANTIZE in, DEQUANTIZE out); nothing float in between
        while ops and ops[0]["op_name"] == "QUANTIZE":
            ops = ops[1:]
        while ops and ops[-1]["op_name"] == "DEQUANTIZE":
            ops = ops[:-1]
        names = [o["op_name"] for o in ops]
        assert "CONV_2D" in names and "FULLY_CONNECTED" in names
        for o in ops:
            kinds = {dtype[i] for i in [*o["inputs"], *o["outputs"]] if i >= 0}
            assert kinds <= {np.dtype(np.int8), np.dtype(np.int32)}, (o["op_name"], kinds)
    elif fmt == "onnx":
        import onnx

        m = onnx.load(str(path))
        ops = {n.op_type for n in m.graph.node}
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops
        assert any(i.data_type == onnx.TensorProto.INT8 for i in m.graph.initializer)
        assert any(i.data_type == onnx.TensorProto.INT32 for i in m.graph.initializer)  # quantized biases
        assert not any(n.metadata_props for n in m.graph.node)  # the exporter's debug records are not shipped
        assert not m.graph.value_info  # nor the intermediate shapes the runtimes infer on load
        read = {name for n in m.graph.node for name in n.input}
        assert all(t.name in read for t in m.graph.initializer)  # nor initializers no node reads
        ends = {v.name for v in [*m.graph.input, *m.graph.output]}
        assert max(len(t) for n in m.graph.node for t in n.output if t not in ends) <= 3  # tensors get short ids
    else:
        _assert_pte_runs_int8_in_xnnpack(path)
        assert not re.search(rb"[0-9a-f]{64}", path.read_bytes())  # XNNPACK's data keys are not full SHA-256 hex
        from executorch.exir._serialize._program import deserialize_pte_binary, serialize_pte_binary

        # the same program laid out as edgeopt lays it out (delegate data in segments), at ExecuTorch's default 128
        pte = deserialize_pte_binary(path.read_bytes())
        default = serialize_pte_binary(pte, extract_delegate_segments=True, segment_alignment=128)
        assert path.stat().st_size < len(default)  # segments are not padded to ExecuTorch's default 128 bytes


def _assert_pte_runs_int8_in_xnnpack(path: Path) -> None:
    """The whole program is one XNNPACK delegate whose convs, adds and FC read and write int8 tensors."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    from edgeopt.runtimes.memory_plan import read_xnnpack_delegate

    program = deserialize_pte_binary(path.read_bytes()).program
    plan = program.execution_plan[0]
    calls = [type(i.instr_args).__name__ for chain in plan.chains for i in chain.instructions]
    assert [d.id for d in plan.delegates] == ["XnnpackBackend"] and calls == ["DelegateCall"]  # no portable op
    graph, _ = read_xnnpack_delegate(program.backend_delegate_data[plan.delegates[0].processed.index].data)
    dtype = {}
    for v in graph["xvalues"]:
        tv = v["xvalue_union"].get("tensor_value", v["xvalue_union"])
        dtype[tv["id_out"]] = tv["datatype"]
    kinds = ("XNNConv2d", "XNNDepthwiseConv2d", "XNNFullyConnected", "XNNAdd")
    compute = [n["xnode_union"] for n in graph["xnodes"] if n["xnode_union_type"] in kinds]
    assert len(compute) >= 10  # 9 convs (one depthwise stem here), 3 adds, the classifier
    for node in compute:
        ids = [node[k] for k in ("input1_id", "input2_id", "output_id") if k in node]
        assert {dtype[i] for i in ids} == {"xnn_datatype_qint8"}, node
        if "filter_id" in node:
            assert dtype[node["filter_id"]] == "xnn_datatype_qcint8"  # per-channel int8 weights
    floats = {i for i, d in dtype.items() if d == "xnn_datatype_fp32"}
    assert floats == {*graph["input_ids"], *graph["output_ids"]}  # float only at the interface


def test_float_export_still_uses_tight_parity(tmp_path: Path, trained) -> None:
    res = export_model(trained[0], "onnx", tmp_path / "f.onnx")
    assert res.parity.rel_diff <= 1e-4
    side = json.loads(res.sidecar.read_text())
    assert side["export"]["rtol"] == 1e-4 and side["export"]["quantized"] is False


def test_quantize_pass_is_registered() -> None:
    from edgeopt.pipeline.passes import available_passes

    assert "quantize" in available_passes()


def test_weight_observer_pins_learned_steps(trained) -> None:
    model, train, _ = trained
    q = quantize_ptq(model, train, QuantRecipe(calib="minmax", calib_samples=64, bias_correction=False))
    from edgeopt.compress.quantize.ptq import prepare, weight_observer_names

    prep = prepare(q.module.float_module, model.example_input(1), q.module.recipe)
    names = weight_observer_names(prep)
    from edgeopt.compress.quantize.mixed import quant_layers

    assert set(names) == set(quant_layers(model.module))  # every conv and linear has one
    layer = next(iter(names))
    steps = [0.5] * int(dict(model.module.named_modules())[layer].weight.shape[0])
    q2 = quantize_ptq(model, train, QuantRecipe(calib="minmax", calib_samples=64, bias_correction=False),
                      weight_steps={layer: steps})  # fmt: skip
    assert q2.meta.arch["qparams"][names[layer]]["scale"] == steps


# --- CLI ---------------------------------------------------------------------------------------


def _cli(capfd, *args: str) -> tuple[int, str, str]:
    from edgeopt.cli import main

    rc = main([str(a) for a in args])
    out, err = capfd.readouterr()
    return rc, out, err


def _one_line(rc: int, err: str, fragment: str) -> None:
    assert rc == 2, err
    assert "Traceback" not in err
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and fragment in lines[0], err


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--calib", "kl"], "unknown calibration method 'kl'"),
        (["--weights", "int2"], "unknown weight precision 'int2'"),
        (["--method", "awq"], "unknown quantization method 'awq'"),
        (["--max-drop", "-1"], "--max-drop must be >= 0"),
        (["--weights", "int4", "--rounding", "qdrop"], "unknown weight rounding 'qdrop'"),
    ],
)
def test_cli_errors_are_one_line(tmp_path: Path, capfd, args: list[str], fragment: str) -> None:
    rc, _, err = _cli(capfd, "quantize", "zoo:mlp", "--data", "digits", "--out", tmp_path / "q.edgeopt", *args)
    _one_line(rc, err, fragment)
    assert list(tmp_path.iterdir()) == []


def test_cli_missing_data(tmp_path: Path, capfd) -> None:
    rc, _, err = _cli(capfd, "quantize", "zoo:mlp", "--data", f"imagefolder:{tmp_path / 'none'}",
                      "--out", tmp_path / "q.edgeopt")  # fmt: skip
    assert rc == 2 and "Traceback" not in err and err.strip().startswith("error:")


def test_cli_quantize_json(tmp_path: Path, capfd, trained) -> None:
    src = save_model(trained[0], tmp_path / "f.edgeopt")
    rc, out, err = _cli(capfd, "quantize", src, "--data", "digits", "--calib", "minmax", "--calib-samples", "64",
                        "--no-eval", "--out", tmp_path / "q.edgeopt", "--json")  # fmt: skip
    assert rc == 0, err
    d = json.loads(out)
    assert Path(d["model"]).is_file() and d["calib"] == "minmax"
    assert isinstance(load_model(d["model"]).module, QuantizedModule)


def test_layer_bits_reach_the_weight_observers(trained) -> None:
    from edgeopt.compress.quantize.mixed import quant_layers
    from edgeopt.compress.quantize.ptq import observers, prepare, weight_observer_names

    model = trained[0]
    layers = list(quant_layers(model.module))
    recipe = QuantRecipe(layer_bits={layers[1]: 4, layers[-1]: 0})
    prep = prepare(model.module, model.example_input(1), recipe)
    obs, names = observers(prep), weight_observer_names(prep)
    assert obs[names[layers[1]]].quant_max == 7  # 4-bit values
    assert obs[names[layers[0]]].quant_max == 127
    assert layers[-1] not in names  # kept float


def test_cli_max_drop_keeps_the_measured_drop_within_budget(tmp_path: Path, capfd, trained) -> None:
    """Accuracy-aware mixed precision with the real quantizer: every layer int4 costs accuracy (budget 0),
    the layers it raises are really 8-bit in the saved model, and the drop re-measured here is within it."""
    from edgeopt.compress.quantize.mixed import validation_split
    from edgeopt.compress.quantize.ptq import calibration_indices

    model, train, _ = trained
    src = save_model(model, tmp_path / "f.edgeopt")
    rc, out, err = _cli(capfd, "quantize", src, "--data", "digits", "--weights", "int4", "--rounding", "nearest",
                        "--calib", "minmax", "--calib-samples", "200", "--max-drop", "0", "--no-eval",
                        "--out", tmp_path / "q.edgeopt", "--json")  # fmt: skip
    assert rc == 0, err
    d = json.loads(out)
    # usually some layers go back to int8; when all-int4 happens to lose nothing on the validation images, none
    # need to (which thread count and test order decide): the re-measured drop below holds either way
    kept = [k.split("->") for k in d["kept_higher_precision"]]
    assert "warning" not in d
    q = load_model(d["model"])
    bits = q.meta.arch["recipe"]["layer_bits"]
    final = dict(kept)  # a layer raised to int8 may later go on to float: its last step counts
    assert all(bits[layer] == {"int8": 8, "float": 0}[to] for layer, to in final.items())
    x, y = validation_split(model, train, 1000, calibration_indices(len(train), 200, 0))
    with torch.no_grad():
        model.module.eval(), q.module.eval()
        f_acc = float((model.module(x).argmax(1).numpy() == y).mean())
        q_acc = float((q.module(x).argmax(1).numpy() == y).mean())
    assert 100 * (f_acc - q_acc) <= 1e-9


def test_cli_qat_keeps_accuracy(tmp_path: Path, capfd, trained) -> None:
    model, _, test = trained
    src = save_model(model, tmp_path / "f.edgeopt")
    rc, out, err = _cli(capfd, "quantize", src, "--data", "digits", "--method", "qat", "--qat-epochs", "1",
                        "--calib-samples", "128", "--no-eval", "--out", tmp_path / "q.edgeopt", "--json")  # fmt: skip
    assert rc == 0, err
    q = load_model(json.loads(out)["model"])
    assert isinstance(q.module, QuantizedModule) and q.meta.arch["recipe"]["method"] == "qat"
    assert evaluate(q, test).accuracy >= evaluate(model, test).accuracy - 0.02
