"""What a newcomer sees in the reports (issue 15, items 7 and 8).

Item 7, the headline: the summary compares the float model measured in the deployment runtimes
with the final model, per runtime, and labels PyTorch's int8 figures as simulation. Item 8, the
presentation: one colour per runtime, point labels that do not overlap, tables that fit a
1400 px window, training curves as plots, readable numbers, consistent names, no contradictions,
and a federated run that stayed at chance flagged. The pure tests parse the HTML; one test opens
``report.html`` in headless Chromium (skipped when no chromium binary is on PATH) and measures it.
"""

from __future__ import annotations

import html as htmllib
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeopt.report import build_report, render_html
from edgeopt.report.numbers import fmt_bytes, fmt_ms, fmt_num, fmt_pct, fmt_si
from edgeopt.report.palette import RUNTIME_COLOURS, runtime_colour, runtime_slug

RUN_INFO = {"model": "zoo:resnet8", "dataset": "digits", "machine": {"cpu": "Test CPU", "cores": 2},
            "versions": {"edgeopt": "0.1.0"}, "recipe": [{"pass": "train", "params": {"epochs": 15}}]}  # fmt: skip
DEVICE = ("executorch", "litert", "onnxruntime")
# A number printed with more than three significant digits after the point (0.14904699999999999);
# 0.00895 (three significant digits) is fine.
RAW_FLOAT = r"\d\.0*[1-9]\d{3,}"


def _profile(params: int, macs: int, size: int, trainable: int | None = None, bits: Any = None) -> dict[str, Any]:
    return {"params": params, "trainable_params": params - 200 if trainable is None else trainable, "macs": macs,
            "size_bytes": size, "peak_activation_bytes": 8192, "input_shape": [1, 8, 8],
            "weight_values_by_bits": bits, "peak_activation_source": "edgeopt liveness"}  # fmt: skip


def _export(stage: int, prof: dict[str, Any], acc: float, lat: dict[str, float], acc_rt: dict[str, float]) -> dict:
    return {
        "stage": stage, "name": "export", "pass": "export", "params": {"formats": ["onnx", "pte", "tflite"]},
        "status": "done", "seconds": 12.0, "checkpoint": f"stages/0{stage}-export/model.edgeopt",
        "metrics": {**prof, "accuracy": acc, "latency_ms": lat, "accuracy_by_runtime": {"torch": acc, **acc_rt},
                    "parity": {rt: {"rel_diff": 1.2e-7, "top1_agreement": 1.0} for rt in DEVICE},
                    "artifacts": {"executorch": "model.pte", "litert": "model.tflite", "onnxruntime": "model.onnx"},
                    "artifact_bytes": {rt: prof["size_bytes"] + 1000 for rt in DEVICE}},
    }  # fmt: skip


def demo_ledger() -> list[dict[str, Any]]:
    """A ledger shaped like the demo's: baseline, train, export (float), distill, prune, quantize, export (int8)."""
    hist = [{"epoch": e, "loss": 2.0 / e, "train_accuracy": 1 - 0.9 / e} for e in range(1, 16)]
    big, q8 = _profile(78666, 12501632, 314664), _profile(9800, 196000, 11000, 10200, {"8": 9600, "32": 200})
    lat_f = {"torch": 0.246, "executorch": 0.150, "litert": 0.180, "onnxruntime": 0.160}
    lat_q = {"torch": 0.807, "executorch": 0.060, "litert": 0.070, "onnxruntime": 0.090}
    groups = [{"group": i, "channels": 8, "kept": 4 + i % 3, "score": 0.14904699999999999} for i in range(6)]
    return [
        {"stage": 0, "name": "baseline", "pass": "baseline", "params": {}, "status": "done", "seconds": 1.2,
         "metrics": {**big, "accuracy": 0.1, "latency_ms": {"torch": 0.25}, "accuracy_by_runtime": {"torch": 0.1}}},
        {"stage": 1, "name": "train", "pass": "train", "params": {"epochs": 15, "lr": None}, "status": "done",
         "seconds": 40.5, "metrics": {**big, "accuracy": 0.9722, "latency_ms": {"torch": 0.246},
                                      "train_history": hist, "train_seconds": 38.14904699999999}},
        _export(2, big, 0.9722, lat_f, {"executorch": 0.9722, "litert": 0.9722, "onnxruntime": 0.9694}),
        {"stage": 3, "name": "distill", "pass": "distill", "params": {"student": "zoo:resnet8"}, "status": "done",
         "seconds": 50.0, "metrics": {**_profile(20000, 400000, 80000), "accuracy": 0.9611, "teacher_accuracy": 0.9722,
                                      "latency_ms": {"torch": 0.2}, "train_history": hist}},
        {"stage": 4, "name": "prune", "pass": "prune", "params": {"ratio": 0.5, "steps": 2}, "status": "done",
         "seconds": 60.0, "metrics": {**_profile(10000, 196000, 40000), "accuracy": 0.9583, "method": "channel",
                                      "macs_before": 400000, "macs_after": 196000, "steps": 2,
                                      "channels": {"criterion": "l2", "macs_before": 290000, "macs_after": 196000,
                                                   "mac_ratio": 0.6758620689655172, "groups": groups},
                                      "latency_ms": {"torch": 0.19}}},
        {"stage": 5, "name": "quantize", "pass": "quantize", "params": {"calib": "entropy"}, "status": "done",
         "seconds": 8.0, "metrics": {**q8, "accuracy": 0.9556, "quantize": {"method": "ptq", "warning": None},
                                     "latency_ms": {"torch": 0.80}}},
        _export(6, q8, 0.9556, lat_q, {"executorch": 0.9556, "litert": 0.9528, "onnxruntime": 0.9556}),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    return build_report(demo_ledger(), RUN_INFO)


@pytest.fixture(scope="module")
def page(report: dict[str, Any]) -> str:
    return render_html(report)


class _Text(HTMLParser):
    """The page's visible text outside <style> and <svg> (what a reader reads in tables and prose)."""

    def __init__(self) -> None:
        super().__init__()
        self.skip, self.parts = 0, []

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        self.skip += tag in ("style", "svg")

    def handle_endtag(self, tag: str) -> None:
        self.skip -= tag in ("style", "svg")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.parts.append(data)


def visible_text(page: str) -> str:
    parser = _Text()
    parser.feed(page)
    return " ".join(parser.parts)


def _section(page: str, start: str, end: str) -> str:
    return page[page.index(start) : page.index(end, page.index(start))]


# ----------------------------------------------------------------------------- item 7: the headline


def test_summary_compares_the_float_model_measured_in_each_runtime(report: dict[str, Any]) -> None:
    s = report["summary"]
    # the trained float model that was exported and measured, not the untrained stage 0 or the train stage
    assert (s["baseline_stage"], s["final_stage"]) == ("2: export", "6: export")
    assert s["quantized"] is True
    for rt, speedup in (("executorch", 2.5), ("litert", 0.18 / 0.07), ("onnxruntime", 0.16 / 0.09)):
        e = s["by_runtime"][rt]
        assert e["latency_ms"]["speedup"] == pytest.approx(speedup) and e["simulated"] is False
        assert e["accuracy"]["baseline"] is not None and e["accuracy"]["final"] is not None
    assert s["by_runtime"]["litert"]["accuracy"] == pytest.approx({"baseline": 0.9722, "final": 0.9528,
                                                                   "ratio": 0.9528 / 0.9722})  # fmt: skip
    assert s["by_runtime"]["torch"]["simulated"] is True
    lines = s["headline"]
    assert [ln.split(":")[0] for ln in lines[:3]] == ["ExecuTorch", "LiteRT", "ONNX Runtime"]  # deployment first
    assert lines[0] == "ExecuTorch: 2.50× faster (0.150 ms → 0.0600 ms), accuracy 97.2 % → 95.6 % (−1.66 pt)"
    assert "simulation" in lines[3] and "3.28× slower" in lines[3]


def test_baseline_choice_for_other_recipes() -> None:
    # no float export before compressing: the trained model (not the untrained start) is the baseline
    ledger = [s for s in demo_ledger() if s["stage"] != 2]
    assert build_report(ledger, {})["summary"]["baseline_stage"] == "1: train"
    # nothing but float stages: the first stage, as before
    assert build_report(demo_ledger()[:3], {})["summary"]["baseline_stage"] == "0: baseline"


def test_html_summary_leads_with_device_runtimes(page: str) -> None:
    summary = _section(page, 'id="summary"', "</section>")
    headline = _section(summary, 'class="headline"', "</div>")
    assert headline.index("ExecuTorch: 2.50× faster") < headline.index("PyTorch int8 simulation")
    assert summary.index('class="headline"') < summary.index("Per runtime") < summary.index("All stages")
    per_rt = _section(summary, "Per runtime", "</table>")
    rows = re.findall(r"<tr>(.*?)</tr>", per_rt)[1:]
    names = [visible_text(r).split("  ")[0].strip() for r in rows]
    assert [n.split()[0] for n in names] == ["ExecuTorch", "LiteRT", "ONNX", "PyTorch"]
    assert "95.3 %" in rows[1] and "2.57× faster" in rows[1]  # LiteRT's own accuracy and speed-up
    assert "int8 simulation" in rows[3] and "3.28× slower" in rows[3]
    assert "not a deployment figure" in summary


def test_demo_recipe_measures_its_float_model_in_the_final_runtimes() -> None:
    from edgeopt.pipeline.demo import DEMO_RECIPE
    from edgeopt.pipeline.recipe import recipe_from_dict

    names = [next(iter(p)) for p in DEMO_RECIPE["passes"]]
    exports = [i for i, n in enumerate(names) if n == "export"]
    first_compression = min(i for i, n in enumerate(names) if n not in ("train", "export"))
    assert exports[0] < first_compression and exports[-1] == len(names) - 1
    formats = [DEMO_RECIPE["passes"][i]["export"]["formats"] for i in exports]
    assert formats[0] == formats[-1]  # measured in the same runtimes at both ends
    recipe_from_dict(DEMO_RECIPE)  # still a valid recipe


def test_stage_progress_line_leads_with_device_runtimes() -> None:
    from edgeopt.pipeline.demo import stage_line

    line = stage_line(demo_ledger()[6]["metrics"])
    assert line.startswith("ExecuTorch 95.6 %, 0.0600 ms · LiteRT 95.3 %, 0.0700 ms")
    assert line.endswith("PyTorch (int8 simulation) 95.6 %, 0.807 ms")
    assert stage_line(demo_ledger()[1]["metrics"]) == "PyTorch 97.2 %, 0.246 ms"


def test_tiny_run_headline_from_real_measurements(tmp_path: Path) -> None:
    from edgeopt.pipeline.demo import run_and_report
    from edgeopt.pipeline.recipe import recipe_from_dict

    recipe = recipe_from_dict({
        "model": "zoo:mlp", "data": "digits", "eval_limit": 40,
        "passes": [{"train": {"epochs": 1, "optimizer": "adam"}}, {"export": {"formats": ["onnx"]}},
                   {"quantize": {"calib_samples": 32}}, {"export": {"formats": ["onnx"]}}],
    })  # fmt: skip
    out = run_and_report(recipe, tmp_path / "run", verbose=False)
    assert (out["baseline_stage"], out["final_stage"]) == ("2: export", "4: export")
    assert out["headline"].splitlines()[0].startswith("ONNX Runtime: ")
    assert "simulation" in out["headline"].splitlines()[-1]
    assert set(out["speedup"]) == {"onnxruntime"} and out["speedup"]["onnxruntime"] > 0
    report = json.loads(Path(out["report_json"]).read_text())
    ort = report["summary"]["by_runtime"]["onnxruntime"]
    assert ort["latency_ms"]["baseline"] > 0 and ort["latency_ms"]["final"] > 0
    stages = report["stages"]
    assert ort["accuracy"] == pytest.approx({"baseline": stages[2]["metrics"]["accuracy_by_runtime"]["onnxruntime"],
                                             "final": stages[4]["metrics"]["accuracy_by_runtime"]["onnxruntime"],
                                             "ratio": ort["accuracy"]["ratio"]})  # fmt: skip
    assert stages[2]["metrics"]["weight_values_by_bits"] is None  # the float baseline
    assert report["summary"]["by_runtime"]["torch"]["simulated"] is True


# ----------------------------------------------------------------------------- item 8: presentation


def _colours_by_runtime(page: str) -> dict[str, set[str]]:
    """Colours used for each runtime: table swatches and the SVG elements drawn for it."""
    found: dict[str, set[str]] = {}
    for slug, colour in re.findall(r'class="swatch" data-runtime="([^"]+)" style="background:(#[0-9a-f]{6})"', page):
        found.setdefault(slug, set()).add(colour)
    for slug, body in re.findall(r'<g id="[a-z0-9]+-rt-([a-z0-9_]+)-[a-z0-9]+">(.*?)</g>', page, flags=re.S):
        for colour in re.findall(r"(?:fill|stroke): (#[0-9a-f]{6})", body):
            found.setdefault(slug, set()).add(colour)
    return found


def test_one_colour_per_runtime_in_every_report(page: str) -> None:
    colours = _colours_by_runtime(page)
    assert set(colours) == {"executorch", "litert", "onnxruntime", "torch"}
    assert all(len(c) == 1 for c in colours.values()), colours
    assert len({next(iter(c)) for c in colours.values()}) == 4  # distinct
    assert {rt: next(iter(c)) for rt, c in colours.items()} == RUNTIME_COLOURS
    # another report with other runtimes in another order: the same colour for the same runtime
    metrics = {"accuracy": 0.9, "latency_ms": {"onnxruntime": 0.2, "x-rt": 0.3},
               "accuracy_by_runtime": {"onnxruntime": 0.9, "x-rt": 0.9}}  # fmt: skip
    colours2 = _colours_by_runtime(render_html(build_report([{"stage": 0, "name": "export", "metrics": metrics}], {})))
    assert colours2["onnxruntime"] == {RUNTIME_COLOURS["onnxruntime"]}
    assert colours2[runtime_slug("x-rt")] == {runtime_colour("x-rt")}
    assert runtime_colour("x-rt") not in RUNTIME_COLOURS.values()


def test_point_labels_never_overlap() -> None:
    import matplotlib
    from matplotlib.figure import Figure

    from edgeopt.report.plots import _RC, _layout, place_labels, text_extent

    rng = np.random.default_rng(0)
    xs = np.r_[np.full(4, 0.15), rng.uniform(0.1, 0.2, 8)]  # four coinciding points and a tight cluster
    ys = np.r_[np.full(4, 96.0), rng.uniform(94, 97, 8)]
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(7, 3.8), layout="constrained")
        ax = fig.add_subplot()
        ax.scatter(xs, ys, s=36)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 100)
        renderer = _layout(fig)
        anns = place_labels(fig, ax, [(x, y, f"{i}, {i + 1}") for i, (x, y) in enumerate(zip(xs, ys, strict=True))])
    boxes = [text_extent(a, renderer) for a in anns if a is not None]  # the text, not its leader line
    assert len(boxes) == len(xs)  # every label found a free place
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert not (a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1), (a, b)
        for px, py in ax.transData.transform(np.c_[xs, ys]):  # no label covers a marker's centre
            assert not (a.x0 <= px <= a.x1 and a.y0 <= py <= a.y1)


def test_plot_labels_are_stage_numbers_placed_apart(page: str) -> None:
    labels = re.findall(r'<g id="acclat-ptlabel-\d+">\s*<!-- ([^>]*?) -->', page)
    assert labels and all(re.fullmatch(r"\d+(, \d+)*", t) for t in labels)
    assert "0" not in {n for t in labels for n in t.split(", ")}  # stages before the baseline are left out
    assert "Stage numbers: 0: baseline · 1: train · 2: export" in page


def test_tables_sit_in_a_sideways_scroll_box(page: str) -> None:
    css = page[page.index("<style>") : page.index("</style>")]
    assert re.search(r"\.table-wrap\{[^}]*overflow-x:auto", css) and "overflow-wrap:" in css
    assert "main{max-width:1100px" in css
    tables = page.count("<table")
    wrapped = len(re.findall(r'<div class="table-wrap"><table', page))
    assert tables == wrapped > 10


def test_training_history_is_a_plot_not_json(page: str) -> None:
    train = _section(page, 'id="stage-1"', "</article>")
    assert 'id="hist1-train_history-' in train and "Training curves (15 epochs)" in train
    text = visible_text(page)
    assert "train_accuracy" not in text and "'epoch'" not in text and '"epoch"' not in text


def test_numbers_are_readable(page: str) -> None:
    text = visible_text(page)
    assert "None" not in text and "nan" not in text.lower().split()
    assert not re.search(RAW_FLOAT, text), re.findall(rf"\S*{RAW_FLOAT}\S*", text)
    assert "78,666" in text and "12.5 M" in text and "307 KiB" in text and "38.1 s" in text
    assert "0.149" in text and "0.676" in text  # 0.14904699999999999, 0.6758620689655172
    assert (fmt_num(0.14904699999999999), fmt_num(1234567), fmt_num(12.0), fmt_num(None)) == ("0.149", "1,234,567",
                                                                                                "12", "—")  # fmt: skip
    assert (fmt_num(float("nan")), fmt_num(2.5e-6), fmt_num(999.96), fmt_num(0.5)) == ("—", "2.50e-06", "1,000", "0.5")
    train = _section(page, 'id="stage-1"', "</article>")
    assert "Epochs" in train and "learning rate" not in train  # unset settings (None) are not listed
    assert (fmt_si(12501632), fmt_bytes(314664), fmt_pct(0.97123), fmt_ms(0.05123)) == ("12.5 M", "307 KiB", "97.1 %",
                                                                                         "0.0512 ms")  # fmt: skip


def test_names_are_the_same_everywhere(page: str) -> None:
    from edgeopt.report.html import STAGE_METRICS

    overview = _section(page, 'class="overview"', "</thead>")
    heads = [visible_text(h).strip() for h in re.findall(r"<th>(.*?)</th>", overview)]
    for _, label, _ in STAGE_METRICS:
        if label != "Trainable parameters":
            assert label in heads
    assert [h for h in heads if h.endswith("latency")] == ["ExecuTorch latency", "LiteRT latency",
                                                           "ONNX Runtime latency", "PyTorch latency"]  # fmt: skip
    for runtimes in re.findall(r'<table class="runtimes">.*?</table>', page, flags=re.S):
        text = visible_text(runtimes)
        assert "onnxruntime" not in text.replace("model.onnx", "") and "torch " not in text
    assert "Pass settings" in page and "Teacher accuracy (PyTorch)" in page


def test_no_contradictions(page: str) -> None:
    for i, article in enumerate(re.findall(r'<article class="stage".*?</article>', page, flags=re.S)):
        rows = dict(re.findall(r'<tr><th scope="row">([^<]*)</th><td>([^<]*)</td></tr>', article))
        if "Trainable parameters" in rows:
            assert int(rows["Trainable parameters"].replace(",", "")) <= int(rows["Parameters"].replace(",", "")), i
    quantized = _section(page, 'id="stage-6"', "</article>")
    assert "Trainable parameters" not in quantized  # 10,200 (the float training module) > 9,800 stored
    prune = _section(page, 'id="stage-4"', "</article>")
    labels = re.findall(r'<th scope="row">([^<]*)</th>', prune)
    assert labels.count("MACs before pruning") == 1 and "MACs before pruning (last step)" in labels
    assert "Channels (last of 2 steps)" in labels


def test_federated_report_flags_a_run_at_chance() -> None:
    from edgeopt.federated.report import build_curves, render_report

    hist = np.full((8, 10), 20)
    flat = [{"round": r, "test_accuracy": 0.1 + 0.003 * r, "test_loss": 2.3, "upload_bytes": 1000} for r in range(1, 6)]
    learned = [{**h, "test_accuracy": 0.2 + 0.15 * h["round"]} for h in flat]
    at_chance = build_curves(flat, {"model": "zoo:mlp", "lr": 0.01}, hist, [200] * 8)
    assert at_chance["summary"]["chance_accuracy"] == pytest.approx(0.1)
    assert at_chance["summary"]["stayed_at_chance"] is True
    page = render_report(at_chance)
    assert 'id="at-chance"' in page and "stayed at chance" in page and "11.5 %" in page
    assert page.index('id="at-chance"') < page.index("<h2>Summary</h2>")
    ok = build_curves(learned, {"model": "zoo:mlp"}, hist, [200] * 8)
    assert ok["summary"]["stayed_at_chance"] is False and 'id="at-chance"' not in render_report(ok)
    # a skewed label mix: chance is the most common label's share, not 1/classes
    skewed = np.zeros((2, 4))
    skewed[:, 0], skewed[:, 1:] = 70, 10
    assert build_curves(flat, {}, skewed, [100, 100])["summary"]["chance_accuracy"] == pytest.approx(0.7)
    assert "None" not in visible_text(page) and '<div class="table-wrap"><table>' in page


# ----------------------------------------------------------------------------- in a real browser

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)

# Measures the laid-out page and writes the findings into the DOM as JSON (read back with --dump-dom).
PROBE = r"""
(function () {
  const out = {viewport: window.innerWidth, page_width: document.documentElement.scrollWidth,
               tables: [], colours: {}, overlaps: [], labels: 0, text: document.body.innerText};
  for (const t of document.querySelectorAll('table')) {
    if (t.parentElement.closest('table')) continue;
    const b = t.getBoundingClientRect(), wrap = t.parentElement.getBoundingClientRect();
    out.tables.push({cls: t.className, right: b.right, width: b.width, wrap_right: wrap.right,
                     wrap_width: wrap.width});
  }
  const add = (rt, c) => {
    if (!c || c === 'none' || c.startsWith('rgba(0, 0, 0, 0)')) return;
    const list = out.colours[rt] = out.colours[rt] || [];
    if (!list.includes(c)) list.push(c);
  };
  for (const s of document.querySelectorAll('.swatch[data-runtime]'))
    add(s.dataset.runtime, getComputedStyle(s).backgroundColor);
  for (const g of document.querySelectorAll('svg g[id*="-rt-"]')) {
    const rt = g.id.match(/-rt-([a-z0-9_]+)-/)[1];
    for (const el of g.querySelectorAll('path, use')) {
      if (el.closest('defs')) continue;  // marker shapes: painted by the <use> that draws them
      const cs = getComputedStyle(el);
      add(rt, cs.fill); add(rt, cs.stroke);
    }
  }
  const groups = {};
  for (const g of document.querySelectorAll('svg g[id*="-ptlabel-"], svg g[id*="-ticklabel-"]')) {
    const key = g.id.replace(/-\d+$/, '');
    (groups[key] = groups[key] || []).push(g.getBoundingClientRect());
    out.labels += 1;
  }
  for (const [key, boxes] of Object.entries(groups))
    for (let i = 0; i < boxes.length; i++)
      for (let j = i + 1; j < boxes.length; j++) {
        const a = boxes[i], b = boxes[j];
        if (a.left < b.right - 0.5 && b.left < a.right - 0.5 && a.top < b.bottom - 0.5 && b.top < a.bottom - 0.5)
          out.overlaps.push(key + ' ' + i + '/' + j);
      }
  const pre = document.createElement('pre');
  pre.id = 'probe';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
"""


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium/chromium-browser binary on PATH")
def test_report_in_headless_chromium_at_1400px(tmp_path: Path, page: str) -> None:
    probe = tmp_path / "report.html"
    probe.write_text(page.replace("</body>", f"<script>{PROBE}</script></body>"), encoding="utf-8")
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
           f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,900", "--dump-dom",
           probe.as_uri()]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    found = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, flags=re.S)
    assert found, f"chromium did not run the probe (exit {done.returncode}): {done.stderr[-500:]}"
    r = json.loads(htmllib.unescape(found.group(1)))
    assert r["viewport"] == 1400
    assert r["page_width"] <= r["viewport"]  # no sideways scrolling of the page
    assert len(r["tables"]) > 10
    for t in r["tables"]:  # every table fits its box (nothing to scroll) and the window
        assert t["width"] <= t["wrap_width"] + 1 and t["wrap_right"] <= r["viewport"], t
    colours = {rt: c for rt, c in r["colours"].items()}
    assert set(colours) == {"executorch", "litert", "onnxruntime", "torch"}
    assert all(len(c) == 1 for c in colours.values()), colours
    assert len({c[0] for c in colours.values()}) == 4
    assert r["labels"] > 10 and r["overlaps"] == []
    assert "None" not in r["text"] and not re.search(RAW_FLOAT, r["text"])
