"""Foundation acceptance: TFLite import fidelity and export parity + latency in every runtime.

1. The MLPerf Tiny ResNet-8 float .tflite, run by the LiteRT interpreter itself, vs the same
   file imported into PyTorch by edgeopt (--input-range 0,255): accuracy on all 10,000
   cifar10-jpg test images and top-1 agreement. The imported model is then exported to ONNX
   Runtime, ExecuTorch and LiteRT and evaluated inside each.
2. Zoo resnet8 exported to .onnx / .pte / .tflite with parity checks; batch-1 latency p50 at
   1 thread in each runtime, side by side with the MLPerf float .tflite in LiteRT, as ratios.

Run: .venv/bin/python benchmarks/foundation.py   (about 2 minutes on 2 cores)
Writes benchmarks/results/foundation.json.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import asdict
from pathlib import Path

from common import interleaved_p50, shared_path, write_result

from edgeopt.data import load_dataset
from edgeopt.interop.export import export_model
from edgeopt.model import load_model
from edgeopt.models import create_model
from edgeopt.runtimes import open_runner
from edgeopt.train import evaluate, seed_everything


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=None, help="test images (default: all 10,000)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved latency rounds")
    args = ap.parse_args()

    tflite = shared_path("mlperf-tiny/resnet8_float32.tflite")
    test = load_dataset(f"imagefolder:{shared_path('cifar10-jpg.zip')}", "test").take(args.limit, seed=0)
    figures: dict = {}
    work = Path(tempfile.mkdtemp(prefix="edgeopt-bench-"))

    # 1. import fidelity -------------------------------------------------------------------------
    imported = load_model(tflite, input_range=(0, 255))
    with open_runner("litert", tflite, threads=1) as ref:
        ref_eval = evaluate(imported.meta, test, predict=ref.run)
    ours = evaluate(imported, test)
    figures["import"] = {
        "litert_tflite_accuracy": ref_eval.accuracy,
        "imported_torch_accuracy": ours.accuracy,
        "accuracy_delta_points": 100 * (ours.accuracy - ref_eval.accuracy),
        "top1_agreement": float((ours.predictions == ref_eval.predictions).mean()),
        "samples": ours.samples,
    }
    per_runtime = {}
    for fmt in ("onnx", "pte", "tflite"):
        res = export_model(imported, fmt, work / f"imported{fmt}.{fmt}")
        with open_runner(res.runtime, res.path, threads=1) as r:
            e = evaluate(imported.meta, test, predict=r.run)
        per_runtime[res.runtime] = {
            "accuracy": e.accuracy,
            "top1_agreement_with_litert_reference": float((e.predictions == ref_eval.predictions).mean()),
            "parity_rel_diff": res.parity.rel_diff,
        }
    figures["import"]["reexported"] = per_runtime

    # 2. zoo resnet8: parity and latency in every runtime -----------------------------------------
    seed_everything(0)
    zoo = create_model("resnet8")
    runners, inputs, parity = {}, {}, {}
    runners["torch"] = open_runner("torch", zoo, threads=1)
    for fmt in ("onnx", "pte", "tflite"):
        res = export_model(zoo, fmt, work / f"resnet8.{fmt}")
        parity[res.runtime] = asdict(res.parity) | {"size_bytes": res.size_bytes}
        runners[res.runtime] = open_runner(res.runtime, res.path, threads=1)
    x = zoo.example_input(1).numpy()
    inputs = {k: x for k in runners}
    runners["mlperf_tflite_litert"] = open_runner("litert", tflite, threads=1)
    inputs["mlperf_tflite_litert"] = imported.example_input(1).numpy()
    lat = interleaved_p50(runners, inputs, rounds=args.rounds)
    base = lat["mlperf_tflite_litert"]["p50_ms"]
    for v in lat.values():
        v["ratio_to_mlperf_tflite_litert"] = v["p50_ms"] / base
    figures["zoo_resnet8"] = {"parity": parity, "latency_1thread": lat}
    for r in runners.values():
        r.close()

    path = write_result("foundation", figures, {"limit": args.limit, "rounds": args.rounds, "threads": 1})
    _print(figures)
    print(f"wrote {path}")


def _print(f: dict) -> None:
    imp = f["import"]
    print(f"LiteRT .tflite accuracy      {100 * imp['litert_tflite_accuracy']:.2f}%")
    print(f"imported (torch) accuracy    {100 * imp['imported_torch_accuracy']:.2f}%  "
          f"(Δ {imp['accuracy_delta_points']:+.3f} pt, agreement {100 * imp['top1_agreement']:.2f}%)")  # fmt: skip
    for rt, v in imp["reexported"].items():
        agree = 100 * v["top1_agreement_with_litert_reference"]
        print(f"  re-exported -> {rt:<12} {100 * v['accuracy']:.2f}%  agreement {agree:.2f}%")
    print(f"{'runtime':<22}{'rel Δlogit':>12}{'p50 ms':>10}{'p90 ms':>10}{'× MLPerf tflite':>17}")
    z = f["zoo_resnet8"]
    for rt, v in z["latency_1thread"].items():
        rel = z["parity"].get(rt, {}).get("rel_diff")
        rel_s = f"{rel:.2e}" if rel is not None else "—"
        print(f"{rt:<22}{rel_s:>12}{v['p50_ms']:>10.4f}{v['p90_ms']:>10.4f}{v['ratio_to_mlperf_tflite_litert']:>17.2f}")


if __name__ == "__main__":
    main()
