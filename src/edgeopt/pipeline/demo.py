"""The main job on built-in data, and the shared "run a recipe and write its report" step.

The demo trains ResNet-8 on scikit-learn's digits (offline), distills it into a half-width
ResNet-8, prunes half of the student's MACs away (channel pruning, KD recovery from the
student before pruning), quantizes it to int8 (PTQ, entropy calibration), exports the integer
model to ONNX Runtime, ExecuTorch and LiteRT with parity checks, measures accuracy and latency
inside each, and writes ``report.html`` with every stage.
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
        {"distill": {"student": "zoo:resnet8", "student_kwargs": {"width": 8}, "epochs": 15}},
        {"prune": {"method": "channel", "ratio": 0.5, "allocation": "global", "round_to": 4, "min_keep": 4, "steps": 2,
                   "epochs": 10}},
        {"quantize": {"calib": "entropy", "calib_samples": 300}},
        {"export": {"formats": ["onnx", "pte", "tflite"]}},
    ],
}


def run_and_report(recipe: Recipe, out: str | Path, resume: bool = False, verbose: bool = True) -> dict[str, Any]:
    """Run ``recipe`` in ``out`` (resumable), write report.json/.html, return a summary."""
    from edgeopt.report import write_report

    out = Path(out)

    def announce(record: dict[str, Any]) -> None:
        if verbose:
            m = record["metrics"]
            lat = ", ".join(f"{k} {v:.3f} ms" for k, v in m.get("latency_ms", {}).items())
            print(f"stage {record['stage']} {record['name']}: accuracy {m.get('accuracy', 0):.4f}; {lat}",
                  file=sys.stderr)  # fmt: skip

    ledger = run_recipe(recipe, out, resume=resume, on_stage=announce)
    json_path, html_path = write_report(out, ledger, run_info(recipe))
    last = ledger[-1]["metrics"]
    return {
        "run_dir": str(out),
        "report_html": str(html_path),
        "report_json": str(json_path),
        "stages": len(ledger),
        "accuracy": last.get("accuracy"),
        "accuracy_by_runtime": last.get("accuracy_by_runtime", {}),
        "latency_ms": last.get("latency_ms", {}),
    }
