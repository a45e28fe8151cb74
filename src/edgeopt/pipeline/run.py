"""Run a recipe in a run directory, stage by stage, resumable after interruption.

Layout of ``out/``::

    recipe.json          the recipe as run (resuming with a different recipe is refused)
    ledger.jsonl         one line per finished stage (append-only)
    stages/NN-name/      the stage's checkpoint (model.edgeopt) and artifacts
    report.json, report.html

A stage is built in a temporary folder and renamed into place before its ledger line is
written, so Ctrl-C or a crash loses at most the stage in progress; ``resume`` skips every
stage the ledger records and reloads the last checkpoint.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgeopt.errors import EdgeoptError
from edgeopt.fileio import write_json_atomic
from edgeopt.model import EdgeModel, load_model, save_model
from edgeopt.pipeline.ledger import append_ledger, read_ledger
from edgeopt.pipeline.passes import PassContext, record_runtime_metrics
from edgeopt.pipeline.recipe import Recipe

CHECKPOINT = "model.edgeopt"


def stage_metrics(model: EdgeModel, ctx: PassContext) -> dict[str, Any]:
    """What every stage records: profile figures plus PyTorch accuracy and latency (and a classifier's class count)."""
    from edgeopt.profile import profile_model

    metrics = profile_model(model).to_json()
    if model.meta.task == "classification":
        metrics["num_classes"] = model.meta.num_classes  # what the report's chance check compares against
    from edgeopt.runtimes import open_runner

    with open_runner("torch", model, threads=ctx.threads) as runner:
        record_runtime_metrics(metrics, model, runner, ctx)
    metrics["accuracy"] = metrics["accuracy_by_runtime"]["torch"]
    return metrics


def run_recipe(
    recipe: Recipe,
    out: str | Path,
    resume: bool = False,
    model: EdgeModel | None = None,
    on_stage: Callable[[dict[str, Any]], None] | None = None,
    device: str = "cpu",
) -> list[dict[str, Any]]:
    """Apply the recipe's passes in order; return the ledger (one record per stage).

    ``model`` overrides ``recipe.model`` (for callers holding a model in memory). ``device``: where the
    passes train (cpu, cuda or auto); not part of the recipe, so a run may resume on another.
    """
    from edgeopt.train.fit import training_device

    training_device(device)  # an unknown or absent device fails before any stage, not after the baseline
    out = Path(out)
    ledger_path = out / "ledger.jsonl"
    recipe_json = {**recipe.to_json(), "fingerprint": recipe.fingerprint()}
    if ledger_path.exists() and not resume:
        raise EdgeoptError(f"{out} already holds a run", "pass --resume to continue it, or choose another --out")
    if resume and (out / "recipe.json").is_file():
        import json

        previous = json.loads((out / "recipe.json").read_text())
        if previous.get("fingerprint") != recipe_json["fingerprint"]:
            raise EdgeoptError(f"{out} was run with a different recipe", "resume with the same recipe or a new --out")
    write_json_atomic(out / "recipe.json", recipe_json)
    ledger = read_ledger(ledger_path)
    done = len(ledger)
    if done:
        model = load_model(out / ledger[-1]["checkpoint"])
    elif model is None:
        model = _initial_model(recipe)
    stages = [("baseline", None), *[(p.name, p) for p in recipe.passes]]
    for index, (name, p) in enumerate(stages):
        if index < done:
            continue
        final_dir = out / "stages" / f"{index:02d}-{name}"
        tmp_dir = final_dir.with_name(final_dir.name + ".partial")
        shutil.rmtree(tmp_dir, ignore_errors=True)
        tmp_dir.mkdir(parents=True)
        ctx = PassContext(recipe.data, tmp_dir, recipe.threads, recipe.eval_limit, device=device)
        start = time.perf_counter()
        try:
            if p is not None:
                model = p.apply(model, ctx)
            pass_metrics = dict(ctx.metrics)
            metrics = stage_metrics(model, ctx)
            for key in ("latency_ms", "accuracy_by_runtime"):
                metrics[key] = {**metrics.get(key, {}), **pass_metrics.pop(key, {})}
            metrics.update(pass_metrics)
            save_model(model, tmp_dir / CHECKPOINT)
            shutil.rmtree(final_dir, ignore_errors=True)
            tmp_dir.rename(final_dir)
        except BaseException:
            shutil.rmtree(tmp_dir, ignore_errors=True)
            raise
        record = {
            "stage": index,
            "name": name,
            "pass": name,
            "params": recipe_json["passes"][index - 1][name] if p is not None else {},
            "status": "done",
            "seconds": round(time.perf_counter() - start, 2),
            "checkpoint": str((final_dir / CHECKPOINT).relative_to(out)),
            "metrics": metrics,
        }
        append_ledger(ledger_path, record)
        ledger.append(record)
        if on_stage:
            on_stage(record)
    return ledger


def _initial_model(recipe: Recipe) -> EdgeModel:
    if recipe.model.startswith("zoo:"):
        from edgeopt.data import load_dataset
        from edgeopt.train import seed_everything

        seed_everything(recipe.seed)

        data = load_dataset(recipe.data, "train")
        shape = tuple(recipe.input_shape) if recipe.input_shape else data.sample_shape
        task = "regression" if data.task == "regression" else None  # else the zoo entry's own
        return load_model(recipe.model, input_shape=shape, num_classes=data.num_outputs, task=task)
    return load_model(recipe.model)


def run_info(recipe: Recipe) -> dict[str, Any]:
    """Header facts for the report: what ran, where, with which versions."""
    from edgeopt.report.environment import collect_run_info

    settings = {k: v for k, v in recipe.to_json().items() if k not in ("model", "data", "passes")}
    return collect_run_info(
        model=recipe.model,
        dataset=recipe.data,
        recipe=[{"pass": p.name, "params": dataclasses.asdict(p)} for p in recipe.passes],
        settings=settings,
    )
