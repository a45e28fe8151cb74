"""``report.html`` of an optimize run: the Pareto plot, every candidate's screened and measured cost, and
for the chosen one each limit beside its measured value. Built from ``pareto.json`` with the run
report's helpers (``edgeopt.report``: page style, tables, number formats, SVG plots)."""

from __future__ import annotations

from html import escape
from typing import Any

from edgeopt.report.html import _CSS, _kv_table, _table, esc
from edgeopt.report.numbers import fmt_bytes, fmt_ms, fmt_pct
from edgeopt.report.palette import runtime_name
from edgeopt.report.plots import SERIES_COLOURS, _new_figure, figure_to_svg, runtime_style

LIMIT_FORMAT = {
    "accuracy": fmt_pct,
    "latency_ms": fmt_ms,
    "flash_bytes": fmt_bytes,
    "arena_bytes": fmt_bytes,
    "energy_mj": lambda v: f"{v:.3g} mJ (estimate)",
}


def pareto_svg(p: dict[str, Any]) -> str | None:
    """Accuracy against latency: screened candidates (validation accuracy, hollow), confirmed ones (test
    accuracy in the runtime, filled), the measured front joined, the chosen one ringed, the limits dashed."""
    import matplotlib

    from edgeopt.report.plots import _RC

    screened = [c for c in p["candidates"] if c["screened"].get("latency_ms") and c["screened"].get("accuracy_val")]
    measured = [c for c in p["candidates"] if c["measured"]]
    if not screened and not measured:
        return None
    colour, marker = runtime_style(p["runtime"])
    with matplotlib.rc_context(_RC):
        fig, ax = _new_figure()
        ax.scatter(
            [c["screened"]["latency_ms"] for c in screened],
            [100 * c["screened"]["accuracy_val"] for c in screened],
            facecolors="none",
            edgecolors=SERIES_COLOURS[0],
            s=24,
            label="screened (validation, untrained)",
        )
        ax.scatter(
            [c["measured"]["latency_ms"] for c in measured],
            [100 * c["measured"]["accuracy"] for c in measured],
            color=colour,
            marker=marker,
            s=40,
            zorder=3,
            label=f"confirmed in {runtime_name(p['runtime'])}",
        )
        front = sorted((c for c in measured if c["on_measured_front"]), key=lambda c: c["measured"]["latency_ms"])
        ax.plot(
            [c["measured"]["latency_ms"] for c in front],
            [100 * c["measured"]["accuracy"] for c in front],
            color=colour,
            linewidth=0.9,
            linestyle=":",
        )
        base = p["baseline"]
        ax.scatter(
            [base["latency_ms"]],
            [100 * base["accuracy"]],
            color=SERIES_COLOURS[2],
            marker="s",
            s=36,
            label="input model",
        )
        if p["chosen"]:
            m = p["chosen"]["measured"]
            ax.scatter(
                [m["latency_ms"]],
                [100 * m["accuracy"]],
                facecolors="none",
                edgecolors="#111111",
                s=140,
                linewidths=1.4,
                zorder=4,
                label="chosen",
            )
        ax.axvline(p["limits"]["latency_ms"], color="#999999", linestyle="--", linewidth=0.8)
        ax.axhline(100 * p["limits"]["accuracy"], color="#999999", linestyle="--", linewidth=0.8)
        ax.set_xlabel("latency per input (ms, p50, lower is better)")
        ax.set_ylabel("accuracy (%)")
        ax.set_title("Candidates against the budget (dashed: latency limit, accuracy floor)")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        return figure_to_svg(fig, "pareto")


def _cost_cells(fig: dict[str, Any] | None, acc_key: str) -> list[tuple[str, bool]]:
    fig = fig or {}
    return [
        (fmt_pct(fig.get(acc_key)), True),
        (fmt_ms(fig.get("latency_ms")), True),
        (fmt_bytes(fig.get("flash_bytes")), True),
        (fmt_bytes(fig.get("arena_bytes")), True),
    ]


def _limits_table(p: dict[str, Any]) -> str:
    m = p["chosen"]["measured"]
    rows = []
    for key, limit in p["limits"].items():
        value = m.get(key)
        ok = value is not None and (value >= limit if key == "accuracy" else value <= limit)
        fmt = LIMIT_FORMAT[key]
        rel = "≥" if key == "accuracy" else "≤"
        rows.append(
            [(key, False), (fmt(value), True), (f"{rel} {fmt(limit)}", True), ("met" if ok else "missed", False)]
        )
    return _table(["limit", "measured", "allowed", ""], rows)


def render_report(p: dict[str, Any]) -> str:
    """The optimize run as one self-contained HTML page."""
    rt = runtime_name(p["runtime"])
    head = [
        ("model", p["model"]),
        ("data", p["data"]),
        ("runtime", f"{rt}, {p['threads']} thread(s)"),
        ("budget", ", ".join(f"{k}={v}" for k, v in p["budget"].items())),
        ("time", f"{p['seconds']:.0f} s of {p['minutes'] * 60:.0f} s"),
        (
            "input model",
            f"{fmt_pct(p['baseline']['accuracy'])}, {fmt_ms(p['baseline']['latency_ms'])}, "
            f"flash {fmt_bytes(p['baseline']['flash_bytes'])}, arena {fmt_bytes(p['baseline']['arena_bytes'])}",
        ),
        (
            "screening",
            f"{len(p['candidates'])} trials untrained on {p['screen_images']} training images, "
            f"scored on {p['val_images']} held-out training images; cost measured in {rt}",
        ),
    ]
    if p["chosen"]:
        chosen = f"<h2>Chosen: trial {p['chosen']['trial']} · {escape(p['chosen']['recipe'])}</h2>" + _limits_table(p)
    else:
        chosen = "<h2>No candidate meets every limit as measured</h2><p>See the closest below.</p>"
    rows = []
    for c in p["candidates"]:
        note = c["screened"].get("rejected") or c["screened"].get("error") or c.get("confirm_error") or ""
        missed = ", ".join(m["limit"] for m in c["misses"] or []) if c["measured"] else ""
        verdict = ("" if not c["measured"] else "missed: " + missed if missed else "meets all") + note
        rows.append(
            [
                (str(c["trial"]), True),
                (c["recipe"], False),
                *_cost_cells(c["screened"], "accuracy_val"),
                *_cost_cells(c["measured"], "accuracy"),
                (verdict, False),
            ]
        )
    table = _table(
        [
            "trial",
            "recipe",
            "screened acc. (val)",
            "screened latency",
            "screened flash",
            "screened arena",
            "measured acc. (test)",
            "measured latency",
            "measured flash",
            "measured arena",
            "verdict",
        ],
        rows,
    )
    svg = pareto_svg(p) or '<p class="missing">no candidate was costed</p>'
    body = [
        f"<header><h1>edgeopt optimize · <span>{esc(p['model'])}</span></h1></header>",
        "<section><h2>Run</h2>",
        _kv_table(head),
        "</section>",
        f"<section>{chosen}</section>",
        f"<section><h2>Pareto plot</h2><figure>{svg}</figure></section>",
        "<section><h2>Candidates</h2><p>Screened: the recipe run without training, validation accuracy, cost of "
        "its artifact timed in the runtime. Measured: the full recipe, test accuracy and cost in the runtime.</p>",
        table,
        "</section>",
        "<footer>Energy, where limited, is an estimate (45 nm per-operation energies).</footer>",
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>edgeopt optimize</title>'
        f"<style>{_CSS}</style></head><body><main>{''.join(body)}</main></body></html>\n"
    )
