"""Confirming a finalist: its recipe run in full, its artifact measured in the runtime.

The candidate's passes become an ordinary recipe (the input model's path, the data, the threads) run by
``pipeline.run_recipe`` in ``RUN/candidates/trial-NNNN`` — the same run ``edgeopt recipe best.yaml``
does, so the chosen figures are reproducible. Accuracy is the export stage's: the artifact run in the
runtime on the test split. Latency, flash and arena come from ``measure.artifact_figures`` on the
artifact alone. Each confirmation is appended to ``RUN/confirmed.jsonl`` so that a resumed search
does not repeat it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from edgeopt.pipeline.recipe import Recipe, recipe_from_dict

CONFIRMED = "confirmed.jsonl"


def candidate_recipe(
    model_path: str, data: str, passes: list[dict[str, Any]], threads: int = 1, eval_limit: int | None = None
) -> dict[str, Any]:
    """The recipe (as YAML-ready dict) of one candidate. Pure."""
    return {"model": model_path, "data": data, "threads": threads, "eval_limit": eval_limit, "passes": passes}


def final_artifact(ledger: list[dict[str, Any]], run_dir: Path, runtime: str) -> Path:
    """The artifact the last export stage of a recipe run wrote for ``runtime``."""
    last = ledger[-1]
    name = last["metrics"]["artifacts"][runtime]
    return run_dir / Path(last["checkpoint"]).parent / name


def landed_passes(passes: list[dict[str, Any]], ledger: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``passes`` with each latency-allocated channel prune replaced by the widths its run landed on. Pure.

    Latency allocation scales the device profile by one timing of the input model, so the same pass
    rerun on a busy machine can allocate other widths. The prune pass takes ``widths`` (the weakest
    channels of each group go, as the allocation removed them), so a recipe with them rebuilds the
    same architecture: that is what ``best.yaml`` records. Stage k of ``ledger`` is pass k (stage 0 is
    the input model).
    """
    out = []
    for k, spec in enumerate(passes, start=1):
        ((name, params),) = spec.items()
        stage = ledger[k] if k < len(ledger) and ledger[k].get("pass") == name else {}
        groups = stage.get("metrics", {}).get("channels", {}).get("groups")
        if name == "prune" and params.get("allocation") == "latency" and groups:
            params = {p: v for p, v in params.items() if p not in ("ratio", "target_macs", "allocation", "size_weight")}
            params["widths"] = [int(g["after"]) for g in groups]
        out.append({name: params})
    return out


def confirm(recipe: dict[str, Any], run_dir: Path, runtime: str, device: str = "cpu") -> dict[str, Any]:
    """Run ``recipe`` in ``run_dir`` (resumable; training on ``device``) and measure its artifact; returns the
    measured figures."""
    from edgeopt.model import load_model
    from edgeopt.nas.search import quiet_progress
    from edgeopt.optimize.measure import artifact_figures
    from edgeopt.pipeline.run import CHECKPOINT, run_recipe

    rec: Recipe = recipe_from_dict(recipe)
    start = time.perf_counter()
    with quiet_progress():
        ledger = run_recipe(rec, run_dir, resume=True, device=device)
        artifact = final_artifact(ledger, run_dir, runtime)
        model = load_model(artifact.parent / CHECKPOINT)
        figures = artifact_figures(artifact, runtime, model, rec.threads)
    last = ledger[-1]["metrics"]
    return {
        "accuracy": float(last["accuracy_by_runtime"][runtime]),
        **figures,
        "artifact": str(artifact),
        "landed_passes": landed_passes(recipe["passes"], ledger),
        "parity": last.get("parity", {}).get(runtime),
        "seconds": round(time.perf_counter() - start, 2),
    }


def read_confirmed(out: Path) -> dict[str, dict[str, Any]]:
    """Confirmations recorded in ``out`` so far, by recipe fingerprint."""
    from edgeopt.pipeline.ledger import read_ledger

    return {r["fingerprint"]: r for r in read_ledger(out / CONFIRMED)}


def record_confirmed(out: Path, row: dict[str, Any]) -> None:
    """Append one confirmation (a whole line at a time, flushed) to ``out/confirmed.jsonl``."""
    from edgeopt.pipeline.ledger import append_ledger

    append_ledger(out / CONFIRMED, row)


def fingerprint(recipe: dict[str, Any]) -> str:
    return recipe_from_dict(recipe).fingerprint()
