"""Latency-targeted channel pruning, NetAdapt-style (Yang et al. 2018), measured in a real runtime.

Each iteration proposes one candidate per channel group: the same model with that group's
weakest ``step`` of channels also removed (on imported graphs a residual branch's group may go
entirely, see :mod:`.branches`). Every candidate is exported to the chosen runtime
and timed at batch 1 (interleaved with the current model, so machine drift cancels out in the
ratio), and its accuracy is checked on a small held-out set without fine-tuning. The
candidate with the largest measured latency saving per point of accuracy lost is kept. The
loop stops at the target; near it, candidates that would undershoot by more than the
tolerance are passed over when another candidate lands closer.

Candidates are always cut from the original model with a growing set of removed channel
classes, so the dependency graph is built once. Cost per iteration: one export + ~``runs``
timed calls + one small evaluation per group (ONNX Runtime: about a second each for ResNet-8).
"""

from __future__ import annotations

import math
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from edgeopt.compress.prune.branches import branch_groups
from edgeopt.compress.prune.channel import (
    _params,
    calibration_inputs,
    channel_scores,
    channel_units,
    mac_model,
    pruned_model,
)
from edgeopt.compress.prune.depgraph import build_dependency_graph
from edgeopt.compress.prune.probe_eval import cut_accuracies
from edgeopt.compress.prune.reconstruct import original_outputs
from edgeopt.data import ImageDataset
from edgeopt.errors import EdgeoptError
from edgeopt.interop.graph import GraphModule
from edgeopt.model import EdgeModel
from edgeopt.progress import ProgressBar, phase

LatencyFn = Callable[[list[EdgeModel]], list[float]]

SHORT_TERM_HOLDOUT = 1000  # training images each cut is scored on (drawn with seed 1, apart from the calibration)
SHORT_TERM_CALIBRATION = 128  # training images each cut's next layer is re-fitted on by least squares first


def short_term_data(model: EdgeModel, data: ImageDataset, reconstruct: bool = True) -> tuple[ImageDataset, Any]:
    """The images of NetAdapt's short-term evaluation, shared by every search that scores cuts before
    training them (the latency search here, hw_train's accuracy table): ``SHORT_TERM_HOLDOUT`` images
    to score each cut on, and ``SHORT_TERM_CALIBRATION`` as one input batch to reconstruct it with
    (``None`` without ``reconstruct``)."""
    holdout = data.take(min(SHORT_TERM_HOLDOUT, len(data)), seed=1)
    return holdout, calibration_inputs(model, data, SHORT_TERM_CALIBRATION) if reconstruct else None


@dataclass
class LatencyPruneReport:
    """The search trace: latency and accuracy after each accepted step."""

    runtime: str
    target_ms: float
    start_ms: float
    final_ms: float
    macs_before: int
    macs_after: int
    steps: list[dict[str, Any]] = field(default_factory=list)
    confirmations: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "runtime": self.runtime, "target_ms": self.target_ms, "start_ms": self.start_ms,
            "final_ms": self.final_ms, "relative_error": (self.final_ms - self.target_ms) / self.target_ms,
            "macs_before": self.macs_before, "macs_after": self.macs_after, "steps": self.steps,
            "confirmations": self.confirmations,
        }  # fmt: skip


def runtime_latency(runtime: str, threads: int = 1, rounds: int = 3, runs: int = 100) -> LatencyFn:
    """A function timing several models in ``runtime``, interleaved: median over ``rounds`` of each p50 (ms).

    ``runtime`` may name several runtimes, comma-separated (``onnxruntime,executorch``): each model's
    figure is then its mean ratio to the first model across the runtimes, times the first model's
    mean time (:func:`combine_runtimes`), so a saving counts alike in every runtime you ship to.
    """
    from edgeopt.runtimes import RUNTIME_FORMAT

    names = [r.strip() for r in runtime.split(",") if r.strip()]
    unknown = [n for n in names if n not in RUNTIME_FORMAT and n != "torch"] or ([] if names else [runtime])
    if unknown:
        raise EdgeoptError(f"cannot time latency in '{unknown[0]}'", f"use {', '.join(RUNTIME_FORMAT)} or torch")
    if len(names) > 1:
        timers = [runtime_latency(n, threads, rounds, runs) for n in names]
        return lambda models: combine_runtimes([t(models) for t in timers])
    return _single_runtime_latency(runtime, threads, rounds, runs)


def predicted_latency(profiles: list[Any]) -> LatencyFn:
    """A ``LatencyFn`` that asks calibrated device profiles (``edgeopt.hardware``) instead of timing.

    Several profiles (one per runtime) combine like several timed runtimes (:func:`combine_runtimes`).
    Cost: one ``torch.export`` per model (~0.2–1 s), no artifact, no runtime.
    """
    from edgeopt.hardware.kernels import kernels_of_model

    def predict(models: list[EdgeModel]) -> list[float]:
        kernels = [kernels_of_model(m) for m in models]
        per_runtime = [[p.predict_ms(k) for k in kernels] for p in profiles]
        return per_runtime[0] if len(profiles) == 1 else combine_runtimes(per_runtime)

    return predict


def latency_source(
    runtime: str,
    threads: int = 1,
    profile: str | None = None,
    log: Callable[[str], None] | None = None,
    anchor: EdgeModel | None = None,
) -> tuple[LatencyFn, dict[str, Any]]:
    """How a search gets latencies: the predictor when every runtime named has a profile, else timing.

    ``profile`` names profile files (comma-separated, one per runtime of ``runtime``); without it,
    the profiles ``edgeopt hw calibrate`` saved for this machine are used when they exist and were
    calibrated here (a profile from another machine or runtime version is ignored, with a note).
    With an ``anchor`` (the search's input model), predictions are scaled so the anchor's equals its
    time measured now in ``runtime`` (:func:`anchored`): one timing, ~1-3 s.
    Returns the function and a record of what was used (``{"latency": "predicted"|"measured", ...}``).
    """
    from edgeopt.hardware.profile import default_profile_path, load_profile

    say = log or (lambda _s: None)
    names = [r.strip() for r in runtime.split(",") if r.strip()]
    given = [p.strip() for p in profile.split(",") if p.strip()] if profile else []
    if given and len(given) != len(names):
        raise EdgeoptError(f"{len(given)} profile(s) for {len(names)} runtime(s)", "give one --profile per --runtime")
    profiles = []
    for i, name in enumerate(names):
        path = Path(given[i]) if given else default_profile_path(name, threads)
        if not given and not path.is_file():
            break
        prof = load_profile(path)
        if (prof.runtime, prof.threads) != (name, threads):
            raise EdgeoptError(
                f"profile {path} is for {prof.runtime} at {prof.threads} thread(s), not {name} at {threads}",
                "give the profile calibrated for that runtime and thread count",
            )
        if prof.mismatch():
            say(f"profile {path} was calibrated elsewhere ({'; '.join(prof.mismatch())}); "
                f"recalibrate with `{prof.recalibrate_hint(path)}`")  # fmt: skip
            if not given:
                break
        profiles.append((path, prof))
    if profiles and len(profiles) == len(names):
        fn = predicted_latency([p for _, p in profiles])
        record = {"latency": "predicted", "profiles": [str(p) for p, _ in profiles],
                  "error_band_pct": [p.predictor.band_pct for _, p in profiles]}  # fmt: skip
        if anchor is not None:
            fn, record["anchor"] = anchored(fn, anchor, runtime_latency(runtime, threads))
            a = record["anchor"]
            say(f"predictions scaled by {a['scale']:.3f}: the input model times {a['measured_ms']:.3f} ms "
                f"here now, predicted {a['predicted_ms']:.3f} ms")  # fmt: skip
        return fn, record
    return runtime_latency(runtime, threads), {"latency": "measured"}


def timed_beside(anchor: EdgeModel, anchor_ms: float, runtime: str, threads: int = 1) -> LatencyFn:
    """Timing in ``runtime`` beside ``anchor``: each model's time as its ratio to the anchor's in the same
    rounds, times the anchor's usual time: the median of ``anchor_ms`` (its time when the search began) and
    of its timings in every call so far. On a shared machine two timings of one model minutes apart differ by
    10-20%; the ratio does not, so the search's target keeps its meaning. The median, because the one timing
    at the start can be far off: 0.267 ms for a model timed 0.195 ms in every round after it scaled every
    time by 1.37, and a 0.5x target failed with a cut timed at 0.50x of it (ONNX Runtime, 2026-12-05).
    Cost: the anchor is timed with every call."""
    timer = runtime_latency(runtime, threads)
    anchor_times = [anchor_ms]

    def timed(models: list[EdgeModel]) -> list[float]:
        times = timer([anchor, *models])
        anchor_times.append(times[0])
        usual = statistics.median(anchor_times)
        return [usual * t / times[0] for t in times[1:]]

    return timed


def anchored(predict: LatencyFn, anchor: EdgeModel, measure: LatencyFn) -> tuple[LatencyFn, dict[str, float]]:
    """``predict`` scaled so that ``anchor``'s prediction equals its time from ``measure``.

    A profile predicts in the milliseconds of the machine as it was during calibration; a shared or
    thermally throttled machine drifts from that by tens of percent between hours, and the predictor
    carries a bias per architecture family. Every candidate of a search is a cut of one input model,
    so one measurement of that model cancels both for the whole search (its ratios are unchanged).
    """
    predicted, measured = predict([anchor])[0], measure([anchor])[0]
    scale = measured / predicted
    return (lambda models: [scale * v for v in predict(models)]), {
        "predicted_ms": predicted, "measured_ms": measured, "scale": scale}  # fmt: skip


def combine_runtimes(per_runtime: list[list[float]]) -> list[float]:
    """One latency per model from several runtimes' timings of the same models (first model = reference).

    Each runtime's times are divided by its time for the first model, averaged over runtimes and
    scaled by the first model's mean time. Pure.
    """
    refs = [times[0] for times in per_runtime]
    scale = statistics.mean(refs)
    return [scale * statistics.mean(t[i] / r for t, r in zip(per_runtime, refs, strict=True))
            for i in range(len(per_runtime[0]))]  # fmt: skip


def _single_runtime_latency(runtime: str, threads: int, rounds: int, runs: int) -> LatencyFn:
    from edgeopt.interop.export import FORMATS, export_model
    from edgeopt.runtimes import RUNTIME_FORMAT, measure_latency, open_runner

    def measure(models: list[EdgeModel]) -> list[float]:
        # every round opens fresh sessions, so that no single session's allocation decides a figure
        with tempfile.TemporaryDirectory(prefix="edgeopt-netadapt-") as tmp:
            sources: list[Any] = list(models)
            if runtime != "torch":
                fmt = RUNTIME_FORMAT[runtime]
                sources = [export_model(m, fmt, Path(tmp) / f"c{i}{FORMATS[fmt]}", for_timing=True).path
                           for i, m in enumerate(models)]  # fmt: skip
            x = [m.example_input(1).numpy() for m in models]
            p50s: list[list[float]] = [[] for _ in models]
            for _ in range(rounds):
                runners = [open_runner(runtime, src, threads=threads) for src in sources]
                try:
                    for i, r in enumerate(runners):
                        p50s[i].append(measure_latency(r, x[i], threads=threads, warmup=10, runs=runs).p50_ms)
                finally:
                    for r in runners:
                        r.close()
            return [statistics.median(v) for v in p50s]

    return measure


@dataclass
class UnitTable:
    """Per group, what each successive unit of :func:`.channel.channel_units` saves and costs, measured
    with the group cut alone: ``savings`` in ms, ``costs`` in accuracy lost on held-out images,
    ``params_saved`` in parameters; ``base_ms`` and ``base_params`` are the uncut model's."""

    savings: dict[int, list[float]]
    costs: dict[int, list[float]] | None = None
    params_saved: dict[int, list[float]] = field(default_factory=dict)
    base_ms: float = 1.0
    base_params: int = 1

    def weighed_savings(self, size_weight: float = 0.0) -> dict[int, list[float]]:
        """What each unit saves for a latency allocation: its latency, plus with ``size_weight`` > 0 its weights, each
        as a fraction of the uncut model's (``size_weight`` 1 counts 1% of the weights as much as 1% of the time).
        Pure. Why: on ExecuTorch the last stage of ResNet-8 is cheap in time and holds most of the weights, so a
        latency-only allocation keeps it whole and the .pte misses a flash limit that a few of its channels meet."""
        if size_weight <= 0:
            return self.savings
        return {g: [ms / self.base_ms + size_weight * n / self.base_params
                    for ms, n in zip(v, self.params_saved[g], strict=True)]
                for g, v in self.savings.items()}  # fmt: skip


def _accuracies(models: list[EdgeModel], data: ImageDataset, bar: ProgressBar, label: str) -> list[float]:
    """Each model's accuracy on ``data``, advancing ``bar`` as "<label> i/n"."""
    from edgeopt.train import evaluate

    accs = []
    for i, m in enumerate(models):
        accs.append(evaluate(m, data).accuracy)
        bar.advance(f"{label} {i + 1}/{len(models)}")
    return accs


def measure_units(
    model: EdgeModel,
    dep: Any,
    units: dict[int, list[list[int]]],
    latency_fn: LatencyFn,
    eval_data: ImageDataset | None = None,
    calibration: torch.Tensor | None = None,
) -> UnitTable:
    """A latency (and accuracy) table for channel allocation.

    Each group is cut alone, unit by unit, from ``model`` (the others intact) and every variant is
    timed with ``latency_fn`` in one interleaved call; with ``eval_data`` each variant (re-fitted on
    ``calibration`` when given) is also evaluated, so a unit's cost is the accuracy it loses rather
    than a norm. Both are taken as additive across groups (NetAdapt's lookup-table approximation).
    Cost: one export and timing (or one prediction) per unit (ResNet-8 with widths in steps of 8:
    25 variants, under a minute timed in ONNX Runtime), plus with ``eval_data`` one reconstruction
    per unit (the original's outputs on ``calibration`` captured once for all) and one shared pass
    over ``eval_data`` in which each variant runs only from its first changed node
    (:func:`.probe_eval.cut_accuracies`).
    """

    probe = {"pass": "prune", "method": "unit-probe"}
    cal = calibration if eval_data is not None else None
    targets = original_outputs(model.module, dep, cal) if cal is not None else None  # shared by every variant
    variants: list[EdgeModel] = [model]
    slots: list[int] = []
    n = sum(len(units[g.index]) for g in dep.groups)
    bar = ProgressBar("latency table", 2 * n + 2 if eval_data is not None else n + 1)
    try:
        for g in dep.groups:
            removed: set[int] = set()
            for u in units[g.index]:
                removed |= set(u)
                variants.append(pruned_model(model, dep, set(removed), probe, cal, targets))
                slots.append(g.index)
                bar.advance(f"latency table, variant {len(slots)}/{n}")
        bar.update(n, f"latency table, timing {n + 1} models")
        lats = latency_fn(variants)
        bar.advance()
        accs = None
        if eval_data is not None:  # one pass: each variant runs from where it differs (imported graphs)

            def tick(f: float) -> None:  # the share of the pass, counted in models' worth of work
                bar.update(n + 1 + f * (n + 1), f"latency table, accuracy {round(f * (n + 1))}/{n + 1}")

            base_acc, cut_accs = cut_accuracies(model, variants[1:], eval_data, tick)
            accs = [base_acc, *cut_accs]
    finally:
        bar.close()
    savings: dict[int, list[float]] = {g.index: [] for g in dep.groups}
    costs: dict[int, list[float]] = {g.index: [] for g in dep.groups}
    params_saved: dict[int, list[float]] = {g.index: [] for g in dep.groups}
    params = [_params(v.module) for v in variants]
    last = {g.index: 0 for g in dep.groups}  # each unit is measured against the group's previous variant
    for i, gi in enumerate(slots, start=1):
        savings[gi].append(lats[last[gi]] - lats[i])
        params_saved[gi].append(float(params[last[gi]] - params[i]))
        if accs is not None:
            costs[gi].append(accs[last[gi]] - accs[i])
        last[gi] = i
    return UnitTable(savings, costs if accs is not None else None, params_saved, lats[0], params[0])


def prune_to_latency(
    model: EdgeModel,
    target_ms: float,
    eval_data: ImageDataset,
    runtime: str = "onnxruntime",
    threads: int = 1,
    criterion: str = "l2",
    step_fraction: float = 0.125,
    round_to: int = 1,
    tolerance: float = 0.05,
    max_iters: int = 40,
    latency_fn: LatencyFn | None = None,
    log: Callable[[str], None] | None = None,
    calibration: torch.Tensor | None = None,
    confirm: LatencyFn | None = None,
    max_confirmations: int = 4,
) -> tuple[EdgeModel, LatencyPruneReport]:
    """Prune channels until ``model`` runs in ``target_ms`` (p50, batch 1) in ``runtime``.

    ``eval_data`` (a few hundred held-out images) ranks candidates by accuracy lost.
    ``latency_fn`` replaces the runtime timing (tests, a latency table, a device profile's
    predictor). With ``confirm`` (timing in the runtime, when ``latency_fn`` predicts), a model the
    predictor puts at the target is timed; if it still misses, the search goes on from the measured
    figure (candidates are priced relative to the current model, so this re-anchors the predictor
    on it), up to ``max_confirmations`` timings (``report.confirmations``). ``calibration`` inputs
    turn on least-squares reconstruction of every candidate (and the result). Raises when the
    target cannot be reached before every group is at its minimum.
    """
    from edgeopt.train import evaluate

    if target_ms <= 0:
        raise EdgeoptError(f"latency target {target_ms} ms is not positive", "give --target-latency-ms > 0")
    if "," in runtime and latency_fn is None:
        raise EdgeoptError(f"a latency target in ms needs one runtime, not '{runtime}'",
                           "use --ratio with --allocation latency to prune for several runtimes")  # fmt: skip
    latency_fn = latency_fn or runtime_latency(runtime, threads)
    dep = build_dependency_graph(model.module, model.example_input(1))
    if not dep.groups:
        raise EdgeoptError("the model has no prunable channels", "channel pruning needs conv or linear layers")
    macs = mac_model(model.module, dep)
    scores = channel_scores(model, dep, criterion)
    whole = branch_groups(dep) if isinstance(model.module, GraphModule) else set()  # a branch may go entirely
    units = channel_units(dep, scores, round_to, min(round_to, 8), whole)
    taken = {g.index: 0 for g in dep.groups}
    removed: set[int] = set()
    current = model
    targets = original_outputs(model.module, dep, calibration) if calibration is not None else None
    with phase("netadapt start"):
        cur_acc = evaluate(model, eval_data).accuracy
    cur_ms = latency_fn([model])[0]
    report = LatencyPruneReport(runtime, float(target_ms), cur_ms, cur_ms, macs.macs(set()), macs.macs(set()))
    say = log or (lambda _s: None)
    say(f"netadapt: start {cur_ms:.4f} ms, target {target_ms:.4f} ms, accuracy {cur_acc:.4f}")
    step = step_fraction
    for it in range(max_iters):
        if cur_ms <= target_ms * (1 + tolerance):
            if confirm is None or len(report.confirmations) >= max_confirmations:
                break
            measured = confirm([current])[0]
            report.confirmations.append({"iteration": it, "predicted_ms": cur_ms, "measured_ms": measured})
            say(f"netadapt: timed {measured:.4f} ms in {runtime} (predicted {cur_ms:.4f}, target {target_ms:.4f})")
            cur_ms = measured
            if cur_ms <= target_ms * (1 + tolerance):
                break
        cands = []
        for g in dep.groups:
            left = g.size - sum(len(u) for u in units[g.index][: taken[g.index]])
            want = max(1, math.ceil(step * left))
            extra: set[int] = set()
            k = taken[g.index]
            floor = 0 if g.index in whole else 1
            while k < len(units[g.index]) and len(extra) < want and left - len(extra) - len(units[g.index][k]) >= floor:
                extra |= set(units[g.index][k])
                k += 1
            if extra:
                cands.append((g.index, k, removed | extra))
        if not cands:
            break
        probe = {"pass": "prune", "method": "netadapt-candidate"}
        bar = ProgressBar(f"netadapt iteration {it + 1}", 2 * len(cands) + 1)
        try:
            models = []
            for i, (_, _, rem) in enumerate(cands):
                models.append(pruned_model(model, dep, rem, probe, calibration, targets))
                bar.advance(f"netadapt iteration {it + 1}, candidate {i + 1}/{len(cands)}")
            bar.update(len(cands), f"netadapt iteration {it + 1}, timing {len(cands) + 1} models")
            lats = latency_fn([current, *models])
            bar.advance()
            accs = _accuracies(models, eval_data, bar, f"netadapt iteration {it + 1}, accuracy")
        finally:
            bar.close()
        ref, lats = lats[0], lats[1:]
        scale = cur_ms / ref if ref > 0 else 1.0  # express candidates on the current model's clock
        options = []
        for (gi, k, rem), lat, acc, m in zip(cands, lats, accs, models, strict=True):
            lat *= scale
            saving = cur_ms - lat
            if saving <= 0:
                continue
            undershoot = lat < target_ms * (1 - tolerance)
            options.append((undershoot, -saving / max(cur_acc - acc, 1e-3), gi, k, rem, lat, acc, m))
        if not options:  # runtimes pad channels to SIMD blocks: a small cut may save nothing; cut deeper
            step *= 2
            say(f"netadapt: iteration {it + 1}: no candidate is measurably faster; step now {step:.3g}")
            if step > 1.0:  # up to whole groups (a residual branch may go entirely)
                break
            continue
        step = step_fraction
        in_band = [o for o in options if not o[0]]
        pick = min(in_band or options, key=lambda o: (o[0], o[1]) if in_band else -o[5])
        _u, _r, gi, k, rem, lat, acc, m = pick
        taken[gi], removed, current, cur_ms, cur_acc = k, rem, m, lat, acc
        report.steps.append({"iteration": it + 1, "group": gi, "latency_ms": lat, "accuracy": acc,
                             "macs": macs.macs(removed)})  # fmt: skip
        say(f"netadapt: step {it + 1}: group {gi} -> {lat:.4f} ms, accuracy {acc:.4f}, MACs {macs.macs(removed):,}")
    if cur_ms > target_ms * (1 + tolerance):
        raise EdgeoptError(
            f"cannot reach {target_ms:.4f} ms in {runtime} by channel pruning (stopped at {cur_ms:.4f} ms)",
            "ask for a larger latency, or prune with a MAC target instead",
        )
    report.final_ms, report.macs_after = cur_ms, macs.macs(removed)
    step = {"pass": "prune", "method": "channel", "target_latency_ms": target_ms, "runtime": runtime,
            "criterion": criterion, "measured_ms": cur_ms, "macs_after": report.macs_after}  # fmt: skip
    return (current if removed else model).with_lineage(step), report
