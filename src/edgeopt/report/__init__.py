"""Run reports: ``report.json`` (machine-readable) and a self-contained ``report.html``.

``build_report`` (pure) turns a pipeline ledger and run info into the JSON content;
``render_html`` draws it as one offline HTML page with inline CSS and SVG plots;
``write_report`` writes both atomically into a run directory. ``environment`` provides
the machine and version records that reports and benchmarks put in their headers;
``palette`` each runtime's one name, colour and marker (every report and plot); ``numbers``
how every figure is written (separators, three significant digits, "—" for missing).
Cost: dominated by the plots, about 0.2 s plus matplotlib's import (~0.5 s once).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeopt.fileio import write_bytes_atomic, write_json_atomic
from edgeopt.report.build import REPORT_SCHEMA, build_report
from edgeopt.report.environment import collect_run_info, machine_info, versions
from edgeopt.report.html import render_html

__all__ = [
    "REPORT_SCHEMA",
    "build_report",
    "collect_run_info",
    "machine_info",
    "render_html",
    "versions",
    "write_report",
]

REPORT_JSON = "report.json"
REPORT_HTML = "report.html"


def write_report(run_dir: Path, ledger: list[dict[str, Any]], run_info: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``run_dir/report.json`` and ``run_dir/report.html``; return their paths.

    Both are rendered in memory first and each file is replaced atomically, so a failure or
    Ctrl-C leaves any previous report intact rather than half-written.
    """
    run_dir = Path(run_dir)
    report = build_report(ledger, run_info)
    page = render_html(report).encode("utf-8")
    json_path = write_json_atomic(run_dir / REPORT_JSON, report)
    html_path = write_bytes_atomic(run_dir / REPORT_HTML, page)
    return json_path, html_path
