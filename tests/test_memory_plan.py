"""Memory plans of artifacts: ExecuTorch's stored plan, edgeopt's liveness on .tflite/.onnx/XNNPACK graphs,
and the memory keys of ``bench`` and ``profile``.

The .pte plan is checked against bounds computed independently from the torch.export graph; the
liveness readers against small graphs written here whose peak is worked out by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from test_import_tflite import TFLiteWriter

import edgeopt
from edgeopt.cli import main
from edgeopt.interop.export import export_model
from edgeopt.model import EdgeModel
from edgeopt.runtimes import benchmark
from edgeopt.runtimes.memory_plan import memory_plan, xnnpack_graph


@pytest.fixture(scope="module")
def tiny() -> EdgeModel:
    return edgeopt.load_model("zoo:lenet5", input_shape=(1, 8, 8), num_classes=10)


@pytest.fixture(scope="module")
def pte(tiny: EdgeModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_model(tiny, "pte", tmp_path_factory.mktemp("mem") / "lenet5.pte", samples=1).path


def _tensor_bytes(val: object) -> int:
    return val.numel() * val.element_size() if isinstance(val, torch.Tensor) else 0


def test_pte_plan_is_executorch_plan_within_independent_bounds(tiny: EdgeModel, pte: Path) -> None:
    plan = memory_plan(pte)
    assert plan.source == "executorch_memory_plan"
    module = tiny.module.eval()
    ep = torch.export.export(module, (tiny.example_input(1),))
    user = {s.arg.name for s in ep.graph_signature.input_specs if s.kind.name == "USER_INPUT"}
    every_tensor = sum(
        _tensor_bytes(n.meta.get("val"))
        for n in ep.graph.nodes
        if n.op == "call_function" or (n.op == "placeholder" and n.name in user)
    )
    io_bytes = 1 * 8 * 8 * 4 + 10 * 4  # float32 input and logits
    assert io_bytes <= plan.arena_bytes <= every_tensor
    workspace = plan.detail["xnnpack_workspace_bytes_estimate"]
    assert 0 < workspace <= every_tensor
    assert plan.detail["arena_plus_workspace_bytes_estimate"] == plan.arena_bytes + workspace
    # weights: at least the conv/linear weights (XNNPACK folds batch norm away), at most every stored tensor
    layer_weights = sum(
        m.weight.numel() * 4 for m in module.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)
    )
    stored = sum(t.numel() * t.element_size() for t in module.state_dict().values())
    assert layer_weights <= plan.weights_bytes <= stored


def _relu_fc_add_reshape_peak() -> int:
    # x(32) -> a=relu(x) (32) -> b=a@W (32) -> c=a+b (32, a still live: the skip) -> d=reshape(c) (view) -> relu(d)
    # live while each op runs: x 32; a 64; b 64; c 96 (a, b, c); d 32; y 64  => peak 96 at the add
    return 96


def test_onnx_liveness_on_a_hand_made_graph(tmp_path: Path) -> None:
    w = numpy_helper.from_array(np.eye(8, dtype=np.float32), "W")
    shape = numpy_helper.from_array(np.array([2, 4], np.int64), "shape")
    nodes = [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("MatMul", ["a", "W"], ["b"]),
        helper.make_node("Add", ["a", "b"], ["c"]),
        helper.make_node("Reshape", ["c", "shape"], ["d"]),
        helper.make_node("Relu", ["d"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], [w, shape],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    path = tmp_path / "g.onnx"
    onnx.save(model, str(path))
    plan = memory_plan(path)
    assert plan.source == "edgeopt_liveness_onnx_graph"
    assert plan.arena_bytes == _relu_fc_add_reshape_peak()
    assert plan.weights_bytes == 8 * 8 * 4 + 2 * 8
    assert plan.detail["peak_op"] == "#2 Add"


def test_onnx_qdq_graph_counts_int8_activations(tmp_path: Path) -> None:
    # x f32 (16) -> Q (int8, 4) -> DQ (alias) -> MatMul stored int8 (4, its Q aliases it) -> DQ (alias) = output
    # live: x 16; Q 20 (x, xq); MatMul 8 (xq, y); afterwards 4  => peak 20
    inits = [
        numpy_helper.from_array(np.eye(4, dtype=np.float32), "W"),
        numpy_helper.from_array(np.array(0.1, np.float32), "s"),
        numpy_helper.from_array(np.array(0, np.int8), "z"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
        helper.make_node("MatMul", ["xd", "W"], ["m"]),
        helper.make_node("QuantizeLinear", ["m", "s", "z"], ["mq"]),
        helper.make_node("DequantizeLinear", ["mq", "s", "z"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "q", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], inits,
    )  # fmt: skip
    path = tmp_path / "q.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    plan = memory_plan(path)
    assert plan.arena_bytes == 20
    assert plan.weights_bytes == 4 * 4 * 4 + 4 + 1


def test_tflite_liveness_on_a_hand_made_graph(tmp_path: Path) -> None:
    from ai_edge_litert.interpreter import Interpreter

    w = TFLiteWriter()
    x = w.tensor([1, 8])
    a = w.op("RELU", [x], [1, 8])
    b = w.op("FULLY_CONNECTED", [a, w.const(np.eye(8, dtype=np.float32)), w.const(np.zeros(8, np.float32))], [1, 8])
    c = w.op("ADD", [a, b], [1, 8])
    d = w.op("RESHAPE", [c, w.const(np.array([2, 4], np.int32), "int32")], [2, 4])
    y = w.op("RELU", [d], [2, 4])
    path = tmp_path / "g.tflite"
    path.write_bytes(w.build([x], [y]))
    interp = Interpreter(model_path=str(path))  # the graph is one LiteRT runs
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], -np.ones((1, 8), np.float32))
    interp.invoke()
    plan = memory_plan(path)
    assert plan.source == "edgeopt_liveness_tflite_graph"
    assert plan.arena_bytes == _relu_fc_add_reshape_peak()
    assert plan.weights_bytes == 8 * 8 * 4 + 8 * 4 + 2 * 4


def test_xnnpack_workspace_leaves_external_values_to_the_plan() -> None:
    def value(vid: int, dims: list[int], external: bool = False, const: int = 0) -> dict:
        tv = {"datatype": "xnn_datatype_fp32", "dims": dims, "constant_buffer_idx": const, "id_out": vid,
              "external_id": vid if external else 0xFFFFFFFF}  # fmt: skip
        return {"xvalue_union_type": "XNNTensorValue", "xvalue_union": tv}

    graph = {
        "xvalues": [
            value(0, [1, 4], True),
            value(1, [1, 4]),
            value(2, [4, 4], const=1),
            value(3, [1, 4]),
            value(4, [1, 4], True),
        ],
        "xnodes": [
            {"xnode_union_type": "XNNStaticTranspose", "xnode_union": {"input_id": 0, "output_id": 1}},
            {"xnode_union_type": "XNNFullyConnected", "xnode_union": {"input1_id": 1, "filter_id": 2, "output_id": 3}},
            {"xnode_union_type": "XNNAdd", "xnode_union": {"input1_id": 1, "input2_id": 3, "output_id": 4}},
        ],
        "input_ids": [0],
        "output_ids": [4],
        "constant_data": [{"size": 0}, {"size": 64}],
    }
    from edgeopt.runtimes.memory_plan import XNNPACK_VIEWS, graph_liveness

    g = xnnpack_graph(graph)
    peak, node = graph_liveness(g, sorted(XNNPACK_VIEWS))
    assert (peak, node) == (32, "#1 XNNFullyConnected")  # values 1 and 3; the external 0 and 4 are ExecuTorch's
    assert g.weights_bytes == 64


def _cli_json(capfd: pytest.CaptureFixture[str], *args: object) -> dict:
    rc = main([str(a) for a in args] + ["--json"])
    out, err = capfd.readouterr()
    assert rc == 0, err
    return json.loads(out.strip().splitlines()[-1])


def test_bench_reports_planned_memory_not_process_rss_as_the_models(pte: Path, capfd) -> None:
    got = _cli_json(capfd, "bench", pte, "--runs", "5", "--warmup", "1")
    assert "peak_memory_bytes" not in got
    assert got["memory_source"] == "executorch_memory_plan"
    assert got["arena_bytes"] == memory_plan(pte).arena_bytes and got["weights_bytes"] > 0
    assert "xnnpack_workspace_bytes_estimate" in got["memory_detail"]
    assert "process_rss_rise_bytes" in got
    stats = benchmark("torch", edgeopt.load_model("zoo:mlp"), warmup=1, runs=5)
    assert stats.memory_plan is not None and stats.memory_plan.source == "edgeopt_liveness_torch_export"
    assert stats.memory_plan.arena_bytes > 0


def test_profile_labels_its_estimate_and_reads_artifact_plans(pte: Path, capfd) -> None:
    prof = _cli_json(capfd, "profile", "zoo:mlp")
    assert prof["peak_activation_source"] == "edgeopt_liveness_torch_export" and prof["peak_activation_bytes"] > 0
    art = _cli_json(capfd, "profile", pte)
    assert art["memory_source"] == "executorch_memory_plan" and art["arena_bytes"] == memory_plan(pte).arena_bytes
