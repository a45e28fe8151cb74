"""The report's plots as inline SVG strings (matplotlib, no pyplot, no files).

Figures are drawn with ``matplotlib.figure.Figure`` and saved as SVG: the Agg-family
object API needs no GUI backend and touches no global pyplot state. Text is drawn as
paths (``svg.fonttype='path'``), so the SVG needs no font; the XML prolog, DOCTYPE, RDF
metadata and namespace declarations (which name w3.org / purl.org URLs) are stripped, element ids are prefixed
per plot so several SVGs can share one HTML page, and the hash salt is fixed so the
output is deterministic. Each function returns ``None`` when the report has no data for
its plot.

Runtimes take their colour and marker from ``report.palette`` (the same in every report);
series that are not runtimes use ``SERIES_COLOURS``, which share no colour with a runtime.
Elements drawn for a runtime carry an id ``<plot>-rt-<slug>-…`` and point labels
``<plot>-ptlabel-N``, so a check can match colours to runtimes and look for overlaps. Point
labels are placed by ``place_labels`` so that none overlaps another label or a marker.
Cost: matplotlib import (~0.5 s once) and ~50 ms per plot.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from typing import Any

from edgeopt.report.build import number, per_runtime, stage_label, stage_metrics
from edgeopt.report.numbers import fmt_num
from edgeopt.report.palette import runtime_colour, runtime_marker, runtime_name, runtime_slug

# Colours of series that are not runtimes (sizes, losses, bit widths): none is a runtime's colour.
SERIES_COLOURS = ("#4b5563", "#9467bd", "#8c564b", "#17becf", "#bcbd22", "#e377c2")
_RC = {"svg.fonttype": "path", "font.size": 9, "axes.spines.top": False, "axes.spines.right": False}


def runtime_style(runtime: str) -> tuple[str, str]:
    """(colour, marker) of a runtime: the same in every plot of every report."""
    return runtime_colour(runtime), runtime_marker(runtime)


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


def _layout(fig: Any) -> Any:
    """Lay ``fig`` out (constrained layout, autoscaled limits) and return a renderer to measure text with."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    fig.draw_without_rendering()
    return canvas.get_renderer()


def text_extent(ann: Any, renderer: Any) -> Any:
    """Display-space box of an annotation's text alone (``get_window_extent`` adds its leader line)."""
    from matplotlib.text import Text

    ann.update_positions(renderer)
    return Text.get_window_extent(ann, renderer)


def _overlaps(a: Any, b: Any, pad: float = 1.0) -> bool:
    return a.x0 < b.x1 + pad and b.x0 < a.x1 + pad and a.y0 < b.y1 + pad and b.y0 < a.y1 + pad


# Offsets (points) tried for a label, nearest first: right, left, above, below, then diagonals.
_DIRECTIONS = ((1, 0), (-1, 0), (0, 1), (0, -1), (0.7, 0.7), (-0.7, 0.7), (0.7, -0.7), (-0.7, -0.7),
               (0.9, 0.4), (-0.9, 0.4), (0.9, -0.4), (-0.9, -0.4), (0.4, 0.9), (-0.4, 0.9), (0.4, -0.9),
               (-0.4, -0.9))  # fmt: skip
_RADII = (6, 11, 17, 25, 35, 48, 64, 84)


def place_labels(fig: Any, ax: Any, items: list[tuple[float, float, str]], renderer: Any = None) -> list[Any]:
    """Annotate each ``(x, y, text)`` in data coordinates so no label overlaps another or a marker.

    Greedy: each label takes the nearest offset (16 directions, growing radii) whose box is inside
    the axes and clear of every placed label and every point's marker; past the second radius a
    thin leader line joins it to its point. A label that finds no free place is left out (and
    returned as ``None``); labels get ids ``ptlabel-N``. ``renderer``: from ``_layout(fig)`` when
    the caller already laid the figure out. Cost: one layout pass (unless given a renderer) plus
    one text extent per tried offset.
    """
    from matplotlib.transforms import Bbox

    renderer = renderer or _layout(fig)
    scale = fig.dpi / 72
    frame = ax.get_window_extent(renderer)
    pts = ax.transData.transform([(x, y) for x, y, _ in items]) if items else []
    r = 4.5 * scale  # a marker's half-size (s=36 is 6 pt across) plus a margin
    taken = [Bbox.from_extents(px - r, py - r, px + r, py + r) for px, py in pts]
    placed = []
    for k, ((x, y, text), _) in enumerate(zip(items, pts, strict=True)):
        chosen = None
        for radius in _RADII:
            for dx, dy in _DIRECTIONS:
                ha = "left" if dx > 0 else "right" if dx < 0 else "center"
                va = "bottom" if dy > 0 else "top" if dy < 0 else "center"
                ann = ax.annotate(
                    text, (x, y), xytext=(dx * radius, dy * radius), textcoords="offset points", fontsize=7,
                    ha=ha, va=va, annotation_clip=False,
                    arrowprops={"arrowstyle": "-", "color": "#9aa1ab", "linewidth": 0.5, "shrinkA": 0, "shrinkB": 3}
                    if radius > _RADII[1] else None,
                )  # fmt: skip
                ann.set_in_layout(False)
                box = text_extent(ann, renderer)
                inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
                if inside and not any(_overlaps(box, t) for t in taken):
                    chosen = ann
                    break
                ann.remove()
            if chosen is not None:
                break
        if chosen is not None:
            chosen.set_gid(f"ptlabel-{k}")
            taken.append(text_extent(chosen, renderer))
        placed.append(chosen)
    return placed


def _from_baseline(report: Mapping[str, Any], points: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The points of the summary's baseline stage and later (an untrained start would squash the axis)."""
    stages = report.get("stages") or []
    labels = [stage_label(s, i) for i, s in enumerate(stages)]
    base = (report.get("summary") or {}).get("baseline_stage")
    if base not in labels:
        return list(points)
    later = set(labels[labels.index(base) :])
    return [p for p in points if p.get("label") in later]


def accuracy_latency_svg(report: Mapping[str, Any]) -> str | None:
    """Scatter of accuracy (%) against latency (ms): one point per stage x runtime, labelled by stage number.

    Stages before the summary's baseline are left out. Points of one runtime at the same place
    share one label (``"5, 6"``); PyTorch's int8 simulation is drawn hollow. The stage names
    behind the numbers are listed under the plot by ``render_html``.
    """
    points = _from_baseline(report, report.get("tradeoff") or [])
    if not points:
        return None
    import matplotlib

    with matplotlib.rc_context(_RC):
        fig, ax = _new_figure()
        for rt in dict.fromkeys(p["runtime"] for p in points):
            pts = [p for p in points if p["runtime"] == rt]
            colour, marker = runtime_style(rt)
            slug = runtime_slug(rt)
            xs, ys = [p["latency_ms"] for p in pts], [100 * p["accuracy"] for p in pts]
            ax.plot(xs, ys, linestyle=":", linewidth=0.8, color=colour, alpha=0.6, gid=f"rt-{slug}-line")
            faces = ["none" if p.get("simulated") else colour for p in pts]
            ax.scatter(xs, ys, facecolors=faces, edgecolors=colour, marker=marker, s=36, linewidths=1.2,
                       label=_short(runtime_name(rt)), zorder=3, gid=f"rt-{slug}-pts")  # fmt: skip
        lat = [p["latency_ms"] for p in points]
        if min(lat) > 0 and max(lat) / min(lat) > 20:
            ax.set_xscale("log")
        ax.set_xlabel("latency per input (ms, lower is better)")
        ax.set_ylabel("accuracy (%)")
        ax.set_title("Accuracy vs latency, per stage (numbers) and runtime")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, title="runtime")
        ax.margins(x=0.12, y=0.12)
        renderer = _layout(fig)
        # one label per group of coinciding points (within 3 px) of one runtime
        groups: list[tuple[float, float, list[str], str]] = []
        for p in points:
            px, py = ax.transData.transform((p["latency_ms"], 100 * p["accuracy"]))
            for g in groups:
                gx, gy = ax.transData.transform((g[0], g[1]))
                if g[3] == p["runtime"] and abs(gx - px) < 3 and abs(gy - py) < 3:
                    g[2].append(str(p["stage"]))
                    break
            else:
                groups.append((p["latency_ms"], 100 * p["accuracy"], [str(p["stage"])], p["runtime"]))
        place_labels(fig, ax, [(x, y, ", ".join(dict.fromkeys(s))) for x, y, s, _ in groups], renderer)
        fig.set_layout_engine("none")  # keep the layout the labels were placed in
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
        rects = ax.bar(x, [v for _, v in bars], color=SERIES_COLOURS[0], width=0.6)
        ax.bar_label(rects, labels=[fmt_num(v) for _, v in bars], fontsize=7, padding=2)
        _stage_ticks(ax, [lbl for lbl, _ in bars])
        ax.set_ylabel("weights (KiB)")
        ax.set_title("Model size per stage")
        ax.margins(y=0.15)
        return figure_to_svg(fig, "size")


def _stage_ticks(ax: Any, labels: list[str]) -> None:
    """Stage names under the bars, slanted when there are many so they never run into each other."""
    many = len(labels) > 4
    ax.set_xticks(list(range(len(labels))), [_short(lbl, 22) for lbl in labels], rotation=35 if many else 0,
                  ha="right" if many else "center", rotation_mode="anchor" if many else "default")  # fmt: skip
    for k, t in enumerate(ax.get_xticklabels()):
        t.set_gid(f"ticklabel-{k}")


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

    with matplotlib.rc_context(_RC):
        fig, ax = _new_figure(height=3.6)
        width = 0.8 / len(runtimes)
        for j, rt in enumerate(runtimes):
            xs = [i + (j - (len(runtimes) - 1) / 2) * width for i in range(len(rows))]
            vals = [number(lat.get(rt)) for _, lat in rows]
            keep = [(x, v) for x, v in zip(xs, vals, strict=True) if v is not None]
            rects = ax.bar([x for x, _ in keep], [v for _, v in keep], width=width, color=runtime_colour(rt),
                           label=_short(runtime_name(rt)))  # fmt: skip
            for k, rect in enumerate(rects):
                rect.set_gid(f"rt-{runtime_slug(rt)}-bar{k}")
        _stage_ticks(ax, [lbl for lbl, _ in rows])
        values = [v for _, lat in rows for rt in runtimes if (v := number(lat.get(rt))) is not None and v > 0]
        log = bool(values) and max(values) / min(values) > 20
        if log:  # an int8 simulation in PyTorch can be 100x the runtimes: keep their bars readable
            ax.set_yscale("log")
        ax.set_ylabel("latency per input (ms" + (", log scale)" if log else ")"))
        ax.set_title("Latency per stage, by runtime")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, title="runtime")
        return figure_to_svg(fig, "latency")


def sensitivity_svg(layers: Mapping[str, Mapping[str, Any]], bits: Mapping[str, Any], prefix: str) -> str | None:
    """Horizontal bars: accuracy drop (points) when each layer alone goes to int4, coloured by chosen bits."""
    rows = [(str(name), number(e.get("drop_points"))) for name, e in layers.items() if isinstance(e, Mapping)]
    rows = [(name, v) for name, v in rows if v is not None]
    if not rows:
        return None
    import matplotlib

    colours = {4: SERIES_COLOURS[1], 8: SERIES_COLOURS[0]}
    with matplotlib.rc_context(_RC):
        fig, ax = _new_figure(height=max(2.0, 0.32 * len(rows) + 1.0))
        y = range(len(rows))
        fill = [colours.get(int(number(bits.get(n)) or 8), SERIES_COLOURS[2]) for n, _ in rows]
        rects = ax.barh(list(y), [v for _, v in rows], color=fill, height=0.6)
        ax.bar_label(rects, labels=[f"{v:+.2f}" for _, v in rows], fontsize=7, padding=2)
        ax.set_yticks(list(y), [_short(n, 32) for n, _ in rows])
        ax.invert_yaxis()
        ax.axvline(0, color="#888888", linewidth=0.6)
        ax.set_xlabel("accuracy drop with this layer alone at int4 (points)")
        title = "Per-layer int4 sensitivity"
        if bits:
            title += " (grey: kept int8, purple: int4)"
        ax.set_title(title)
        ax.margins(x=0.15)
        return figure_to_svg(fig, prefix)


def _series(xs: list[float], rows: list[Mapping[str, Any]], key: str, scale: float) -> tuple[list, list]:
    """The (x, y) pairs of ``key`` where it is a number, y multiplied by ``scale``."""
    pairs = [(x, number(h.get(key))) for x, h in zip(xs, rows, strict=True)]
    pairs = [(x, y * scale) for x, y in pairs if y is not None]
    return [x for x, _ in pairs], [y for _, y in pairs]


def history_svg(history: list[Mapping[str, Any]], prefix: str, title: str = "Training curves") -> str | None:
    """Per-epoch curves of a training history (``[{"epoch": 1, "loss": …, "train_accuracy": …}, …]``).

    Losses on the left axis, accuracies (%) on the right; any other numeric series is left out.
    ``None`` when no entry has a numeric loss or accuracy.
    """
    rows = [h for h in history if isinstance(h, Mapping)]
    keys = list(dict.fromkeys(str(k) for h in rows for k in h if k != "epoch"))
    losses = [k for k in keys if "loss" in k and any(number(h.get(k)) is not None for h in rows)]
    accs = [k for k in keys if "accuracy" in k and any(number(h.get(k)) is not None for h in rows)]
    if not rows or not (losses or accs):
        return None
    import matplotlib

    xs = [number(h.get("epoch")) or i + 1 for i, h in enumerate(rows)]
    colours = iter(SERIES_COLOURS)
    with matplotlib.rc_context(_RC):
        fig, ax = _new_figure(height=2.8)
        handles = []
        for k in losses:
            px, py = _series(xs, rows, k, 1.0)
            handles += ax.plot(px, py, marker="o", markersize=3, color=next(colours), label=k.replace("_", " "))
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss" if losses else "")
        if accs:
            ax2 = ax.twinx() if losses else ax
            ax2.spines["right"].set_visible(True)
            for k in accs:
                px, py = _series(xs, rows, k, 100.0)
                handles += ax2.plot(px, py, marker="s", markersize=3, linestyle="--", color=next(colours),
                                    label=k.replace("_", " ") + " (%)")  # fmt: skip
            ax2.set_ylabel("accuracy (%)")
        if len(xs) <= 12:
            ax.set_xticks(xs)
        else:
            from matplotlib.ticker import MaxNLocator

            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title)
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.12 if accs and losses else 1.01, 1.0),
                  frameon=False)  # fmt: skip
        return figure_to_svg(fig, prefix)
