"""Mixed float/int8 per layer, HAQ-style: measured latency and sensitivity choose the layers that stay float.

ONNX Runtime and ExecuTorch (XNNPACK) run float and int8 layers side by side, so each conv/linear
layer can be int8 or float. HAQ (Wang et al., CVPR 2019) picks per-layer precision from *hardware
feedback* — latency measured on the device — instead of proxies like MACs or bytes. Here the choice
per layer is binary and the layer count small, so the feedback is measured directly, layer by layer:

- ``measure_layers``: PTQ of the whole model at int8, then one PTQ per candidate layer with only
  that layer kept float (``QuantRecipe.layer_bits[layer] = 0``). Each program is scored on
  held-out *training* images (top-1 accuracy and logit SQNR against the float model, in the PyTorch
  simulation) and, when a ``runtime`` is given, exported to it and timed at batch 1 (``rounds``
  interleaved rounds of ``runs`` calls, median p50). A layer's *cost* is the whole model's latency
  with it float minus the all-int8 latency (negative: the runtime is faster with it float; the
  int8↔float hand-overs it adds are counted); its *gain* the accuracy recovered by keeping it float.
- ``choose_float_layers`` (pure): with ``max_drop`` (points): the layers measured faster in float
  (by more than ``tolerance`` of the int8 latency) go float at no cost, and the others are ordered
  by gain per microsecond for ``accuracy_aware`` (``mixed``), which re-quantizes after each one it
  keeps float until the drop is within ``max_drop`` — the fastest model within the drop. With
  ``budget_ms``: the set with the largest summed gain whose predicted latency (int8 + summed costs)
  fits the budget — exhaustive up to 16 candidates, greedy by gain per cost beyond.
- ``float_int8_mix``: the whole flow (``measure_layers``, then ``build_mix``: choose, quantize and
  measure again, latency beside the all-int8 and all-float artifacts in the same rounds, accuracy on
  the validation images), so the report holds predicted *and* measured figures.

Latencies combine additively only approximately (each float island adds its own dequantize /
quantize); the final measurement says how far off the prediction was. Cost: (candidates + 1) PTQs
(~5-10 s each for ResNet-8 on 2 cores) and as many exports (seconds each), ``rounds × runs``
inferences per artifact, plus one PTQ per layer ``accuracy_aware`` keeps float.
"""

from __future__ import annotations

import copy
import itertools
import statistics
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgeopt.compress.quantize import calibration as cal
from edgeopt.compress.quantize.mixed import accuracy_aware, quant_layers, validation_split
from edgeopt.compress.quantize.ptq import QuantRecipe, calibration_indices, quantize_ptq, run_batches
from edgeopt.data import ImageDataset
from edgeopt.errors import EdgeoptError
from edgeopt.model import EdgeModel

# runtimes that execute float and int8 layers in one graph, and the artifact each loads
MIX_RUNTIMES = {"onnxruntime": "onnx", "executorch": "pte"}
EXHAUSTIVE_MAX = 16  # candidates up to which the latency-budget choice tries every subset


@dataclass
class LayerChoice:
    """One candidate layer: the model with only this layer float, against the all-int8 model."""

    layer: str
    val_accuracy: float
    sqnr_db: float
    gain_points: float  # accuracy with this layer float minus all-int8, in points
    latency_ms: float | None = None  # whole model with this layer float (None: not timed)
    cost_ms: float | None = None  # latency_ms minus the all-int8 latency


def gain_score(gain_points: float, sqnr_db: float, int8_sqnr_db: float) -> float:
    """Accuracy recovered by keeping a layer float (points, ≥ 0), ties broken by the logit SQNR it
    recovers (0.01 per dB, capped at 60 dB as in ``mixed.sensitivity_score``). Pure."""
    sq = min(sqnr_db, 60.0) - min(int8_sqnr_db, 60.0)
    return max(gain_points, 0.0) + 0.01 * max(sq, 0.0)


def _logits(module: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    return run_batches(module.eval(), x, 256).numpy()


def _score(q: EdgeModel, x: torch.Tensor, y: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    out = _logits(q.module, x)
    return float((out.argmax(1) == y).mean()), cal.sqnr_db(ref, out)


class LatencyTimer:
    """Exports programs to ``runtime`` and times them in interleaved rounds (median of per-round p50s)."""

    def __init__(self, runtime: str, workdir: Path, x: np.ndarray, threads: int, rounds: int, runs: int) -> None:
        self.fmt = MIX_RUNTIMES[runtime]
        self.workdir, self.x, self.threads, self.rounds, self.runs = workdir, x, threads, rounds, runs
        self.paths: dict[str, Path] = {}
        self.runtime = runtime

    def add(self, key: str, model: EdgeModel) -> None:
        from edgeopt.interop.export import QUANTIZED_RTOL, export_model

        safe = "".join(c if c.isalnum() else "_" for c in key)
        # exported to be timed: values must match, but an int8 program that the accuracy side already
        # scores as wrecked may not agree on top-1 (near-equal logits), so no top-1 gate here
        rtol = QUANTIZED_RTOL if getattr(model.module, "quantized", False) else None
        self.paths[key] = export_model(model, self.fmt, self.workdir / f"{safe}.{self.fmt}", rtol=rtol).path

    def p50_ms(self, keys: list[str]) -> dict[str, float]:
        from edgeopt.runtimes import measure_latency, open_runner

        runners = {k: open_runner(self.runtime, self.paths[k], threads=self.threads) for k in keys}
        try:
            per: dict[str, list[float]] = {k: [] for k in keys}
            for _ in range(self.rounds):
                for k, r in runners.items():
                    per[k].append(measure_latency(r, self.x, threads=self.threads, warmup=20, runs=self.runs).p50_ms)
            return {k: statistics.median(v) for k, v in per.items()}
        finally:
            for r in runners.values():
                r.close()


def measure_layers(
    model: EdgeModel,
    data: ImageDataset,
    recipe: QuantRecipe,
    x_val: torch.Tensor,
    y_val: np.ndarray,
    candidates: list[str] | None = None,
    timer: LatencyTimer | None = None,
) -> dict[str, Any]:
    """All-int8 and one-layer-float PTQs of ``model``: accuracy, SQNR and (with ``timer``) latency.

    Returns ``{"float_val_accuracy", "int8": {"val_accuracy", "sqnr_db", "latency_ms"},
    "layers": {name: LayerChoice}}``. Cost: one PTQ (and export) per candidate plus one.
    """
    layers = list(quant_layers(model.module))
    candidates = layers if candidates is None else list(candidates)
    unknown = [c for c in candidates if c not in layers]
    if unknown:
        raise EdgeoptError(f"not conv/linear layers of the model: {', '.join(unknown)}", f"choose among {layers}")
    ref = _logits(copy.deepcopy(model.module), x_val)
    base = float((ref.argmax(1) == y_val).mean())
    q8 = quantize_ptq(model, data, recipe)
    acc8, sq8 = _score(q8, x_val, y_val, ref)
    if timer is not None:
        timer.add("int8", q8)
    rows: dict[str, LayerChoice] = {}
    for name in candidates:
        r = copy.deepcopy(recipe)
        r.layer_bits = {**r.layer_bits, name: 0}
        q = quantize_ptq(model, data, r)
        acc, sq = _score(q, x_val, y_val, ref)
        rows[name] = LayerChoice(name, acc, sq, 100 * (acc - acc8))
        if timer is not None:
            timer.add(name, q)
    lat8 = None
    if timer is not None:
        lat = timer.p50_ms(["int8", *candidates])
        lat8 = lat["int8"]
        for name, row in rows.items():
            row.latency_ms, row.cost_ms = lat[name], lat[name] - lat8
    return {"float_val_accuracy": base, "int8": {"val_accuracy": acc8, "sqnr_db": sq8, "latency_ms": lat8},
            "layers": rows}  # fmt: skip


def choose_float_layers(
    rows: dict[str, LayerChoice],
    int8_sqnr_db: float,
    int8_ms: float,
    budget_ms: float | None = None,
    tolerance: float = 0.03,
) -> tuple[list[str], list[str]]:
    """(layers float from the start, the rest in the order to try) from measured ``rows``. Pure.

    Without ``budget_ms``: float from the start are the layers whose float version is faster than
    int8 by more than ``tolerance`` × ``int8_ms`` (free), and the order is by gain per ms of cost,
    highest first (the order for ``accuracy_aware``). With ``budget_ms``: the set with the largest
    summed gain whose predicted latency ``int8_ms + Σ cost`` is within the budget (every subset up to
    ``EXHAUSTIVE_MAX`` candidates, greedy beyond); the order is then empty. Raises when even the
    fastest prediction exceeds the budget.
    """
    if any(r.cost_ms is None for r in rows.values()):
        raise EdgeoptError("the float/int8 choice needs every layer's latency", "measure with a runtime")
    free = [n for n, r in rows.items() if r.cost_ms < -tolerance * int8_ms]
    score = {n: gain_score(r.gain_points, r.sqnr_db, int8_sqnr_db) for n, r in rows.items()}
    if budget_ms is None:
        eps = 1e-6
        rest = sorted((n for n in rows if n not in free), key=lambda n: -score[n] / max(rows[n].cost_ms, eps))
        return free, rest
    names = list(rows)
    cost = {n: rows[n].cost_ms for n in names}
    fastest = int8_ms + sum(c for c in cost.values() if c < 0)
    if fastest > budget_ms:
        raise EdgeoptError(
            f"a latency budget of {budget_ms:.4f} ms cannot be met: the fastest float/int8 mix is predicted at "
            f"{fastest:.4f} ms", "raise --latency-budget-ms",
        )  # fmt: skip
    if len(names) <= EXHAUSTIVE_MAX:
        best: tuple[float, float, tuple[str, ...]] = (-1.0, 0.0, ())
        for k in range(len(names) + 1):
            for subset in itertools.combinations(names, k):
                t = int8_ms + sum(cost[n] for n in subset)
                if t <= budget_ms:
                    key = (sum(score[n] for n in subset), -t, subset)
                    best = max(best, key)
        return sorted(best[2], key=names.index), []
    chosen = [n for n in names if cost[n] < 0]
    t = int8_ms + sum(cost[n] for n in chosen)
    for n in sorted((n for n in names if cost[n] >= 0), key=lambda n: -score[n] / max(cost[n], 1e-6)):
        if score[n] > 0 and t + cost[n] <= budget_ms:
            chosen.append(n)
            t += cost[n]
    return sorted(chosen, key=names.index), []


def float_int8_mix(
    model: EdgeModel,
    data: ImageDataset,
    recipe: QuantRecipe,
    runtime: str,
    max_drop: float | None = None,
    budget_ms: float | None = None,
    val_samples: int = 1000,
    candidates: list[str] | None = None,
    threads: int = 1,
    rounds: int = 3,
    runs: int = 200,
    tolerance: float = 0.03,
) -> tuple[EdgeModel, dict[str, Any]]:
    """Choose the layers that stay float for ``runtime`` (see module doc); returns the model and a report.

    Exactly one of ``max_drop`` (points, on held-out training images: the fastest mix within it) and
    ``budget_ms`` (the most accurate mix predicted within it) is required.
    """
    if runtime not in MIX_RUNTIMES:
        raise EdgeoptError(f"runtime '{runtime}' does not mix float and int8 layers here",
                           f"use {' or '.join(MIX_RUNTIMES)}")  # fmt: skip
    if (max_drop is None) == (budget_ms is None):
        raise EdgeoptError("the float/int8 mix needs exactly one of --max-drop and --latency-budget-ms")
    if budget_ms is not None and budget_ms <= 0:
        raise EdgeoptError(f"--latency-budget-ms must be > 0, not {budget_ms}")
    recipe = copy.deepcopy(recipe).validate()
    x_val, y_val = validation_split(model, data, val_samples,
                                    calibration_indices(len(data), recipe.calib_samples, recipe.seed))  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="edgeopt-floatmix-") as tmp:
        timer = LatencyTimer(runtime, Path(tmp), model.example_input(1).numpy(), threads, rounds, runs)
        measured = measure_layers(model, data, recipe, x_val, y_val, candidates, timer)
        return build_mix(model, data, recipe, measured, x_val, y_val, timer, max_drop, budget_ms, tolerance)


def build_mix(
    model: EdgeModel,
    data: ImageDataset,
    recipe: QuantRecipe,
    measured: dict[str, Any],
    x_val: torch.Tensor,
    y_val: np.ndarray,
    timer: LatencyTimer,
    max_drop: float | None = None,
    budget_ms: float | None = None,
    tolerance: float = 0.03,
) -> tuple[EdgeModel, dict[str, Any]]:
    """From ``measure_layers``' figures: choose (``choose_float_layers``), quantize, and measure the
    result beside the all-int8 and float artifacts. Cost: one PTQ (more under ``max_drop`` when the
    first choice misses the drop) and up to two exports.

    The report's ``initial_float_layers`` are those the choice sets float before any re-quantization
    (``max_drop``: the ones measured faster in float; ``budget_ms``: the whole choice), ``order`` the
    ones ``accuracy_aware`` may add, ``float_layers`` the final set.
    """
    rows: dict[str, LayerChoice] = measured["layers"]
    int8_ms, int8_sqnr = measured["int8"]["latency_ms"], measured["int8"]["sqnr_db"]
    start, order = choose_float_layers(rows, int8_sqnr, int8_ms, budget_ms, tolerance)
    r = copy.deepcopy(recipe)
    r.layer_bits = {**r.layer_bits, **dict.fromkeys(start, 0)}
    report: dict[str, Any] = {
        "runtime": timer.runtime, "threads": timer.threads,
        "mode": "max_drop" if budget_ms is None else "latency_budget", "max_drop": max_drop, "budget_ms": budget_ms,
        "float_val_accuracy": measured["float_val_accuracy"], "int8": measured["int8"],
        "layers": {n: asdict(v) for n, v in rows.items()}, "initial_float_layers": start, "order": order,
    }  # fmt: skip
    if budget_ms is None:
        q, info = accuracy_aware(model, data, r, max_drop, x_val, y_val, order)
        report["accuracy_aware"] = info
        chosen = sorted(n for n, b in q.module.recipe.layer_bits.items() if b == 0)
    else:
        q, chosen = quantize_ptq(model, data, r), start
    report["float_layers"] = chosen
    report["predicted_latency_ms"] = int8_ms + sum(rows[n].cost_ms for n in chosen if n in rows)
    acc, sq = _score(q, x_val, y_val, _logits(copy.deepcopy(model.module), x_val))
    report["val_accuracy"], report["sqnr_db"] = acc, sq
    report["drop_points"] = 100 * (measured["float_val_accuracy"] - acc)
    same = "int8" if not chosen else chosen[0] if len(chosen) == 1 and chosen[0] in timer.paths else None
    if same is None:
        timer.add("chosen", q)
    else:  # the same recipe was already exported (PTQ is deterministic): time that artifact again
        timer.paths["chosen"] = timer.paths[same]
    if "float" not in timer.paths:
        timer.add("float", model)
    report["measured_latency_ms"] = timer.p50_ms(["int8", "chosen", "float"])
    return q, report
