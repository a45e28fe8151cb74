"""A whole search run: the study, the trials, then the Pareto front retrained and measured in the runtimes.

``search(space, data, budget, settings, out)``:

1. opens (or joins) the Optuna study and runs this worker's trials (:mod:`edgeopt.nas.search`),
   with a progress bar naming the best feasible candidate so far;
2. unless ``final=False`` (a pure worker), takes the feasible Pareto front of the whole study,
   keeps up to ``front_limit`` points spread along it, retrains each on the full training split for
   ``final_epochs``, exports it to every searched runtime (parity-checked) and measures test accuracy
   and batch-1 latency there; a point whose *measured* latency misses the budget is flagged;
3. chooses the most accurate measured point within budget, saves it as ``OUT/model.edgeopt``,
   exports and measures it in all three runtimes, and writes ``OUT/trials.json``,
   ``OUT/search.json`` and ``OUT/report.html``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from edgeopt.data import ImageDataset, load_dataset
from edgeopt.errors import EdgeoptError
from edgeopt.fileio import write_json_atomic
from edgeopt.model import EdgeModel, save_model
from edgeopt.nas.cost import Budget, resolve_profiles
from edgeopt.nas.search import (
    SearchSettings,
    candidate_model,
    make_objective,
    open_study,
    pareto_front,
    quiet_progress,
    refuse_unsearchable,
    split_train_val,
    spread,
    stratified_subset,
    trial_record,
)
from edgeopt.nas.space import SearchSpace
from edgeopt.progress import ProgressBar
from edgeopt.train import FitConfig, fit

ALL_RUNTIMES = ("onnxruntime", "executorch", "litert")


class _SearchBar:
    """Progress over this worker's trials (or its minutes), naming the best feasible candidate so far."""

    def __init__(self, settings: SearchSettings) -> None:
        self.by_time = settings.trials is None
        total = int(settings.minutes * 60) if self.by_time and settings.minutes else settings.trials
        self.start = time.perf_counter()
        self.done = 0
        self._bar = ProgressBar("searching", total, transient=False)

    def __call__(self, study: Any, trial: Any) -> None:
        self.done += 1
        best = [t for t in study.best_trials if t.user_attrs.get("trained")]
        text = f"searching: {self.done} trials"
        if best:
            top = max(best, key=lambda t: t.values[0])
            text += f", best {top.values[0]:.3f} at {top.values[1]:.3g} {top.user_attrs.get('cost_axis', '')}"
        if self.by_time:
            self._bar.update(time.perf_counter() - self.start, text)
        else:
            self._bar.advance(text)

    def close(self) -> None:
        self._bar.close()


def measure_in_runtimes(
    model: EdgeModel,
    test: ImageDataset,
    runtimes: list[str] | tuple[str, ...],
    out_dir: Path,
    stem: str,
    threads: int = 1,
) -> dict[str, dict[str, Any]]:
    """Export ``model`` to each runtime (parity-checked), then test accuracy, batch-1 p50 and the memory plan."""
    from edgeopt.interop.export import FORMATS, export_model
    from edgeopt.runtimes import RUNTIME_FORMAT, measure_latency, open_runner
    from edgeopt.runtimes.memory_plan import memory_plan
    from edgeopt.train import evaluate

    out: dict[str, dict[str, Any]] = {}
    for r in runtimes:
        fmt = RUNTIME_FORMAT[r]
        res = export_model(model, fmt, out_dir / f"{stem}{FORMATS[fmt]}")
        with quiet_progress(), open_runner(r, res.path, threads=threads) as runner:
            acc = float(evaluate(model, test, predict=runner.run).accuracy)
            lat = measure_latency(runner, model.example_input(1).numpy(), threads=threads)
        plan = memory_plan(res.path)
        out[r] = {
            "accuracy": acc,
            "latency_ms": float(lat.p50_ms),
            "artifact": str(res.path),
            "artifact_bytes": int(res.size_bytes),
            "arena_bytes": int(plan.arena_bytes),
            "arena_source": plan.source,
        }
    return out


def _optimize(study: Any, objective: Any, settings: SearchSettings, bar: _SearchBar) -> int:
    """Run this worker's trials one ``optimize`` call at a time. Optuna refuses this worker's result when
    another worker settled the trial meanwhile, and the trial is then dropped here and another run,
    instead of ending the worker. Two ways that happens:

    * the other worker declared the trial stale (its heartbeats came late, as on an overloaded machine)
      and re-queued it: ``Cannot tell a FAIL trial``;
    * both workers took the same queued (WAITING) trial, such as a corner of the space: SQLite has no
      ``SELECT ... FOR UPDATE``, so Optuna's pop of a waiting trial can hand it to two processes at once,
      and the second to finish gets ``Cannot tell a COMPLETE trial`` (CI, 2026-12-02).

    Returns how many were dropped."""
    deadline = time.monotonic() + settings.minutes * 60 if settings.minutes else None
    done = dropped = 0
    while settings.trials is None or done < settings.trials:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            break
        try:
            study.optimize(objective, n_trials=1, timeout=left, callbacks=[bar], catch=(EdgeoptError,))
        except ValueError as e:
            if not any(f"Cannot tell a {state} trial" in str(e) for state in ("FAIL", "COMPLETE")):
                raise
            dropped += 1
            continue
        done += 1
    return dropped


def _trained_supernet(space: SearchSpace, train: ImageDataset, settings: SearchSettings) -> Any:
    """A ``nas_resnet`` space's supernet, trained once with the sandwich rule on the search's training split."""
    from edgeopt.nas.supernet import ResNetSupernet, largest, train_supernet

    h, w, c = train.image_shape
    spec = candidate_model(space, largest(space), train).meta.input
    torch.manual_seed(settings.seed)
    net = ResNetSupernet(space, (c, h, w), train.num_classes)
    return train_supernet(net, train, spec, settings.supernet_epochs, seed=settings.seed, device=settings.device)


def _within(point: dict[str, Any], budget: Budget) -> bool:
    if budget.latency_ms is None:
        return True
    return all(m["latency_ms"] <= budget.latency_ms for m in point["measured"].values())


def search(
    space: SearchSpace,
    data: str,
    budget: Budget,
    settings: SearchSettings,
    out: str | Path,
    profile: str | None = None,
    final: bool = True,
    final_epochs: int | None = None,
    front_limit: int = 4,
    export_all: bool = True,
) -> dict[str, Any]:
    """Run this worker's trials on the (shared) study; with ``final``, measure the front and pick the model.

    Returns the run's summary (also ``OUT/search.json``): ``model`` (the chosen ``.edgeopt``, or None
    for a worker), ``trials`` (complete trials in the study), ``trials_this_worker``, ``pareto`` (each
    measured point), ``latency_source`` (per runtime: predicted from a profile, measured, or MACs),
    ``cost_axis``, the budget and the files written.
    """
    import optuna

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    unknown = [r for r in settings.runtimes if r not in ALL_RUNTIMES]
    if unknown or not settings.runtimes:
        raise EdgeoptError(f"cannot search for runtime '{(unknown or [''])[0]}'", f"use {', '.join(ALL_RUNTIMES)}")
    train_all = load_dataset(data, "train")
    from edgeopt.data.dataset import refuse_multi_input_data

    refuse_multi_input_data(train_all, "search (its spaces build single-input networks)")
    if train_all.outputs is not None:
        from edgeopt.model import MULTI_OUTPUT_COMMANDS

        raise EdgeoptError(
            f"search builds single-output classifiers, but {data} has one label array per output"
            f" ({', '.join(o.name for o in train_all.outputs)})",
            f"multi-output models go through {', '.join(MULTI_OUTPUT_COMMANDS)}",
        )
    refuse_unsearchable(space, train_all, data, settings.mode)  # else every trial would fail alone: say it once
    proxy_data = stratified_subset(train_all, settings.proxy_images, settings.seed)
    train, val = split_train_val(proxy_data, settings.val_fraction, settings.seed)
    source = resolve_profiles(settings.runtimes, profile, settings.threads)
    if budget.latency_ms is not None and len(source.profiles) < len(settings.runtimes):
        # a latency budget without a profile: time candidates in the runtime
        settings = dataclasses.replace(settings, measure_latency=True)
    study = open_study(space, budget, settings)
    supernet = _trained_supernet(space, train, settings) if settings.mode == "supernet" else None
    objective = make_objective(space, budget, settings, train, val, source, supernet)
    bar = _SearchBar(settings)
    started = time.perf_counter()
    # queued (WAITING) trials, such as the space's corners or a re-queued stale trial, are run by whichever
    # worker asks next: they count for that worker
    before = {t.number for t in study.get_trials(deepcopy=False) if t.state != optuna.trial.TrialState.WAITING}
    try:
        dropped = _optimize(study, objective, settings, bar)
    finally:
        bar.close()
    records = [trial_record(t) for t in study.get_trials(deepcopy=False)]
    mine = [r for r in records if r["number"] not in before]
    write_json_atomic(out / "trials.json", records)
    complete = [r for r in records if r["state"] == optuna.trial.TrialState.COMPLETE.name]
    summary: dict[str, Any] = {
        "study": settings.study_name,
        "storage": settings.storage,
        "space": space.name,
        "budget": budget.to_json(),
        "runtimes": settings.runtimes,
        "latency_source": source.describe(settings.runtimes, settings.measure_latency),
        "cost_axis": complete[-1].get("cost_axis") if complete else None,
        "trials": len(complete),
        "trials_this_worker": len(mine),
        "trials_failed": sum(r["state"] == "FAIL" for r in records),
        "trials_taken_over": dropped,
        "feasible_trials": sum(r["feasible"] and r.get("trained", False) for r in complete),
        "search_seconds": round(time.perf_counter() - started, 1),
        "settings": {k: v for k, v in asdict(settings).items() if k != "storage"},
        "notes": source.notes,
        "trials_json": str(out / "trials.json"),
        "model": None,
        "pareto": [],
    }
    if not final:
        write_json_atomic(out / "search.json", summary)
        return summary
    front = pareto_front(records)
    if not front:
        write_json_atomic(out / "search.json", summary)
        raise EdgeoptError(
            f"none of the study's {len(complete)} complete trials met the budget ({budget.to_json()})",
            "loosen the budget, search longer (--trials), or pick a space with smaller networks",
        )
    test = load_dataset(data, "test")
    points = []
    epochs = final_epochs or settings.epochs
    front_dir = out / "pareto"
    for i, rec in enumerate(spread(front, front_limit)):
        step = {"pass": "search", "space": space.name, "config": rec["config"], "trial": rec["number"]}
        model = candidate_model(space, rec["config"], train_all, settings.seed, step)
        if supernet is not None:  # fine-tune from the inherited weights rather than train from scratch
            from edgeopt.nas.supernet import extract, recalibrate_bn

            model = recalibrate_bn(extract(supernet, rec["config"], model), train_all)
        with quiet_progress():
            cfg = FitConfig(epochs=epochs, batch_size=settings.batch_size, seed=settings.seed, threads=1,
                            device=settings.device)  # fmt: skip
            model, _ = fit(model, train_all, cfg)
        measured = measure_in_runtimes(model, test, settings.runtimes, front_dir, f"p{i}", settings.threads)
        point = {
            "trial": rec["number"],
            "config": rec["config"],
            "accuracy_val_proxy": rec["values"][0],
            "cost": rec["cost"],
            "measured": measured,
            "final_epochs": epochs,
        }
        point["within_budget"] = _within(point, budget)
        points.append((point, model))
    summary["pareto"] = [p for p, _ in points]
    ok = [(p, m) for p, m in points if p["within_budget"]]
    if not ok:
        write_json_atomic(out / "search.json", summary)
        raise EdgeoptError(
            "every Pareto point missed the latency budget when measured in the runtime",
            "recalibrate the device profile (`edgeopt hw calibrate`) or loosen --max-latency-ms",
        )
    first = settings.runtimes[0]
    chosen, model = max(
        ok, key=lambda pm: (pm[0]["measured"][first]["accuracy"], -pm[0]["measured"][first]["latency_ms"])
    )
    chosen["chosen"] = True
    path = save_model(model, out / "model.edgeopt")
    summary["model"] = str(path)
    rest = [r for r in ALL_RUNTIMES if r not in chosen["measured"]] if export_all else []
    summary["chosen"] = {
        "trial": chosen["trial"],
        "config": chosen["config"],
        "measured": {**chosen["measured"], **measure_in_runtimes(model, test, rest, out, "model", settings.threads)},
    }
    write_json_atomic(out / "search.json", summary)
    from edgeopt.nas.report import write_search_report

    summary["report"] = str(write_search_report(out / "report.html", summary, records))
    write_json_atomic(out / "search.json", summary)
    return summary
