"""``report.html`` of a search: every trial's accuracy against its cost, the Pareto front measured in the
runtimes (accuracy against measured latency per runtime, and against memory), and the chosen model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeopt.fileio import write_bytes_atomic
from edgeopt.report.html import esc
from edgeopt.report.palette import runtime_colour, runtime_name
from edgeopt.report.plots import figure_to_svg


def _figure() -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 3.6), layout="constrained")
    ax = fig.add_subplot()
    ax.grid(True, color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    return fig, ax


def trials_svg(records: list[dict[str, Any]], front: list[dict[str, Any]]) -> str | None:
    """Validation accuracy against the search's cost axis: feasible, over-budget, and the front."""
    done = [r for r in records if r["state"] == "COMPLETE" and r.get("cost_axis")]
    if not done:
        return None
    fig, ax = _figure()
    ok = [r for r in done if r["feasible"] and r.get("trained")]
    over = [r for r in done if not r["feasible"]]
    if over:
        ax.scatter([r["values"][1] for r in over], [0.0] * len(over), marker="x", color="#bbbbbb",
                   label=f"over budget, not trained ({len(over)})")  # fmt: skip
    ax.scatter([r["values"][1] for r in ok], [r["values"][0] for r in ok], s=14, color="#7f9fbf",
               label=f"within budget ({len(ok)})")  # fmt: skip
    if front:
        ax.plot([r["values"][1] for r in front], [r["values"][0] for r in front], "o-", color="#c0392b",
                label="Pareto front")  # fmt: skip
    axis = done[-1]["cost_axis"]
    ax.set_xlabel("predicted/measured latency (ms, mean over runtimes)" if axis == "latency_ms" else "MMACs")
    ax.set_ylabel("validation accuracy (proxy training)")
    ax.legend(fontsize=8)
    return figure_to_svg(fig, "trials")


def front_svg(pareto: list[dict[str, Any]], key: str, label: str, scale: float, prefix: str) -> str | None:
    """Test accuracy of the measured front against ``key`` (per runtime), one series per runtime."""
    if not pareto:
        return None
    fig, ax = _figure()
    runtimes = list(pareto[0]["measured"])
    for r in runtimes:
        pts = sorted(
            (p["measured"][r][key] / scale, p["measured"][r]["accuracy"]) for p in pareto if r in p["measured"]
        )
        ax.plot([x for x, _ in pts], [y for _, y in pts], "o-", color=runtime_colour(r), label=runtime_name(r))
    for p in pareto:
        if p.get("chosen"):
            m = p["measured"][runtimes[0]]
            ax.scatter([m[key] / scale], [m["accuracy"]], s=120, facecolors="none", edgecolors="black", label="chosen")
    ax.set_xlabel(label)
    ax.set_ylabel("test accuracy (in the runtime)")
    ax.legend(fontsize=8)
    return figure_to_svg(fig, prefix)


def render_search_html(summary: dict[str, Any], records: list[dict[str, Any]]) -> str:
    from edgeopt.nas.search import pareto_front

    front = pareto_front(records)
    pareto = summary.get("pareto", [])
    latency = front_svg(pareto, "latency_ms", "latency p50 (ms), batch 1", 1.0, "lat")
    memory = front_svg(pareto, "arena_bytes", "arena (KiB, the runtime's plan)", 1024.0, "mem")
    plots = [
        ("All trials", trials_svg(records, front)),
        ("Pareto front: accuracy against measured latency", latency),
        ("Pareto front: accuracy against the runtime's arena", memory),
    ]
    rows = []
    for p in pareto:
        for r, m in p["measured"].items():
            rows.append(
                f"<tr><td>{p['trial']}{' (chosen)' if p.get('chosen') else ''}</td><td>{esc(runtime_name(r))}</td>"
                f"<td>{m['accuracy']:.4f}</td><td>{m['latency_ms']:.4f}</td><td>{m['arena_bytes']:,}</td>"
                f"<td>{p['cost']['params']:,}</td><td>{p['cost']['macs']:,}</td>"
                f"<td>{'yes' if p['within_budget'] else 'no'}</td><td><code>{esc(p['config'])}</code></td></tr>"
            )
    facts = {k: summary.get(k) for k in ("space", "study", "trials", "trials_this_worker", "feasible_trials",
                                         "cost_axis", "budget", "latency_source", "model")}  # fmt: skip
    head = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in facts.items())
    figs = "".join(f"<h2>{esc(t)}</h2>{svg}" for t, svg in plots if svg)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>edgeopt search</title>
<style>body{{font-family:sans-serif;max-width:60rem;margin:2rem auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.2rem .4rem;font-size:.85rem;text-align:left}}
svg{{max-width:100%;height:auto}}</style>
</head><body><h1>Architecture search</h1><table>{head}</table>{figs}
<h2>Pareto front, measured</h2><table><tr><th>trial</th><th>runtime</th><th>test accuracy</th><th>latency p50 ms</th>
<th>arena B</th><th>params</th><th>MACs</th><th>within budget</th><th>configuration</th></tr>{"".join(rows)}</table>
</body></html>
"""


def write_search_report(path: Path, summary: dict[str, Any], records: list[dict[str, Any]]) -> Path:
    """Write ``report.html`` (self-contained: inline SVG plots, no scripts) atomically."""
    return write_bytes_atomic(path, render_search_html(summary, records).encode())
