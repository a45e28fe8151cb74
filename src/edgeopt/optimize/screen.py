"""Screening a candidate recipe cheaply before confirming it in full.

The candidate's passes run on the training split, as confirmation's do (the same pass code a recipe runs), and
its accuracy is scored on a validation split held out of the training data — never the test split,
which only confirmation touches. The same split matters: a latency allocation chooses its cuts by the accuracy each
loses on images drawn from it, so on a 2,000-image subset the ExecuTorch ResNet-8 screened as a 38 KB .pte and
was confirmed as a 43 KB one (2026-12-03). Nothing trains in a screen, so the full split costs nothing more:
calibration and the allocation draw a fixed number of images. Training is left out of the screen: pruning is
screened by its accuracy right after least-squares reconstruction (no recovery), and QAT by its starting point (PTQ
with the same calibration). A short recovery on a subset was tried first and was no proxy: on the
MLPerf ResNet-8, 2 epochs on 2,000 images took a half-MAC model from 51.7% (reconstructed) to 21-24%
(labels or KD alike, 2026-12-02). Recovery epochs and distillation are therefore judged only in
confirmation, where they run on the full split.

Cost: the screened model is exported to the runtime and timed there for a second (``measure.artifact_figures``):
flash and arena from the artifact itself, latency measured (the fallback: edgeopt's latency predictor
is calibrated on float models only, so an int8 candidate's latency is not predicted). Structural
bounds come first: a candidate whose int8 weights alone exceed the flash limit is rejected before any
training (``weight_bytes_bound``).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeopt.data import ImageDataset
from edgeopt.model import EdgeModel


@dataclass
class ScreenData:
    """The training split a screen's passes calibrate and allocate on (confirmation's), and the held-out training
    images it scores on."""

    data_spec: str
    train: ImageDataset
    val: ImageDataset


def quiet_env() -> Any:
    from edgeopt.nas.search import quiet_progress

    return quiet_progress()


def weight_bytes_bound(model: EdgeModel, passes: list[dict[str, Any]]) -> int:
    """A lower bound of the artifact's weight bytes: one byte per parameter if int8, four if float.

    Pruning only lowers it, so this is checked on the pruned structure (pruned without training).
    """
    from edgeopt.profile import count_params

    quantized = any(next(iter(p)) == "quantize" for p in passes)
    return count_params(model.module) * (1 if quantized else 4)


def screen_candidate(
    model: EdgeModel,
    passes: list[dict[str, Any]],
    data: ScreenData,
    runtime: str,
    threads: int = 1,
    flash_limit: float | None = None,
) -> dict[str, Any]:
    """Run ``passes`` on ``data.train`` (without training) and return proxies, measured cost and seconds spent.

    ``{"accuracy_val", "accuracy_after_prune", "cost": {...}, "seconds": {"passes", "cost"}}``; with
    ``rejected`` (and no accuracy) when the flash bound alone rules the candidate out.
    """
    from edgeopt.interop.export import FORMATS, export_model
    from edgeopt.optimize.measure import artifact_figures
    from edgeopt.optimize.space import prunes
    from edgeopt.pipeline.passes import PassContext
    from edgeopt.pipeline.recipe import build_pass
    from edgeopt.runtimes import RUNTIME_FORMAT
    from edgeopt.train import evaluate

    out: dict[str, Any] = {"seconds": {}}
    with tempfile.TemporaryDirectory(prefix="edgeopt-screen-") as tmp, quiet_env():
        ctx = PassContext(data.data_spec, Path(tmp), threads)
        ctx.train_data = data.train  # type: ignore[misc]  (cached_property: an instance value wins)
        ctx.test_data = data.val  # type: ignore[misc]
        start = time.perf_counter()
        if flash_limit is not None and not prunes(passes):
            out["weight_bytes_bound"] = bound = weight_bytes_bound(model, passes)
            if bound > flash_limit:
                out["rejected"] = f"weights alone {bound} bytes > flash limit {int(flash_limit)} bytes"
                return out
        for item in passes:
            ((name, params),) = item.items()
            if name == "export":
                continue
            if name == "prune":
                model = _screen_prune(model, params, ctx, data, out, passes, flash_limit)
                if "rejected" in out:
                    out["seconds"]["passes"] = round(time.perf_counter() - start, 2)
                    return out
                continue
            if name == "quantize" and params.get("method") == "qat":  # its starting point: PTQ, same calibration
                params = {k: v for k, v in params.items() if k not in ("method", "qat_epochs")}
            model = build_pass(name, params).apply(model, ctx)
        out["seconds"]["passes"] = round(time.perf_counter() - start, 2)
        out["accuracy_val"] = float(evaluate(model, data.val).accuracy)
        start = time.perf_counter()
        fmt = RUNTIME_FORMAT[runtime]
        result = export_model(model, fmt, Path(tmp) / f"screen{FORMATS[fmt]}")
        figures = artifact_figures(result.path, runtime, model, threads, runs=100, min_seconds=1.0)
        out["cost"] = {**figures, "source": "measured"}
        out["seconds"]["cost"] = round(time.perf_counter() - start, 2)
    return out


def _screen_prune(
    model: EdgeModel,
    params: dict[str, Any],
    ctx: Any,
    data: ScreenData,
    out: dict[str, Any],
    passes: list[dict[str, Any]],
    flash_limit: float | None,
) -> EdgeModel:
    """The prune pass without recovery (its accuracy after least-squares reconstruction is the proxy),
    and the flash bound on the pruned structure."""
    from edgeopt.pipeline.recipe import build_pass

    pruned = build_pass("prune", {**params, "epochs": 0}).apply(model, ctx)
    out["accuracy_after_prune"] = float(ctx.metrics.get("accuracy", float("nan")))
    bound = weight_bytes_bound(pruned, passes)
    out["weight_bytes_bound"] = bound
    if flash_limit is not None and bound > flash_limit:
        out["rejected"] = f"weights alone {bound} bytes > flash limit {int(flash_limit)} bytes"
        return pruned
    return pruned
