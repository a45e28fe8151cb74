"""Assemble the content of ``report.json`` from a run's ledger and run info (pure).

The ledger is the list of stage records a pipeline writes: ``stage``, ``name``, ``pass``,
``status``, ``seconds`` and a ``metrics`` dict (``accuracy``, ``params``, ``macs``,
``size_bytes``, ``peak_activation_bytes``, and per runtime ``latency_ms``,
``accuracy_by_runtime``, ``parity``, ``artifacts``). Any of it may be missing. The report
keeps every stage as given (made JSON-safe: NaN/inf become ``null``, tuples lists, paths
strings) and adds the list of runtimes seen, the accuracy/latency points and a
baseline-vs-final summary. Cost: linear in the ledger, microseconds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

REPORT_SCHEMA = "edgeopt-report/1"
# Runtimes in the order tables and plots show them; others follow alphabetically.
RUNTIME_ORDER = ("torch", "executorch", "litert", "onnxruntime")
# Per-runtime metric dicts inside a stage's metrics.
PER_RUNTIME_KEYS = ("latency_ms", "accuracy_by_runtime", "parity", "artifacts")
# Scalar metrics compared between the baseline and the final stage.
SUMMARY_METRICS = ("accuracy", "params", "macs", "size_bytes", "peak_activation_bytes")
# Stage statuses whose metrics count as results (a ledger may omit the status).
RESULT_STATUSES = (None, "done", "ok", "success")


def jsonable(obj: Any) -> Any:
    """A JSON-safe deep copy: dict keys as strings, non-finite floats as None, unknowns as str."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, PurePath):
        return str(obj)
    if callable(getattr(obj, "tolist", None)):  # numpy scalars and arrays, torch tensors
        return jsonable(obj.tolist())
    return str(obj)


def number(x: Any) -> float | None:
    """``x`` as a finite float, or ``None`` (missing, non-numeric, NaN, bool)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(x) else None


def stage_metrics(stage: Mapping[str, Any]) -> dict[str, Any]:
    """A stage's ``metrics`` dict (empty when absent or malformed)."""
    m = stage.get("metrics")
    return dict(m) if isinstance(m, Mapping) else {}


def per_runtime(stage: Mapping[str, Any], key: str) -> dict[str, Any]:
    """The ``{runtime: value}`` dict under ``metrics[key]`` (empty when absent or malformed)."""
    d = stage_metrics(stage).get(key)
    return {str(k): v for k, v in d.items()} if isinstance(d, Mapping) else {}


def runtime_accuracy(stage: Mapping[str, Any], runtime: str) -> float | None:
    """Accuracy measured in ``runtime``; for ``torch`` the stage's own accuracy stands in."""
    acc = per_runtime(stage, "accuracy_by_runtime").get(runtime)
    if acc is None and runtime == "torch":
        acc = stage_metrics(stage).get("accuracy")
    return number(acc)


def runtimes_of(stages: list[Mapping[str, Any]]) -> list[str]:
    """Every runtime any stage mentions, in ``RUNTIME_ORDER`` then alphabetical."""
    seen = {rt for s in stages for key in PER_RUNTIME_KEYS for rt in per_runtime(s, key)}
    known = [r for r in RUNTIME_ORDER if r in seen]
    return known + sorted(seen - set(known))


def stage_label(stage: Mapping[str, Any], index: int) -> str:
    """``"<stage>: <name>"``, how plots and tables name a stage."""
    num = stage.get("stage", index)
    name = stage.get("name") or stage.get("pass") or "stage"
    return f"{num}: {name}"


def tradeoff_points(stages: list[Mapping[str, Any]], runtimes: list[str]) -> list[dict[str, Any]]:
    """One point per (stage, runtime) that has both a measured accuracy and a latency."""
    points = []
    for i, s in enumerate(stages):
        lat = per_runtime(s, "latency_ms")
        for rt in runtimes:
            acc, ms = runtime_accuracy(s, rt), number(lat.get(rt))
            if acc is not None and ms is not None:
                points.append(
                    {"stage": s.get("stage", i), "label": stage_label(s, i), "runtime": rt, "accuracy": acc,
                     "latency_ms": ms}
                )  # fmt: skip
    return points


def _change(before: float | None, after: float | None) -> dict[str, float | None]:
    ratio = after / before if before and after is not None else None
    return {"baseline": before, "final": after, "ratio": ratio}


def summarize(stages: list[Mapping[str, Any]], runtimes: list[str]) -> dict[str, Any]:
    """The first finished stage with metrics (baseline) against the last one (final).

    ``ratio`` is final / baseline; for latency ``speedup`` is baseline / final.
    """
    done = [(i, s) for i, s in enumerate(stages) if s.get("status") in RESULT_STATUSES and stage_metrics(s)]
    if not done:
        return {"baseline_stage": None, "final_stage": None, "metrics": {}, "latency_ms": {}}
    (i0, first), (i1, last) = done[0], done[-1]
    m0, m1 = stage_metrics(first), stage_metrics(last)
    metrics = {k: _change(number(m0.get(k)), number(m1.get(k))) for k in SUMMARY_METRICS}
    l0, l1 = per_runtime(first, "latency_ms"), per_runtime(last, "latency_ms")
    latency = {}
    for rt in runtimes:
        c = _change(number(l0.get(rt)), number(l1.get(rt)))
        c["speedup"] = 1 / c["ratio"] if c["ratio"] else None
        latency[rt] = c
    return {
        "baseline_stage": stage_label(first, i0),
        "final_stage": stage_label(last, i1),
        "metrics": {k: v for k, v in metrics.items() if v["baseline"] is not None or v["final"] is not None},
        "latency_ms": {k: v for k, v in latency.items() if v["baseline"] is not None or v["final"] is not None},
    }


def build_report(ledger: list[dict[str, Any]], run_info: dict[str, Any]) -> dict[str, Any]:
    """The ``report.json`` content: run info, stages, runtimes, trade-off points and summary."""
    stages = [jsonable(s) if isinstance(s, Mapping) else {"name": str(s)} for s in ledger]
    runtimes = runtimes_of(stages)
    return {
        "schema": REPORT_SCHEMA,
        "run": jsonable(dict(run_info)),
        "runtimes": runtimes,
        "stages": stages,
        "tradeoff": tradeoff_points(stages, runtimes),
        "summary": summarize(stages, runtimes),
    }
