"""Assemble the content of ``report.json`` from a run's ledger and run info (pure).

The ledger is the list of stage records a pipeline writes: ``stage``, ``name``, ``pass``,
``status``, ``seconds`` and a ``metrics`` dict (``accuracy``, ``params``, ``macs``,
``size_bytes``, ``peak_activation_bytes``, and per runtime ``latency_ms``,
``accuracy_by_runtime``, ``parity``, ``artifacts``). Any of it may be missing. The report
keeps every stage as given (made JSON-safe: NaN/inf become ``null``, tuples lists, paths
strings) and adds the list of runtimes seen, the accuracy/latency points and a
baseline-vs-final summary.

The summary's baseline is the float model the recipe compresses: the last of the leading
``baseline``/``train``/``export`` stages that was measured in a deployment runtime (so a
recipe that trains, exports, then compresses compares against the trained float model in
every runtime), else the first finished stage. Its ``by_runtime`` entries give accuracy and
latency per runtime; PyTorch's figures of a quantized model are marked ``simulated`` (fake-quant
float ops, not a deployment figure). A final stage whose accuracy in any runtime is at chance
(``train.diagnose``'s test, against the ``num_classes`` the stage records) gets a ``warning``.
Cost: linear in the ledger, microseconds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

from edgeopt.report.numbers import fmt_pct, fmt_points, fmt_ratio, number
from edgeopt.report.palette import DEVICE_RUNTIMES, order_runtimes, runtime_name

REPORT_SCHEMA = "edgeopt-report/1"
# Per-runtime metric dicts inside a stage's metrics.
PER_RUNTIME_KEYS = ("latency_ms", "accuracy_by_runtime", "parity", "artifacts")
# Scalar metrics compared between the baseline and the final stage.
SUMMARY_METRICS = ("accuracy", "params", "macs", "size_bytes", "peak_activation_bytes")
# Stage statuses whose metrics count as results (a ledger may omit the status).
RESULT_STATUSES = (None, "done", "ok", "success")
# Passes that leave the float model uncompressed: a recipe's leading run of them builds the baseline.
FLOAT_PASSES = ("baseline", "train", "export")
SIMULATED = " int8 simulation (fake-quant float ops, not a deployment figure)"


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
    return order_runtimes({rt for s in stages for key in PER_RUNTIME_KEYS for rt in per_runtime(s, key)})


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
                     "latency_ms": ms, "simulated": rt == "torch" and is_quantized(stages, i)}
                )  # fmt: skip
    return points


def _change(before: float | None, after: float | None) -> dict[str, float | None]:
    ratio = after / before if before and after is not None else None
    return {"baseline": before, "final": after, "ratio": ratio}


def _measured_on_device(stage: Mapping[str, Any]) -> bool:
    return any(number(v) is not None for rt, v in per_runtime(stage, "latency_ms").items() if rt != "torch")


def reference_stage(stages: list[Mapping[str, Any]], done: list[int]) -> int:
    """Index (into ``stages``) of the summary's baseline among the finished stages ``done``.

    When the recipe compresses, the last of the leading float stages (``FLOAT_PASSES``) measured
    in a deployment runtime, else the last leading float stage; otherwise (nothing but float
    stages, or no leading ones) the first finished stage.
    """

    def is_float(i: int) -> bool:
        return str(stages[i].get("pass") or stages[i].get("name")) in FLOAT_PASSES

    if all(is_float(i) for i in done):
        return done[0]
    lead = []
    for i in done[:-1]:
        if not is_float(i):
            break
        lead.append(i)
    measured = [i for i in lead if _measured_on_device(stages[i])]
    return measured[-1] if measured else lead[-1] if lead else done[0]


def is_quantized(stages: list[Mapping[str, Any]], upto: int) -> bool:
    """Whether the model of stage ``upto`` is quantized (a quantize pass ran, or its profile says so)."""
    if stage_metrics(stages[upto]).get("weight_values_by_bits"):
        return True
    return any(s.get("pass") == "quantize" or "quantize" in stage_metrics(s) for s in stages[: upto + 1])


def summarize(stages: list[Mapping[str, Any]], runtimes: list[str]) -> dict[str, Any]:
    """The baseline (``reference_stage``) against the last finished stage with metrics (final).

    ``ratio`` is final / baseline; for latency ``speedup`` is baseline / final. ``by_runtime``
    holds each runtime's accuracy and latency change, device runtimes first; ``simulated`` marks
    PyTorch's figures of a quantized model.
    """
    done = [i for i, s in enumerate(stages) if s.get("status") in RESULT_STATUSES and stage_metrics(s)]
    if not done:
        return {"baseline_stage": None, "final_stage": None, "metrics": {}, "latency_ms": {}, "by_runtime": {},
                "quantized": False, "headline": []}  # fmt: skip
    i0, i1 = reference_stage(stages, done), done[-1]
    first, last = stages[i0], stages[i1]
    m0, m1 = stage_metrics(first), stage_metrics(last)
    metrics = {k: _change(number(m0.get(k)), number(m1.get(k))) for k in SUMMARY_METRICS}
    l0, l1 = per_runtime(first, "latency_ms"), per_runtime(last, "latency_ms")
    quantized = is_quantized(stages, i1)
    latency, by_runtime = {}, {}
    for rt in runtimes:
        c = _change(number(l0.get(rt)), number(l1.get(rt)))
        c["speedup"] = 1 / c["ratio"] if c["ratio"] else None
        acc = _change(runtime_accuracy(first, rt), runtime_accuracy(last, rt))
        if c["baseline"] is None and c["final"] is None and acc["final"] is None:
            continue
        latency[rt] = c
        by_runtime[rt] = {"accuracy": acc, "latency_ms": c, "simulated": rt == "torch" and quantized}
    summary = {
        "baseline_stage": stage_label(first, i0),
        "final_stage": stage_label(last, i1),
        "quantized": quantized,
        "metrics": {k: v for k, v in metrics.items() if v["baseline"] is not None or v["final"] is not None},
        "latency_ms": latency,
        "by_runtime": by_runtime,
    }
    summary["headline"] = headline(summary)
    warning = chance_warning(last, runtimes)
    if warning:
        summary["warning"] = warning
    return summary


def chance_warning(stage: Mapping[str, Any], runtimes: list[str]) -> str | None:
    """``the final model is at chance (...)`` when the stage's accuracy in some runtime is, else None."""
    from edgeopt.train.diagnose import chance_note

    n = number(stage_metrics(stage).get("num_classes"))
    if not n:
        return None
    notes = []
    for rt in runtimes or ["torch"]:
        acc = runtime_accuracy(stage, rt)
        note = None if acc is None else chance_note(acc, int(n))
        if note:
            notes.append(f"{runtime_name(rt)}: {note}")
    if not notes:
        return None
    return (f"the final model is at chance ({'; '.join(notes)}): it did not learn, or is fed wrongly; "
            "check the training stages' epochs and learning rate, and `edgeopt eval` the final checkpoint "
            "(it names input range, layout or class mismatches)")  # fmt: skip


def headline(summary: Mapping[str, Any]) -> list[str]:
    """One sentence per runtime, deployment runtimes first: latency and accuracy, baseline -> final."""
    from edgeopt.report.numbers import fmt_ms

    lines = []
    for rt, e in (summary.get("by_runtime") or {}).items():
        lat, acc = e.get("latency_ms") or {}, e.get("accuracy") or {}
        name = runtime_name(rt) + (SIMULATED if e.get("simulated") else "")
        b, f, sp = number(lat.get("baseline")), number(lat.get("final")), number(lat.get("speedup"))
        if b is not None and f is not None and sp:
            speed = f"{fmt_ratio(sp)} faster" if sp >= 1 else f"{fmt_ratio(1 / sp)} slower"
            text = f"{name}: {speed} ({fmt_ms(b)} → {fmt_ms(f)})"
        elif f is not None:
            text = f"{name}: {fmt_ms(f)} (baseline not measured in this runtime)"
        else:
            text = f"{name}: latency not measured"
        a0, a1 = number(acc.get("baseline")), number(acc.get("final"))
        if a0 is not None and a1 is not None:
            text += f", accuracy {fmt_pct(a0)} → {fmt_pct(a1)} ({fmt_points(a1 - a0)})"
        elif a1 is not None:
            text += f", accuracy {fmt_pct(a1)}"
        lines.append((rt not in DEVICE_RUNTIMES, text))
    return [t for _, t in sorted(lines, key=lambda x: x[0])]


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
