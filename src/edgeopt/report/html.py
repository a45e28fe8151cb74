"""Render a built report (``build_report`` output) as one self-contained HTML page.

Everything is inline: CSS in a ``<style>`` element, plots as ``<svg>`` elements from
``report.plots``; no scripts, no external stylesheets, fonts, images or links, so the
page opens offline and can be mailed as a single file. Every string that comes from the
ledger or run info is passed through ``html.escape``. Missing metrics show as "—".
Cost: the three plots dominate (~0.2 s plus matplotlib's import).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from html import escape
from typing import Any

from edgeopt.report.build import number, per_runtime, runtime_accuracy, stage_label, stage_metrics
from edgeopt.report.plots import accuracy_latency_svg, latency_svg, sensitivity_svg, size_svg

MISSING = "—"

# ----------------------------------------------------------------------------- formatting


def fmt_count(v: Any) -> str:
    """``78666`` -> ``"78,666"``."""
    x = number(v)
    return MISSING if x is None else f"{x:,.0f}"


def fmt_si(v: Any) -> str:
    """``12501632`` -> ``"12.50 M"`` (K, M, G)."""
    x = number(v)
    if x is None:
        return MISSING
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(x) >= div:
            return f"{x / div:.2f} {unit}"
    return f"{x:,.0f}"


def fmt_bytes(v: Any) -> str:
    """``314664`` -> ``"307.3 KiB"``."""
    x = number(v)
    if x is None:
        return MISSING
    for div, unit in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if abs(x) >= div:
            return f"{x / div:,.1f} {unit}"
    return f"{x:,.0f} B"


def fmt_pct(v: Any) -> str:
    """A fraction as a percentage: ``0.9712`` -> ``"97.12 %"``."""
    x = number(v)
    return MISSING if x is None else f"{100 * x:.2f} %"


def fmt_ms(v: Any) -> str:
    """Milliseconds with three significant digits or more: ``0.0512`` -> ``"0.051 ms"``."""
    x = number(v)
    if x is None:
        return MISSING
    digits = 0 if abs(x) >= 100 else 1 if abs(x) >= 10 else 2 if abs(x) >= 1 else 3
    return f"{x:,.{digits}f} ms"


def fmt_seconds(v: Any) -> str:
    x = number(v)
    if x is None:
        return MISSING
    if x >= 120:
        return f"{int(x // 60)} min {x % 60:.0f} s"
    return f"{x:.1f} s" if x >= 1 else f"{x * 1000:.0f} ms"


def fmt_sci(v: Any) -> str:
    x = number(v)
    return MISSING if x is None else f"{x:.1e}"


def fmt_any(v: Any) -> str:
    """Any value, compactly: numbers with separators, containers as compact JSON."""
    if v is None:
        return MISSING
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.6g}"
    if isinstance(v, str):
        return v or MISSING
    return json.dumps(v, ensure_ascii=False, separators=(", ", ": "))


# Scalar stage metrics shown by name, in this order, with their formatter.
STAGE_METRICS: tuple[tuple[str, str, Callable[[Any], str]], ...] = (
    ("accuracy", "Accuracy (PyTorch)", fmt_pct),
    ("params", "Parameters", fmt_count),
    ("trainable_params", "Trainable parameters", fmt_count),
    ("macs", "MACs per input", fmt_si),
    ("size_bytes", "Weights size", fmt_bytes),
    ("peak_activation_bytes", "Peak activation memory", fmt_bytes),
)
_FORMAT_BY_KEY = {k: f for k, _, f in STAGE_METRICS}
_STAGE_KEYS = {"stage", "name", "pass", "status", "seconds", "metrics"}
_PER_RUNTIME = {"latency_ms", "accuracy_by_runtime", "parity", "artifacts"}
_STATUS_CLASSES = {"done": "ok", "ok": "ok", "success": "ok", "failed": "bad", "error": "bad", "skipped": "dim"}

# ----------------------------------------------------------------------------- html helpers


def esc(v: Any) -> str:
    return escape(v if isinstance(v, str) else fmt_any(v), quote=True)


def _cell(text: str, numeric: bool = False) -> str:
    classes = (["num"] if numeric else []) + (["missing"] if text == MISSING else [])
    cls = f' class="{" ".join(classes)}"' if classes else ""
    return f"<td{cls}>{escape(text)}</td>"


def _table(header: Iterable[str], rows: Iterable[Iterable[tuple[str, bool]]], cls: str = "") -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(_cell(t, n) for t, n in row) + "</tr>" for row in rows)
    klass = f' class="{cls}"' if cls else ""
    return f"<table{klass}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _kv_table(items: Iterable[tuple[str, str]]) -> str:
    rows = "".join(f'<tr><th scope="row">{escape(k)}</th><td>{escape(v)}</td></tr>' for k, v in items)
    return f'<table class="kv"><tbody>{rows}</tbody></table>'


def _inline(v: Any) -> str:
    """A dict or list as one readable line (``name: cifar10, split: test``)."""
    if isinstance(v, Mapping):
        return ", ".join(f"{k}: {_inline(x)}" for k, x in v.items()) or MISSING
    if isinstance(v, list):
        return ", ".join(_inline(x) for x in v) or MISSING
    return fmt_any(v)


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
        parts.append(f"cgroup limit {m['cgroup_cpu_limit']} CPUs")
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
    items += [(str(k), _inline(v)) for k, v in run.items() if k not in shown]
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
            detail = _inline(params) if params else ""
            items.append(
                f"<li><code>{esc(name if name is not None else MISSING)}</code>"
                + (f' <span class="params">{escape(detail)}</span>' if detail and detail != MISSING else "")
                + "</li>"
            )
        else:
            items.append(f"<li><code>{esc(step)}</code></li>")
    return f'<section id="recipe"><h2>Recipe</h2><ol>{"".join(items)}</ol></section>'


def _ratio_text(key: str, c: Mapping[str, Any]) -> str:
    b, f = number(c.get("baseline")), number(c.get("final"))
    if b is None or f is None:
        return MISSING
    if key == "accuracy":
        return f"{100 * (f - b):+.2f} pt"
    r = number(c.get("ratio"))
    if r is None:
        return MISSING
    return f"{1 / r:.2f}× smaller" if 0 < r < 1 else f"×{r:.2f}"


def _summary_section(report: Mapping[str, Any]) -> str:
    s = report.get("summary") or {}
    stages = report.get("stages") or []
    runtimes = list(report.get("runtimes") or [])
    parts = ['<section id="summary"><h2>Summary</h2>']
    if s.get("baseline_stage") is not None:
        rows = []
        labels = {k: label for k, label, _ in STAGE_METRICS}
        for key, c in (s.get("metrics") or {}).items():
            fmt = _FORMAT_BY_KEY.get(key, fmt_any)
            rows.append([(labels.get(key, key), False), (fmt(c.get("baseline")), True),
                         (fmt(c.get("final")), True), (_ratio_text(key, c), True)])  # fmt: skip
        for rt, c in (s.get("latency_ms") or {}).items():
            sp = number(c.get("speedup"))
            change = MISSING if sp is None else f"{sp:.2f}× faster" if sp >= 1 else f"{1 / sp:.2f}× slower"
            rows.append([(f"Latency ({rt})", False), (fmt_ms(c.get("baseline")), True),
                         (fmt_ms(c.get("final")), True), (change, True)])  # fmt: skip
        parts.append(
            f"<p>Final stage <b>{esc(s['final_stage'])}</b> against baseline <b>{esc(s['baseline_stage'])}</b>.</p>"
        )
        if rows:
            parts.append(_table(["", "baseline", "final", "change"], rows, "summary"))
    if not stages:
        parts.append('<p class="missing">no stages recorded</p></section>')
        return "".join(parts)
    header = ["Stage", "Pass", "Status", "Time", "Accuracy", "Params", "MACs", "Size", "Peak act."]
    header += [f"{rt} (ms)" for rt in runtimes]
    rows = []
    for i, st in enumerate(stages):
        m = stage_metrics(st)
        lat = per_runtime(st, "latency_ms")
        rows.append(
            [(stage_label(st, i), False), (fmt_any(st.get("pass")), False), (fmt_any(st.get("status")), False),
             (fmt_seconds(st.get("seconds")), True), (fmt_pct(m.get("accuracy")), True),
             (fmt_count(m.get("params")), True), (fmt_si(m.get("macs")), True),
             (fmt_bytes(m.get("size_bytes")), True), (fmt_bytes(m.get("peak_activation_bytes")), True)]
            + [(fmt_ms(lat.get(rt)), True) for rt in runtimes]
        )  # fmt: skip
    parts.append(f"<h3>All stages</h3>{_table(header, rows, 'overview')}</section>")
    return "".join(parts)


def _plots_section(report: Mapping[str, Any]) -> str:
    figures = [
        ("Accuracy vs latency", accuracy_latency_svg(report), "needs accuracy and latency measured in a runtime"),
        ("Size per stage", size_svg(report), "needs size_bytes"),
        ("Latency per stage and runtime", latency_svg(report), "needs latency_ms"),
    ]
    out = ['<section id="plots"><h2>Plots</h2>']
    for title, svg, need in figures:
        body = svg if svg else f'<p class="missing">no data for this plot ({escape(need)})</p>'
        out.append(f'<figure class="plot"><figcaption>{escape(title)}</figcaption>{body}</figure>')
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
               (fmt_any(e.get("drop_points")), True), (fmt_any(e.get("sqnr_db")), True)]  # fmt: skip
        if bits:
            row.append((fmt_any(bits.get(name)), True))
        rows.append(row)
    svg = sensitivity_svg(layers, bits, f"sens{index}") or ""
    caption = f"float accuracy {fmt_pct(sens.get('float_accuracy'))} on held-out training images"
    return (f"<h4>Per-layer sensitivity</h4><p class=\"meta\">{escape(caption)}</p>"
            f"{_table(header, rows, 'sensitivity')}<figure class=\"plot\">{svg}</figure>")  # fmt: skip


def _stage_article(st: Mapping[str, Any], index: int, order: list[str]) -> str:
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
    if m:
        # the headline metrics always (missing ones as a dash), trainable params when given
        items = [(label, fmt(m.get(key))) for key, label, fmt in STAGE_METRICS if key != "trainable_params" or key in m]
        items += [(str(k), fmt_any(v)) for k, v in m.items() if k not in _FORMAT_BY_KEY and k not in _PER_RUNTIME]
    else:
        items = [("Metrics", MISSING)]
    items += [(str(k), _inline(v)) for k, v in st.items() if k not in _STAGE_KEYS | {"error", "message", "note"}]
    parts.append(_kv_table(items))
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
        header = ["Runtime", "Accuracy", "Latency"]
        header += ["Parity rel. diff" if k == "rel_diff" else "Top-1 agreement" if k == "top1_agreement"
                   else f"Parity {k}" for k in parity_keys]  # fmt: skip
        header.append("Artifact")
        rows = []
        for rt in runtimes:
            parity = tables["parity"].get(rt)
            parity = parity if isinstance(parity, Mapping) else {}
            row = [(rt, False), (fmt_pct(runtime_accuracy(st, rt)), True), (fmt_ms(tables["latency_ms"].get(rt)), True)]
            for k in parity_keys:
                fmt = fmt_sci if k == "rel_diff" else fmt_pct if k == "top1_agreement" else fmt_any
                row.append((fmt(parity.get(k)), True))
            row.append((fmt_any(tables["artifacts"].get(rt)), False))
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
table{border-collapse:collapse;margin:8px 0 4px;font-size:13px}
th,td{padding:5px 10px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
thead th{background:#eef1f6;font-weight:600;white-space:nowrap}
tbody tr:nth-child(even){background:var(--zebra)}
table.kv th{width:200px;color:var(--muted);font-weight:500}
table.overview{display:block;overflow-x:auto;max-width:100%}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.missing{color:#a0a6b1}
code{font:12.5px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:#f0f2f5;padding:1px 4px;
 border-radius:3px}
.params{color:var(--muted)}
.badge{display:inline-block;margin-left:6px;padding:1px 8px;border-radius:10px;font-size:12px;
 font-weight:600;vertical-align:middle;background:#e4e7ec;color:#344054}
.badge.ok{background:#dcfae6;color:#067647}.badge.bad{background:#fee4e2;color:#b42318}
.badge.dim{background:#f2f4f7;color:#98a2b3}
.err{color:#b42318;background:#fef3f2;padding:6px 10px;border-radius:4px}
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
        "".join(_stage_article(st, i, runtimes) for i, st in enumerate(stages)) or '<p class="missing">no stages</p>',
        "</section>",
        f"<footer>{esc(report.get('schema', ''))} · generated by edgeopt {esc(versions.get('edgeopt'))}. "
        "Latencies are per input as measured in each runtime on the machine above; "
        "accuracy of the torch row is the stage's PyTorch accuracy.</footer>",
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>edgeopt report · {escape(model)}</title><style>{_CSS}</style></head>"
        f"<body><main>{''.join(body)}</main></body></html>\n"
    )
