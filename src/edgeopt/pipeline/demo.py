"""The main job on built-in data, and the shared "run a recipe and write its report" step.

The demo trains ResNet-8 on scikit-learn's digits (offline), exports the trained float model
to ONNX Runtime, ExecuTorch and LiteRT and measures it there (the baseline the report compares
against), distills it into a half-width ResNet-8, prunes half of the student's MACs away
(channel pruning, KD recovery from the student before pruning), quantizes it to int8 (PTQ,
entropy calibration), exports the integer model to the same runtimes with parity checks,
measures accuracy and latency inside each, and writes ``report.html`` with every stage.
``run_and_report`` returns (and prints) the headline: per runtime, baseline -> final latency
and accuracy.

Then the demo hands the trained model to ``edgeopt.optimize`` with a device budget for LiteRT
(``DEMO_BUDGET``: half the float model's latency and flash, within 2 points) and three minutes: the
search over pruning and quantization recipes that the hand recipe above fixes by hand, measured in
the runtime; its ``best.yaml`` and ``report.html`` land in ``OUT/optimize``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from edgeopt.pipeline.recipe import Recipe
from edgeopt.pipeline.run import run_info, run_recipe

DEMO_RECIPE: dict[str, Any] = {
    "model": "zoo:resnet8",
    "data": "digits",
    "threads": 1,
    "passes": [
        {"train": {"epochs": 15}},
        {"export": {"formats": ["onnx", "pte", "tflite"]}},  # the float baseline, measured in each runtime
        {"distill": {"student": "zoo:resnet8", "student_kwargs": {"width": 8}, "epochs": 15}},
        {"prune": {"method": "channel", "ratio": 0.5, "allocation": "global", "round_to": 4, "min_keep": 4, "steps": 2,
                   "epochs": 10}},
        {"quantize": {"calib": "entropy", "calib_samples": 300}},
        {"export": {"formats": ["onnx", "pte", "tflite"]}},
    ],
}


# the optimize step: limits relative to the trained float model as measured in ONNX Runtime by the recipe
DEMO_BUDGET = {"latency_ratio": 0.5, "flash_ratio": 0.5, "max_drop": 2.0, "minutes": 3.0, "runtime": "litert"}


def run_demo(
    out: str | Path,
    verbose: bool = True,
    recipe: dict[str, Any] = DEMO_RECIPE,
    budget: dict[str, Any] = DEMO_BUDGET,
) -> dict[str, Any]:
    """The demo recipe in ``out``, then ``optimize`` under ``budget``. Stages an earlier demo finished there are
    reused, and it says so (``reused_stages`` in the summary; a line on stderr when ``verbose``). ``recipe`` and
    ``budget`` default to the demo's own (a smaller pair runs the same steps in a test)."""
    from edgeopt.pipeline.ledger import read_ledger
    from edgeopt.pipeline.recipe import recipe_from_dict

    done = len(read_ledger(Path(out) / "ledger.jsonl"))
    if done and verbose:
        total = len(recipe["passes"]) + 1
        print(f"demo: reusing {min(done, total)} of {total} stages already run in {out} "
              "(delete it, or give another --out, to start fresh)", file=sys.stderr)  # fmt: skip
    summary = run_and_report(recipe_from_dict(recipe), out, resume=True, verbose=verbose)
    summary = {**summary, "reused_stages": done}
    optimized = optimize_trained(Path(out), verbose, budget)
    return {**summary, "optimize": optimized} if optimized is not None else summary


def optimize_trained(out: Path, verbose: bool = True, budget: dict[str, Any] = DEMO_BUDGET) -> dict[str, Any] | None:
    """``edgeopt.optimize`` on the demo's trained model under ``budget``, in ``out/optimize``.

    The limits are set from the float model's latency and artifact size in the first export stage.
    Returns optimize's result, or ``{"failed": ...}`` with the closest candidates when nothing meets
    the budget; ``None`` when the ledger holds no trained model to start from.
    """
    from edgeopt.optimize import OptimizeFailed, optimize
    from edgeopt.pipeline.ledger import read_ledger

    ledger = read_ledger(out / "ledger.jsonl")
    rt = budget["runtime"]
    trained = next((r for r in ledger if r.get("name") == "train"), None)
    export = next((r for r in ledger if r.get("name") == "export" and rt in r["metrics"].get("latency_ms", {})), None)
    if trained is None or export is None:
        return None
    latency = budget["latency_ratio"] * export["metrics"]["latency_ms"][rt]
    flash_kb = budget["flash_ratio"] * export["metrics"]["artifact_bytes"][rt] / 1024
    target = f"latency_ms={latency:.4g},flash_kb={flash_kb:.4g}"
    if verbose:
        print(f"optimize: the trained model for {rt}, --target {target} --max-drop {budget['max_drop']} "
              f"--minutes {budget['minutes']}", file=sys.stderr)  # fmt: skip
    try:
        result = optimize(out / trained["checkpoint"], data="digits", runtime=rt, target=target,
                          max_drop=budget["max_drop"], minutes=budget["minutes"],
                          out=out / "optimize")  # fmt: skip
    except OptimizeFailed as e:
        if verbose:
            print(f"optimize: {e}", file=sys.stderr)
        return {"failed": str(e), "closest": e.closest, "target": target}
    if verbose:
        m = result["measured"]
        print(f"optimize: {result['chosen_recipe']} — {m['accuracy']:.1%}, {m['latency_ms']:.4g} ms, "
              f"flash {m['flash_bytes'] / 1024:.1f} KB, arena {m['arena_bytes'] / 1024:.1f} KB "
              f"({result['confirmed']} confirmed of {result['screened']} screened); {result['report']}",
              file=sys.stderr)  # fmt: skip
    return {**result, "target": target}


def run_and_report(recipe: Recipe, out: str | Path, resume: bool = False, verbose: bool = True, device: str = "cpu"
                   ) -> dict[str, Any]:  # fmt: skip
    """Run ``recipe`` in ``out`` (resumable; training on ``device``), write report.json/.html, return a summary."""
    from edgeopt.report import write_report

    out = Path(out)

    def announce(record: dict[str, Any]) -> None:
        if verbose:
            print(f"stage {record['stage']} {record['name']}: {stage_line(record['metrics'])}", file=sys.stderr)

    ledger = run_recipe(recipe, out, resume=resume, on_stage=announce, device=device)
    json_path, html_path = write_report(out, ledger, run_info(recipe))
    return run_summary(ledger, json_path, html_path, verbose)


def stage_line(metrics: dict[str, Any]) -> str:
    """One stage's accuracy and latency per runtime, deployment runtimes first; PyTorch's int8 marked simulation."""
    from edgeopt.report.numbers import fmt_ms, fmt_pct
    from edgeopt.report.palette import order_runtimes, runtime_name

    lat, acc = metrics.get("latency_ms") or {}, dict(metrics.get("accuracy_by_runtime") or {})
    acc.setdefault("torch", metrics.get("accuracy"))
    sim = " (int8 simulation)" if metrics.get("weight_values_by_bits") else ""
    parts = [f"{runtime_name(rt)}{sim if rt == 'torch' else ''} {fmt_pct(acc.get(rt))}, {fmt_ms(lat.get(rt))}"
             for rt in order_runtimes(set(lat) | {k for k, v in acc.items() if v is not None})]  # fmt: skip
    return " · ".join(parts)


def run_summary(
    ledger: list[dict[str, Any]], json_path: Path, html_path: Path, verbose: bool = False
) -> dict[str, Any]:
    """What ``run_and_report`` returns: the headline (per runtime, baseline -> final) leads, then the final figures.

    ``headline`` is one line per runtime, deployment runtimes first (``report.build.headline``).
    """
    import json

    summary = json.loads(Path(json_path).read_text())["summary"]
    if verbose:
        print(f"{summary['final_stage']} against {summary['baseline_stage']}:", file=sys.stderr)
        for line in summary["headline"]:
            print(f"  {line}", file=sys.stderr)
        if summary.get("warning"):
            print(f"warning: {summary['warning']}", file=sys.stderr)
    last = ledger[-1]["metrics"]
    speedup = {rt: e["latency_ms"]["speedup"] for rt, e in summary["by_runtime"].items() if not e["simulated"]}
    return {
        "headline": "\n".join(summary["headline"]),
        "baseline_stage": summary["baseline_stage"],
        "final_stage": summary["final_stage"],
        "speedup": speedup,
        "accuracy_by_runtime": last.get("accuracy_by_runtime", {}),
        "latency_ms": last.get("latency_ms", {}),
        "accuracy": last.get("accuracy"),
        "stages": len(ledger),
        "run_dir": str(Path(json_path).parent),
        "report_html": str(html_path),
        "report_json": str(json_path),
        **({"warning": summary["warning"]} if summary.get("warning") else {}),
    }
