"""Run reports: report.json content, self-contained HTML, missing metrics, escaping, environment."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeopt.report import build_report, render_html, write_report
from edgeopt.report.environment import machine_info, parse_cpuinfo, versions

RUN_INFO = {
    "model": "zoo:resnet8",
    "dataset": {"name": "cifar10", "split": "test"},
    "recipe": [{"pass": "train", "params": {"epochs": 2}}, {"pass": "quantize", "params": {"scheme": "int8"}}],
    "machine": {"cpu": "Test CPU", "cores": 2, "ram_bytes": 8 * 2**30},
    "versions": {"python": "3.11.7", "torch": "2.13.0", "edgeopt": "0.1.0"},
    "date": "2026-11-25T12:00:00+00:00",
}


def _ledger() -> list[dict]:
    return [
        {
            "stage": 0, "name": "train", "pass": "train", "status": "done", "seconds": 12.3,
            "metrics": {
                "accuracy": 0.97, "params": 1234, "macs": 5678, "size_bytes": 4936, "peak_activation_bytes": 2048,
                "latency_ms": {"torch": 0.05, "onnxruntime": 0.02, "executorch": 0.01, "litert": 0.02},
                "accuracy_by_runtime": {"onnxruntime": 0.97, "executorch": 0.97, "litert": 0.96},
                "parity": {"onnxruntime": {"rel_diff": 1e-7, "top1_agreement": 1.0}},
                "artifacts": {"onnxruntime": Path("run/stage0/model.onnx")},
            },
        },
        {
            "stage": 1, "name": "quantize", "pass": "quantize", "status": "done", "seconds": np.float64(3.5),
            "metrics": {
                "accuracy": np.float32(0.96), "size_bytes": 1234, "latency_ms": {"executorch": 0.005, "litert": 0.01},
                "accuracy_by_runtime": {"executorch": 0.95}, "rel_error": float("nan"),
            },
        },
    ]  # fmt: skip


def test_build_report_content() -> None:
    report = build_report(_ledger(), RUN_INFO)
    text = json.dumps(report, allow_nan=False)  # strictly valid JSON (NaN became null, numpy and paths converted)
    assert json.loads(text) == report
    assert report["schema"] == "edgeopt-report/1"
    assert report["run"]["model"] == "zoo:resnet8" and report["run"]["recipe"][1]["pass"] == "quantize"
    assert report["runtimes"] == ["executorch", "litert", "onnxruntime", "torch"]  # deployment runtimes first
    assert [s["name"] for s in report["stages"]] == ["train", "quantize"]
    assert report["stages"][0]["metrics"]["artifacts"]["onnxruntime"] == "run/stage0/model.onnx"
    assert report["stages"][1]["metrics"]["rel_error"] is None
    # a point needs a measured accuracy and latency: all 4 runtimes at stage 0, only executorch at stage 1
    # (litert has no accuracy there, torch no latency)
    pts = {(p["stage"], p["runtime"]) for p in report["tradeoff"]}
    assert pts == {(0, "torch"), (0, "executorch"), (0, "litert"), (0, "onnxruntime"), (1, "executorch")}
    s = report["summary"]
    assert (s["baseline_stage"], s["final_stage"]) == ("0: train", "1: quantize")
    assert s["metrics"]["size_bytes"]["ratio"] == pytest.approx(1234 / 4936)
    assert s["metrics"]["accuracy"]["final"] == pytest.approx(0.96)
    assert s["metrics"]["macs"] == {"baseline": 5678.0, "final": None, "ratio": None}
    assert s["latency_ms"]["executorch"]["speedup"] == pytest.approx(2.0)
    assert "onnxruntime" in s["latency_ms"] and s["latency_ms"]["onnxruntime"]["final"] is None


def test_build_report_is_pure() -> None:
    ledger = _ledger()
    before = repr(ledger)
    assert build_report(ledger, RUN_INFO) == build_report(ledger, RUN_INFO)
    assert repr(ledger) == before


def test_write_report_files_and_self_contained_html(tmp_path: Path) -> None:
    json_path, html_path = write_report(tmp_path / "run", _ledger(), RUN_INFO)
    assert (json_path.name, html_path.name) == ("report.json", "report.html")
    assert json.loads(json_path.read_text()) == build_report(_ledger(), RUN_INFO)
    assert sorted(p.name for p in json_path.parent.iterdir()) == ["report.html", "report.json"]  # no temp files
    page = html_path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<svg") == 3
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, flags=re.I)
    assert "http://" not in page and "https://" not in page
    for tag in ("<script", "<link", "<img", "<iframe", "@import", "url(http"):
        assert tag not in page.lower()
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids))  # the inline SVGs do not clash
    assert all(h[1:] in ids for h in re.findall(r'href="(#[^"]+)"', page))  # every reference resolves in-page
    for expected in ("zoo:resnet8", "Test CPU", "torch 2.13.0", "97.0 %", "1.0e-07", "run/stage0/model.onnx"):
        assert expected in page
    assert render_html(build_report(_ledger(), RUN_INFO)) == page  # deterministic


def test_missing_metrics_show_a_dash() -> None:
    ledger = [
        {"stage": 0, "name": "train", "status": "done", "metrics": {"accuracy": 0.9}},
        {"stage": 1, "name": "prune", "status": "failed", "error": "budget exceeded"},
        {"name": "bare"},
        {"stage": 3, "metrics": {"latency_ms": {"onnxruntime": "n/a"}, "parity": {"litert": None}, "params": None}},
    ]
    report = build_report(ledger, {})
    page = render_html(report)
    assert "—" in page and "budget exceeded" in page
    assert report["tradeoff"] == []
    assert page.count("no data for this plot") == 3
    assert report["runtimes"] == ["litert", "onnxruntime"]
    empty = render_html(build_report([], {}))
    assert "no stages recorded" in empty and "<svg" not in empty


def test_user_strings_are_escaped(tmp_path: Path) -> None:
    evil = '<script>alert("x")</script> --> <b>$x^$'
    ledger = [
        {
            "stage": 0, "name": evil, "pass": "<i>p</i>", "status": "<done>",
            "metrics": {"accuracy": 0.5, "size_bytes": 10, "latency_ms": {"torch": 1.0, "<rt>": 2.0},
                        "accuracy_by_runtime": {"<rt>": 0.5}, "artifacts": {"<rt>": "a<b>.onnx"}, "<k>": "<v>"},
        }
    ]  # fmt: skip
    info = {**RUN_INFO, "model": "<model & co>", "recipe": [{"pass": "<x>", "params": {"<a>": "<b>"}}]}
    _, html_path = write_report(tmp_path, ledger, info)
    page = html_path.read_text(encoding="utf-8")
    for raw in ("<script", "<b>", "<i>", "<done>", "<rt>", "<model", "<k>", "<v>", "<x>", "<a>", "a<b>"):
        assert raw not in page
    assert "&lt;script&gt;" in page and "&lt;model &amp; co&gt;" in page and "a&lt;b&gt;.onnx" in page
    assert page.count("<svg") == 3  # '$' in a label did not break matplotlib (no mathtext)


def test_parse_cpuinfo_x86_and_arm() -> None:
    x86 = "processor\t: 0\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu sse4_2 avx2 avx512f avx512_vnni ht\n\n"
    assert parse_cpuinfo(x86) == {"cpu": "AMD EPYC 9R14", "cpu_flags": ["avx2", "avx512_vnni", "avx512f", "sse4_2"]}
    arm = "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd asimddp i8mm sve\nCPU part\t: 0xd40\n"
    assert parse_cpuinfo(arm) == {"cpu": None, "cpu_flags": ["asimd", "asimddp", "i8mm", "sve"]}


def test_machine_info_and_versions() -> None:
    m = machine_info()
    assert m["cpu"] and m["cores"] >= 1 and m["usable_cores"] >= 1
    assert m["ram_bytes"] is None or m["ram_bytes"] > 2**20
    v = versions(extra=["surely-not-an-installed-package"])
    assert v["python"].startswith("3.") and v["torch"] and v["edgeopt"]
    assert v["surely-not-an-installed-package"] is None
    assert {"executorch", "onnxruntime", "ai-edge-litert", "litert-torch"} <= set(v)


def test_versions_does_not_import_the_runtimes() -> None:
    code = (
        "import sys; from edgeopt.report.environment import versions; versions(); "
        "print([m for m in ('executorch', 'onnxruntime', 'ai_edge_litert', 'litert_torch') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_quantize_stage_shows_layer_sensitivity_table_and_plot() -> None:
    layers = {"mods.conv2d_0": {"numel": 432, "accuracy": 0.68, "drop_points": 12.2, "sqnr_db": 5.3},
              "mods.conv2d_4": {"numel": 9216, "accuracy": 0.80, "drop_points": 0.6, "sqnr_db": 14.1}}  # fmt: skip
    quantize = {"sensitivity_int4": {"float_accuracy": 0.8045, "bits": 4, "layers": layers},
                "bits": {"mods.conv2d_0": 8, "mods.conv2d_4": 4}}  # fmt: skip
    ledger = [{"stage": 0, "name": "quantize", "status": "done", "metrics": {"accuracy": 0.8, "quantize": quantize}}]
    page = render_html(build_report(ledger, {}))
    table = page[page.index('class="sensitivity"') :]
    table = table[: table.index("</table>")]
    assert "mods.conv2d_0" in table and "12.2" in table and "9,216" in table
    assert 'id="sens0-' in page  # its plot
    plain = render_html(build_report([{"stage": 0, "name": "train", "metrics": {"accuracy": 0.9}}], {}))
    assert "Per-layer sensitivity" not in plain
