"""Quantization acceptance: edgeopt int8 vs TFLite's own int8 model and peers, side by side in one run.

Model: the MLPerf Tiny ResNet-8 imported from ../shared/data/mlperf-tiny/resnet8_float32.tflite
(input 0..255). Calibration: N images drawn reproducibly from cifar10-jpg train. Accuracy: all 10,000
cifar10-jpg test images, measured inside each runtime. Latency: batch 1, 1 thread, interleaved rounds.

Rows:
- float: the .tflite in LiteRT; the imported model exported to ExecuTorch / LiteRT / ONNX Runtime fp32
- reference int8: resnet8_int8.tflite (TFLite's converter) in LiteRT
- edgeopt PTQ int8 for each calibration method (PyTorch simulation), the default recipe deployed to
  ExecuTorch (XNNPACK), LiteRT and ONNX Runtime, with top-1 agreement against the simulation
- peers: ORT quantize_static (MinMax, Entropy, Percentile; per-channel QDQ, opset 18), PT2E with the
  XNNPACK quantizer's default observers (-> ExecuTorch), NNCF PTQ on the float ONNX (-> ORT)
- graphs: the LiteRT op lists of the reference and edgeopt .tflite, and the ops ONNX Runtime runs
  for edgeopt's QDQ model after its graph optimizations (how many convs it fused)
- mixed precision (``--mixed``): per-layer int4 sensitivity and the int4/int8 mix, GPTQ-rounded,
  with round-to-nearest as control (see mixed.py)

Run: .venv/bin/python benchmarks/quantization.py [--mixed]   (about 11 minutes with --mixed on 2 cores
shared with a training job; studies not re-run are kept from the existing results file)
Writes benchmarks/results/quantization.json.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import RESULTS, interleaved_p50, machine_info, shared_path, write_result

from edgeopt.compress.quantize.ptq import QuantRecipe, calibration_batch, float_model, quantize_ptq
from edgeopt.data import load_dataset
from edgeopt.interop.export import export_model
from edgeopt.model import EdgeModel, load_model
from edgeopt.runtimes import open_runner, quiet_output
from edgeopt.train import evaluate

DEFAULT_CALIB = "entropy"
FLOAT_TFLITE = "mlperf-tiny/resnet8_float32.tflite"


class _Reader:
    """onnxruntime CalibrationDataReader over a float batch (one sample per call)."""

    def __init__(self, name: str, x: np.ndarray) -> None:
        self.name, self.x, self.i = name, x, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.i >= len(self.x):
            return None
        self.i += 1
        return {self.name: self.x[self.i - 1 : self.i]}

    def rewind(self) -> None:
        self.i = 0


def ort_quantize_static(float_onnx: Path, out: Path, x: np.ndarray, method: str) -> Path:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    with quiet_output():
        quantize_static(
            str(float_onnx), str(out), _Reader("input", x), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            calibrate_method=getattr(CalibrationMethod, method),
        )  # fmt: skip
    return out


def nncf_onnx(float_onnx: Path, out: Path, x: np.ndarray) -> Path:
    import nncf
    import onnx

    model = onnx.load(str(float_onnx))
    with quiet_output():
        q = nncf.quantize(model, nncf.Dataset([{"input": x[i : i + 1]} for i in range(len(x))]), subset_size=len(x))
    onnx.save(q, str(out))
    return out


def pt2e_default_pte(model: EdgeModel, xc: torch.Tensor, out: Path) -> Path:
    """PT2E + XNNPACKQuantizer with its default observers (HistogramObserver), lowered to ExecuTorch."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from edgeopt.compress.quantize.deploy import export_pte
    from edgeopt.compress.quantize.ptq import export_float, run_batches

    q = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(export_float(model.module, xc[:1]), q)
    run_batches(prepared, xc)
    with quiet_output():
        out.write_bytes(export_pte(convert_pt2e(prepared), model.example_input(1)))
    return out


def tflite_ops(path: Path) -> list[str]:
    """Operator names of a .tflite in execution order (delegate partitions listed as DELEGATE)."""
    from ai_edge_litert.interpreter import Interpreter

    with quiet_output():
        it = Interpreter(model_path=str(path), num_threads=1)
        it.allocate_tensors()
    return [op["op_name"] for op in it._get_ops_details()]


def ort_optimized_ops(path: Path, work: Path) -> dict[str, int]:
    """Op counts of the graph ONNX Runtime actually runs (its optimized model at session creation)."""
    from collections import Counter

    import onnx
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    so.optimized_model_filepath = str(work / f"{path.stem}.ort_optimized.onnx")
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return dict(Counter(n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node))


def resnet8_and_data(limit: int | None) -> tuple[EdgeModel, Any, Any]:
    """The imported MLPerf ResNet-8 (inputs 0..255), cifar10-jpg's train split and ``limit`` of its test images
    (all with ``None``), as every study here uses them."""
    spec = f"imagefolder:{shared_path('cifar10-jpg.zip')}"
    model = load_model(shared_path(FLOAT_TFLITE), input_range=(0, 255))
    return model, load_dataset(spec, "train"), load_dataset(spec, "test").take(limit, seed=0)


def latency_check(calib_samples: int, rounds: int) -> dict[str, Any]:
    """Latency only (minutes): TFLite's int8 reference and edgeopt's default int8 model in each runtime,
    plus each runtime's fp32 artifact, batch 1, 1 thread, ``rounds`` interleaved rounds. For a re-run
    on a quiet machine; kept apart from the main table (whose rows all come from one run)."""
    tflite_f = shared_path(FLOAT_TFLITE)
    tflite_q = shared_path("mlperf-tiny/resnet8_int8.tflite")
    model = load_model(tflite_f, input_range=(0, 255))
    train = load_dataset(f"imagefolder:{shared_path('cifar10-jpg.zip')}", "train")
    work = Path(tempfile.mkdtemp(prefix="edgeopt-qlat-"))
    q = quantize_ptq(model, train, QuantRecipe(calib=DEFAULT_CALIB, calib_samples=calib_samples))
    runners: dict[str, Any] = {"TFLite int8 reference (LiteRT)": open_runner("litert", tflite_q, threads=1)}
    for fmt in ("pte", "tflite", "onnx"):
        r = export_model(q, fmt, work / f"edgeopt_int8.{fmt}")
        runners[f"edgeopt int8 {r.runtime}"] = open_runner(r.runtime, r.path, threads=1)
        f = export_model(model, fmt, work / f"float.{fmt}")
        runners[f"float {f.runtime}"] = open_runner(f.runtime, f.path, threads=1)
    x = model.example_input(1).numpy()
    load_before = list(os.getloadavg())
    lat = interleaved_p50(runners, {k: x for k in runners}, rounds=rounds)
    for r in runners.values():
        r.close()
    ref = lat["TFLite int8 reference (LiteRT)"]["p50_ms"]
    rows = {k: {"p50_ms": v["p50_ms"], "p90_ms": v["p90_ms"], "ratio_to_tflite_int8": v["p50_ms"] / ref}
            for k, v in lat.items()}  # fmt: skip
    for rt in ("executorch", "litert", "onnxruntime"):
        rows[f"edgeopt int8 {rt}"]["speedup_vs_same_runtime_fp32"] = (
            lat[f"float {rt}"]["p50_ms"] / lat[f"edgeopt int8 {rt}"]["p50_ms"]
        )
    for k, v in rows.items():
        print(f"  {k:<34} {1000 * v['p50_ms']:7.1f} µs  {v['ratio_to_tflite_int8']:.3f}× TFLite int8")
    return {"rows": rows, "rounds": rounds, "threads": 1, "load_average_before": load_before,
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}  # fmt: skip


def onnx_clip_only(qdq_onnx: Path, out: Path, clip: bool = True) -> Path:
    """The float control of a QDQ model: each per-tensor activation QuantizeLinear->DequantizeLinear pair
    replaced by ``Clip`` to its quantization range, weights dequantized and biases as they are (no
    activation rounding). ``clip=False``: no activation clipping either (the model's weights and biases
    alone). For NNCF's model: what its ranges and its corrected biases do to the float model."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.load(str(qdq_onnx))
    g = m.graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    consumers: dict[str, list[Any]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    removed, clips = [], []
    for n in g.node:
        if n.op_type != "QuantizeLinear" or n.input[0] in inits or inits.get(n.input[1], np.zeros(2)).size != 1:
            continue
        scale, zp = float(inits[n.input[1]]), inits[n.input[2]]
        info = np.iinfo(zp.dtype)
        lo, hi = scale * (info.min - int(zp)), scale * (info.max - int(zp))
        if not clip:
            lo, hi = -3.0e38, 3.0e38
        g.initializer.extend([numpy_helper.from_array(np.array(lo, np.float32), n.output[0] + "_lo"),
                              numpy_helper.from_array(np.array(hi, np.float32), n.output[0] + "_hi")])  # fmt: skip
        for dq in consumers.get(n.output[0], []):
            clips.append(
                helper.make_node("Clip", [n.input[0], n.output[0] + "_lo", n.output[0] + "_hi"], [dq.output[0]])
            )
            removed.append(dq)
        removed.append(n)
    for n in removed:
        g.node.remove(n)
    known = {i.name for i in g.input} | set(inits) | {n.output[0] + s for n in removed for s in ("_lo", "_hi")}
    todo, ordered = list(g.node) + clips, []
    while todo:  # topological order again (a Clip replaces a DequantizeLinear in place)
        ready = [n for n in todo if all(not i or i in known for i in n.input)]
        if not ready:
            raise RuntimeError("clip-only graph has a cycle or an unknown input")
        for n in ready:
            ordered.append(n)
            todo.remove(n)
            known.update(n.output)
    del g.node[:]
    g.node.extend(ordered)
    onnx.save(m, str(out))
    return out


# the recipes of the issue-16 study: name -> QuantRecipe fields (entropy ranges, empirical bias correction
# unless named). meanmax = NNCF's activation ranges; fast = NNCF's fast bias correction (``fastbias``)
ISSUE16_VARIANTS = {
    "edgeopt int8 (default)": {},
    "edgeopt int8 meanmax + fast BC (NNCF's recipe)": {"calib": "meanmax", "bias_method": "fast"},
    "edgeopt int8 meanmax + fast+empirical BC": {"calib": "meanmax", "bias_method": "fast+empirical"},
    "edgeopt int8 entropy + fast+empirical BC": {"bias_method": "fast+empirical"},
}
# ONNX Runtime only (``--only nncf``): NNCF's recipe with float ops. ``logits``: the classifier and softmax
# float, the graph ONNX Runtime runs for NNCF's model; ``add``: the adds and everything after them up to
# the next quantized op (ReLU, pads, pool) float too; ``pool``: the pooled features get their own range
# (as NNCF's), the pool itself running as ORT's QLinearAveragePool; ``softmax``: the softmax alone float, on the
# int8 logits (one DequantizeLinear + Softmax where the full-integer graph has QLinearSoftmax and its output)
_MEANMAX = {"calib": "meanmax"}
ISSUE16_ORT_FLOAT: dict[str, dict[str, Any]] = {
    f"edgeopt int8 meanmax + {bc} BC, float {ops}": {**_MEANMAX, "bias_method": bc, "float_ops": ops.split("+")}
    for ops in ("logits", "add+logits", "pool", "pool+softmax")
    for bc in ("fast", "fast+empirical")
}
# ONNX op types a float_op_names label stands for (to check a report against the graph ONNX Runtime runs)
_ORT_FLOAT_LABELS = {"Gemm": "linear", "MatMul": "linear", "Conv": "conv", "Add": "add", "Relu": "relu",
                     "Pad": "pad", "AveragePool": "avg_pool", "GlobalAveragePool": "mean", "Softmax": "softmax",
                     "Clip": "clamp", "Sigmoid": "sigmoid", "Mul": "mul"}  # fmt: skip
_ORT_NOT_COMPUTE = {"QuantizeLinear", "DequantizeLinear", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze",
                    "ReorderInput", "ReorderOutput"}  # fmt: skip


def ort_float_compute(ops: dict[str, int]) -> list[str]:
    """The op types of ONNX Runtime's executed graph (``ort_optimized_ops``) that compute in float."""
    return sorted(k for k in ops if k not in _ORT_NOT_COMPUTE and not k.startswith("Q"))  # QLinear*, QGemm


def report_covers(report: list[str], ort_float: list[str]) -> bool:
    """Whether a model report's float-op list (``float_op_names``) names every float op type ONNX Runtime
    runs (an empty report must mean a graph without float compute)."""
    return all(any(_ORT_FLOAT_LABELS.get(op, op.lower()) in label for label in report) for op in ort_float)


def accuracy_study(calib_samples: int, rounds: int, limit: int | None) -> dict[str, Any]:
    """Issue 16 (``--only accuracy``): the new PTQ options side by side with NNCF and TFLite's int8, one run.

    Rows (accuracy on the test images inside each runtime, p50 at batch 1, 1 thread, interleaved):
    float in each runtime, TFLite's int8, NNCF PTQ (ORT), and each ``ISSUE16_VARIANTS`` recipe in
    ExecuTorch, LiteRT and ONNX Runtime (full integer), plus ``ISSUE16_ORT_FLOAT`` in ONNX Runtime.
    Controls, to split a gain into domain adaptation and quantization: per recipe the float model with
    that recipe's activation clipping and no rounding (``controls.clipped_float``, PyTorch) and with
    its bias-corrected weights; NNCF's activation ranges given to the float ONNX model
    (``onnx_clip_only``, in ORT). AdaBN alignment needs batch norms, which the imported ResNet-8 has
    folded away: recorded as not applicable, with the error it gives.
    """
    from edgeopt.compress.quantize.align import adabn
    from edgeopt.compress.quantize.controls import clipped_float
    from edgeopt.compress.quantize.targets import tflite_report
    from edgeopt.errors import EdgeoptError

    tflite_f = shared_path(FLOAT_TFLITE)
    tflite_q = shared_path("mlperf-tiny/resnet8_int8.tflite")
    model, train, test = resnet8_and_data(limit)
    work = Path(tempfile.mkdtemp(prefix="edgeopt-q16-"))
    acc: dict[str, float] = {}
    runners: dict[str, Any] = {}
    out: dict[str, Any] = {"variants": {}, "float_ops": {}}

    def run_eval(key: str, runner: Any) -> None:
        acc[key] = evaluate(model.meta, test, predict=runner.run).accuracy
        runners[key] = runner
        print(f"  {key:<48} {100 * acc[key]:6.2f}%", flush=True)

    run_eval("float tflite (LiteRT)", open_runner("litert", tflite_f, threads=1))
    run_eval("TFLite int8 reference (LiteRT)", open_runner("litert", tflite_q, threads=1))
    float_paths = {}
    for fmt in ("pte", "tflite", "onnx"):
        r = export_model(model, fmt, work / f"float.{fmt}")
        float_paths[fmt] = r.path
        run_eval(f"float {r.runtime}", open_runner(r.runtime, r.path, threads=1))
    float_sim = evaluate(model, test).accuracy
    try:
        adabn(copy.deepcopy(model.module), calibration_batch(model, train, 8, 0))
        out["adabn"] = "applicable"
    except EdgeoptError as e:
        out["adabn"] = f"not applicable: {e}"
    for name, fields in {**ISSUE16_VARIANTS, **ISSUE16_ORT_FLOAT}.items():
        try:
            t0 = time.perf_counter()
            q = quantize_ptq(model, train, QuantRecipe(calib_samples=calib_samples, **fields))
            secs = time.perf_counter() - t0
            sim = evaluate(q, test).accuracy
            clip = evaluate(EdgeModel(clipped_float(q.module), model.meta), test).accuracy
            bcw = evaluate(float_model(q), test).accuracy
            fast = None
            if fields.get("bias_method", "empirical").startswith("fast"):
                # the float control of a fast recipe: the float model with the fast shifts alone (they change
                # it), and with them and the ranges; the empirical shifts only undo rounding, so not in it
                qf = quantize_ptq(model, train, QuantRecipe(calib_samples=calib_samples,
                                                            **{**fields, "bias_method": "fast"}))  # fmt: skip
                fast = evaluate(float_model(qf), test).accuracy
                clip = evaluate(EdgeModel(clipped_float(qf.module), model.meta), test).accuracy
            row = {"recipe": fields, "ptq_seconds": round(secs, 2), "sim_accuracy": sim,
                   "control_float_clipped": clip, "control_float_corrected_biases": bcw,
                   "control_float_fast_biases": fast,
                   "domain_gain_points": 100 * (clip - float_sim), "quantization_gain_points": 100 * (sim - clip),
                   "float_ops_program": q.meta.lineage[-1]["metrics"].get("float_ops", [])}  # fmt: skip
            out["variants"][name] = row
            print(f"  {name}: sim {100 * sim:.2f}%  float+clip {100 * clip:.2f}%  float+bc {100 * bcw:.2f}%  "
                  f"float+fast bc {'-' if fast is None else f'{100 * fast:.2f}%'}  "
                  f"PTQ {secs:.1f} s  float ops {row['float_ops_program']}", flush=True)  # fmt: skip
            fmts = ("onnx",) if name in ISSUE16_ORT_FLOAT else ("pte", "tflite", "onnx")
            for fmt in fmts:
                r = export_model(q, fmt, work / f"{len(out['variants'])}.{fmt}")
                run_eval(f"{name} {r.runtime}", open_runner(r.runtime, r.path, threads=1))
                if fmt == "tflite":
                    out["float_ops"][f"{name} {r.runtime}"] = tflite_report(r.path)["float_ops"]
                if fmt == "onnx":
                    out["float_ops"][f"{name} {r.runtime}"] = ort_optimized_ops(r.path, work)
        except Exception as e:  # one broken recipe must not lose the other rows of the run
            out["variants"][name] = {"recipe": fields, "error": f"{type(e).__name__}: {e}"}
            print(f"  {name}: FAILED {type(e).__name__}: {e}", flush=True)
    xn = calibration_batch(model, train, calib_samples, 0).numpy()
    try:
        t0 = time.perf_counter()
        p = nncf_onnx(float_paths["onnx"], work / "nncf.onnx", xn)
        out["nncf_ptq_seconds"] = round(time.perf_counter() - t0, 2)
        run_eval("NNCF PTQ (ORT)", open_runner("onnxruntime", p, threads=1))
        out["float_ops"]["NNCF PTQ (ORT)"] = ort_optimized_ops(p, work)
        c = onnx_clip_only(p, work / "nncf_clip_only.onnx")
        with open_runner("onnxruntime", c, threads=1) as run:
            out["control_float_with_nncf_ranges_ort"] = evaluate(model.meta, test, predict=run.run).accuracy
        print(f"  float with NNCF's ranges and biases (ORT): {100 * out['control_float_with_nncf_ranges_ort']:.2f}%")
        c = onnx_clip_only(p, work / "nncf_no_clip.onnx", clip=False)
        with open_runner("onnxruntime", c, threads=1) as run:
            out["control_float_with_nncf_biases_no_clip_ort"] = evaluate(model.meta, test, predict=run.run).accuracy
        print(f"  float with NNCF's biases, no clipping (ORT): "
              f"{100 * out['control_float_with_nncf_biases_no_clip_ort']:.2f}%")  # fmt: skip
    except ImportError:
        print("  NNCF not installed (pip install -e .[bench]): skipped")
    x = model.example_input(1).numpy()
    print(f"latency (1 thread, {rounds} interleaved rounds, {len(runners)} artifacts)", flush=True)
    lat = interleaved_p50(runners, {k: x for k in runners}, rounds=rounds)
    for r in runners.values():
        r.close()
    out["rows"] = {k: {"accuracy": acc[k], "p50_ms": v["p50_ms"], "p90_ms": v["p90_ms"],
                       "p50_ms_per_round": v["p50_ms_per_round"]} for k, v in lat.items()}  # fmt: skip
    out["float_sim_accuracy"] = float_sim
    out["samples"] = len(test)
    out["calib_samples"] = calib_samples
    out["date"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    out["machine"] = machine_info()  # this study's own machine (the file's top-level one is the main table's)
    for k, v in out["rows"].items():
        print(f"  {k:<48} {100 * v['accuracy']:6.2f}%  {1000 * v['p50_ms']:7.1f} µs")
    return out


def ort_study(calib_samples: int, rounds: int, limit: int | None) -> dict[str, Any]:
    """Issue 16 (``--only nncf``): edgeopt against NNCF PTQ in ONNX Runtime alone, one run (minutes).

    Rows (accuracy on the test images in ORT, p50 at batch 1, 1 thread, ``rounds`` interleaved rounds):
    float, NNCF PTQ, edgeopt's default recipe, NNCF's recipe in edgeopt (meanmax ranges + fast bias
    correction, alone and followed by the empirical one) full integer and with ``ISSUE16_ORT_FLOAT``'s
    float ops. Per edgeopt artifact: its report's float ops (``lineage.metrics.float_ops``), the op types
    ORT runs in float, and whether the first names every one of the second. Also plain PTQ time with the
    default recipe (wall and CPU seconds, the first PTQ of the process and a second one).
    """
    model, train, test = resnet8_and_data(limit)
    work = Path(tempfile.mkdtemp(prefix="edgeopt-qort-"))
    out: dict[str, Any] = {"ptq_time_default_recipe": [], "variants": {}}
    for _ in range(2):  # plain PTQ's time: the process's first (torch.export warms up) and a second
        t0, c0 = time.perf_counter(), time.process_time()
        default_q = quantize_ptq(model, train, QuantRecipe(calib_samples=calib_samples))
        out["ptq_time_default_recipe"].append({"wall_s": round(time.perf_counter() - t0, 2),
                                               "cpu_s": round(time.process_time() - c0, 2)})  # fmt: skip
    out["torch_threads"] = torch.get_num_threads()
    print("  plain PTQ (default recipe):", out["ptq_time_default_recipe"], flush=True)
    acc: dict[str, float] = {}
    runners: dict[str, Any] = {}

    def run_eval(key: str, path: Path) -> None:
        runners[key] = open_runner("onnxruntime", path, threads=1)
        acc[key] = evaluate(model.meta, test, predict=runners[key].run).accuracy
        print(f"  {key:<56} {100 * acc[key]:6.2f}%", flush=True)

    run_eval("float", export_model(model, "onnx", work / "float.onnx").path)
    xn = calibration_batch(model, train, calib_samples, 0).numpy()
    t0 = time.perf_counter()
    nncf_path = nncf_onnx(work / "float.onnx", work / "nncf.onnx", xn)
    out["nncf_ptq_seconds"] = round(time.perf_counter() - t0, 2)
    run_eval("NNCF PTQ", nncf_path)
    out["nncf_ort_float_ops"] = ort_float_compute(ort_optimized_ops(nncf_path, work))
    variants = {"edgeopt int8 (default)": {}, **{k: v for k, v in ISSUE16_VARIANTS.items() if "meanmax" in k},
                **ISSUE16_ORT_FLOAT}  # fmt: skip
    for i, (name, fields) in enumerate(variants.items()):
        t0 = time.perf_counter()
        q = default_q if not fields else quantize_ptq(model, train, QuantRecipe(calib_samples=calib_samples, **fields))
        secs = time.perf_counter() - t0
        r = export_model(q, "onnx", work / f"v{i}.onnx")
        run_eval(name, r.path)
        report = q.meta.lineage[-1]["metrics"]["float_ops"]
        ort_ops = ort_optimized_ops(r.path, work)
        ort_float = ort_float_compute(ort_ops)
        out["variants"][name] = {"recipe": fields, "ptq_seconds": round(secs, 2),
                                 "sim_accuracy": evaluate(q, test).accuracy, "report_float_ops": report,
                                 "ort_ops": ort_ops, "ort_float_ops": ort_float,
                                 "report_lists_every_ort_float_op": report_covers(report, ort_float)}  # fmt: skip
        print(f"    report float ops {report}; ORT runs in float {ort_float}", flush=True)
    out["load_average_before_latency"] = list(os.getloadavg())
    x = model.example_input(1).numpy()
    lat = interleaved_p50(runners, {k: x for k in runners}, rounds=rounds)
    out["load_average_after_latency"] = list(os.getloadavg())
    for r in runners.values():
        r.close()
    nncf, nncf_rounds = lat["NNCF PTQ"]["p50_ms"], lat["NNCF PTQ"]["p50_ms_per_round"]
    out["rows"] = {k: {"accuracy": acc[k], "points_vs_nncf": 100 * (acc[k] - acc["NNCF PTQ"]), "p50_ms": v["p50_ms"],
                       "p90_ms": v["p90_ms"], "ratio_to_nncf": v["p50_ms"] / nncf,
                       # the median of each round's own ratio: load that comes and goes between rounds cancels
                       "ratio_to_nncf_paired": statistics.median(
                           a / b for a, b in zip(v["p50_ms_per_round"], nncf_rounds, strict=True)),
                       "p50_ms_per_round": v["p50_ms_per_round"]}
                   for k, v in lat.items()}  # fmt: skip
    out["samples"] = len(test)
    out["calib_samples"] = calib_samples
    out["rounds"] = rounds
    out["date"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    out["machine"] = machine_info()
    for k, v in out["rows"].items():
        print(f"  {k:<56} {100 * v['accuracy']:6.2f}% ({v['points_vs_nncf']:+.2f})  {1000 * v['p50_ms']:7.1f} µs "
              f"({v['ratio_to_nncf']:.3f}× NNCF, paired {v['ratio_to_nncf_paired']:.3f}×)")  # fmt: skip
    return out


INT4_MIX = {"mods.conv2d_4": 4, "mods.conv2d_6": 4, "mods.conv2d_7": 4}  # the 2026-11-25 --mixed allocation
INT4_ROUNDINGS = ("nearest", "gptq", "adaround", "brecq")


def int4_study(calib_samples: int, limit: int | None, rounding_seconds: float, long_seconds: float = 0.0,
               seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """Issue 16 (``--only int4``): the 4-bit weight mix under each rounding, side by side in one run.

    The mix is the one the ``--mixed`` study allocated at a 60% budget (``INT4_MIX``: conv2d_4/6/7 at
    4 bits, 58.3% of the int8 weight bytes packed); entropy ranges, bias correction, ``calib_samples``
    images. Rows: float, int8, and the mix with round-to-nearest, GPTQ (the 2026-11-25 figure),
    AdaRound and BRECQ/QDrop block reconstruction on its 4-bit layers (``rounding_seconds`` each;
    ``long_seconds`` > 0 adds a BRECQ row with that longer budget, to see what more steps buy; ``seed``
    draws other calibration images and minibatches, to replicate);
    accuracy in PyTorch simulation and in ONNX Runtime, PTQ wall time, and whether the 4-bit layers'
    weights are on their integer grid. No latencies (int4 convs run as int8 everywhere).
    """
    from edgeopt.compress.quantize.mixed import quant_layers, weight_bytes
    from edgeopt.compress.quantize.ptq import weight_grid

    model, train, test = resnet8_and_data(limit)
    work = Path(tempfile.mkdtemp(prefix="edgeopt-int4-"))
    numels = quant_layers(model.module)
    packed = {"int8": weight_bytes(numels), "mix": weight_bytes(numels, INT4_MIX)}
    out: dict[str, Any] = {"mix": INT4_MIX, "packed_weight_bytes": packed,
                           "mix_fraction_of_int8": packed["mix"] / packed["int8"], "rows": {}}  # fmt: skip
    out["float_sim_accuracy"] = f = evaluate(model, test).accuracy
    print(f"  float {100 * f:.2f}%  mix {packed['mix']} / {packed['int8']} B", flush=True)
    recipes = {"int8": QuantRecipe(calib_samples=calib_samples, seed=seed)}
    for r in INT4_ROUNDINGS:
        recipes[f"mix {r}"] = QuantRecipe(calib_samples=calib_samples, layer_bits=dict(INT4_MIX), weight_rounding=r,
                                          rounding_seconds=rounding_seconds, seed=seed)  # fmt: skip
    if long_seconds > 0:
        recipes["mix brecq long"] = QuantRecipe(calib_samples=calib_samples, layer_bits=dict(INT4_MIX),
                                                weight_rounding="brecq", rounding_seconds=long_seconds,
                                                seed=seed)  # fmt: skip
    for name, recipe in recipes.items():
        t0, c0 = time.perf_counter(), time.process_time()
        q = quantize_ptq(model, train, recipe)
        secs, cpu = time.perf_counter() - t0, time.process_time() - c0
        sim = evaluate(q, test).accuracy
        r = export_model(q, "onnx", work / f"{name.replace(' ', '_')}.onnx")
        with open_runner(r.runtime, r.path, threads=1) as run:
            ort = evaluate(model.meta, test, predict=run.run).accuracy
        grid = weight_grid(q.module)
        low = [k for k in INT4_MIX if recipe.weight_rounding != "nearest"]  # nearest rounds in convert: no grid here
        off = max((float((grid[k] - grid[k].round()).abs().max()) for k in low), default=None)
        top = max((float(grid[k].round().abs().max()) for k in low), default=None)
        metrics = q.meta.lineage[-1]["metrics"]
        out["rows"][name] = {"rounding": recipe.weight_rounding, "ptq_seconds": round(secs, 2),
                             "ptq_cpu_seconds": round(cpu, 2), "sim_accuracy": sim,
                             "drop_points_sim": 100 * (f - sim), "ort_accuracy": ort,
                             "drop_points_ort": 100 * (f - ort),
                             "int4_max_off_grid": off, "int4_max_abs_integer": top,
                             "brecq_blocks": metrics.get("brecq_blocks")}  # fmt: skip
        print(f"  {name:<14} sim {100 * sim:6.2f}% ({100 * (sim - f):+.2f})  ORT {100 * ort:6.2f}%  "
              f"PTQ {secs:6.1f} s  off-grid {off}  |q|max {top}", flush=True)  # fmt: skip
    out["samples"] = len(test)
    out["standard_error_points"] = 100 * float(np.sqrt(0.75 * 0.25 / len(test)))
    out["calib_samples"] = calib_samples
    out["rounding_seconds"] = rounding_seconds
    out["long_seconds"] = long_seconds
    out["seed"] = seed
    out["date"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    out["machine"] = machine_info()
    out["timing_note"] = "PTQ wall and CPU seconds on a shared 2-core machine (load_average: others' jobs)"
    out["torch_threads"] = torch.get_num_threads()
    return out


def zoo_study(epochs: int = 6) -> dict[str, Any]:
    """Zoo models on digits (offline, minutes): PTQ vs QAT at int4, CLE on MobileNetV2, DS-CNN int8.

    Every figure is on the digits test split; "executorch" rows run the exported .pte.
    """
    from edgeopt.compress.quantize.qat import QATConfig, quantize_qat
    from edgeopt.models import create_model
    from edgeopt.train import FitConfig, fit, seed_everything

    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    work = Path(tempfile.mkdtemp(prefix="edgeopt-qzoo-"))
    out: dict[str, Any] = {}

    def et_accuracy(q: EdgeModel, name: str) -> float:
        r = export_model(q, "pte", work / f"{name}.pte")
        with open_runner("executorch", r.path, threads=1) as run:
            return evaluate(q.meta, test, predict=run.run).accuracy

    seed_everything(0)
    r8 = create_model("resnet8", input_shape=(1, 8, 8), num_classes=10)
    r8, _ = fit(r8, train, FitConfig(epochs=epochs, batch_size=64, seed=0))
    int4 = QuantRecipe(calib="entropy", calib_samples=500, weight_bits=4, weight_method="mse")
    t0 = time.perf_counter()
    q_ptq4 = quantize_ptq(r8, train, int4)
    q_qat4 = quantize_qat(r8, train, int4, QATConfig(epochs=2, distill=True))
    out["resnet8_int4_weights"] = {
        "float": evaluate(r8, test).accuracy,
        "ptq_int4_sim": evaluate(q_ptq4, test).accuracy,
        "qat_int4_sim": evaluate(q_qat4, test).accuracy,
        "qat_int4_executorch": et_accuracy(q_qat4, "r8_qat4"),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print("  resnet8 int4 weights:", out["resnet8_int4_weights"], flush=True)

    seed_everything(0)
    mb = create_model("mobilenetv2", input_shape=(1, 8, 8), num_classes=10)
    mb, _ = fit(mb, train, FitConfig(epochs=epochs, batch_size=64, seed=0))
    row: dict[str, Any] = {"float": evaluate(mb, test).accuracy}
    for cle in (False, True):
        rec = QuantRecipe(calib="entropy", calib_samples=500, cle=cle, cle_through_relu6=True, bias_correction=False)
        q = quantize_ptq(mb, train, rec)
        tag = "with_cle" if cle else "without_cle"
        row[f"int8_sim_{tag}"] = evaluate(q, test).accuracy
        row[f"int8_executorch_{tag}"] = et_accuracy(q, f"mbv2_{tag}")
        if cle:
            row["float_after_cle"] = evaluate(float_model(q), test).accuracy
            row["cle_pairs"] = q.meta.lineage[-1]["metrics"].get("cle_pairs")
    out["mobilenetv2_cle"] = row
    print("  mobilenetv2:", row, flush=True)

    seed_everything(0)
    ds = create_model("dscnn", input_shape=(1, 8, 8), num_classes=10)
    ds, _ = fit(ds, train, FitConfig(epochs=epochs, batch_size=64, seed=0))
    q = quantize_ptq(ds, train, QuantRecipe(calib="entropy", calib_samples=500))
    out["dscnn_int8"] = {"float": evaluate(ds, test).accuracy, "int8_sim": evaluate(q, test).accuracy,
                         "int8_executorch": et_accuracy(q, "dscnn")}  # fmt: skip
    print("  dscnn:", out["dscnn_int8"], flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=None, help="test images (default: all 10,000)")
    ap.add_argument("--calib-samples", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved latency rounds")
    ap.add_argument("--no-peers", action="store_true", help="skip ORT/PT2E/NNCF peers")
    ap.add_argument("--mixed", action="store_true", help="also run the int4 mixed-precision study")
    ap.add_argument("--zoo", action="store_true", help="also run the digits zoo study (QAT int4, CLE, DS-CNN)")
    ap.add_argument("--rounding-seconds", type=float, default=45.0, help="AdaRound/BRECQ time budget (--only int4)")
    ap.add_argument("--long-seconds", type=float, default=0.0, help="also a BRECQ row with this budget (--only int4)")
    ap.add_argument("--seed", type=int, default=0, help="calibration draw (--only int4; not 0: stored apart)")
    ap.add_argument("--only", choices=["mixed", "zoo", "latency", "accuracy", "int4", "nncf"],
                    help="run just that study (merged into the results file); latency: the int8 latency "
                         "check alone (reference vs edgeopt in each runtime, and their fp32), no accuracy; "
                         "accuracy: issue 16's rows alone (new PTQ options, their float controls, NNCF, "
                         "float, TFLite int8); int4: the 4-bit mix under nearest / GPTQ / AdaRound / BRECQ "
                         "rounding (accuracy only); nncf: edgeopt against NNCF in ONNX Runtime alone "
                         "(NNCF's recipe, full integer and with float ops) and plain PTQ's time")  # fmt: skip
    args = ap.parse_args()

    t_start = time.perf_counter()
    if args.only:
        _only(args)
        return
    tflite_f = shared_path(FLOAT_TFLITE)
    tflite_q = shared_path("mlperf-tiny/resnet8_int8.tflite")
    model, train, test = resnet8_and_data(args.limit)
    work = Path(tempfile.mkdtemp(prefix="edgeopt-qbench-"))
    acc: dict[str, Any] = {}
    preds: dict[str, np.ndarray] = {}
    runners: dict[str, Any] = {}
    sizes: dict[str, int] = {}

    def run_eval(key: str, runner: Any) -> None:
        e = evaluate(model.meta, test, predict=runner.run)
        acc[key], preds[key] = e.accuracy, e.predictions
        runners[key] = runner
        print(f"  {key:<34} {100 * e.accuracy:6.2f}%", flush=True)

    print("float and reference int8")
    run_eval("float tflite (LiteRT)", open_runner("litert", tflite_f, threads=1))
    run_eval("TFLite int8 reference (LiteRT)", open_runner("litert", tflite_q, threads=1))
    sizes["TFLite int8 reference (LiteRT)"] = tflite_q.stat().st_size
    float_paths = {}
    for fmt in ("pte", "tflite", "onnx"):
        r = export_model(model, fmt, work / f"float.{fmt}")
        float_paths[fmt] = r.path
        sizes[f"float {r.runtime}"] = r.size_bytes
        run_eval(f"float {r.runtime}", open_runner(r.runtime, r.path, threads=1))

    print(f"edgeopt PTQ ({args.calib_samples} calibration images)")
    ptq_info: dict[str, Any] = {}
    sim: dict[str, float] = {}
    default_q = None
    for calib in ("minmax", "percentile", "entropy", "mse"):
        t0 = time.perf_counter()
        q = quantize_ptq(model, train, QuantRecipe(calib=calib, calib_samples=args.calib_samples))
        secs = time.perf_counter() - t0
        e = evaluate(q, test)
        sim[calib] = e.accuracy
        preds[f"sim {calib}"] = e.predictions
        ptq_info[calib] = {"ptq_seconds": round(secs, 2), "sim_accuracy": e.accuracy}
        print(f"  sim {calib:<30} {100 * e.accuracy:6.2f}%   (PTQ {secs:.1f} s)", flush=True)
        if calib == DEFAULT_CALIB:
            default_q = q
    assert default_q is not None
    # controls: without bias correction, and the float model carrying the bias-corrected weights
    q_nobc = quantize_ptq(model, train, QuantRecipe(calib=DEFAULT_CALIB, calib_samples=args.calib_samples,
                                                    bias_correction=False))  # fmt: skip
    sim[f"{DEFAULT_CALIB} without bias correction"] = evaluate(q_nobc, test).accuracy
    controls = {"float_with_bias_corrected_weights": evaluate(float_model(default_q), test).accuracy}
    print(
        f"  sim {DEFAULT_CALIB} without bias correction  {100 * sim[f'{DEFAULT_CALIB} without bias correction']:6.2f}%"
    )
    print(f"  float with the corrected biases      {100 * controls['float_with_bias_corrected_weights']:6.2f}%")
    parity = {}
    for fmt in ("pte", "tflite", "onnx"):
        r = export_model(default_q, fmt, work / f"edgeopt_int8.{fmt}")
        key = f"edgeopt int8 {r.runtime}"
        sizes[key] = r.size_bytes
        run_eval(key, open_runner(r.runtime, r.path, threads=1))
        parity[r.runtime] = {
            "top1_agreement_with_sim_test": float((preds[key] == preds[f"sim {DEFAULT_CALIB}"]).mean()),
            "export_parity": r.parity.__dict__,
        }

    graphs = {
        "tflite_ops_reference_int8": tflite_ops(tflite_q),
        "tflite_ops_edgeopt_int8": tflite_ops(work / "edgeopt_int8.tflite"),
        "onnxruntime_ops_edgeopt_int8": ort_optimized_ops(work / "edgeopt_int8.onnx", work),
    }
    print("  LiteRT ops, reference:", " ".join(graphs["tflite_ops_reference_int8"]))
    print("  LiteRT ops, edgeopt:  ", " ".join(graphs["tflite_ops_edgeopt_int8"]))
    print("  ORT ops run, edgeopt: ", graphs["onnxruntime_ops_edgeopt_int8"])

    if not args.no_peers:
        print("peers")
        xc = calibration_batch(model, train, args.calib_samples, 0)
        xn = xc.numpy()
        for method in ("MinMax", "Entropy", "Percentile"):
            t0 = time.perf_counter()
            p = ort_quantize_static(float_paths["onnx"], work / f"ort_{method}.onnx", xn, method)
            key = f"ORT quantize_static {method}"
            sizes[key] = p.stat().st_size
            run_eval(key, open_runner("onnxruntime", p, threads=1))
            ptq_info[key] = {"ptq_seconds": round(time.perf_counter() - t0, 2)}
        t0 = time.perf_counter()
        p = pt2e_default_pte(model, xc, work / "pt2e_default.pte")
        ptq_info["PT2E XNNPACK default"] = {"ptq_seconds": round(time.perf_counter() - t0, 2)}
        sizes["PT2E XNNPACK default (ExecuTorch)"] = p.stat().st_size
        run_eval("PT2E XNNPACK default (ExecuTorch)", open_runner("executorch", p, threads=1))
        try:
            t0 = time.perf_counter()
            p = nncf_onnx(float_paths["onnx"], work / "nncf.onnx", xn)
            ptq_info["NNCF PTQ"] = {"ptq_seconds": round(time.perf_counter() - t0, 2)}
            sizes["NNCF PTQ (ORT)"] = p.stat().st_size
            run_eval("NNCF PTQ (ORT)", open_runner("onnxruntime", p, threads=1))
        except ImportError:
            print("  NNCF not installed (pip install -e .[bench]): skipped")

    print(f"latency (1 thread, {args.rounds} interleaved rounds)")
    x = model.example_input(1).numpy()
    lat = interleaved_p50(runners, {k: x for k in runners}, rounds=args.rounds)
    ref = lat["TFLite int8 reference (LiteRT)"]["p50_ms"]
    rows = {}
    for k, v in lat.items():
        rows[k] = {"accuracy": acc[k], "p50_ms": v["p50_ms"], "p90_ms": v["p90_ms"],
                   "ratio_to_tflite_int8": v["p50_ms"] / ref, "size_bytes": sizes.get(k)}  # fmt: skip
    for rt in ("executorch", "litert", "onnxruntime"):
        rows[f"edgeopt int8 {rt}"]["speedup_vs_same_runtime_fp32"] = (
            lat[f"float {rt}"]["p50_ms"] / lat[f"edgeopt int8 {rt}"]["p50_ms"]
        )
    for r in runners.values():
        r.close()

    figures: dict[str, Any] = {
        "rows": rows,
        "sim_accuracy_by_calibration": sim,
        "controls": controls,
        "ptq": ptq_info,
        "parity_runtime_vs_sim": parity,
        "graphs": graphs,
        "load_average": list(os.getloadavg()),
        "samples": len(test),
        "default_recipe": {"calib": DEFAULT_CALIB, "bias_correction": True, "calib_samples": args.calib_samples},
    }
    if args.mixed:
        from edgeopt.compress.quantize.mixed import mixed_precision_study

        figures["mixed_precision"] = mixed_precision_study(model, train, test, work, args.calib_samples)
    if args.zoo:
        figures["zoo"] = zoo_study()
    previous = RESULTS / "quantization.json"
    if previous.is_file():  # studies run separately (--only) are kept unless re-run here
        import json

        old = json.loads(previous.read_text()).get("figures", {})
        kept = ("mixed_precision", "zoo", "latency_check", "accuracy_issue16", "int4_reconstruction", "ort_vs_nncf")
        for key in kept:
            if key not in figures and key in old:
                figures[key] = old[key]
    figures["total_seconds"] = round(time.perf_counter() - t_start, 1)
    path = write_result(
        "quantization", figures,
        {"limit": args.limit, "calib_samples": args.calib_samples, "rounds": args.rounds, "threads": 1},
    )  # fmt: skip
    _print(figures)
    print(f"wrote {path}")


def _only(args: argparse.Namespace) -> None:
    """Run one study and merge it into an existing results file (keeps the main table)."""
    import json

    from edgeopt.fileio import write_json_atomic

    path = RESULTS / "quantization.json"
    t0 = time.perf_counter()
    if args.only == "zoo":
        fig = zoo_study()
    elif args.only == "latency":
        fig = latency_check(args.calib_samples, args.rounds)
    elif args.only == "accuracy":
        fig = accuracy_study(args.calib_samples, args.rounds, args.limit)
    elif args.only == "nncf":
        fig = ort_study(args.calib_samples, args.rounds, args.limit)
    elif args.only == "int4":
        fig = int4_study(args.calib_samples, args.limit, args.rounding_seconds, args.long_seconds, args.seed)
    else:
        from edgeopt.compress.quantize.mixed import mixed_precision_study

        model, train, test = resnet8_and_data(args.limit)
        fig = mixed_precision_study(model, train, test, tempfile.mkdtemp(), args.calib_samples)
    fig["seconds"] = round(time.perf_counter() - t0, 1)
    fig["load_average"] = list(os.getloadavg())
    keys = {"zoo": "zoo", "latency": "latency_check", "accuracy": "accuracy_issue16", "int4": "int4_reconstruction",
            "nncf": "ort_vs_nncf"}  # fmt: skip
    key = keys.get(args.only, "mixed_precision")
    if args.only == "int4" and args.seed:
        key += f"_seed{args.seed}"
    # read just before writing: another study may have finished meanwhile
    payload = json.loads(path.read_text()) if path.is_file() else {"benchmark": "quantization", "figures": {}}
    payload["figures"][key] = fig
    write_json_atomic(path, payload)
    print(json.dumps(fig, indent=1, default=str)[:6000])
    print(f"wrote {path} ({key})")


def _print(f: dict[str, Any]) -> None:
    print(f"\n{'model / runtime':<36}{'accuracy':>9}{'p50 µs':>9}{'× TFLite int8':>15}{'size KB':>9}")
    for k, v in f["rows"].items():
        size = f"{v['size_bytes'] / 1024:.0f}" if v.get("size_bytes") else "—"
        ratio = v["ratio_to_tflite_int8"]
        print(f"{k:<36}{100 * v['accuracy']:>8.2f}%{1000 * v['p50_ms']:>9.1f}{ratio:>15.2f}{size:>9}")
    sim = {k: f"{100 * a:.2f}%" for k, a in f["sim_accuracy_by_calibration"].items()}
    print("simulated accuracy by calibration:", sim)
    print("PTQ seconds:", {k: v["ptq_seconds"] for k, v in f["ptq"].items()})
    print(f"load average: {f['load_average']}, total {f['total_seconds']} s")


if __name__ == "__main__":
    main()
