"""What ``edgeopt optimize`` leaves in RUN: the choice, ``best.yaml``, the artifact, ``pareto.json``, ``report.html``.

``choose`` (pure) picks the most accurate confirmed candidate that meets every limit as measured;
``closest`` (pure) ranks the others by their worst relative miss and names each limit missed.
``write_outputs`` writes every file atomically; with no candidate within budget it still writes
``pareto.json`` and ``report.html`` (the evidence), then raises ``OptimizeFailed``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from edgeopt.fileio import write_bytes_atomic, write_json_atomic
from edgeopt.optimize.target import describe_miss

MEASURED_KEYS = ("accuracy", "latency_ms", "flash_bytes", "arena_bytes")


def measured_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in summary["confirmed"] if "measured" in c]


def choose(summary: dict[str, Any]) -> dict[str, Any] | None:
    """The most accurate confirmed candidate with no missed limit (ties: the faster). Pure."""
    ok = [c for c in measured_rows(summary) if not c["misses"]]
    return max(ok, key=lambda c: (c["measured"]["accuracy"], -c["measured"]["latency_ms"]), default=None)


def closest(summary: dict[str, Any], n: int = 3) -> list[dict[str, Any]]:
    """The ``n`` confirmed candidates nearest the budget (smallest worst miss), with each limit they miss.

    When fewer than ``n`` were confirmed, screened ones fill in, marked ``"figures": "screened"``. Pure.
    """
    from edgeopt.optimize.space import describe

    rows = [
        {
            "trial": c["trial"],
            "recipe": describe(c["recipe"]["passes"]),
            "figures": "measured",
            "misses": c["misses"],
            **{k: c["measured"][k] for k in MEASURED_KEYS},
        }
        for c in measured_rows(summary)
        if c["misses"]
    ]
    confirmed = {c["trial"] for c in summary["confirmed"]}
    for s in summary["screened"]:
        cons = s.get("constraints") or {}
        if s["trial"] in confirmed or not cons:
            continue
        cost = s.get("cost") or {}
        misses = [{"limit": k, "over": round(v, 4)} for k, v in sorted(cons.items(), key=lambda kv: -kv[1]) if v > 0]
        row = {
            "trial": s["trial"],
            "recipe": s["describe"],
            "figures": "screened",
            "misses": misses,
            "accuracy": s.get("accuracy_val"),
            **{k: cost.get(k) for k in MEASURED_KEYS[1:]},
        }
        if not misses:
            row["note"] = "within the limits when screened; not confirmed in the time given"
        rows.append(row)
    rows.sort(key=lambda r: (r["figures"] != "measured", max((m["over"] for m in r["misses"]), default=0.0)))
    return rows[:n]


def miss_text(row: dict[str, Any]) -> str:
    """``trial 7 (prune 0.50 …): flash 52.1 KB > 40.0 KB; latency_ms 0.12 > 0.1``. Pure."""
    parts = [
        describe_miss(m) if "value" in m else f"{m['limit']} over by {m['over']:.0%} (screened)" for m in row["misses"]
    ]
    return f"trial {row['trial']} ({row['recipe']}): {'; '.join(parts) or row.get('note', '')}"


def pareto_front(points: list[tuple[float, float, Any]]) -> list[Any]:
    """Keys of the (accuracy up, latency down) non-dominated points. Pure."""
    front = []
    for acc, lat, key in points:
        if not any(a >= acc and t <= lat and (a, t) != (acc, lat) for a, t, _ in points):
            front.append(key)
    return front


def pareto_json(summary: dict[str, Any], chosen: dict[str, Any] | None) -> dict[str, Any]:
    """``pareto.json``: the budget, the baseline, every candidate with screened and measured figures. Pure."""
    from edgeopt.optimize.space import describe

    measured = {c["trial"]: c for c in summary["confirmed"]}
    candidates = []
    for s in summary["screened"]:
        m = measured.get(s["trial"], {})
        candidates.append(
            {
                "trial": s["trial"],
                # a confirmed candidate as it ran (with the recovery epochs confirmation gave it), else as screened
                "recipe": describe(m["recipe"]["passes"]) if "recipe" in m else s["describe"],
                "passes": m["recipe"]["passes"] if "recipe" in m else s["passes"],
                "state": s["state"],
                "screened": {
                    "accuracy_val": s.get("accuracy_val"),
                    "accuracy_after_prune": s.get("accuracy_after_prune"),
                    **{k: (s.get("cost") or {}).get(k) for k in (*MEASURED_KEYS[1:], "energy_mj")},
                    "source": (s.get("cost") or {}).get("source"),
                    "rejected": s.get("rejected"),
                    "error": s.get("error"),
                },
                "measured": m.get("measured"),
                "misses": m.get("misses"),
                "confirm_error": m.get("error"),
            }
        )
    pts = [(c["measured"]["accuracy"], c["measured"]["latency_ms"], c["trial"]) for c in measured_rows(summary)]
    front = pareto_front(pts)
    for c in candidates:
        c["on_measured_front"] = c["trial"] in front
    keys = (
        "model",
        "data",
        "runtime",
        "threads",
        "budget",
        "limits",
        "minutes",
        "seconds",
        "storage",
        "screen_images",
        "val_images",
    )
    return {
        **{k: summary[k] for k in keys},
        "baseline": summary["baseline"],
        "chosen": None
        if chosen is None
        else {
            "trial": chosen["trial"],
            "recipe": describe(chosen["recipe"]["passes"]),
            "measured": chosen["measured"],
        },
        "measured_front": front,
        "candidates": candidates,
    }


def write_outputs(summary: dict[str, Any]) -> dict[str, Any]:
    """Write RUN's files; return what ``optimize`` returns, or raise ``OptimizeFailed``."""
    import yaml

    from edgeopt.optimize.report import render_report
    from edgeopt.optimize.search import OptimizeFailed

    out = Path(summary["out"])
    chosen = choose(summary)
    pareto = pareto_json(summary, chosen)
    write_json_atomic(out / "pareto.json", pareto)
    write_bytes_atomic(out / "report.html", render_report(pareto).encode("utf-8"))
    if chosen is None:
        _remove_stale_choice(out)
        near = closest(summary)
        lines = [miss_text(r) for r in near]
        tried = f"{len(measured_rows(summary))} confirmed of {len(summary['screened'])} screened"
        fix = "relax the limit named most often, give more --minutes, or see report.html"
        if not measured_rows(summary) and any("note" in r for r in near):
            fix = f"give more --minutes than {summary['minutes']:g}: candidates within the limits were screened"
        raise OptimizeFailed(
            f"no candidate meets the budget ({tried}); closest: " + (" | ".join(lines) or "none screened"), fix, near
        )
    src = Path(chosen["measured"]["artifact"])
    artifact = out / f"model{src.suffix}"
    shutil.copyfile(src, artifact)
    from edgeopt.interop.export import sidecar_path

    if sidecar_path(src).is_file():  # the model record (classes, input range) travels with the artifact
        shutil.copyfile(sidecar_path(src), sidecar_path(artifact))
    # the widths a latency allocation landed on (confirm.landed_passes), so that a rerun rebuilds them
    recipe = {**chosen["recipe"], "passes": chosen["measured"].get("landed_passes", chosen["recipe"]["passes"])}
    recipe_path = write_bytes_atomic(out / "best.yaml", yaml.safe_dump(recipe, sort_keys=False).encode())
    measured = {k: chosen["measured"][k] for k in MEASURED_KEYS}
    return {
        "artifact": str(artifact),
        "recipe": str(recipe_path),
        "measured": measured,
        "limits": summary["limits"],
        "baseline": {k: summary["baseline"][k] for k in MEASURED_KEYS},
        "chosen_trial": chosen["trial"],
        "chosen_recipe": pareto["chosen"]["recipe"],
        "screened": len(summary["screened"]),
        "confirmed": len(measured_rows(summary)),
        "seconds": summary["seconds"],
        "pareto": str(out / "pareto.json"),
        "report": str(out / "report.html"),
    }


def _remove_stale_choice(out: Path) -> None:
    """An earlier run's ``best.yaml`` and artifact in RUN (another budget) must not read as this run's choice."""
    from edgeopt.interop.export import sidecar_path

    for path in [out / "best.yaml", *out.glob("model.*")]:
        if path.suffix in (".yaml", ".onnx", ".pte", ".tflite"):
            sidecar_path(path).unlink(missing_ok=True)
            path.unlink(missing_ok=True)
