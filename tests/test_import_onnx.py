"""ONNX import: parity with ONNX Runtime across the supported op set (graphs written with
onnx.helper for ops torch does not emit, plus a torch.onnx.export model), errors, and that the
imported module saves/loads, trains and exports like any edgeopt model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from edgeopt.errors import EdgeoptError, UnsupportedOpError
from edgeopt.interop import import_model
from edgeopt.model import load_model, save_model

F32 = TensorProto.FLOAT


class GraphWriter:
    """Nodes + initializers -> an .onnx file."""

    def __init__(self, seed: int = 0) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.rng = np.random.default_rng(seed)
        self.n = 0

    def init(self, arr: np.ndarray | list, dtype: type = np.float32) -> str:
        name = f"c{len(self.inits)}"
        self.inits.append(numpy_helper.from_array(np.asarray(arr, dtype), name))
        return name

    def rand(self, *shape: int, scale: float = 0.5) -> str:
        return self.init(self.rng.standard_normal(shape) * scale)

    def node(self, op: str, inputs: list[str], n_out: int = 1, **attrs: object) -> str:
        self.n += 1
        outs = [f"{op.lower()}{self.n}_{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=f"{op}_{self.n}", **attrs))
        return outs[0]

    def save(self, path: Path, x_shape: list, out: str, out_shape: list, opset: int) -> Path:
        graph = helper.make_graph(
            self.nodes,
            "g",
            [helper.make_tensor_value_info("x", F32, x_shape)],
            [helper.make_tensor_value_info(out, F32, out_shape)],
            self.inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        onnx.save(model, str(path))
        return path


def ort_run(path: Path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def assert_parity(path: Path, shape: tuple[int, ...], seeds: int = 3) -> None:
    em = import_model(path)
    rng = np.random.default_rng(0)
    for _ in range(seeds):
        x = rng.standard_normal(shape).astype(np.float32)
        ref = ort_run(path, x)
        with torch.no_grad():
            got = em.module(torch.from_numpy(x)).numpy()
        assert got.shape == ref.shape
        assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()


def opset18_net(path: Path, batch: int | str = 1) -> Path:
    """Asymmetric/auto padding, depthwise, dilation, BN, Clip with inputs, HardSwish/HardSigmoid,
    pools, Pad, broadcast constants, Squeeze/Unsqueeze/ReduceMean with axis inputs, Reshape 0/-1,
    Transpose, Gemm (transB, alpha, beta), MatMul + Add bias, Softmax."""
    g = GraphWriter()
    t = g.node("Conv", ["x", g.rand(8, 3, 3, 3), g.rand(8)], strides=[2, 2], pads=[0, 0, 1, 1])  # 9 -> 4
    t = g.node("Clip", [t, g.init(0.0), g.init(6.0)])
    t = g.node("Conv", [t, g.rand(8, 1, 3, 3), ""], group=8, strides=[1, 1], auto_pad="SAME_UPPER")
    t = g.node("HardSwish", [t])
    mean, var = g.rand(8), g.init(g.rng.uniform(0.5, 2.0, 8))
    t = g.node("BatchNormalization", [t, g.rand(8), g.rand(8), mean, var], epsilon=1e-3)
    d = g.node("Conv", [t, g.rand(8, 8, 3, 3, scale=0.2)], dilations=[2, 2], pads=[2, 2, 2, 2])
    t = g.node("Mul", [t, g.node("HardSigmoid", [d], alpha=0.3, beta=0.4)])
    p1 = g.node("MaxPool", [t], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])  # 4 -> 2
    p2 = g.node("AveragePool", [t], kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 1, 1])  # 4 -> 2
    t = g.node("Tanh", [g.node("Sigmoid", [g.node("Concat", [p1, p2], axis=1)])])  # 16 x 2 x 2
    t = g.node("Pad", [t, g.init([0, 0, 1, 0, 0, 0, 0, 2], np.int64), g.init(0.5)], mode="constant")  # 3 x 4
    t = g.node("Sub", [t, g.rand(1, 16, 1, 1)])
    t = g.node("Div", [t, g.init(0.7)])
    t = g.node("Relu", [g.node("Identity", [g.node("Dropout", [t])])])
    gap = g.node("Squeeze", [g.node("GlobalAveragePool", [t]), g.init([2, 3], np.int64)])  # N x 16
    gap = g.node("Unsqueeze", [gap, g.init([-1], np.int64)])  # N x 16 x 1
    gap = g.node("Flatten", [gap], axis=1)
    rm = g.node("ReduceMean", [t, g.init([2, 3], np.int64)], keepdims=0)
    tr = g.node("Transpose", [t], perm=[0, 2, 3, 1])  # N x 3 x 4 x 16
    flat = g.node("Reshape", [tr, g.init([0, -1], np.int64)])  # N x 192
    t = g.node("Concat", [gap, rm, flat], axis=-1)  # N x 224
    t = g.node("Gemm", [t, g.rand(32, 224, scale=0.1), g.rand(32)], transB=1, alpha=0.5, beta=2.0)
    t = g.node("Relu", [t])
    t = g.node("Add", [g.node("MatMul", [t, g.rand(32, 10, scale=0.3)]), g.rand(10)])
    out = g.node("Softmax", [t], axis=-1)
    return g.save(path, [batch, 3, 9, 9], out, [batch, 10], opset=18)


def opset10_net(path: Path) -> Path:
    """Older attribute forms: Clip min/max, Pad pads/value, Squeeze/Unsqueeze/ReduceMean axes;
    Constant shape for Reshape; SAME_LOWER; AveragePool counting pads; Gemm transA; Softmax(axis=1)."""
    g = GraphWriter(1)
    t = g.node("Conv", ["x", g.rand(6, 2, 2, 2)], strides=[2, 2], auto_pad="SAME_LOWER")  # 7 -> 4
    t = g.node("Clip", [t], min=-1.0, max=1.0)
    t = g.node("Pad", [t], mode="constant", pads=[0, 0, 1, 1, 0, 0, 0, 1], value=-0.25)  # 5 x 6
    t = g.node("AveragePool", [t], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 0, 1], count_include_pad=1)
    t = g.node("Squeeze", [g.node("ReduceMean", [t], axes=[2, 3], keepdims=1)], axes=[3])  # N x 6 x 1
    t = g.node("Unsqueeze", [t], axes=[0])  # 1 x N x 6 x 1
    shape = g.node("Constant", [], value=numpy_helper.from_array(np.array([6, -1], np.int64)))
    t = g.node("Reshape", [t, shape])  # 6 x N
    t = g.node("Gemm", [t, g.rand(6, 4), g.rand(1, 4)], transA=1)  # N x 4
    out = g.node("Softmax", [g.node("Tanh", [t])], axis=1)
    return g.save(path, [1, 2, 7, 7], out, [1, 4], opset=10)


class TorchNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2)
        self.fc = nn.Linear(16 * 3 * 3, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.nn.functional.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)
        y = torch.nn.functional.relu6(self.conv2(y))
        return self.fc(torch.flatten(y, 1))


@pytest.fixture(scope="module")
def net18(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return opset18_net(tmp_path_factory.mktemp("onnx") / "net18.onnx")


# ----------------------------------------------------------------------------- parity


def test_opset18_ops_match_onnxruntime(net18: Path) -> None:
    em = import_model(net18)
    assert em.meta.input.layout == "NCHW" and em.meta.input.shape == (3, 9, 9) and em.meta.num_classes == 10
    assert em.meta.lineage == [{"pass": "import", "source": str(net18), "format": "onnx", "input_range": "assumed"}]
    kinds = [type(m) for m in em.module.mods.values()]
    assert kinds.count(nn.Conv2d) == 3 and kinds.count(nn.Linear) == 2 and kinds.count(nn.BatchNorm2d) == 1
    assert_parity(net18, (1, 3, 9, 9))


def test_opset10_attribute_forms_match_onnxruntime(tmp_path: Path) -> None:
    assert_parity(opset10_net(tmp_path / "net10.onnx"), (1, 2, 7, 7))


def test_dynamic_batch(tmp_path: Path) -> None:
    path = opset18_net(tmp_path / "dyn.onnx", batch="N")
    em = import_model(path)
    assert em.meta.input.shape == (3, 9, 9)
    assert_parity(path, (5, 3, 9, 9), seeds=1)


def test_torch_exported_model_matches(tmp_path: Path) -> None:
    net = TorchNet().eval()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-1, 1)
        net.bn.running_var.uniform_(0.5, 2)
    path = tmp_path / "torch.onnx"
    torch.onnx.export(net, (torch.randn(1, 3, 16, 16),), str(path), dynamo=True, opset_version=18)
    assert_parity(path, (1, 3, 16, 16))


# ----------------------------------------------------------------------------- the imported module as a model


def test_save_load_roundtrip_identical(net18: Path, tmp_path: Path) -> None:
    em = import_model(net18)
    back = load_model(save_model(em, tmp_path / "m.edgeopt"))
    x = em.example_input(batch=2)
    with torch.no_grad():
        assert torch.equal(em.module(x), back.module(x))
    assert back.meta.arch == em.meta.arch


def test_imported_model_trains_and_exports(net18: Path) -> None:
    em = import_model(net18)
    module = em.module.train()
    out = module(torch.randn(4, 3, 9, 9))
    torch.nn.functional.nll_loss(torch.log(out + 1e-6), torch.tensor([1, 2, 3, 4])).backward()
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.weight.grad is not None and c.weight.grad.abs().sum() > 0 for c in convs)
    module.eval()
    x = em.example_input()
    ep = torch.export.export(module, (x,))
    with torch.no_grad():
        assert torch.allclose(ep.module()(x), module(x), atol=1e-6)


# ----------------------------------------------------------------------------- errors


def test_unknown_op_names_op_and_node(tmp_path: Path) -> None:
    g = GraphWriter()
    out = g.node("LRN", [g.node("Relu", ["x"])], size=3)
    with pytest.raises(UnsupportedOpError) as e:
        import_model(g.save(tmp_path / "lrn.onnx", [1, 3, 4, 4], out, [1, 3, 4, 4], opset=17))
    msg = str(e.value).splitlines()[0]
    assert "'LRN'" in msg and "'LRN_2'" in msg and "ONNX" in msg


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_file_is_one_clear_error(net18: Path, tmp_path: Path, damage: str) -> None:
    data = net18.read_bytes()
    bad = data[: len(data) // 2] if damage == "truncate" else b"\x00\xff\x13" * 300
    path = tmp_path / "bad.onnx"
    path.write_bytes(bad)
    with pytest.raises(EdgeoptError, match=r"is not a valid \.onnx file"):
        load_model(path)


def test_malformed_graph_ir_rejected(net18: Path) -> None:
    from edgeopt.interop.graph import GraphModule

    ir = import_model(net18).meta.arch["ir"]
    broken = {**ir, "nodes": ir["nodes"][1:]}  # the first node's output is now undefined
    with pytest.raises(EdgeoptError, match="model graph is malformed"):
        GraphModule(broken)
    with pytest.raises(EdgeoptError, match="unknown op 'einsum'"):
        GraphModule({**ir, "nodes": [{**ir["nodes"][0], "op": "einsum"}, *ir["nodes"][1:]]})
