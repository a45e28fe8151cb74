"""Hardware-aware quantization: int8 presets per target, and the HAQ-style float/int8 choice per layer.

Model: the MLPerf Tiny ResNet-8 imported from ../shared/data/mlperf-tiny/resnet8_float32.tflite (input
0..255). Calibration: 500 images drawn reproducibly from cifar10-jpg train. Test: a fixed random subset
of cifar10-jpg test (2,000 images, ``--limit``), measured inside the runtime.

- ``quant_targets``: for each target (xnnpack, npu-int8, mcu-int8) an entropy PTQ exported to .tflite:
  its ops with input/output dtypes, the float ops between input and output (none allowed for the
  integer-only targets), weight granularity, accuracy in LiteRT and LiteRT latency (batch 1, 1 thread,
  interleaved rounds) beside the float .tflite and TFLite's own int8 model.
- ``float_int8_study``: per conv/dense layer, the whole model with only that layer float, in a runtime
  that mixes float and int8 (``--mix-runtime``, ONNX Runtime by default): latency against all-int8, and
  the accuracy it recovers on held-out training images; then the choices ``float_mix`` makes under a
  max accuracy drop and under a latency budget (110% of all-int8), measured again (latency and test
  accuracy in the runtime).

Run: .venv/bin/python benchmarks/hardware_quant.py   (584 s on 2 cores at load 4; less on a quiet machine)
Writes benchmarks/results/hardware_quant.json.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from common import interleaved_p50, shared_path, write_result

from edgeopt.compress.quantize.float_mix import MIX_RUNTIMES, LatencyTimer, build_mix, measure_layers
from edgeopt.compress.quantize.mixed import validation_split
from edgeopt.compress.quantize.ptq import QuantRecipe, calibration_indices, quantize_ptq
from edgeopt.compress.quantize.targets import TARGETS, export_for_target, tflite_ops, tflite_report
from edgeopt.data import ImageDataset, load_dataset
from edgeopt.model import EdgeModel, load_model
from edgeopt.runtimes import open_runner
from edgeopt.train import evaluate

CALIB = "entropy"


def _ops_with_dtypes(path: Path) -> list[str]:
    """``CONV_2D(int8,int8,int32->int8)`` per op, in execution order."""
    return [f"{o['op']}({','.join(o['inputs'])}->{','.join(o['outputs'])})" for o in tflite_ops(path)]


def _setup(limit: int) -> tuple[EdgeModel, ImageDataset, ImageDataset]:
    spec = f"imagefolder:{shared_path('cifar10-jpg.zip')}"
    model = load_model(shared_path("mlperf-tiny/resnet8_float32.tflite"), input_range=(0, 255))
    return model, load_dataset(spec, "train"), load_dataset(spec, "test").take(limit, seed=0)


def quant_targets(
    model: EdgeModel | None = None,
    train: ImageDataset | None = None,
    test: ImageDataset | None = None,
    calib_samples: int = 500,
    rounds: int = 5,
    limit: int = 2000,
    workdir: Path | None = None,
) -> dict[str, Any]:
    """Each target's .tflite: ops and dtypes, float ops, weights, LiteRT accuracy and p50 (1 thread)."""
    if model is None or train is None or test is None:
        model, train, test = _setup(limit)
    work = Path(workdir or tempfile.mkdtemp(prefix="edgeopt-hwq-"))
    tflite_f = shared_path("mlperf-tiny/resnet8_float32.tflite")
    tflite_q = shared_path("mlperf-tiny/resnet8_int8.tflite")
    runners: dict[str, Any] = {}
    rows: dict[str, dict[str, Any]] = {}

    def run_eval(key: str, path: Path) -> None:
        runners[key] = open_runner("litert", path, threads=1)
        rows.setdefault(key, {})["litert_accuracy"] = evaluate(model.meta, test, predict=runners[key].run).accuracy
        rows[key]["size_bytes"] = path.stat().st_size
        print(f"  {key:<34} {100 * rows[key]['litert_accuracy']:6.2f}%", flush=True)

    print(f"LiteRT, {len(test)} test images")
    run_eval("float tflite", tflite_f)
    run_eval("TFLite int8 reference", tflite_q)
    rep = tflite_report(tflite_q)
    rows["TFLite int8 reference"].update(ops_with_dtypes=_ops_with_dtypes(tflite_q), float_ops=rep["float_ops"],
                                         io_dtypes=rep["io_dtypes"], weights=rep["weights"])  # fmt: skip
    for target in TARGETS:
        t0 = time.perf_counter()
        q = quantize_ptq(model, train, QuantRecipe(calib=CALIB, calib_samples=calib_samples, target=target))
        secs = time.perf_counter() - t0
        path = work / f"{target}.tflite"
        rep = export_for_target(q, path)
        key = f"edgeopt {target}"
        rows[key] = {"ptq_seconds": round(secs, 2), "sim_accuracy": evaluate(q, test).accuracy,
                     "ops_with_dtypes": _ops_with_dtypes(path), "float_ops": rep["float_ops"],
                     "integer_only": rep["integer_only"], "io_dtypes": rep["io_dtypes"],
                     "weights": rep["weights"]}  # fmt: skip
        run_eval(key, path)
    print(f"latency (LiteRT, 1 thread, {rounds} interleaved rounds)")
    x = model.example_input(1).numpy()
    lat = interleaved_p50(runners, {k: x for k in runners}, rounds=rounds)
    for r in runners.values():
        r.close()
    ref = lat["TFLite int8 reference"]["p50_ms"]
    for k, v in lat.items():
        rows[k].update(p50_ms=v["p50_ms"], p90_ms=v["p90_ms"], p50_ms_per_round=v["p50_ms_per_round"],
                       ratio_to_tflite_int8=v["p50_ms"] / ref)  # fmt: skip
    return {"rows": rows, "samples": len(test), "calib_samples": calib_samples, "calib": CALIB}


def float_int8_study(
    model: EdgeModel,
    train: ImageDataset,
    test: ImageDataset,
    runtime: str = "onnxruntime",
    calib_samples: int = 500,
    rounds: int = 7,
    max_drop: float = 0.5,
    budget_fraction: float = 1.10,
    val_samples: int = 1000,
    workdir: Path | None = None,
) -> dict[str, Any]:
    """Per-layer float-vs-int8 latency and sensitivity in ``runtime``, and the two ``float_mix`` choices."""
    work = Path(workdir or tempfile.mkdtemp(prefix="edgeopt-hwq-mix-"))
    recipe = QuantRecipe(calib=CALIB, calib_samples=calib_samples)
    x_val, y_val = validation_split(model, train, val_samples, calibration_indices(len(train), calib_samples, 0))
    timer = LatencyTimer(runtime, work, model.example_input(1).numpy(), threads=1, rounds=rounds, runs=200)
    t0 = time.perf_counter()
    measured = measure_layers(model, train, recipe, x_val, y_val, None, timer)
    out: dict[str, Any] = {
        "runtime": runtime, "measure_seconds": round(time.perf_counter() - t0, 1),
        "float_val_accuracy": measured["float_val_accuracy"], "int8": measured["int8"],
        "layers": {n: vars(r) for n, r in measured["layers"].items()}, "choices": {},
    }  # fmt: skip
    i8 = measured["int8"]
    print(f"{runtime}: all-int8 {1000 * i8['latency_ms']:.1f} µs, val {100 * i8['val_accuracy']:.2f}% "
          f"(float {100 * measured['float_val_accuracy']:.2f}%)")  # fmt: skip
    for n, r in measured["layers"].items():
        print(f"  {n:<28} float: {1000 * r.cost_ms:+7.1f} µs   {r.gain_points:+6.2f} pt   SQNR {r.sqnr_db:5.1f} dB")
    budget = budget_fraction * measured["int8"]["latency_ms"]
    for mode, kwargs in (("max_drop", {"max_drop": max_drop}), ("latency_budget", {"budget_ms": budget})):
        q, rep = build_mix(model, train, recipe, measured, x_val, y_val, timer, **kwargs)
        accs = {}
        for key in ("int8", "chosen", "float"):
            with open_runner(runtime, timer.paths[key], threads=1) as run:
                accs[key] = evaluate(model.meta, test, predict=run.run).accuracy
        out["choices"][mode] = {
            "max_drop": rep["max_drop"], "budget_ms": rep["budget_ms"], "float_layers": rep["float_layers"],
            "initial_float_layers": rep["initial_float_layers"], "predicted_latency_ms": rep["predicted_latency_ms"],
            "measured_latency_ms": rep["measured_latency_ms"], "val_drop_points": rep["drop_points"],
            "test_accuracy_in_runtime": accs,
        }  # fmt: skip
        lat = ", ".join(f"{k} {1000 * v:.1f}" for k, v in rep["measured_latency_ms"].items())
        tacc = ", ".join(f"{k} {100 * v:.2f}%" for k, v in accs.items())
        pred = 1000 * rep["predicted_latency_ms"]
        print(f"  {mode}: float {rep['float_layers'] or 'none'}; predicted {pred:.1f} µs, measured {lat} µs; "
              f"test {tacc}")  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=2000, help="test images (fixed random subset; 10000 = all)")
    ap.add_argument("--calib-samples", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved latency rounds (targets)")
    ap.add_argument("--mix-runtime", choices=list(MIX_RUNTIMES), default="onnxruntime")
    ap.add_argument("--max-drop", type=float, default=0.5, help="float/int8 choice: max drop in points")
    ap.add_argument("--no-mix", action="store_true", help="skip the float/int8 study")
    args = ap.parse_args()
    t_start = time.perf_counter()
    model, train, test = _setup(args.limit)
    figures: dict[str, Any] = {"targets": quant_targets(model, train, test, args.calib_samples, args.rounds)}
    if not args.no_mix:
        figures["float_int8"] = float_int8_study(model, train, test, args.mix_runtime, args.calib_samples,
                                                 max_drop=args.max_drop)  # fmt: skip
    figures["load_average"] = list(os.getloadavg())
    figures["total_seconds"] = round(time.perf_counter() - t_start, 1)
    settings = {"limit": args.limit, "calib_samples": args.calib_samples, "rounds": args.rounds, "threads": 1,
                "mix_runtime": args.mix_runtime, "max_drop": args.max_drop}  # fmt: skip
    path = write_result("hardware_quant", figures, settings)
    rows = figures["targets"]["rows"]
    print(f"\n{'.tflite in LiteRT':<26}{'accuracy':>9}{'p50 µs':>9}{'× ref':>7}  float ops   weights")
    for k, r in rows.items():
        w = ", ".join(f"{n}×{c}" for c, n in r.get("weights", {}).get("layers", {}).items()) if "weights" in r else ""
        fl = " ".join(r["float_ops"]) if "float_ops" in r else "-"
        print(f"{k:<26}{100 * r['litert_accuracy']:8.2f}%{1000 * r['p50_ms']:9.1f}{r['ratio_to_tflite_int8']:7.2f}"
              f"  {fl or 'none':<10}  {w}")  # fmt: skip
    print(f"total {figures['total_seconds']} s; wrote {path}")


if __name__ == "__main__":
    main()
