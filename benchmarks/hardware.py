"""Hardware model: latency predictor accuracy per runtime, transfer, and the memory table.

Predictor (per runtime, 1 thread): ``edgeopt.hardware.calibrate`` measures architectures drawn
from the zoo families for --minutes and fits the predictor; then --heldout *other* architectures
(another seed: never seen in calibration) are measured and predicted. Reported: share within
±10%, median and 90th-percentile error, Spearman, beside a MACs-only linear model fitted on the same
calibration data. Transfer: the onnxruntime profile re-targeted to each other runtime (and to 2
threads) from 20 measurements, scored on that runtime's held-out set.

Measured samples are journalled in benchmarks/.cache/hardware/ so an interrupted run resumes;
--fresh starts over. Needs a quiet machine: nothing else may run beside the timing.

Run: .venv/bin/python benchmarks/hardware.py [--runtimes onnxruntime,executorch,litert]
     [--minutes 15] [--heldout 200] [--skip memory]
Writes benchmarks/results/hardware.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import ROOT, write_result

from edgeopt.hardware.calibrate import fit_profile, measure_samples, sample_kernels
from edgeopt.hardware.predictor import ErrorStats, LatencyPredictor, macs_only_fit

CACHE = ROOT / "benchmarks" / ".cache" / "hardware"
HELDOUT_SEED = 1000


def _samples(runtime: str, threads: int, kind: str, seed: int, minutes: float, count: int | None) -> list[dict]:
    journal = CACHE / f"{runtime}_t{threads}_{kind}.jsonl"

    def log(n: int, elapsed: float, s: dict[str, Any]) -> None:
        print(
            f"  {runtime} {kind} {n:4d}  {elapsed:6.0f}s  {s['spec']['family']:6s} {s['latency_ms']:8.3f} ms",
            flush=True,
        )

    return measure_samples(runtime, threads, minutes, count, seed, journal, on_sample=log)


def _stats(pred: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    return ErrorStats.of(pred, y).__dict__


def _predict(predictor: LatencyPredictor, samples: list[dict]) -> np.ndarray:
    return predictor.predict_many(sample_kernels(samples))


def _macs_only(calib: list[dict], heldout: list[dict]) -> np.ndarray:
    x = np.array([[1.0, s["macs"] / 1e6] for s in calib])
    coef, *_ = np.linalg.lstsq(x, np.array([s["latency_ms"] for s in calib]), rcond=None)
    return np.maximum(np.array([[1.0, s["macs"] / 1e6] for s in heldout]) @ coef, 1e-6)


def predictor_section(runtime: str, threads: int, minutes: float, heldout_n: int) -> tuple[dict[str, Any], Any]:
    t0 = time.monotonic()
    calib = _samples(runtime, threads, "calib", 0, minutes, None)
    calib_s = time.monotonic() - t0
    t1 = time.monotonic()
    profile = fit_profile(calib, runtime, threads, calib_s)
    fit_s = time.monotonic() - t1
    held = _samples(runtime, threads, "heldout", HELDOUT_SEED, 1e9, heldout_n)
    y = np.array([s["latency_ms"] for s in held])
    seen = {json.dumps(s["spec"], sort_keys=True) for s in calib}
    overlap = sum(json.dumps(s["spec"], sort_keys=True) in seen for s in held)
    pred = _predict(profile.predictor, held)
    macs_pred = _macs_only(calib, held)
    ours, base = _stats(pred, y), _stats(macs_pred, y)
    cv_macs = macs_only_fit(np.array([s["macs"] for s in calib]), np.array([s["latency_ms"] for s in calib]))
    result = {
        "runtime": runtime,
        "threads": threads,
        "calibration_models": len(calib),
        "calibration_seconds": round(calib_s + fit_s, 1),
        "heldout_models": len(held),
        "heldout_also_in_calibration": overlap,
        "heldout_latency_ms_range": [float(y.min()), float(y.max())],
        "predictor": ours,
        "macs_only_linear": base,
        "median_error_ratio_vs_macs_only": ours["median_abs_pct"] / base["median_abs_pct"],
        "predictor_cv_on_calibration": profile.predictor.cv,
        "macs_only_cv_on_calibration": _stats(np.maximum(cv_macs, 1e-6), np.array([s["latency_ms"] for s in calib])),
        "correction_kept": profile.predictor.correction is not None,
        "per_family_within_10pct": {
            f: float(np.mean(np.abs(pred[m] / y[m] - 1) <= 0.1))
            for f in sorted({s["spec"]["family"] for s in held})
            for m in [np.array([s["spec"]["family"] == f for s in held])]
        },
    }
    return result, profile


def transfer_section(base, runtime: str, threads: int, heldout: list[dict], n: int = 20) -> dict[str, Any]:
    """Re-target ``base`` with the first ``n`` held-out-disjoint measurements (a fresh seed)."""
    few = _samples(runtime, threads, f"transfer{n}", 77, 1e9, n)
    pred_model = base.predictor.transferred(sample_kernels(few), [s["latency_ms"] for s in few])
    y = np.array([s["latency_ms"] for s in heldout])
    return {
        "from": {"runtime": base.runtime, "threads": base.threads},
        "to": {"runtime": runtime, "threads": threads},
        "measurements": len(few),
        "heldout_models": len(heldout),
        "transferred": _stats(_predict(pred_model, heldout), y),
        "untransferred": _stats(_predict(base.predictor, heldout), y),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runtimes", default="onnxruntime,executorch,litert")
    ap.add_argument("--minutes", type=float, default=15.0, help="calibration budget per runtime")
    ap.add_argument("--heldout", type=int, default=200)
    ap.add_argument("--transfer", default="executorch:1,litert:1,onnxruntime:2",
                    help="targets for transfer from the onnxruntime profile (runtime:threads)")  # fmt: skip
    ap.add_argument("--skip", default="", help="comma list of sections to skip: predictor, transfer, memory")
    ap.add_argument("--fresh", action="store_true", help="drop the journalled measurements first")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    if args.fresh and CACHE.exists():
        shutil.rmtree(CACHE)
    CACHE.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Any] = {}
    profiles = {}
    if "predictor" not in skip:
        figures["predictor"] = {}
        for rt in args.runtimes.split(","):
            print(f"predictor: {rt}", flush=True)
            res, profiles[rt] = predictor_section(rt, 1, args.minutes, args.heldout)
            figures["predictor"][rt] = res
            p = res["predictor"]
            print(f"  {rt}: within ±10% {p['within_10pct']:.1%}, median err {p['median_abs_pct']:.1f}%, "
                  f"spearman {p['spearman']:.3f}; MACs-only {res['macs_only_linear']['within_10pct']:.1%} / "
                  f"{res['macs_only_linear']['median_abs_pct']:.1f}%", flush=True)  # fmt: skip
            profiles[rt].save(CACHE / f"{rt}_t1_profile.json")
    if "transfer" not in skip and "onnxruntime" in profiles:
        figures["transfer"] = []
        for target in filter(None, args.transfer.split(",")):
            rt, threads = target.split(":")
            held = _samples(rt, int(threads), "heldout", HELDOUT_SEED, 1e9, args.heldout)
            res = transfer_section(profiles["onnxruntime"], rt, int(threads), held)
            figures["transfer"].append(res)
            print(
                f"transfer onnxruntime:1 -> {target}: within ±10% {res['transferred']['within_10pct']:.1%}", flush=True
            )
    if "memory" not in skip:
        try:
            from hardware_memory import memory_table
        except ImportError:
            memory_table = None
        if memory_table is not None:
            figures["memory"] = memory_table()
    settings = {"runtimes": args.runtimes, "minutes": args.minutes, "heldout": args.heldout,
                "heldout_seed": HELDOUT_SEED, "transfer": args.transfer}  # fmt: skip
    path = write_result("hardware", figures, settings)
    print(f"wrote {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")


if __name__ == "__main__":
    main()
