"""Export to ONNX / ExecuTorch / LiteRT with parity, and the runners for each runtime.

Offline and small: a LeNet-5 on 8x8 inputs goes to all three formats once (module fixture), the
zoo ResNet-8 once more. A hand-built int8 .tflite (two ops) checks the quantized-interface path.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeopt.errors import EdgeoptError
from edgeopt.interop.export import (
    FORMATS,
    ExportResult,
    compare_outputs,
    export_model,
    read_sidecar,
    sidecar_path,
)
from edgeopt.model import EdgeModel
from edgeopt.models import create_model
from edgeopt.runtimes import (
    RUNTIMES,
    benchmark,
    latency_stats,
    measure_latency,
    open_runner,
    quiet_output,
    runtime_for_path,
    track_peak_memory,
)
from edgeopt.runtimes.base import canonical_array
from edgeopt.runtimes.litert_runner import dequantize, quantize

FMT_RUNTIME = {"onnx": "onnxruntime", "pte": "executorch", "tflite": "litert"}


@contextlib.contextmanager
def fd_capture() -> Iterator[dict[str, str]]:
    """Capture file descriptors 1 and 2 (what a --json CLI would print) into ``box["text"]``."""
    box = {"text": ""}
    with tempfile.TemporaryFile() as sink:
        saved = [os.dup(1), os.dup(2)]
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield box
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            sink.seek(0)
            box["text"] = sink.read().decode(errors="replace")


def torch_out(model: EdgeModel, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model.module(torch.from_numpy(x)).numpy()


@pytest.fixture(scope="module")
def tiny() -> EdgeModel:
    torch.manual_seed(0)
    return create_model("lenet5", input_shape=(1, 8, 8))


@pytest.fixture(scope="module")
def exported(tiny: EdgeModel, tmp_path_factory: pytest.TempPathFactory) -> dict[str, ExportResult]:
    out = tmp_path_factory.mktemp("export")
    with fd_capture() as printed:
        results = {fmt: export_model(tiny, fmt, out / f"lenet5{suffix}") for fmt, suffix in FORMATS.items()}
    results["_printed"] = printed["text"]  # type: ignore[assignment]
    return results


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_export_parity_and_files(exported: dict[str, ExportResult], fmt: str) -> None:
    r = exported[fmt]
    assert r.format == fmt and r.runtime == FMT_RUNTIME[fmt]
    assert r.path.suffix == FORMATS[fmt] and r.path.is_file()
    assert r.size_bytes == r.path.stat().st_size > 1000
    assert r.parity.samples == 8 and r.parity.max_abs_ref > 0
    assert r.parity.max_abs_diff <= 1e-4 * r.parity.max_abs_ref
    assert r.parity.top1_agreement == 1.0
    assert r.sidecar == sidecar_path(r.path) and r.sidecar.is_file()
    leftovers = [p.name for p in r.path.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_exporters_print_nothing(exported: dict[str, ExportResult]) -> None:
    assert exported["_printed"] == ""  # type: ignore[comparison-overlap]


def test_onnx_artifact_is_valid_single_output(exported: dict[str, ExportResult]) -> None:
    import onnx

    proto = onnx.load(str(exported["onnx"].path))
    onnx.checker.check_model(proto)
    assert len(proto.graph.output) == 1
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert not list(exported["onnx"].path.parent.glob("*.data"))  # no external-data file
    assert not any(n.metadata_props or n.doc_string for n in proto.graph.node)  # no exporter debug records
    assert "edgeopt" in {p.key for p in proto.metadata_props}  # the model's own record stays


def test_timing_export_runs_like_the_dynamo_export_and_falls_back_to_it(
    exported: dict[str, ExportResult], tiny: EdgeModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A latency table's throw-away ONNX file (TorchScript exporter) computes what the shipped one does."""
    import onnx

    fast = export_model(tiny, "onnx", tmp_path / "fast.onnx", for_timing=True)
    shipped = exported["onnx"]
    assert fast.path.read_bytes() != shipped.path.read_bytes()  # another exporter wrote it
    x = tiny.example_input(5, seed=3).numpy()
    with open_runner("onnxruntime", fast.path, threads=1) as a, open_runner("onnxruntime", shipped.path) as b:
        np.testing.assert_allclose(a.run(x), b.run(x), rtol=1e-5, atol=1e-6)
    real_export = torch.onnx.export

    def torchscript_fails(*args, **kwargs):
        if not kwargs.get("dynamo", True):
            raise RuntimeError("unsupported by the TorchScript exporter")
        return real_export(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", torchscript_fails)
    fallback = export_model(tiny, "onnx", tmp_path / "fallback.onnx", for_timing=True)
    ops = [[n.op_type for n in onnx.load(str(r.path)).graph.node] for r in (fallback, shipped)]
    assert ops[0] == ops[1]  # the dynamo export's graph


def test_onnx_exports_in_one_process_build_torchlibs_registry_once(
    tiny: EdgeModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dynamo exporter's ATen → ONNX table is built by the first export and reused by the next
    (half of a small model's export time); outside edgeopt's exports PyTorch's own method is back."""
    import onnx
    from torch.onnx._internal.exporter import _registration

    from edgeopt.interop import export as export_module

    original = _registration.ONNXRegistry.__dict__["from_torchlib"]
    builds = []

    def counted(cls, *args, **kwargs):
        builds.append(args)
        return original.__func__(cls, *args, **kwargs)

    monkeypatch.setattr(_registration.ONNXRegistry, "from_torchlib", classmethod(counted))
    monkeypatch.setattr(export_module, "_TORCHLIB_REGISTRIES", {})
    first = export_model(tiny, "onnx", tmp_path / "a.onnx")
    second = export_model(tiny, "onnx", tmp_path / "b.onnx")
    assert len(builds) == 1
    assert _registration.ONNXRegistry.__dict__["from_torchlib"].__func__ is counted
    ops = [[n.op_type for n in onnx.load(str(r.path)).graph.node] for r in (first, second)]
    assert ops[0] == ops[1]


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_runner_batch_matches_torch(exported: dict[str, ExportResult], tiny: EdgeModel, fmt: str) -> None:
    x = tiny.example_input(3, seed=11).numpy()
    ref = torch_out(tiny, x)
    with open_runner(FMT_RUNTIME[fmt], exported[fmt].path, threads=1) as runner:
        assert runner.name == FMT_RUNTIME[fmt]
        assert runner.input_shape == (1, 8, 8) and runner.fixed_batch == 1
        assert runner.meta is not None and runner.meta.to_json() == tiny.meta.to_json()
        got = runner.run(x)
        assert got.shape == (3, 10) and got.dtype == np.float32
        assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()
        assert runner.run(x[:1]).shape == (1, 10)
        with pytest.raises(EdgeoptError, match="expects input of shape N x 1x8x8"):
            runner.run(np.zeros((2, 3, 8, 8), np.float32))


def test_torch_runner_and_latency(tiny: EdgeModel) -> None:
    runner = open_runner("torch", tiny, threads=1)
    x = tiny.example_input(5).numpy()
    np.testing.assert_allclose(runner.run(x), torch_out(tiny, x), rtol=1e-5, atol=1e-6)  # 1 vs N threads: sum order
    stats = measure_latency(runner, x, 1, warmup=2, runs=20)
    assert stats.runs == 20 and stats.threads == 1 and stats.runtime == "torch"
    with pytest.raises(EdgeoptError, match="opened with 1 thread"):
        measure_latency(runner, x, 2)


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_measure_latency_each_runtime(exported: dict[str, ExportResult], fmt: str) -> None:
    with open_runner(FMT_RUNTIME[fmt], exported[fmt].path) as runner:
        stats = measure_latency(runner, runner.example_input(4), 1, warmup=3, runs=30)
    assert stats.runs == 30 and stats.runtime == FMT_RUNTIME[fmt]
    assert stats.min_ms > 0  # every call did work (a runner that skipped the model would time ~0)


def test_measure_latency_times_every_call_and_only_the_call(tiny: EdgeModel) -> None:
    """Against a known cost: each invocation sleeps 3 ms; warmup calls run but are not timed."""
    runner = open_runner("torch", tiny, threads=1)
    calls = []
    run_model = runner._execute

    def slow(x):  # noqa: ANN001, ANN202
        calls.append(1)
        time.sleep(0.003)
        return run_model(x)

    runner._execute = slow  # type: ignore[method-assign]
    stats = measure_latency(runner, tiny.example_input(2).numpy(), 1, warmup=4, runs=12)
    assert len(calls) == 1 + 4 + 12  # one validating run, the warmup, the timed runs
    assert stats.runs == 12 and 3.0 <= stats.min_ms and 3.0 <= stats.p50_ms < 3.0 + 50
    calls.clear()
    stats = measure_latency(runner, tiny.example_input(2).numpy(), 1, warmup=0, runs=2, min_seconds=0.1)
    assert stats.runs == len(calls) - 1 >= 10  # timed on past ``runs`` (3 ms calls) until 0.1 s was up


def test_benchmark_records_memory(exported: dict[str, ExportResult]) -> None:
    stats = benchmark("onnxruntime", exported["onnx"].path, threads=1, warmup=2, runs=10)
    assert stats.runs == 10 and stats.p50_ms > 0
    if Path("/proc/self/status").exists():  # how the figure is taken: test_track_peak_memory_sees_an_allocation
        assert stats.process_rss_rise_bytes is not None
    assert stats.memory_plan is not None and stats.memory_plan.source == "edgeopt_liveness_onnx_graph"
    assert stats.memory_plan.arena_bytes > 0 and stats.memory_plan.weights_bytes > 0


def test_track_peak_memory_sees_an_allocation() -> None:
    with track_peak_memory() as mem:
        block = np.ones(64 * 1024 * 1024 // 8)  # 64 MiB, touched
        del block
    if mem.method == "vmhwm":
        assert mem.bytes is not None and mem.bytes >= 48 * 1024 * 1024


def test_executorch_runners_with_different_threads_side_by_side(
    exported: dict[str, ExportResult], tiny: EdgeModel
) -> None:
    # each one resizes ExecuTorch's single threadpool; a stale method would crash the process
    path = exported["pte"].path
    x = tiny.example_input(2, seed=3).numpy()
    one, two = open_runner("executorch", path, threads=1), open_runner("executorch", path, threads=2)
    try:
        outs = [r.run(x) for r in (one, two, one, two)]
        measure_latency(one, x, 1, warmup=1, runs=3)
        measure_latency(two, x, 2, warmup=1, runs=3)
    finally:
        one.close()
        two.close()
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])


def test_torch_runner_restores_thread_count(tiny: EdgeModel) -> None:
    before = torch.get_num_threads()
    threads = 1 if before != 1 else 2
    runner = open_runner("torch", tiny, threads=threads)
    runner.run(tiny.example_input(2).numpy())
    measure_latency(runner, tiny.example_input(1).numpy(), threads, warmup=1, runs=3)
    assert torch.get_num_threads() == before


def test_torch_runner_from_pt2_and_edgeopt_files(tiny: EdgeModel, tmp_path: Path) -> None:
    from edgeopt.model import save_model

    x = tiny.example_input(3, seed=2).numpy()
    ref = torch_out(tiny, x)
    pt2 = tmp_path / "lenet5.pt2"
    torch.export.save(torch.export.export(tiny.module, (tiny.example_input(1),)), str(pt2))
    with open_runner("torch", pt2) as runner:
        assert runner.fixed_batch == 1 and runner.input_shape == (1, 8, 8) and runner.meta is None
        np.testing.assert_allclose(runner.run(x), ref, rtol=1e-5, atol=1e-6)
    saved = save_model(tiny, tmp_path / "lenet5")
    with open_runner("torch", saved) as runner:
        assert runner.fixed_batch is None and runner.meta is not None
        np.testing.assert_allclose(runner.run(x), ref, rtol=1e-5, atol=1e-6)
    with open_runner("onnxruntime", saved, workdir=tmp_path / "work") as runner:  # exported on the fly
        assert runner.path == tmp_path / "work" / "lenet5.onnx" and runner.meta is not None
        assert np.abs(runner.run(x) - ref).max() <= 1e-4 * np.abs(ref).max()


def test_sidecar_round_trip(exported: dict[str, ExportResult], tiny: EdgeModel, tmp_path: Path) -> None:
    meta = read_sidecar(exported["tflite"].path)
    assert meta is not None and meta.to_json() == tiny.meta.to_json()
    info = json.loads(exported["tflite"].sidecar.read_text())["export"]
    assert info["format"] == "tflite" and info["input_shape"] == [1, 1, 8, 8]
    assert info["parity"]["samples"] == 8
    assert read_sidecar(tmp_path / "bare.onnx") is None
    (tmp_path / "bad.onnx.json").write_text("{not json")
    with pytest.raises(EdgeoptError, match="not valid JSON"):
        read_sidecar(tmp_path / "bad.onnx")


def test_open_runner_exports_model_to_temporary_artifact(tiny: EdgeModel) -> None:
    runner = open_runner("onnxruntime", tiny, threads=1)
    tmpdir = Path(runner._tmpdir.name)
    assert runner.path is not None and runner.path.parent == tmpdir and runner.path.is_file()
    x = tiny.example_input(2).numpy()
    assert np.abs(runner.run(x) - torch_out(tiny, x)).max() <= 1e-4 * np.abs(torch_out(tiny, x)).max()
    runner.close()
    assert not tmpdir.exists()


def test_parity_failure_leaves_nothing_behind(tiny: EdgeModel, tmp_path: Path, monkeypatch) -> None:
    from edgeopt.runtimes.onnxruntime_runner import OnnxRuntimeRunner

    original = OnnxRuntimeRunner._from_runtime
    monkeypatch.setattr(OnnxRuntimeRunner, "_from_runtime", lambda self, y: original(self, y) + 0.01)
    out = tmp_path / "m.onnx"
    out.write_bytes(b"previous artifact")
    with pytest.raises(EdgeoptError, match=r"parity check failed for lenet5 .*max \|Δ\| 0\.01 >"):
        export_model(tiny, "onnx", out)
    assert out.read_bytes() == b"previous artifact"  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no temp file, no sidecar
    # the same difference within a looser tolerance passes: the check compares, it does not just fail
    result = export_model(tiny, "onnx", out, rtol=1.0)
    assert 0.009 < result.parity.max_abs_diff < 0.011 and out.stat().st_size > 1000


def test_ctrl_c_during_parity_leaves_nothing(tiny: EdgeModel, tmp_path: Path, monkeypatch) -> None:
    from edgeopt.runtimes.onnxruntime_runner import OnnxRuntimeRunner

    def interrupt(self, y):
        raise KeyboardInterrupt

    monkeypatch.setattr(OnnxRuntimeRunner, "_from_runtime", interrupt)
    with pytest.raises(KeyboardInterrupt):
        export_model(tiny, "onnx", tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_exporter_failure_is_one_clear_error(tiny: EdgeModel, tmp_path: Path, monkeypatch) -> None:
    from edgeopt.interop import export as export_mod

    def broken(module, x):
        print("exporter noise")
        raise RuntimeError("unsupported op aten::frobnicate")

    monkeypatch.setitem(export_mod._EXPORTERS, "onnx", broken)
    with pytest.raises(EdgeoptError, match="exporting lenet5 to onnx failed: unsupported op aten::frobnicate"):
        export_model(tiny, "onnx", tmp_path / "m")
    assert list(tmp_path.iterdir()) == []


def test_export_restores_training_mode(tiny: EdgeModel, tmp_path: Path) -> None:
    m = create_model("mlp")
    m.module.train()
    export_model(m, "onnx", tmp_path / "mlp.onnx", samples=2)
    assert m.module.training


def test_unknown_names_and_mismatches(tiny: EdgeModel, exported: dict[str, ExportResult], tmp_path: Path) -> None:
    with pytest.raises(EdgeoptError, match="unknown runtime 'tensorrt'.*torch, onnxruntime, executorch, litert"):
        open_runner("tensorrt", tiny)
    with pytest.raises(EdgeoptError, match="unknown export format 'coreml'.*onnx, pte, tflite"):
        export_model(tiny, "coreml", tmp_path / "m.mlmodel")
    with pytest.raises(EdgeoptError, match="does not end in .pte"):
        export_model(tiny, "pte", tmp_path / "m.onnx")
    with pytest.raises(EdgeoptError, match="cannot tell which runtime"):
        runtime_for_path("model.bin")
    with pytest.raises(EdgeoptError, match="is a onnxruntime artifact, not one for litert"):
        open_runner("litert", exported["onnx"].path)
    with pytest.raises(EdgeoptError, match="model file not found"):
        open_runner("onnxruntime", tmp_path / "missing.onnx")
    (tmp_path / "junk.tflite").write_bytes(b"not a flatbuffer")
    with pytest.raises(EdgeoptError, match="LiteRT cannot load"):
        open_runner("litert", tmp_path / "junk.tflite")
    assert list(tmp_path.iterdir()) == [tmp_path / "junk.tflite"]
    assert RUNTIMES == ("torch", "onnxruntime", "executorch", "litert")
    assert [runtime_for_path(f"m{s}") for s in (".onnx", ".pte", ".tflite", ".pt2", ".edgeopt")] == [
        "onnxruntime",
        "executorch",
        "litert",
        "torch",
        "torch",
    ]


def test_resnet8_parity_all_formats(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = create_model("resnet8")
    for fmt in FORMATS:
        r = export_model(model, fmt, tmp_path / f"resnet8{FORMATS[fmt]}", samples=4)
        assert r.parity.rel_diff <= 1e-4 and r.parity.top1_agreement == 1.0


# --- int8-interface LiteRT model, built by hand: int8 in -> DEQUANTIZE -> QUANTIZE -> int8 out ----


def _build_int8_tflite(path: Path, in_q: tuple[float, int], out_q: tuple[float, int], dynamic_batch: bool) -> None:
    import flatbuffers
    from tflite.BuiltinOperator import BuiltinOperator
    from tflite.TensorType import TensorType

    buf_m, model_m, op_m, code_m, qp_m, sg_m, tensor_m = (
        importlib.import_module(f"tflite.{n}")
        for n in ("Buffer", "Model", "Operator", "OperatorCode", "QuantizationParameters", "SubGraph", "Tensor")
    )
    b = flatbuffers.Builder(1024)

    def ints(start, vals):
        start(b, len(vals))
        for v in reversed(vals):
            b.PrependInt32(v)
        return b.EndVector()

    def offsets(start, vals):
        start(b, len(vals))
        for v in reversed(vals):
            b.PrependUOffsetTRelative(v)
        return b.EndVector()

    def tensor(name, ttype, buffer, q):
        qp = None
        if q is not None:
            qp_m.StartScaleVector(b, 1)
            b.PrependFloat32(q[0])
            scale = b.EndVector()
            qp_m.StartZeroPointVector(b, 1)
            b.PrependInt64(q[1])
            zero = b.EndVector()
            qp_m.Start(b)
            qp_m.AddScale(b, scale)
            qp_m.AddZeroPoint(b, zero)
            qp = qp_m.End(b)
        nm = b.CreateString(name)
        shape = ints(tensor_m.StartShapeVector, [1, 4])
        sig = ints(tensor_m.StartShapeSignatureVector, [-1, 4]) if dynamic_batch else None
        tensor_m.Start(b)
        tensor_m.AddShape(b, shape)
        if sig is not None:
            tensor_m.AddShapeSignature(b, sig)
        tensor_m.AddType(b, ttype)
        tensor_m.AddBuffer(b, buffer)
        tensor_m.AddName(b, nm)
        if qp is not None:
            tensor_m.AddQuantization(b, qp)
        return tensor_m.End(b)

    def operator(code_index, i, o):
        iv, ov = ints(op_m.StartInputsVector, [i]), ints(op_m.StartOutputsVector, [o])
        op_m.Start(b)
        op_m.AddOpcodeIndex(b, code_index)
        op_m.AddInputs(b, iv)
        op_m.AddOutputs(b, ov)
        return op_m.End(b)

    tensors = [tensor("in", TensorType.INT8, 1, in_q), tensor("mid", TensorType.FLOAT32, 2, None)]
    tensors.append(tensor("out", TensorType.INT8, 3, out_q))
    ops = [operator(0, 0, 1), operator(1, 1, 2)]
    tv, opv = offsets(sg_m.StartTensorsVector, tensors), offsets(sg_m.StartOperatorsVector, ops)
    siv, sov = ints(sg_m.StartInputsVector, [0]), ints(sg_m.StartOutputsVector, [2])
    name = b.CreateString("main")
    sg_m.Start(b)
    sg_m.AddTensors(b, tv)
    sg_m.AddOperators(b, opv)
    sg_m.AddInputs(b, siv)
    sg_m.AddOutputs(b, sov)
    sg_m.AddName(b, name)
    subgraph = sg_m.End(b)
    codes = []
    for code in (BuiltinOperator.DEQUANTIZE, BuiltinOperator.QUANTIZE):
        code_m.Start(b)
        code_m.AddDeprecatedBuiltinCode(b, min(code, 127))
        code_m.AddBuiltinCode(b, code)
        code_m.AddVersion(b, 1)
        codes.append(code_m.End(b))
    buffers = []
    for _ in range(4):
        buf_m.Start(b)
        buffers.append(buf_m.End(b))
    cv = offsets(model_m.StartOperatorCodesVector, codes)
    sgv = offsets(model_m.StartSubgraphsVector, [subgraph])
    bv = offsets(model_m.StartBuffersVector, buffers)
    model_m.Start(b)
    model_m.AddVersion(b, 3)
    model_m.AddOperatorCodes(b, cv)
    model_m.AddSubgraphs(b, sgv)
    model_m.AddBuffers(b, bv)
    b.Finish(model_m.End(b), file_identifier=b"TFL3")
    path.write_bytes(bytes(b.Output()))


@pytest.mark.parametrize("dynamic_batch", [False, True])
def test_litert_int8_interface_quantizes_and_dequantizes(tmp_path: Path, dynamic_batch: bool) -> None:
    path = tmp_path / "q.tflite"
    _build_int8_tflite(path, in_q=(0.5, -3), out_q=(0.25, 5), dynamic_batch=dynamic_batch)
    x = np.array([[0.0, 1.2, -2.6, 10.0], [3.0, 4.1, 200.0, -200.0], [0.26, 0.74, -0.74, 1.0]], np.float32)
    # input grid 0.5 (clipped to int8 range via zero point -3), output grid 0.25 exactly represents it
    q = np.clip(np.rint(x / 0.5) - 3, -128, 127)
    want = (q + 3) * 0.5
    want = np.clip(np.rint(want / 0.25) + 5, -128, 127)
    want = ((want - 5) * 0.25).astype(np.float32)
    with open_runner("litert", path, threads=1) as runner:
        assert runner.input_quant == (0.5, -3) and runner.output_quant == (0.25, 5)
        assert runner.fixed_batch == (None if dynamic_batch else 1)
        np.testing.assert_array_equal(runner.run(x), want)
        assert measure_latency(runner, x, 1, warmup=1, runs=5).p50_ms > 0


# --- pure functions ------------------------------------------------------------------------------


def test_compare_outputs() -> None:
    ref = np.array([[1.0, -2.0, 0.5], [0.0, 3.0, -4.0]])
    p = compare_outputs(ref, ref + np.array([[0.0, 0.0, 0.1], [0.0, 0.0, 0.0]]))
    assert p.max_abs_ref == 4.0 and abs(p.max_abs_diff - 0.1) < 1e-12 and abs(p.rel_diff - 0.025) < 1e-12
    assert p.top1_agreement == 1.0 and p.samples == 2
    assert p.ok(0.03) and not p.ok(0.02)
    flipped = compare_outputs(ref, ref[:, ::-1])
    assert flipped.top1_agreement == 0.5
    nan = compare_outputs(ref, np.full_like(ref, np.nan))
    assert nan.max_abs_diff == float("inf") and not nan.ok(1e9)
    with pytest.raises(EdgeoptError, match="shape"):
        compare_outputs(ref, ref[:1])


def test_latency_stats() -> None:
    s = latency_stats([1_000_000, 2_000_000, 3_000_000, 4_000_000, 100_000_000], threads=2, runtime="x")
    assert s.p50_ms == 3.0 and s.min_ms == 1.0 and s.runs == 5 and s.threads == 2
    assert abs(s.p90_ms - 61.6) < 1e-9 and abs(s.mean_ms - 22.0) < 1e-9
    with pytest.raises(EdgeoptError):
        latency_stats([], threads=1)
    # a quiet phase among contended ones: its median is the quiet figure; p50 stays the median of all calls
    phases = [2_000_000] * 40 + [1_000_000] * 10 + [2_000_000] * 50
    s = latency_stats(phases, threads=1)
    assert s.quiet_p50_ms == 1.0 and s.p50_ms == 2.0
    assert latency_stats([3_000_000], threads=1).quiet_p50_ms == 3.0


def test_quantize_round_trip() -> None:
    x = np.array([-1.0, 0.0, 0.26, 127.9, 1000.0, 0.25, 0.75], np.float32)
    q = quantize(x, 0.5, -128, np.dtype(np.int8))
    assert q.dtype == np.int8 and q.tolist() == [-128, -128, -127, 127, 127, -127, -126]  # ties away from 0
    assert dequantize(q, 0.5, -128).tolist() == [0.0, 0.0, 0.5, 127.5, 127.5, 0.5, 1.0]
    assert quantize(np.array([-0.25], np.float32), 0.5, 0, np.dtype(np.int8)).tolist() == [-1]


def test_canonical_array_fixes_size_one_strides() -> None:
    a = np.ascontiguousarray(np.zeros((1, 8, 8, 1), np.float32).transpose(0, 3, 1, 2))
    c = canonical_array(a)
    assert c.strides == (256, 256, 32, 4) and torch.from_numpy(c).stride() == (64, 64, 8, 1)
    b = np.zeros((2, 3), np.float32)
    assert canonical_array(b) is b


def test_quiet_output_captures_python_and_native_writes() -> None:
    with fd_capture() as outer, quiet_output() as log:
        print("python says hi")
        os.write(1, b"native stdout\n")
        os.write(2, b"native stderr\n")
    assert outer["text"] == ""
    assert "python says hi" in log.text and "native stdout" in log.text and "native stderr" in log.text
