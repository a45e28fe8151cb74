"""TFLite import: parity with the LiteRT interpreter, layout handling, errors, and that the
imported module behaves like any edgeopt model (save/load, training, torch.export, re-export).

Genuine NHWC TFLite graphs (asymmetric SAME padding, depthwise, fused activations, float16 and
int8 weights behind DEQUANTIZE) are written here with the ``flatbuffers`` builder and the
``tflite`` schema; litert-torch's own output (NCHW input + TRANSPOSE) is covered by converting
a small torch model. The MLPerf Tiny ResNet-8 check runs only where ../shared/data exists.
"""

from __future__ import annotations

import importlib
import io
import zipfile
from pathlib import Path
from typing import Any

import flatbuffers
import numpy as np
import pytest
import torch
from ai_edge_litert.interpreter import Interpreter
from tflite.BuiltinOptions import BuiltinOptions
from tflite.utils import BUILTIN_OPCODE2NAME
from torch import nn

from edgeopt.errors import EdgeoptError, UnsupportedOpError
from edgeopt.interop import import_model
from edgeopt.model import load_model, save_model

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
RESNET8 = SHARED / "mlperf-tiny" / "resnet8_float32.tflite"
RESNET8_INT8 = SHARED / "mlperf-tiny" / "resnet8_int8.tflite"
CIFAR = SHARED / "cifar10-jpg.zip"

_OPCODES = {name: code for code, name in BUILTIN_OPCODE2NAME.items()}
_TYPES = {"float32": 0, "float16": 1, "int32": 2, "int8": 9}
SAME, VALID = 0, 1
NONE, RELU, RELU_N1_TO_1, RELU6, TANH = 0, 1, 2, 3, 4


# ----------------------------------------------------------------------------- a tiny .tflite writer


class TFLiteWriter:
    """Collects tensors and ops, then serialises them with the tflite flatbuffer schema."""

    def __init__(self) -> None:
        self.tensors: list[dict[str, Any]] = []
        self.ops: list[tuple[str, list[int], list[int], str | None, dict[str, Any]]] = []

    def tensor(
        self,
        shape: list[int],
        data: np.ndarray | None = None,
        dtype: str = "float32",
        quant: tuple[np.ndarray, np.ndarray, int] | None = None,
    ) -> int:
        self.tensors.append({"shape": shape, "data": data, "dtype": dtype, "quant": quant})
        return len(self.tensors) - 1

    def const(self, arr: np.ndarray, dtype: str = "float32", quant: Any = None) -> int:
        arr = np.asarray(arr)
        return self.tensor(list(arr.shape), arr, dtype, quant)

    def op(
        self,
        name: str,
        inputs: list[int],
        out_shape: list[int],
        options: str | None = None,
        out_dtype: str = "float32",
        **opts: Any,
    ) -> int:
        out = self.tensor(out_shape, dtype=out_dtype)
        self.ops.append((name, inputs, [out], options, opts))
        return out

    def build(self, inputs: list[int], outputs: list[int]) -> bytes:
        b = flatbuffers.Builder(1024)
        mod = {
            n: importlib.import_module(f"tflite.{n}")
            for n in ("Model", "SubGraph", "Tensor", "Operator", "OperatorCode", "Buffer", "QuantizationParameters")
        }

        def vec(values: Any, dtype: Any) -> int:
            return b.CreateNumpyVector(np.asarray(values, dtype))

        def table_vec(module: str, field: str, offsets: list[int]) -> int:
            getattr(mod[module], f"{module}Start{field}Vector")(b, len(offsets))
            for off in reversed(offsets):
                b.PrependUOffsetTRelative(off)
            return b.EndVector()

        def table(module: Any, name: str, fields: dict[str, Any]) -> int:
            vectors = {k: vec(v, np.int32) for k, v in fields.items() if isinstance(v, list)}
            getattr(module, f"{name}Start")(b)
            for k, v in fields.items():
                getattr(module, f"{name}Add{k}")(b, vectors.get(k, v))
            return getattr(module, f"{name}End")(b)

        buffers = [table(mod["Buffer"], "Buffer", {})]
        tensor_offs = []
        for i, t in enumerate(self.tensors):
            buf_index = 0
            if t["data"] is not None:
                raw = np.ascontiguousarray(t["data"]).tobytes()
                buffers.append(table(mod["Buffer"], "Buffer", {"Data": b.CreateByteVector(raw)}))
                buf_index = len(buffers) - 1
            fields: dict[str, Any] = {
                "Shape": vec(t["shape"], np.int32),
                "Type": _TYPES[t["dtype"]],
                "Buffer": buf_index,
                "Name": b.CreateString(f"t{i}"),
            }
            if t["quant"] is not None:
                scale, zp, dim = t["quant"]
                fields["Quantization"] = table(
                    mod["QuantizationParameters"],
                    "QuantizationParameters",
                    {"Scale": vec(scale, np.float32), "ZeroPoint": vec(zp, np.int64), "QuantizedDimension": dim},
                )
            tensor_offs.append(table(mod["Tensor"], "Tensor", fields))
        codes = sorted({name for name, *_ in self.ops})
        op_offs = []
        for name, ins, outs, options, opts in self.ops:
            fields = {"OpcodeIndex": codes.index(name), "Inputs": vec(ins, np.int32), "Outputs": vec(outs, np.int32)}
            if options is not None:
                fields["BuiltinOptionsType"] = getattr(BuiltinOptions, options)
                fields["BuiltinOptions"] = table(importlib.import_module(f"tflite.{options}"), options, opts)
            op_offs.append(table(mod["Operator"], "Operator", fields))
        subgraph = table(
            mod["SubGraph"],
            "SubGraph",
            {
                "Tensors": table_vec("SubGraph", "Tensors", tensor_offs),
                "Inputs": vec(inputs, np.int32),
                "Outputs": vec(outputs, np.int32),
                "Operators": table_vec("SubGraph", "Operators", op_offs),
            },
        )
        code_offs = [
            table(
                mod["OperatorCode"],
                "OperatorCode",
                {"BuiltinCode": _OPCODES[n], "DeprecatedBuiltinCode": min(_OPCODES[n], 127), "Version": 1},
            )
            for n in codes
        ]
        model = table(
            mod["Model"],
            "Model",
            {
                "Version": 3,
                "OperatorCodes": table_vec("Model", "OperatorCodes", code_offs),
                "Subgraphs": table_vec("Model", "Subgraphs", [subgraph]),
                "Buffers": table_vec("Model", "Buffers", buffers),
            },
        )
        b.Finish(model, file_identifier=b"TFL3")
        return bytes(b.Output())


def _rand(rng: np.random.Generator, *shape: int, scale: float = 0.5) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def nhwc_net() -> bytes:
    """Conv/depthwise with asymmetric SAME padding, fused activations, dequantized weights, pools,
    concat on channels, pad, reshape of a 4-D tensor, fully connected and softmax -- all NHWC."""
    rng = np.random.default_rng(0)
    w = TFLiteWriter()
    x = w.tensor([1, 10, 10, 3])
    t = w.op(
        "CONV_2D",
        [x, w.const(_rand(rng, 8, 3, 3, 3)), w.const(_rand(rng, 8))],
        [1, 5, 5, 8],
        "Conv2DOptions",
        Padding=SAME,
        StrideW=2,
        StrideH=2,
        FusedActivationFunction=RELU6,
    )
    dw16 = w.op("DEQUANTIZE", [w.const(_rand(rng, 1, 3, 3, 16).astype(np.float16), "float16")], [1, 3, 3, 16])
    t = w.op(
        "DEPTHWISE_CONV_2D",
        [t, dw16, w.const(_rand(rng, 16))],
        [1, 5, 5, 16],
        "DepthwiseConv2DOptions",
        Padding=SAME,
        StrideW=1,
        StrideH=1,
        DepthMultiplier=2,
        FusedActivationFunction=RELU,
    )
    t = w.op("MUL", [t, w.const(_rand(rng, 16, scale=2.0))], [1, 5, 5, 16], "MulOptions")
    t = w.op("SUB", [t, w.const(np.float32(0.3))], [1, 5, 5, 16], "SubOptions", FusedActivationFunction=RELU_N1_TO_1)
    t = w.op("HARD_SWISH", [t], [1, 5, 5, 16])
    q = rng.integers(-127, 128, (8, 1, 1, 16)).astype(np.int8)
    scales = rng.uniform(0.005, 0.02, 8).astype(np.float32)
    wq = w.op("DEQUANTIZE", [w.const(q, "int8", (scales, np.zeros(8, np.int64), 0))], [8, 1, 1, 16])
    # a fused TANH is accepted by LiteRT's conv but never applied: the importer must reproduce that
    t6 = w.op(
        "CONV_2D",
        [t, wq, w.const(_rand(rng, 8))],
        [1, 5, 5, 8],
        "Conv2DOptions",
        Padding=VALID,
        StrideW=1,
        StrideH=1,
        FusedActivationFunction=TANH,
    )
    p1 = w.op(
        "MAX_POOL_2D",
        [t6],
        [1, 3, 3, 8],
        "Pool2DOptions",
        Padding=SAME,
        StrideW=2,
        StrideH=2,
        FilterWidth=3,
        FilterHeight=3,
    )
    p2 = w.op(
        "AVERAGE_POOL_2D",
        [t6],
        [1, 3, 3, 8],
        "Pool2DOptions",
        Padding=SAME,
        StrideW=2,
        StrideH=2,
        FilterWidth=2,
        FilterHeight=2,
    )
    t = w.op("CONCATENATION", [p1, p2], [1, 3, 3, 16], "ConcatenationOptions", Axis=-1)
    t = w.op("LOGISTIC", [t], [1, 3, 3, 16])
    t = w.op("PAD", [t, w.const(np.array([[0, 0], [1, 0], [0, 2], [0, 0]], np.int32), "int32")], [1, 4, 5, 16])
    t = w.op("ADD", [t, w.const(_rand(rng, 1, 4, 5, 16))], [1, 4, 5, 16], "AddOptions", FusedActivationFunction=RELU)
    t = w.op("RESHAPE", [t, w.const(np.array([1, 320], np.int32), "int32")], [1, 320])
    t = w.op(
        "FULLY_CONNECTED",
        [t, w.const(_rand(rng, 10, 320, scale=0.1)), w.const(_rand(rng, 10))],
        [1, 10],
        "FullyConnectedOptions",
    )
    out = w.op("SOFTMAX", [t], [1, 10], "SoftmaxOptions", Beta=0.5)
    return w.build([x], [out])


def layout_net() -> bytes:
    """TRANSPOSE inside an NHWC graph, ADD of operands held in different layouts, MEAN/SQUEEZE,
    standalone activations, concat of 2-D tensors, FC without bias."""
    rng = np.random.default_rng(1)
    w = TFLiteWriter()
    x = w.tensor([1, 6, 6, 4])
    a = w.op(
        "CONV_2D",
        [x, w.const(_rand(rng, 4, 3, 3, 4)), w.const(_rand(rng, 4))],
        [1, 4, 4, 4],
        "Conv2DOptions",
        Padding=VALID,
        StrideW=1,
        StrideH=1,
        FusedActivationFunction=RELU_N1_TO_1,
    )
    b = w.op("TRANSPOSE", [a, w.const(np.array([0, 3, 1, 2], np.int32), "int32")], [1, 4, 4, 4])
    c = w.op("ADD", [a, b], [1, 4, 4, 4], "AddOptions")
    c = w.op("RELU6", [c], [1, 4, 4, 4])
    d = w.op("RESHAPE", [c, w.const(np.array([1, -1], np.int32), "int32")], [1, 64])
    e = w.op("MEAN", [x, w.const(np.array([1, 2], np.int32), "int32")], [1, 1, 1, 4], "ReducerOptions", KeepDims=True)
    f = w.op("SQUEEZE", [e], [1, 4], "SqueezeOptions", SqueezeDims=[1, 2])
    g = w.op("TANH", [w.op("RELU", [f], [1, 4])], [1, 4])
    i = w.op("CONCATENATION", [d, g], [1, 68], "ConcatenationOptions", Axis=1)
    out = w.op("FULLY_CONNECTED", [i, w.const(_rand(rng, 5, 68, scale=0.2)), -1], [1, 5], "FullyConnectedOptions")
    return w.build([x], [out])


# ----------------------------------------------------------------------------- helpers


def tflite_run(model: Path | bytes, x: np.ndarray) -> np.ndarray:
    it = Interpreter(model_path=str(model)) if isinstance(model, Path) else Interpreter(model_content=model)
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"])


def torch_run(module: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


def assert_parity(model_path: Path, shape: tuple[int, ...], seeds: int = 3, lo: float = -1.0, hi: float = 1.0) -> None:
    em = import_model(model_path)
    rng = np.random.default_rng(0)
    for _ in range(seeds):
        x = rng.uniform(lo, hi, shape).astype(np.float32)
        ref, got = tflite_run(model_path, x), torch_run(em.module, x)
        assert got.shape == ref.shape
        assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()


@pytest.fixture(scope="module")
def nhwc_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tfl") / "nhwc.tflite"
    path.write_bytes(nhwc_net())
    return path


# ----------------------------------------------------------------------------- parity


def test_nhwc_ops_match_interpreter(nhwc_path: Path) -> None:
    em = import_model(nhwc_path)
    assert em.meta.input.layout == "NHWC" and em.meta.input.shape == (10, 10, 3)
    assert em.meta.num_classes == 10
    step = {"pass": "import", "source": str(nhwc_path), "format": "tflite", "input_range": "assumed"}
    assert em.meta.lineage == [step]
    ops = [n["op"] for n in em.module.ir["nodes"]]
    assert ops.count("permute") == 2  # one at the input, one back to NHWC before the reshape
    convs = [m for m in em.module.modules() if isinstance(m, nn.Conv2d)]
    assert [c.groups for c in convs] == [1, 8, 1]  # depthwise is a grouped nn.Conv2d
    assert_parity(nhwc_path, (1, 10, 10, 3), seeds=5)


def test_layout_mixing_matches_interpreter(tmp_path: Path) -> None:
    path = tmp_path / "layout.tflite"
    path.write_bytes(layout_net())
    assert_parity(path, (1, 6, 6, 4), seeds=3)


def test_litert_torch_model_matches_and_keeps_nchw(tmp_path: Path) -> None:
    import litert_torch

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, 2, 1)
            self.dw = nn.Conv2d(8, 8, 3, 1, 1, groups=8)
            self.fc = nn.Linear(8 * 4 * 4, 6)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.nn.functional.hardswish(self.dw(torch.relu(self.conv(x))))
            y = torch.nn.functional.max_pool2d(y, 2)
            return torch.softmax(self.fc(torch.flatten(y, 1)), -1)

    path = tmp_path / "lt.tflite"
    litert_torch.convert(Net().eval(), (torch.randn(1, 3, 16, 16),)).export(str(path))
    em = import_model(path)
    assert em.meta.input.layout == "NCHW" and em.meta.input.shape == (3, 16, 16)
    assert not any(n["op"] == "permute" for n in em.module.ir["nodes"])  # TRANSPOSEs absorbed
    assert_parity(path, (1, 3, 16, 16))


# ----------------------------------------------------------------------------- the imported module as a model


def test_save_load_roundtrip_identical(nhwc_path: Path, tmp_path: Path) -> None:
    em = import_model(nhwc_path)
    saved = save_model(em, tmp_path / "m")
    with zipfile.ZipFile(saved) as zf:
        assert "weights.pt" in zf.namelist() and "meta.json" in zf.namelist()
    back = load_model(saved)
    x = em.example_input(batch=3)
    with torch.no_grad():
        assert torch.equal(em.module(x), back.module(x))
    assert back.meta.input == em.meta.input and back.meta.arch == em.meta.arch


def test_imported_model_trains(nhwc_path: Path) -> None:
    em = import_model(nhwc_path)
    module = em.module.train()
    x = torch.randn(4, 10, 10, 3)  # batch differs from the file's batch of 1
    loss = torch.nn.functional.nll_loss(torch.log(module(x) + 1e-6), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.weight.grad is not None and c.weight.grad.abs().sum() > 0 for c in convs)
    opt = torch.optim.SGD(module.parameters(), lr=0.1)
    opt.step()


def test_torch_export_and_litert_reexport(nhwc_path: Path, tmp_path: Path) -> None:
    import litert_torch

    em = import_model(nhwc_path)
    x = em.example_input(batch=1)
    ep = torch.export.export(em.module, (x,))
    with torch.no_grad():
        assert torch.allclose(ep.module()(x), em.module(x), atol=1e-6)
    out = tmp_path / "again.tflite"
    litert_torch.convert(em.module, (x,)).export(str(out))
    ref = torch_run(em.module, x.numpy())
    assert np.abs(tflite_run(out, x.numpy()) - ref).max() <= 1e-4 * np.abs(ref).max()


def test_executorch_lowering(nhwc_path: Path) -> None:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from executorch.runtime import Runtime

    em = import_model(nhwc_path)
    x = em.example_input(batch=1)
    ep = torch.export.export(em.module, (x,))
    program = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()]).to_executorch()
    method = Runtime.get().load_program(program.buffer).load_method("forward")
    got = method.execute([x])[0]
    ref = torch_run(em.module, x.numpy())
    assert np.abs(got.numpy() - ref).max() <= 1e-4 * np.abs(ref).max()


# ----------------------------------------------------------------------------- errors


def test_unknown_op_names_op_and_node(tmp_path: Path) -> None:
    w = TFLiteWriter()
    x = w.tensor([1, 4, 4, 3])
    y = w.op("FLOOR", [x], [1, 4, 4, 3])
    path = tmp_path / "floor.tflite"
    path.write_bytes(w.build([x], [y]))
    with pytest.raises(UnsupportedOpError) as e:
        import_model(path)
    msg = str(e.value).splitlines()[0]
    assert "'FLOOR'" in msg and "#0 t1" in msg and "TFLite" in msg


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_file_is_one_clear_error(nhwc_path: Path, tmp_path: Path, damage: str) -> None:
    data = nhwc_path.read_bytes()
    bad = {"truncate": data[: len(data) // 3], "garbage": b"\x07" * 500, "empty": b""}[damage]
    path = tmp_path / "bad.tflite"
    path.write_bytes(bad)
    with pytest.raises(EdgeoptError, match=r"is not a valid \.tflite file"):
        load_model(path)


def test_int8_activation_without_parameters_rejected(tmp_path: Path) -> None:
    w = TFLiteWriter()
    x = w.tensor([1, 4, 4, 3])
    y = w.op("QUANTIZE", [x], [1, 4, 4, 3], out_dtype="int8")
    path = tmp_path / "q.tflite"
    path.write_bytes(w.build([x], [y]))
    with pytest.raises(EdgeoptError, match="without one per-tensor scale"):  # int8 import: test_import_tflite_int8
        import_model(path)


# ----------------------------------------------------------------------------- the real MLPerf Tiny model


@pytest.mark.skipif(not RESNET8.is_file(), reason="needs ../shared/data/mlperf-tiny")
def test_mlperf_resnet8_matches_interpreter() -> None:
    assert_parity(RESNET8, (1, 32, 32, 3), seeds=5, lo=0.0, hi=255.0)
    em = import_model(RESNET8)
    assert em.meta.input.layout == "NHWC" and em.meta.input.shape == (32, 32, 3) and em.meta.num_classes == 10
    assert sum(isinstance(m, nn.Conv2d) for m in em.module.modules()) == 9


@pytest.mark.skipif(not (RESNET8.is_file() and CIFAR.is_file()), reason="needs ../shared/data")
def test_mlperf_resnet8_agrees_on_cifar() -> None:
    from PIL import Image

    with zipfile.ZipFile(CIFAR) as zf:
        names = sorted(n for n in zf.namelist() if n.startswith("test/") and n.endswith(".jpg"))[::50][:200]
        images = np.stack([np.asarray(Image.open(io.BytesIO(zf.read(n))).convert("RGB")) for n in names])
    x = images.astype(np.float32)
    em = import_model(RESNET8)
    ours = torch_run(em.module, x).argmax(1)
    it = Interpreter(model_path=str(RESNET8))
    it.resize_tensor_input(it.get_input_details()[0]["index"], list(x.shape))
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    ref = it.get_tensor(it.get_output_details()[0]["index"]).argmax(1)
    assert (ours == ref).mean() >= 0.999


@pytest.mark.skipif(not RESNET8_INT8.is_file(), reason="needs ../shared/data/mlperf-tiny")
def test_mlperf_int8_imports_as_int8() -> None:
    m = import_model(RESNET8_INT8)
    assert m.meta.lineage[0]["quantization"]["kind"] == "int8" and getattr(m.module, "quantized", False)
