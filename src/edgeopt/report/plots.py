"""The report's plots as inline SVG strings (matplotlib, no pyplot, no files).

Figures are drawn with ``matplotlib.figure.Figure`` and saved as SVG: the Agg-family
object API needs no GUI backend and touches no global pyplot state. Text is drawn as
paths (``svg.fonttype='path'``), so the SVG needs no font; the XML prolog, DOCTYPE, RDF
metadata and namespace declarations (which name w3.org / purl.org URLs) are stripped, element ids are prefixed
per plot so several SVGs can share one HTML page, and the hash salt is fixed so the
output is deterministic. Each function returns ``None`` when the report has no data for
its plot. Cost: matplotlib import (~0.5 s once) and ~50 ms per plot.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from typing import Any

from edgeopt.report.build import number, per_runtime, stage_label, stage_metrics

_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_RC = {"svg.fonttype": "path", "font.size": 9, "axes.spines.top": False, "axes.spines.right": False}


def runtime_style(runtimes: list[str], runtime: str) -> tuple[str, str]:
    """(colour, marker) of a runtime, stable across every plot of one report."""
    i = runtimes.index(runtime) if runtime in runtimes else len(runtimes)
    return _PALETTE[i % len(_PALETTE)], _MARKERS[i % len(_MARKERS)]


def _short(text: str, n: int = 28) -> str:
    """Truncated to ``n`` characters, with ``$`` escaped so matplotlib draws no mathtext."""
    text = text if len(text) <= n else text[: n - 1] + "…"
    return text.replace("$", r"\$")


def figure_to_svg(fig: Any, prefix: str) -> str:
    """An SVG element for inline use: no prolog/metadata, ids prefixed with ``prefix``."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({**_RC, "svg.hashsalt": prefix}):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg") :]
    svg = re.sub(r"\s*<metadata>.*?</metadata>", "", svg, flags=re.S)
    # the HTML parser puts inline <svg> and xlink:href in their namespaces by itself
    svg = re.sub(r'\s+xmlns(?::xlink)?="[^"]*"', "", svg)
    svg = re.sub(r'\bid="([^"]+)"', rf'id="{prefix}-\1"', svg)
    svg = re.sub(r'href="#([^"]+)"', rf'href="#{prefix}-\1"', svg)
    svg = re.sub(r"url\(#([^)]+)\)", rf"url(#{prefix}-\1)", svg)
    # let CSS size it: drop the fixed pt width/height, keep the viewBox
    svg = re.sub(r'^<svg([^>]*?) width="[^"]*" height="[^"]*"', r'<svg\1 role="img"', svg, count=1)
    return svg.strip()


def _new_figure(width: float = 7.0, height: float = 3.8) -> tuple[Any, Any]:
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(width, height), layout="constrained")
        ax = fig.add_subplot()
        ax.grid(True, color="#dddddd", linewidth=0.6)
        ax.set_axisbelow(True)
    return fig, ax


def accuracy_latency_svg(report: Mapping[str, Any]) -> str | None:
    """Scatter of accuracy (%) against latency (ms): one labelled point per stage x runtime."""
    points = report.get("tradeoff") or []
    if not points:
        return None
    import matplotlib

    runtimes = list(report.get("runtimes") or [])
    with matplotlib.rc_context(_RC):
        fig, ax = _new_figure()
        for j, rt in enumerate(dict.fromkeys(p["runtime"] for p in points)):
            pts = [p for p in points if p["runtime"] == rt]
            colour, marker = runtime_style(runtimes, rt)
            xs, ys = [p["latency_ms"] for p in pts], [100 * p["accuracy"] for p in pts]
            ax.plot(xs, ys, linestyle=":", linewidth=0.8, color=colour, alpha=0.6)
            ax.scatter(xs, ys, color=colour, marker=marker, s=36, label=rt, zorder=3)
            for p, x, y in zip(pts, xs, ys, strict=True):
                # alternate above/below by runtime so labels of coinciding points overlap less
                offset = (5, 4) if j % 2 == 0 else (5, -10)
                ax.annotate(_short(p["label"]), (x, y), textcoords="offset points", xytext=offset, fontsize=7)
        lat = [p["latency_ms"] for p in points]
        if min(lat) > 0 and max(lat) / min(lat) > 20:
            ax.set_xscale("log")
        ax.set_xlabel("latency per input (ms, lower is better)")
        ax.set_ylabel("accuracy (%)")
        ax.set_title("Accuracy vs latency, per stage and runtime")
        ax.legend(loc="best", frameon=False, title="runtime")
        return figure_to_svg(fig, "acclat")


def size_svg(report: Mapping[str, Any]) -> str | None:
    """Bar chart of the weight size (KiB) of each stage."""
    stages = report.get("stages") or []
    bars = [(stage_label(s, i), number(stage_metrics(s).get("size_bytes"))) for i, s in enumerate(stages)]
    bars = [(label, v / 1024) for label, v in bars if v is not None]
    if not bars:
        return None
    import matplotlib

    with matplotlib.rc_context(_RC):
        fig, ax = _new_figure(height=3.4)
        x = range(len(bars))
        rects = ax.bar(x, [v for _, v in bars], color=_PALETTE[0], width=0.6)
        ax.bar_label(rects, labels=[f"{v:,.1f}" for _, v in bars], fontsize=7, padding=2)
        ax.set_xticks(list(x), [_short(lbl) for lbl, _ in bars], rotation=20 if len(bars) > 4 else 0, ha="right"
                      if len(bars) > 4 else "center")  # fmt: skip
        ax.set_ylabel("weights (KiB)")
        ax.set_title("Model size per stage")
        ax.margins(y=0.15)
        return figure_to_svg(fig, "size")


def latency_svg(report: Mapping[str, Any]) -> str | None:
    """Grouped bars: latency (ms) of every runtime at every stage."""
    stages = report.get("stages") or []
    runtimes = [
        rt
        for rt in (report.get("runtimes") or [])
        if any(number(per_runtime(s, "latency_ms").get(rt)) is not None for s in stages)
    ]
    rows = [(stage_label(s, i), per_runtime(s, "latency_ms")) for i, s in enumerate(stages)]
    rows = [(label, lat) for label, lat in rows if any(number(lat.get(rt)) is not None for rt in runtimes)]
    if not rows or not runtimes:
        return None
    import matplotlib

    all_runtimes = list(report.get("runtimes") or [])
    with matplotlib.rc_context(_RC):
        fig, ax = _new_figure(height=3.6)
        width = 0.8 / len(runtimes)
        for j, rt in enumerate(runtimes):
            xs = [i + (j - (len(runtimes) - 1) / 2) * width for i in range(len(rows))]
            vals = [number(lat.get(rt)) for _, lat in rows]
            keep = [(x, v) for x, v in zip(xs, vals, strict=True) if v is not None]
            colour, _ = runtime_style(all_runtimes, rt)
            ax.bar([x for x, _ in keep], [v for _, v in keep], width=width, color=colour, label=rt)
        n = len(rows)
        ax.set_xticks(list(range(n)), [_short(lbl) for lbl, _ in rows], rotation=20 if n > 4 else 0,
                      ha="right" if n > 4 else "center")  # fmt: skip
        ax.set_ylabel("latency per input (ms)")
        ax.set_title("Latency per stage, by runtime")
        ax.legend(loc="best", frameon=False, ncols=min(4, len(runtimes)))
        return figure_to_svg(fig, "latency")


def sensitivity_svg(layers: Mapping[str, Mapping[str, Any]], bits: Mapping[str, Any], prefix: str) -> str | None:
    """Horizontal bars: accuracy drop (points) when each layer alone goes to int4, coloured by chosen bits."""
    rows = [(str(name), number(e.get("drop_points"))) for name, e in layers.items() if isinstance(e, Mapping)]
    rows = [(name, v) for name, v in rows if v is not None]
    if not rows:
        return None
    import matplotlib

    colours = {4: _PALETTE[1], 8: _PALETTE[0]}
    with matplotlib.rc_context(_RC):
        fig, ax = _new_figure(height=max(2.0, 0.32 * len(rows) + 1.0))
        y = range(len(rows))
        fill = [colours.get(int(number(bits.get(n)) or 8), _PALETTE[2]) for n, _ in rows]
        rects = ax.barh(list(y), [v for _, v in rows], color=fill, height=0.6)
        ax.bar_label(rects, labels=[f"{v:+.2f}" for _, v in rows], fontsize=7, padding=2)
        ax.set_yticks(list(y), [_short(n, 32) for n, _ in rows])
        ax.invert_yaxis()
        ax.axvline(0, color="#888888", linewidth=0.6)
        ax.set_xlabel("accuracy drop with this layer alone at int4 (points)")
        title = "Per-layer int4 sensitivity"
        if bits:
            title += " (blue: kept int8, orange: int4)"
        ax.set_title(title)
        ax.margins(x=0.15)
        return figure_to_svg(fig, prefix)
