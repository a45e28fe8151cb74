"""Issue 13 acceptance: ``edgeopt optimize`` on the MLPerf Tiny ResNet-8, per runtime, beside the best hand recipe.

Model: ResNet-8 imported from ../shared/data/mlperf-tiny/resnet8_float32.tflite (input 0..255, 75.48% on
cifar10-jpg test). Data: cifar10-jpg (train for screening and recovery, all 10,000 test images for
accuracy). 1 thread. For each runtime asked:

1. the float model exported to the runtime and timed (``runtimes.benchmark``, 300 runs): latency L;
2. ``optimize`` with ``--target latency_ms=0.35·L,flash_kb=40 --max-drop 1.0 --minutes M``;
3. the chosen artifact re-measured alone, as ``edgeopt eval`` and ``edgeopt bench`` do
   (``runtimes.resolve.open_model`` + ``train.evaluate``; ``runtimes.benchmark``);
4. the best hand recipe in docs/pruning.md (latency-allocated channel pruning, 2 steps, 5 epochs of KD
   recovery, then int8 PTQ with percentile calibration), run as a recipe and measured the same way;
5. an infeasible budget (flash 10 KB at 0.5 pt): ``optimize`` must fail, naming the closest candidates.

Olive: ``pip install --dry-run olive-ai==0.13`` is recorded (whether it would change torch); Olive's
own search is not run by this script (see ``olive`` in the results).

Run: flock /tmp/edgeopt-bench.lock .venv/bin/python benchmarks/optimize.py --runtimes onnxruntime --minutes 15
(the acceptance asks --minutes 30 per runtime; results of runtimes not run are kept from the file).
Writes benchmarks/results/optimize.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import RESULTS, ROOT, shared_path, write_result

from edgeopt.data import load_dataset
from edgeopt.model import load_model, save_model
from edgeopt.runtimes import RUNTIME_FORMAT, benchmark
from edgeopt.train import evaluate

CACHE = ROOT / "benchmarks" / ".cache"
RUNS = CACHE / "optimize-runs"  # run folders (ignored by git with the cache)
BASE_ACCURACY = 0.7548  # the .tflite on cifar10-jpg test (GUIDE.md)
LATENCY_RATIO = 0.35
FLASH_KB = 40.0
MAX_DROP = 1.0


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def input_model() -> Path:
    path = CACHE / "mlperf_resnet8_imported.edgeopt"
    if not path.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        save_model(load_model(shared_path("mlperf-tiny/resnet8_float32.tflite"), input_range=(0, 255)), path)
    return path


def alone(artifact: Path, runtime: str, data: str) -> dict[str, Any]:
    """The artifact measured alone, as `edgeopt eval` and `edgeopt bench` measure it."""
    from edgeopt.optimize.measure import arena_bytes
    from edgeopt.runtimes.resolve import open_model

    opened = open_model(str(artifact), runtime, 1)
    try:
        acc = evaluate(opened.meta, load_dataset(data, "test"), predict=opened.runner.run).accuracy
    finally:
        opened.runner.close()
    stats = benchmark(runtime, artifact, threads=1, warmup=50, runs=500)
    arena, source = arena_bytes(stats.memory_plan)
    return {"accuracy": acc, "latency_ms": stats.p50_ms, "latency_p90_ms": stats.p90_ms,
            "flash_bytes": artifact.stat().st_size, "arena_bytes": arena, "arena_source": source,
            "artifact": str(artifact)}  # fmt: skip


def meets(m: dict[str, Any], latency_ms: float, base_acc: float) -> dict[str, bool]:
    return {
        "latency": m["latency_ms"] <= latency_ms,
        "flash": m["flash_bytes"] <= FLASH_KB * 1024,
        "accuracy": m["accuracy"] >= base_acc - MAX_DROP / 100,
    }


def hand_recipe(model: Path, data: str, runtime: str, epochs: int) -> dict[str, Any]:
    """docs/pruning.md's fast model (latency allocation, 2 steps, KD recovery) then int8 (percentile)."""
    return {"model": str(model), "data": data, "threads": 1, "passes": [
        {"prune": {"method": "channel", "ratio": 0.5, "allocation": "latency", "runtime": runtime, "round_to": 16,
                   "min_keep": 8, "steps": 2, "epochs": epochs, "lr": 0.1, "distill": True}},
        {"quantize": {"calib": "percentile", "calib_samples": 500}},
        {"export": {"formats": [RUNTIME_FORMAT[runtime]]}},
    ]}  # fmt: skip


def run_runtime(runtime: str, model: Path, data: str, minutes: float, hand_epochs: int, skip_hand: bool) -> dict:
    from edgeopt.optimize import OptimizeFailed, optimize
    from edgeopt.optimize.confirm import final_artifact
    from edgeopt.pipeline.recipe import recipe_from_dict
    from edgeopt.pipeline.run import run_recipe

    out: dict[str, Any] = {"minutes": minutes}
    log(f"{runtime}: float model timed")
    float_stats = benchmark(runtime, load_model(model), threads=1, warmup=50, runs=300)
    out["float_latency_ms"] = float_stats.p50_ms
    target_ms = LATENCY_RATIO * float_stats.p50_ms
    out["target"] = {"latency_ms": target_ms, "flash_kb": FLASH_KB, "max_drop": MAX_DROP}
    run_dir = RUNS / runtime
    log(f"{runtime}: optimize --minutes {minutes}, latency_ms={target_ms:.4f}")
    t = time.perf_counter()
    try:
        res = optimize(model, data=data, runtime=runtime, target=f"latency_ms={target_ms},flash_kb={FLASH_KB}",
                       max_drop=MAX_DROP, minutes=minutes, out=run_dir)  # fmt: skip
        out["optimize"] = res
    except OptimizeFailed as e:
        out["optimize"] = {"failed": str(e), "closest": e.closest}
    out["optimize_seconds"] = round(time.perf_counter() - t, 1)
    pareto = json.loads((run_dir / "pareto.json").read_text())
    base_acc = pareto["baseline"]["accuracy"]
    out["baseline_in_runtime"] = pareto["baseline"]
    out["screened"] = len(pareto["candidates"])
    out["confirmed"] = [{"trial": c["trial"], "recipe": c["recipe"], "measured": {k: c["measured"][k] for k in
                         ("accuracy", "latency_ms", "flash_bytes", "arena_bytes")}, "misses": c["misses"]}
                        for c in pareto["candidates"] if c["measured"]]  # fmt: skip
    if "artifact" in out["optimize"]:
        log(f"{runtime}: chosen artifact re-measured alone")
        m = alone(Path(out["optimize"]["artifact"]), runtime, data)
        out["chosen_alone"] = {**m, "meets": meets(m, target_ms, base_acc)}
    if not skip_hand:
        log(f"{runtime}: hand recipe")
        hand_dir = RUNS / f"{runtime}-hand"
        t = time.perf_counter()
        recipe = hand_recipe(model, data, runtime, hand_epochs)
        ledger = run_recipe(recipe_from_dict(recipe), hand_dir, resume=True)
        m = alone(final_artifact(ledger, hand_dir, runtime), runtime, data)
        out["hand_recipe"] = {"recipe": recipe["passes"], **m, "meets": meets(m, target_ms, base_acc),
                              "seconds": round(time.perf_counter() - t, 1)}  # fmt: skip
    log(f"{runtime}: infeasible budget")
    t = time.perf_counter()
    try:
        optimize(model, data=data, runtime=runtime, target=f"latency_ms={target_ms},flash_kb=10", max_drop=0.5,
                 minutes=2.0, out=RUNS / f"{runtime}-infeasible")  # fmt: skip
        out["infeasible"] = {"failed": False}
    except OptimizeFailed as e:
        out["infeasible"] = {"failed": True, "message": str(e), "closest": e.closest}
    out["infeasible"]["seconds"] = round(time.perf_counter() - t, 1)
    return out


def olive_check() -> dict[str, Any]:
    """What installing olive-ai 0.13 would change (pip's dry run): torch must stay as it is."""
    import torch

    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "olive-ai==0.13"]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        text = p.stdout + p.stderr
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"dry_run": f"failed: {e}"}
    would = next((line for line in text.splitlines() if line.startswith("Would install")), "")
    return {"torch": torch.__version__, "would_install": would, "changes_torch": " torch-" in f" {would}",
            "returncode": p.returncode}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runtimes", default="onnxruntime", help="comma list: onnxruntime, executorch, litert")
    ap.add_argument("--minutes", type=float, default=15.0, help="optimize time budget per runtime (acceptance: 30)")
    ap.add_argument("--hand-epochs", type=int, default=5, help="recovery epochs of the hand recipe")
    ap.add_argument("--skip-hand", action="store_true")
    ap.add_argument("--smoke", nargs=2, metavar=("MODEL", "DATA"), help="a quick check of the script on another "
                    "model and data (results go to benchmarks/.runs, not the results file)")  # fmt: skip
    args = ap.parse_args()
    data = f"imagefolder:{shared_path('cifar10-jpg.zip')}" if not args.smoke else args.smoke[1]
    model = input_model() if not args.smoke else Path(args.smoke[0]).resolve()
    if args.smoke:
        global RUNS
        RUNS = CACHE / "optimize-smoke"
    path = RESULTS / "optimize.json"
    figures = json.loads(path.read_text())["figures"] if path.is_file() else {"runtimes": {}}
    for runtime in [r.strip() for r in args.runtimes.split(",") if r.strip()]:
        previous = figures["runtimes"].get(runtime, {})
        figures["runtimes"][runtime] = run_runtime(runtime, model, data, args.minutes, args.hand_epochs,
                                                   args.skip_hand)  # fmt: skip
        if args.skip_hand and "hand_recipe" in previous:  # kept from the earlier run, and said so
            figures["runtimes"][runtime]["hand_recipe"] = {**previous["hand_recipe"], "from_previous_run": True,
                                                           "previous_target": previous.get("target")}  # fmt: skip
            figures["runtimes"][runtime]["previous_optimize"] = previous.get("optimize")
        figures["olive"] = olive_check()
        if args.smoke:
            log(json.dumps(figures["runtimes"][runtime], default=str)[:4000])
            continue
        settings = {"model": "mlperf-tiny/resnet8_float32.tflite", "data": "cifar10-jpg", "threads": 1,
                    "base_accuracy_tflite": BASE_ACCURACY, **vars(args)}  # fmt: skip
        write_result("optimize", figures, settings)
        log(json.dumps({k: v for k, v in figures["runtimes"][runtime].items() if k != "confirmed"}, default=str)[:3000])


if __name__ == "__main__":
    main()
