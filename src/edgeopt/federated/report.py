"""A federated run's outputs: ``curves.json`` (per-round accuracy, loss, bytes, ε) and ``report.html``.

``build_curves`` (pure) turns the round history into the JSON content; ``render_report``
draws it as one self-contained HTML page (inline CSS, inline SVG plots drawn with
``edgeopt.report.plots.figure_to_svg``, every string escaped); ``write_outputs`` writes both
atomically. The per-round ``test_accuracy`` is the model's task's score (``settings["task"]``: accuracy,
R² or ROC AUC, named by ``summary["score_metric"]``); the page names it. A classifier whose best test
accuracy stayed at chance (``train.diagnose.is_at_chance``, the
test every evaluation uses, against always answering the most common training label) is flagged
in the summary and at the top of the page. Numbers are written by ``edgeopt.report.numbers``. Cost: ~50 ms per plot plus
matplotlib's import.
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.fileio import write_bytes_atomic, write_json_atomic
from edgeopt.report.build import jsonable
from edgeopt.report.html import field_label
from edgeopt.report.numbers import MISSING, fmt_any, fmt_bytes, fmt_count, fmt_field, fmt_pct, fmt_ratio, number

CURVES_SCHEMA = "edgeopt-federated-curves/1"
# What the page and `edgeopt federate` say about a run that stayed at chance.
AT_CHANCE_ADVICE = (
    "the model did not learn; check the learning rate (--lr), local epochs (--local-epochs), the algorithm "
    "and the partition (a very non-IID split needs more rounds)"
)


def chance_accuracy(histogram: Any) -> float | None:
    """Accuracy of guessing: always the most common label (from the clients' label histogram), at least 1/classes."""
    from edgeopt.train.diagnose import chance_level

    h = np.asarray(histogram, dtype=float)
    if h.ndim != 2 or h.size == 0 or h.sum() <= 0:
        return None
    per_class = h.sum(0)
    return chance_level(len(per_class), float(per_class.max() / per_class.sum()))


def stayed_at_chance(best_accuracy: float | None, chance: float | None) -> bool | None:
    """Whether the best accuracy stayed at the guessing level ``chance`` (None: unknown)."""
    from edgeopt.train.diagnose import is_at_chance

    if best_accuracy is None or chance is None:
        return None
    return is_at_chance(best_accuracy, chance)


# how the page names and writes each task's score and loss
_SCORE_LABELS = {"classification": "accuracy", "regression": "R²", "anomaly": "ROC AUC"}
_LOSS_LABELS = {"classification": "cross-entropy", "regression": "mean squared error",
                "anomaly": "mean squared reconstruction error"}  # fmt: skip


def _fmt_score(task: str, v: Any) -> str:
    return fmt_pct(v) if task == "classification" else fmt_any(v)


def build_curves(
    history: list[dict[str, Any]],
    settings: Mapping[str, Any],
    histogram: np.ndarray,
    client_sizes: list[int],
    run_info: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The content of ``curves.json``: settings, per-round series, totals, label histogram.

    ``settings["task"]`` (default classification) says what ``test_accuracy`` holds; the chance
    test applies to classifiers only.
    """
    from edgeopt.train.tasks import SCORE_NAMES

    task = str(settings.get("task") or "classification")
    ups = [int(h.get("upload_bytes") or 0) for h in history]
    dense = [int(h.get("upload_bytes_dense") or 0) for h in history]
    last = history[-1] if history else {}
    accs = [a for a in (number(h.get("test_accuracy")) for h in history) if a is not None]
    best = max(accs) if accs else None
    # personalized runs (head/bn): clients run their own part, so the chance test is on their accuracy
    personal = [a for a in (number(h.get("personal_accuracy")) for h in history) if a is not None]
    best_personal = max(personal) if personal else None
    chance = chance_accuracy(histogram) if task == "classification" else None
    return jsonable(
        {
            "schema": CURVES_SCHEMA,
            "settings": dict(settings),
            "run": dict(run_info or {}),
            "rounds": [h["round"] for h in history],
            "test_accuracy": [h.get("test_accuracy") for h in history],
            "test_loss": [h.get("test_loss") for h in history],
            "personal_accuracy": [h.get("personal_accuracy") for h in history],
            "train_loss": [h.get("train_loss") for h in history],
            "upload_bytes": ups,
            "upload_bytes_cumulative": np.cumsum(ups).tolist() if ups else [],
            "epsilon": [h.get("epsilon") for h in history],
            "summary": {
                "task": task,
                "score_metric": SCORE_NAMES[task],
                "rounds": len(history),
                "final_accuracy": last.get("test_accuracy"),
                "best_accuracy": best,
                "best_personal_accuracy": best_personal,
                "final_personal_accuracy": last.get("personal_accuracy"),
                "chance_accuracy": chance,
                "stayed_at_chance": stayed_at_chance(best if best_personal is None else best_personal, chance),
                "upload_bytes_total": sum(ups),
                "upload_compression": (sum(dense) / sum(ups)) if sum(ups) else None,
                "epsilon": last.get("epsilon"),
                "rejected_updates": sum(len(h.get("rejected") or []) for h in history),
                "skipped_rounds": sum(bool(h.get("skipped")) for h in history),
                "dropouts": sum(len(h.get("dropouts") or []) for h in history),
                "stragglers": sum(len(h.get("stragglers") or []) for h in history),
            },
            "label_histogram": np.asarray(histogram).tolist(),
            "client_sizes": list(client_sizes),
            "history": history,
        }
    )


def _line_svg(
    xs: list[Any], series: dict[str, list[Any]], ylabel: str, title: str, prefix: str, chance: float | None = None
) -> str | None:
    if not xs:
        return None
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    from edgeopt.report.plots import _RC, SERIES_COLOURS, figure_to_svg

    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(6.5, 3.2), layout="constrained")
        ax = fig.add_subplot()
        ax.grid(True, color="#dddddd", linewidth=0.6)
        for (label, ys), colour in zip(series.items(), SERIES_COLOURS, strict=False):
            pts = [(x, y) for x, y in zip(xs, ys, strict=True) if y is not None]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=3, label=label, color=colour)
        if chance is not None:
            ax.axhline(chance, color="#b42318", linewidth=0.8, linestyle="--", label="chance")
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        if len(series) > 1 or chance is not None:
            ax.legend(frameon=False)
        return figure_to_svg(fig, prefix)


_CSS = (
    "body{font-family:system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}"
    "main{max-width:960px;margin:auto;padding:24px}h1{font-size:22px}h2{font-size:17px;margin-top:28px}"
    "table{border-collapse:collapse;background:#fff;font-size:13px}td,th{border:1px solid #dde;padding:3px 8px}"
    "td,th{text-align:left;overflow-wrap:anywhere}"
    "td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}"
    "figure{margin:12px 0;background:#fff;padding:8px}figure svg{width:100%;height:auto;max-width:820px}"
    ".table-wrap{max-width:100%;overflow-x:auto;margin:8px 0}"
    ".warn{color:#b42318;background:#fef3f2;border-left:4px solid #b42318;padding:8px 12px;border-radius:4px}"
)


def _kv(items: list[tuple[str, str]]) -> str:
    rows = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in items)
    return f'<div class="table-wrap"><table>{rows}</table></div>'


def chance_warning(summary: Mapping[str, Any]) -> str:
    """The page's warning for a run that stayed at chance ('' otherwise)."""
    if not summary.get("stayed_at_chance"):
        return ""
    return (
        f'<p class="warn" id="at-chance"><b>This run stayed at chance.</b> Best test accuracy '
        f"{fmt_pct(summary.get('best_accuracy'))} against {fmt_pct(summary.get('chance_accuracy'))} for always "
        f"answering the most common label: {escape(AT_CHANCE_ADVICE)}.</p>"
    )


def personalization_section(p: Mapping[str, Any] | None) -> str:
    """Per-client accuracy before (global model) and after personalization, as a table ('' without it)."""
    if not p:
        return ""
    worst = p.get("worst_client") or {}
    summary = _kv(
        [
            ("Mode", str(p.get("mode"))),
            ("Before (reference)", str(p.get("reference"))),
            ("Mean per-client accuracy before / after",
             f"{fmt_pct(p.get('mean_before'))} / {fmt_pct(p.get('mean_after'))}"),
            ("Mean per-client gain", fmt_pct(p.get("mean_gain"))),
            ("Worst client (lowest after)",
             f"client {worst.get('client')}: {fmt_pct(worst.get('before'))} -> {fmt_pct(worst.get('after'))}"),
            ("Held-out fraction of each client", fmt_any(p.get("holdout"))),
        ]
    )  # fmt: skip
    rows = "".join(
        f"<tr><th>{r['client']}</th><td class='num'>{fmt_count(r['holdout'])}</td>"
        f"<td class='num'>{fmt_pct(r['before'])}</td><td class='num'>{fmt_pct(r['after'])}</td>"
        f"<td class='num'>{fmt_pct(r['gain'])}</td></tr>"
        for r in p.get("per_client") or []
    )
    table = (
        '<div class="table-wrap"><table><tr><th>client</th><th>held out</th><th>before</th><th>after</th>'
        f"<th>gain</th></tr>{rows}</table></div>"
    )
    return f"<h2>Personalization (accuracy on each client's held-out split)</h2>{summary}{table}"


def render_report(curves: Mapping[str, Any]) -> str:
    """``curves.json`` content as a self-contained HTML page."""
    s = curves.get("summary") or {}
    settings = curves.get("settings") or {}
    task = str(s.get("task") or settings.get("task") or "classification")
    score = _SCORE_LABELS.get(task, "score")
    xs = list(curves.get("rounds") or [])
    scale = 100 if task == "classification" else 1  # accuracy in %, R² and AUC as they are
    acc = [None if a is None else scale * a for a in curves.get("test_accuracy") or []]
    series = {f"test {score}": acc}
    personal = [None if a is None else 100 * a for a in curves.get("personal_accuracy") or []]
    if any(a is not None for a in personal):
        series["clients' own models, held-out splits"] = personal
    chance = number(s.get("chance_accuracy"))
    plots = [
        _line_svg(
            xs,
            series,
            "accuracy (%)" if task == "classification" else score,
            f"Test {score} per round",
            "fedacc",
            chance=None if chance is None else 100 * chance,
        ),  # fmt: skip
        _line_svg(
            xs,
            {"test": curves.get("test_loss") or [], "train (clients)": curves.get("train_loss") or []},
            _LOSS_LABELS.get(task, "loss"),
            "Loss per round",
            "fedloss",
        ),  # fmt: skip
        _line_svg(
            xs,
            {"upload": [b / 2**20 for b in curves.get("upload_bytes_cumulative") or []]},
            "MiB",
            "Cumulative upload",
            "fedbytes",
        ),  # fmt: skip
    ]
    classifier = task == "classification"
    chance_row = [("Chance accuracy (most common label)", fmt_pct(s.get("chance_accuracy")))] if classifier else []
    summary = _kv(
        [
            ("Task", task),
            (f"Final {score}", _fmt_score(task, s.get("final_accuracy"))),
            (f"Best {score}", _fmt_score(task, s.get("best_accuracy"))),
            *chance_row,
            ("Rounds", fmt_count(s.get("rounds"))),
            ("Upload total", fmt_bytes(s.get("upload_bytes_total"))),
            ("Upload compression", fmt_ratio(s.get("upload_compression"))),
            ("ε (client-level DP)", fmt_any(s.get("epsilon"))),
            ("Rejected updates", fmt_count(s.get("rejected_updates"))),
            ("Skipped rounds", fmt_count(s.get("skipped_rounds"))),
            ("Dropouts / stragglers", f"{fmt_count(s.get('dropouts', 0))} / {fmt_count(s.get('stragglers', 0))}"),
        ]
    )
    hist = curves.get("label_histogram") or []
    shown = hist[:30]
    head = "".join(f"<th>{i}</th>" for i in range(len(hist[0]) if hist else 0))
    rows = "".join(
        f"<tr><th>{c}</th>"
        + "".join(f'<td class="num">{fmt_count(v)}</td>' for v in row)
        + f'<td class="num">{fmt_count(sum(row))}</td></tr>'
        for c, row in enumerate(shown)
    )
    more = f"<p>… and {len(hist) - len(shown)} more clients in curves.json</p>" if len(hist) > len(shown) else ""
    table = f'<div class="table-wrap"><table><tr><th>client</th>{head}<th>total</th></tr>{rows}</table></div>{more}'
    histogram = f"<h2>Label histogram (client × class)</h2>{table}" if head else ""  # regression: no classes
    events = [
        f"<li>round {h['round']}: client {d['client']} rejected ({escape(str(d['reason']))})</li>"
        for h in curves.get("history") or []
        for d in h.get("rejected") or []
    ]
    body = [
        f"<h1>edgeopt federate · {escape(str(settings.get('model', '')))}</h1>",
        chance_warning(s),
        "<h2>Summary</h2>",
        summary,
        "<h2>Curves</h2>",
        *(f"<figure>{p}</figure>" for p in plots if p),
        personalization_section(curves.get("personalization")),
        "<h2>Settings</h2>",
        _kv([(field_label(str(k)), fmt_field(str(k), v) if v is not None else MISSING) for k, v in settings.items()]),
        histogram,
        "<h2>Rejected updates</h2>",
        f"<ul>{''.join(events)}</ul>" if events else "<p>none</p>",
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>edgeopt federate</title><style>{_CSS}</style></head><body><main>{''.join(body)}</main></body></html>\n"
    )


def write_outputs(out_dir: str | Path, curves: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write ``curves.json`` and ``report.html`` into ``out_dir`` atomically."""
    out = Path(out_dir)
    page = render_report(curves).encode("utf-8")
    return write_json_atomic(out / "curves.json", curves), write_bytes_atomic(out / "report.html", page)
