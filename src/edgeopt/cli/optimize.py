"""``edgeopt optimize``: the best artifact for a runtime within a device budget (edgeopt.optimize)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgeopt.cli.app import DataOpt, DeviceOpt, JsonOpt, ModelArg, app, emit, quiet, warn_at_chance


@app.command()
def optimize(
    model: ModelArg,
    out: Annotated[Path, typer.Option("--out", help="run folder: best.yaml, the artifact, pareto.json, report.html")],
    target: Annotated[
        str, typer.Option("--target", help="limits: latency_ms=X[,arena_kb=A][,flash_kb=F][,energy_mj=E]")
    ],
    max_drop: Annotated[float, typer.Option("--max-drop", help="accuracy points allowed below the input model's")],
    runtime: Annotated[
        str, typer.Option("--runtime", help="onnxruntime, executorch or litert: where it is deployed and measured")
    ],
    data: DataOpt = "digits",
    minutes: Annotated[float, typer.Option("--minutes", help="time budget of the whole search (within 10%)")] = 10.0,
    storage: Annotated[
        str | None, typer.Option("--storage", help="Optuna study: sqlite:///PATH or postgresql://... (default RUN)")
    ] = None,
    threads: Annotated[int, typer.Option("--threads", min=1, help="runtime threads when measuring")] = 1,
    seed: Annotated[int, typer.Option("--seed", help="seed for the sampler and the data split")] = 0,
    device: DeviceOpt = "cpu",
    as_json: JsonOpt = False,
) -> None:
    """Search recipes (pruning with or without distillation, int8 PTQ or QAT) for the most accurate
    artifact that meets every limit as measured in the runtime.

    Candidates are screened on a subset of the training data and costed in the runtime; finalists run
    in full and are measured (test accuracy, latency p50, flash, arena). Writes RUN/best.yaml (a recipe
    `edgeopt recipe` reproduces), the artifact, pareto.json and report.html. Rerunning continues the
    study. Exits non-zero, naming the closest candidates and the limits they miss, when none meets them.
    """
    quiet(as_json)
    from edgeopt.optimize import OptimizeFailed
    from edgeopt.optimize import optimize as run_optimize

    try:
        result = run_optimize(
            model,
            data=data,
            runtime=runtime.strip().lower(),
            target=target,
            max_drop=max_drop,
            minutes=minutes,
            storage=storage,
            out=out,
            threads=threads,
            seed=seed,
            device=device,
        )
    except OptimizeFailed as e:
        if as_json:
            emit({"error": e.problem, "fix": e.fix, "closest": e.closest}, True)
        raise
    from edgeopt.model import load_model

    warn_at_chance(result, load_model(model).meta, baseline_accuracy=result["baseline"]["accuracy"],
                   accuracy=result["measured"]["accuracy"])  # fmt: skip
    if as_json:
        emit(result, True)
        return
    emit(
        {
            k: result[k]
            for k in (
                "artifact",
                "recipe",
                "measured",
                "limits",
                "chosen_recipe",
                "screened",
                "confirmed",
                "seconds",
                "report",
                "warning",
            )
            if k in result
        },
        False,
        "optimize",
    )
