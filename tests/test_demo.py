"""`edgeopt demo`'s whole flow at a test's scale: the demo recipe's stages (train, float export to the three
runtimes, distill, prune, quantize, int8 export) with fewer epochs, then `optimize` under the demo's budget
for a shorter time. `edgeopt demo` is `run_demo(out)` with the full-size recipe and budget (~6 minutes)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from edgeopt.pipeline.demo import DEMO_BUDGET, DEMO_RECIPE, run_demo

EPOCHS = {"train": 3, "distill": 3, "prune": 2}  # prune: one epoch per step (2 steps)


def test_demo_runs_every_stage_into_each_runtime_then_optimizes(tmp_path: Path) -> None:
    recipe = copy.deepcopy(DEMO_RECIPE)
    for stage in recipe["passes"]:
        (name, params), = stage.items()
        if name in EPOCHS:
            params["epochs"] = EPOCHS[name]
    out = tmp_path / "demo"
    summary = run_demo(out, verbose=False, recipe=recipe, budget={**DEMO_BUDGET, "minutes": 0.5})
    assert summary["stages"] == len(recipe["passes"]) + 1 and summary["reused_stages"] == 0  # + the input stage
    final = summary["accuracy_by_runtime"]
    assert set(final) >= {"onnxruntime", "executorch", "litert"}
    assert all(acc >= 0.85 for acc in final.values()), final  # int8 half-width pruned student, every runtime
    assert all(s > 0 for s in summary["speedup"].values()), summary["speedup"]
    report = json.loads(Path(summary["report_json"]).read_text())
    assert [s["name"] for s in report["stages"]] == ["baseline"] + [next(iter(p)) for p in recipe["passes"]]
    assert "<svg" in Path(summary["report_html"]).read_text()
    opt = summary["optimize"]
    # either a candidate within the demo's LiteRT budget, or the honest failure naming the closest
    if "failed" in opt:
        assert opt["closest"] and "no candidate meets the budget" in opt["failed"]
    else:
        assert opt["measured"]["accuracy"] >= opt["baseline"]["accuracy"] - DEMO_BUDGET["max_drop"] / 100
        assert (out / "optimize" / "best.yaml").is_file()
