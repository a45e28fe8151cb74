"""Render a built report (``build_report`` output) as one self-contained HTML page.

Everything is inline: CSS in a ``<style>`` element, plots as ``<svg>`` elements from
``report.plots``; no scripts, no external stylesheets, fonts, images or links, so the
page opens offline and can be mailed as a single file. Every string that comes from the
ledger or run info is passed through ``html.escape``. Missing metrics show as "—".

The summary leads with the headline (per runtime, baseline -> final latency and accuracy,
deployment runtimes first, PyTorch's int8 marked simulation). Every table sits in a
``div.table-wrap`` that scrolls sideways rather than widening the page, and cells wrap, so
the page fits a 1400 px window; runtimes carry their palette colour as a swatch; nested
metrics render as nested tables with names from ``field_label`` and numbers from
``report.numbers``; training histories render as plots. Cost: the plots dominate (~0.2 s
plus matplotlib's import, ~50 ms more per training curve).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from html import escape
from typing import Any

from edgeopt.report.build import is_quantized, number, per_runtime, runtime_accuracy, stage_label, stage_metrics
from edgeopt.report.numbers import (
    MISSING,
    fmt_any,
    fmt_bytes,
    fmt_count,
    fmt_field,
    fmt_ms,
    fmt_num,
    fmt_pct,
    fmt_points,
    fmt_ratio,
    fmt_sci,
    fmt_seconds,
    fmt_si,
)
from edgeopt.report.palette import runtime_colour, runtime_name, runtime_slug
from edgeopt.report.plots import accuracy_latency_svg, history_svg, latency_svg, sensitivity_svg, size_svg

__all__ = ["MISSING", "fmt_any", "fmt_bytes", "fmt_count", "fmt_ms", "fmt_pct", "fmt_si", "render_html"]

# Scalar stage metrics shown by name, in this order, with their formatter.
STAGE_METRICS: tuple[tuple[str, str, Callable[[Any], str]], ...] = (
    ("accuracy", "Accuracy (PyTorch)", fmt_pct),
    ("params", "Parameters", fmt_count),
    ("trainable_params", "Trainable parameters", fmt_count),
    ("macs", "MACs per input", fmt_si),
    ("size_bytes", "Weights size", fmt_bytes),
    ("peak_activation_bytes", "Peak activation memory", fmt_bytes),
)
# How other fields are named, where spelling the key out would read badly.
FIELD_LABELS = {
    "teacher_accuracy": "Teacher accuracy (PyTorch)",
    "train_seconds": "Training time",
    "train_history": "Training curves",
    "macs_before": "MACs before pruning",
    "macs_after": "MACs after pruning",
    "mac_ratio": "MAC ratio",
    "params_before": "Parameters before pruning",
    "params_after": "Parameters after pruning",
    "weight_values_by_bits": "Weight values by bit width",
    "peak_activation_source": "Peak activation memory source",
    "rel_diff": "Parity rel. diff",
    "top1_agreement": "Top-1 agreement",
    "artifact_bytes": "Artifact size",
    "latency_ms": "Latency (p50)",
    "checkpoint": "Checkpoint",
    "num_classes": "Classes",
}
_WORDS = {"macs": "MACs", "mac": "MAC", "kd": "KD", "sqnr": "SQNR", "db": "dB", "bn": "BN", "ms": "ms", "id": "ID",
          "qat": "QAT", "ptq": "PTQ", "lr": "learning rate", "kib": "KiB", "int8": "int8", "int4": "int4"}  # fmt: skip
_FORMAT_BY_KEY = {k: f for k, _, f in STAGE_METRICS}
_STAGE_KEYS = {"stage", "name", "pass", "status", "seconds", "metrics"}
_PER_RUNTIME = {"latency_ms", "accuracy_by_runtime", "parity", "artifacts", "artifact_bytes"}
_STATUS_CLASSES = {"done": "ok", "ok": "ok", "success": "ok", "failed": "bad", "error": "bad", "skipped": "dim"}
_MAX_LIST = 16  # list items shown inline before "… (N more)"
_MAX_ROWS = 30  # rows of a nested table before "… N more rows"
SIMULATION_NOTE = (
    "PyTorch runs an int8 model as fake-quantized float operations: a simulation of the integer model, "
    "not a deployment figure; the deployment runtimes run the exported integer artifacts."
)

# ----------------------------------------------------------------------------- html helpers


class Markup(str):
    """A string that is already HTML (escaped where needed): table helpers insert it as is."""


def esc(v: Any) -> str:
    return escape(v if isinstance(v, str) else fmt_any(v), quote=True)


def _html(text: str) -> str:
    return text if isinstance(text, Markup) else escape(text)


def field_label(key: str) -> str:
    """A metric's display name: ``FIELD_LABELS``, else the key spelled out (``macs_per_step`` -> ``MACs per step``)."""
    if key in FIELD_LABELS:
        return FIELD_LABELS[key]
    words = [_WORDS.get(w.lower(), w) for w in str(key).replace("-", "_").split("_") if w]
    if not words:
        return str(key)
    first = words[0]
    return " ".join([first[:1].upper() + first[1:] if first not in _WORDS.values() else first, *words[1:]])


def runtime_cell(runtime: str, simulated: bool = False) -> Markup:
    """A runtime's name with its colour swatch (the colour its plots use)."""
    tag = ' <span class="tag">int8 simulation</span>' if simulated else ""
    return Markup(
        f'<span class="swatch" data-runtime="{runtime_slug(runtime)}" style="background:{runtime_colour(runtime)}">'
        f"</span>{escape(runtime_name(runtime))}{tag}"
    )


def _cell(text: str, numeric: bool = False) -> str:
    classes = (["num"] if numeric else []) + (["missing"] if text == MISSING else [])
    cls = f' class="{" ".join(classes)}"' if classes else ""
    return f"<td{cls}>{_html(text)}</td>"


def _wrap(table: str) -> str:
    """Tables sit in a box that scrolls sideways if a table is ever wider than the page."""
    return f'<div class="table-wrap">{table}</div>'


def _table(header: Iterable[str], rows: Iterable[Iterable[tuple[str, bool]]], cls: str = "") -> str:
    head = "".join(f"<th>{_html(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(_cell(t, n) for t, n in row) + "</tr>" for row in rows)
    klass = f' class="{cls}"' if cls else ""
    return _wrap(f"<table{klass}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def _kv_table(items: Iterable[tuple[str, str]], cls: str = "kv") -> str:
    rows = "".join(f'<tr><th scope="row">{_html(k)}</th><td>{_html(v)}</td></tr>' for k, v in items)
    return _wrap(f'<table class="{cls}"><tbody>{rows}</tbody></table>')


def _inline(v: Any) -> str:
    """A dict or list as one readable line (``name: cifar10, split: test``)."""
    if isinstance(v, Mapping):
        return ", ".join(f"{k}: {_inline(x)}" for k, x in v.items()) or MISSING
    if isinstance(v, list):
        return ", ".join(_inline(x) for x in v) or MISSING
    return fmt_any(v)


def is_history(key: str, v: Any) -> bool:
    """Whether ``v`` is a per-epoch training history (a list of dicts with an ``epoch`` or under ``*history``)."""
    if not isinstance(v, list) or not v or not all(isinstance(h, Mapping) for h in v):
        return False
    return str(key).endswith("history") or any("epoch" in h for h in v)


def value_html(key: str, v: Any, depth: int = 0, shadow: Mapping[str, Any] | None = None, note: str = "") -> Markup:
    """Any metric value as HTML: scalars formatted by name, dicts as nested tables, lists of dicts as tables.

    Keys of a nested dict that also appear in ``shadow`` (the enclosing metrics) are left out
    when their value is the same there, and suffixed with ``note`` when it differs, so one name
    never shows two values unexplained.
    """
    if isinstance(v, Mapping) and v:
        if depth >= 3:
            return Markup(escape(fmt_any(v)))
        items = []
        for k, x in v.items():
            label = field_label(str(k))
            if shadow is not None and k in shadow:
                if shadow[k] == x:
                    continue
                label += note
            items.append((label, value_html(str(k), x, depth + 1)))
        return Markup(_kv_table(items, "kv nested"))
    if isinstance(v, list) and v and all(isinstance(x, Mapping) for x in v) and depth < 3:
        cols = list(dict.fromkeys(str(k) for x in v for k in x))
        rows = [[(value_html(c, x.get(c), depth + 1), number(x.get(c)) is not None) for c in cols] for x in v]
        more = f'<p class="meta">… {len(rows) - _MAX_ROWS} more rows</p>' if len(rows) > _MAX_ROWS else ""
        return Markup(_table([field_label(c) for c in cols], rows[:_MAX_ROWS], "nested") + more)
    if isinstance(v, list) and len(v) > _MAX_LIST:
        shown = ", ".join(fmt_field(key, x) for x in v[:_MAX_LIST])
        return Markup(escape(f"{shown} … ({len(v) - _MAX_LIST} more)"))
    if isinstance(v, list):
        return Markup(escape(", ".join(fmt_field(key, x) for x in v) or MISSING))
    return Markup(escape(fmt_field(key, v)))


# ----------------------------------------------------------------------------- sections


def _machine_line(m: Any) -> str:
    if not isinstance(m, Mapping):
        return fmt_any(m)
    parts = [str(m.get("cpu") or MISSING)]
    if m.get("cores") is not None:
        usable = m.get("usable_cores")
        extra = f" ({usable} usable)" if usable not in (None, m.get("cores")) else ""
        parts.append(f"{m['cores']} cores{extra}")
    if m.get("cgroup_cpu_limit") is not None:
        parts.append(f"cgroup limit {fmt_num(m['cgroup_cpu_limit'])} CPUs")
    if m.get("ram_bytes") is not None:
        parts.append(f"{fmt_bytes(m['ram_bytes'])} RAM")
    for key in ("arch", "os"):
        if m.get(key):
            parts.append(str(m[key]))
    if m.get("cpu_flags"):
        parts.append("features: " + " ".join(str(f) for f in m["cpu_flags"]))
    known = {"cpu", "cores", "usable_cores", "cgroup_cpu_limit", "ram_bytes", "ram_gib", "arch", "os", "cpu_flags"}
    parts += [f"{k}: {_inline(v)}" for k, v in m.items() if k not in known]
    return " · ".join(parts)


def _versions_line(v: Any) -> str:
    if not isinstance(v, Mapping):
        return fmt_any(v)
    return " · ".join(f"{k} {x if x is not None else MISSING}" for k, x in v.items()) or MISSING


def _run_section(run: Mapping[str, Any]) -> str:
    items = [
        ("Model", _inline(run.get("model"))),
        ("Data", _inline(run.get("dataset"))),
        ("Date", _inline(run.get("date"))),
        ("Machine", _machine_line(run.get("machine"))),
        ("Versions", _versions_line(run.get("versions"))),
    ]
    shown = {"model", "dataset", "date", "machine", "versions", "recipe"}
    items += [(field_label(str(k)), _inline(v)) for k, v in run.items() if k not in shown]
    return f'<section id="run"><h2>Run</h2>{_kv_table(items)}</section>'


def _recipe_section(recipe: Any) -> str:
    if not recipe:
        return '<section id="recipe"><h2>Recipe</h2><p class="missing">no recipe recorded</p></section>'
    steps = recipe if isinstance(recipe, list) else [recipe]
    items = []
    for step in steps:
        if isinstance(step, Mapping):
            name = step.get("pass") or step.get("name") or step.get("type")
            params = step.get("params", {k: v for k, v in step.items() if k not in ("pass", "name", "type")})
            params = {k: v for k, v in params.items() if v is not None} if isinstance(params, Mapping) else params
            detail = _inline(params) if params else ""
            items.append(
                f"<li><code>{esc(name if name is not None else MISSING)}</code>"
                + (f' <span class="params">{escape(detail)}</span>' if detail and detail != MISSING else "")
                + "</li>"
            )
        else:
            items.append(f"<li><code>{esc(step)}</code></li>")
    note = '<p class="meta">Settings left at their default are not listed.</p>'
    return f'<section id="recipe"><h2>Recipe</h2><ol>{"".join(items)}</ol>{note}</section>'


def _ratio_text(key: str, c: Mapping[str, Any]) -> str:
    b, f = number(c.get("baseline")), number(c.get("final"))
    if b is None or f is None:
        return MISSING
    if key == "accuracy":
        return fmt_points(f - b)
    r = number(c.get("ratio"))
    if r is None:
        return MISSING
    if r == 1:
        return "same"
    return f"{fmt_ratio(1 / r)} smaller" if 0 < r < 1 else f"{fmt_ratio(r)} larger"


def _speed_text(c: Mapping[str, Any]) -> str:
    sp = number(c.get("speedup"))
    return MISSING if sp is None else f"{fmt_ratio(sp)} faster" if sp >= 1 else f"{fmt_ratio(1 / sp)} slower"


def _summary_section(report: Mapping[str, Any]) -> str:
    s = report.get("summary") or {}
    stages = report.get("stages") or []
    parts = ['<section id="summary"><h2>Summary</h2>']
    if s.get("warning"):
        parts.append(f'<p class="warn" id="at-chance"><b>Warning:</b> {esc(s["warning"])}</p>')
    by_runtime = s.get("by_runtime") or {}
    if s.get("baseline_stage") is not None:
        lines = "".join(f"<li>{escape(t)}</li>" for t in s.get("headline") or [])
        parts.append(
            f'<div class="headline"><p>Final stage <b>{esc(s["final_stage"])}</b> against the baseline '
            f"<b>{esc(s['baseline_stage'])}</b>, measured inside each runtime:</p>"
            + (f"<ul>{lines}</ul>" if lines else '<p class="missing">no runtime measurements</p>')
            + "</div>"
        )
        if by_runtime:
            rows = []
            for rt, e in by_runtime.items():
                acc, lat = e.get("accuracy") or {}, e.get("latency_ms") or {}
                rows.append([(runtime_cell(rt, bool(e.get("simulated"))), False),
                             (fmt_pct(acc.get("baseline")), True), (fmt_pct(acc.get("final")), True),
                             (_ratio_text("accuracy", acc), True), (fmt_ms(lat.get("baseline")), True),
                             (fmt_ms(lat.get("final")), True), (_speed_text(lat), True)])  # fmt: skip
            header = ["Runtime", "Accuracy, baseline", "Accuracy, final", "Accuracy change", "Latency, baseline",
                      "Latency, final", "Latency change"]  # fmt: skip
            parts.append(f"<h3>Per runtime</h3>{_table(header, rows, 'summary runtimes')}")
            if any(e.get("simulated") for e in by_runtime.values()):
                parts.append(f'<p class="note">{escape(SIMULATION_NOTE)}</p>')
        labels = {k: label for k, label, _ in STAGE_METRICS}
        rows = []
        for key, c in (s.get("metrics") or {}).items():
            if key == "accuracy" and "torch" in by_runtime:
                continue  # the PyTorch row above has it
            fmt = _FORMAT_BY_KEY.get(key, fmt_any)
            rows.append([(labels.get(key, field_label(key)), False), (fmt(c.get("baseline")), True),
                         (fmt(c.get("final")), True), (_ratio_text(key, c), True)])  # fmt: skip
        if rows:
            parts.append(f"<h3>Model</h3>{_table(['', 'Baseline', 'Final', 'Change'], rows, 'summary')}")
    if not stages:
        parts.append('<p class="missing">no stages recorded</p></section>')
        return "".join(parts)
    runtimes = [rt for rt in report.get("runtimes") or [] if any(per_runtime(st, "latency_ms").get(rt) is not None
                                                                 for st in stages)]  # fmt: skip
    show_pass = any(st.get("pass") not in (None, st.get("name")) for st in stages)
    header: list[str] = ["Stage"] + (["Pass"] if show_pass else []) + ["Status", "Time"]
    header += [label for key, label, _ in STAGE_METRICS if key != "trainable_params"]
    header += [Markup(f"{runtime_cell(rt)} latency") for rt in runtimes]
    rows = []
    for i, st in enumerate(stages):
        m = stage_metrics(st)
        lat = per_runtime(st, "latency_ms")
        row = [(stage_label(st, i), False)] + ([(fmt_any(st.get("pass")), False)] if show_pass else [])
        row += [(fmt_any(st.get("status")), False), (fmt_seconds(st.get("seconds")), True)]
        row += [(fmt(m.get(key)), True) for key, _, fmt in STAGE_METRICS if key != "trainable_params"]
        rows.append(row + [(fmt_ms(lat.get(rt)), True) for rt in runtimes])
    parts.append(f"<h3>All stages</h3>{_table(header, rows, 'overview')}</section>")
    return "".join(parts)


def _plots_section(report: Mapping[str, Any]) -> str:
    stages = report.get("stages") or []
    key = " · ".join(stage_label(st, i) for i, st in enumerate(stages))
    hollow = any(p.get("simulated") for p in report.get("tradeoff") or [])
    caption = f"Stage numbers: {key}." + (" Hollow markers: PyTorch's int8 simulation." if hollow else "")
    figures = [
        ("Accuracy vs latency", accuracy_latency_svg(report), "needs accuracy and latency measured in a runtime",
         caption),
        ("Size per stage", size_svg(report), "needs size_bytes", ""),
        ("Latency per stage and runtime", latency_svg(report), "needs latency_ms", ""),
    ]  # fmt: skip
    out = ['<section id="plots"><h2>Plots</h2>']
    for title, svg, need, note in figures:
        body = svg if svg else f'<p class="missing">no data for this plot ({escape(need)})</p>'
        extra = f'<p class="meta">{escape(note)}</p>' if svg and note else ""
        out.append(f'<figure class="plot"><figcaption>{escape(title)}</figcaption>{body}{extra}</figure>')
    out.append("</section>")
    return "".join(out)


def _sensitivity_block(m: Mapping[str, Any], index: int) -> str:
    """A quantize stage's per-layer int4 sensitivity as a table and a plot ('' when it has none)."""
    q = m.get("quantize")
    sens = q.get("sensitivity_int4") if isinstance(q, Mapping) else None
    layers = sens.get("layers") if isinstance(sens, Mapping) else None
    if not isinstance(layers, Mapping) or not layers:
        return ""
    bits = q.get("bits") if isinstance(q.get("bits"), Mapping) else {}
    header = ["Layer", "Weights", "Accuracy (layer at int4)", "Drop (pt)", "SQNR (dB)"]
    header += ["Bits chosen"] if bits else []
    rows = []
    for name, e in layers.items():
        e = e if isinstance(e, Mapping) else {}
        row = [(str(name), False), (fmt_count(e.get("numel")), True), (fmt_pct(e.get("accuracy")), True),
               (fmt_num(e.get("drop_points")), True), (fmt_num(e.get("sqnr_db")), True)]  # fmt: skip
        if bits:
            row.append((fmt_any(bits.get(name)), True))
        rows.append(row)
    svg = sensitivity_svg(layers, bits, f"sens{index}") or ""
    caption = f"float accuracy {fmt_pct(sens.get('float_accuracy'))} on held-out training images"
    return (f"<h4>Per-layer sensitivity</h4><p class=\"meta\">{escape(caption)}</p>"
            f"{_table(header, rows, 'sensitivity')}<figure class=\"plot\">{svg}</figure>")  # fmt: skip


def _history_block(key: str, history: list[Any], prefix: str) -> str:
    """A training history as a plot (a table when it has no loss or accuracy to draw)."""
    title = field_label(key)
    svg = history_svg(history, prefix, title)
    if svg is None:
        return f"<h4>{escape(title)}</h4>{value_html(key, history)}"
    return f'<figure class="plot"><figcaption>{escape(title)} ({len(history)} epochs)</figcaption>{svg}</figure>'


def _metric_items(m: Mapping[str, Any]) -> tuple[list[tuple[str, str]], list[tuple[str, Any]]]:
    """The stage's metric rows (label, html) and its training histories (key, list)."""
    items: list[tuple[str, str]] = []
    params, trainable = number(m.get("params")), number(m.get("trainable_params"))
    for key, label, fmt in STAGE_METRICS:
        # trainable parameters are counted on the module PyTorch trains; a quantized model's
        # parameters on its integer program: show the figure only where the two agree in kind
        if key == "trainable_params" and (trainable is None or (params is not None and trainable > params)):
            continue
        items.append((label, fmt(m.get(key))))
    histories = []
    steps = number(m.get("steps"))
    for k, v in m.items():
        if k in _FORMAT_BY_KEY or k in _PER_RUNTIME:
            continue
        if is_history(str(k), v):
            histories.append((str(k), v))
            continue
        if k == "quantize" and isinstance(v, Mapping):
            v = {x: y for x, y in v.items() if x != "sensitivity_int4"}  # drawn by _sensitivity_block
        label = field_label(str(k))
        if isinstance(v, Mapping) and steps and steps > 1 and any(x in m for x in v):
            label += f" (last of {int(steps)} steps)"
        note = " (last step)" if steps and steps > 1 else ""  # else the enclosing label tells them apart
        items.append((label, value_html(str(k), v, 1, shadow=m, note=note)))
    return items, histories


def _stage_article(st: Mapping[str, Any], index: int, order: list[str], quantized: bool = False) -> str:
    m = stage_metrics(st)
    status = str(st.get("status") or MISSING)
    badge = _STATUS_CLASSES.get(status, "other")
    meta = [f"pass <code>{esc(st.get('pass'))}</code>", f"time {escape(fmt_seconds(st.get('seconds')))}"]
    parts = [
        f'<article class="stage" id="stage-{index}">',
        f'<h3>Stage {esc(stage_label(st, index))} <span class="badge {badge}">{escape(status)}</span></h3>',
        f'<p class="meta">{" · ".join(meta)}</p>',
    ]
    for key in ("error", "message", "note"):
        if st.get(key):
            parts.append(f'<p class="{"err" if key == "error" else "note"}">{esc(st[key])}</p>')
    items, histories = _metric_items(m) if m else ([("Metrics", MISSING)], [])
    for k, v in st.items():
        if k in _STAGE_KEYS | {"error", "message", "note"}:
            continue
        if k == "params" and isinstance(v, Mapping):  # settings left unset (None: the pass's default) are not listed
            v = {x: y for x, y in v.items() if y is not None}
        items.append(("Pass settings" if k == "params" else field_label(str(k)), value_html(str(k), v, 1)))
    parts.append(_kv_table(items))
    parts += [_history_block(k, h, f"hist{index}-{runtime_slug(k)}") for k, h in histories]
    parts.append(_sensitivity_block(m, index))

    tables = {key: per_runtime(st, key) for key in _PER_RUNTIME}
    seen = {rt for t in tables.values() for rt in t}
    if seen and m.get("accuracy") is not None:
        seen.add("torch")  # its accuracy is the stage's own
    runtimes = [rt for rt in order if rt in seen] + sorted(seen - set(order))
    if runtimes:
        parity_keys = ["rel_diff", "top1_agreement"]
        for p in tables["parity"].values():
            if isinstance(p, Mapping):
                parity_keys += [str(k) for k in p if str(k) not in parity_keys]
        header = ["Runtime", "Accuracy", "Latency (p50)"] + [field_label(k) for k in parity_keys]
        header += ["Artifact", "Artifact size"]
        rows = []
        for rt in runtimes:
            parity = tables["parity"].get(rt)
            parity = parity if isinstance(parity, Mapping) else {}
            row = [(runtime_cell(rt, quantized and rt == "torch"), False), (fmt_pct(runtime_accuracy(st, rt)), True),
                   (fmt_ms(tables["latency_ms"].get(rt)), True)]  # fmt: skip
            for k in parity_keys:
                fmt = fmt_sci if k == "rel_diff" else fmt_pct if k == "top1_agreement" else fmt_any
                row.append((fmt(parity.get(k)), True))
            row += [(fmt_any(tables["artifacts"].get(rt)), False), (fmt_bytes(tables["artifact_bytes"].get(rt)), True)]
            rows.append(row)
        parts.append(_table(header, rows, "runtimes"))
    else:
        parts.append('<p class="missing">no runtime measurements in this stage</p>')
    parts.append("</article>")
    return "".join(parts)


_CSS = """
:root{--fg:#1d2330;--muted:#667085;--line:#e3e6ec;--bg:#fff;--zebra:#f7f8fa;--accent:#1f5fbf}
*{box-sizing:border-box}
body{margin:0;background:#f2f4f7;color:var(--fg);
 font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1100px;margin:0 auto;padding:24px 28px 48px;background:var(--bg)}
header h1{margin:0 0 4px;font-size:24px}
header h1 span{color:var(--accent)}
.sub,.meta,footer{color:var(--muted)}
h2{margin:32px 0 10px;padding-bottom:4px;border-bottom:2px solid var(--line);font-size:19px}
h3{margin:22px 0 6px;font-size:16px}
.table-wrap{max-width:100%;overflow-x:auto;margin:8px 0 4px}
table{border-collapse:collapse;font-size:13px}
th,td{padding:5px 10px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top;
 overflow-wrap:break-word}
table.kv>tbody>tr>td{overflow-wrap:anywhere}
thead th{background:#eef1f6;font-weight:600}
table.overview td:first-child{white-space:nowrap}
table.overview th,table.overview td{padding:5px 7px}
tbody tr:nth-child(even){background:var(--zebra)}
table.kv>tbody>tr>th{width:210px;color:var(--muted);font-weight:500;overflow-wrap:normal}
table.nested{font-size:12px}table.nested th,table.nested td{padding:2px 8px}
table.kv.nested>tbody>tr>th{width:auto;min-width:120px}
.table-wrap .table-wrap{margin:0}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap;overflow-wrap:normal}
.swatch{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:6px}
.tag{font-size:11px;color:#b54708;background:#fffaeb;border-radius:8px;padding:0 6px;white-space:nowrap}
.headline{background:#f5f8ff;border-left:4px solid var(--accent);padding:8px 14px;border-radius:4px}
.headline p{margin:4px 0}.headline ul{margin:4px 0 6px;padding-left:20px}.headline li{margin:2px 0}
.missing{color:#a0a6b1}
code{font:12.5px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:#f0f2f5;padding:1px 4px;
 border-radius:3px}
.params{color:var(--muted)}
.badge{display:inline-block;margin-left:6px;padding:1px 8px;border-radius:10px;font-size:12px;
 font-weight:600;vertical-align:middle;background:#e4e7ec;color:#344054}
.badge.ok{background:#dcfae6;color:#067647}.badge.bad{background:#fee4e2;color:#b42318}
.badge.dim{background:#f2f4f7;color:#98a2b3}
.err{color:#b42318;background:#fef3f2;padding:6px 10px;border-radius:4px}
.warn{color:#b42318;background:#fef3f2;border-left:4px solid #b42318;padding:8px 12px;border-radius:4px}
.note{background:#f5f8ff;padding:6px 10px;border-radius:4px}
article.stage{border-top:1px solid var(--line);padding-top:4px}
figure.plot{margin:16px 0;padding:8px 12px;border:1px solid var(--line);border-radius:6px}
figure.plot figcaption{font-weight:600;margin-bottom:4px}
figure.plot svg{display:block;width:100%;max-width:820px;height:auto}
footer{margin-top:36px;font-size:12px}
@media print{body{background:#fff}main{padding:0}figure.plot,article.stage{break-inside:avoid}}
"""


def render_html(report: Mapping[str, Any]) -> str:
    """The whole report as an HTML document string (UTF-8, self-contained)."""
    run = report.get("run") or {}
    model = _inline(run.get("model"))
    stages = report.get("stages") or []
    runtimes = [str(r) for r in report.get("runtimes") or []]
    versions = run.get("versions") if isinstance(run.get("versions"), Mapping) else {}
    sub = " · ".join(x for x in (_inline(run.get("dataset")), _inline(run.get("date"))) if x != MISSING)
    body = [
        f"<header><h1>edgeopt report · <span>{escape(model)}</span></h1>",
        f'<p class="sub">{escape(sub) or MISSING}</p></header>',
        _run_section(run),
        _recipe_section(run.get("recipe")),
        _summary_section(report),
        _plots_section(report),
        '<section id="stages"><h2>Stages</h2>',
        "".join(_stage_article(st, i, runtimes, quantized=is_quantized(stages, i)) for i, st in enumerate(stages))
        or '<p class="missing">no stages</p>',
        "</section>",
        f"<footer>{esc(report.get('schema', ''))} · generated by edgeopt {esc(versions.get('edgeopt'))}. "
        "Latencies are per input (median) as measured in each runtime on the machine above; "
        "PyTorch's accuracy is the stage's own, and for an int8 model a simulation.</footer>",
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>edgeopt report · {escape(model)}</title><style>{_CSS}</style></head>"
        f"<body><main>{''.join(body)}</main></body></html>\n"
    )
