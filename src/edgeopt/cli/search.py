"""``edgeopt search``: architecture search under a device budget (edgeopt.nas)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgeopt.cli.app import DataOpt, DeviceOpt, JsonOpt, app, emit, quiet, warn_at_chance


@app.command()
def search(
    out: Annotated[Path, typer.Option("--out", help="run folder: trials.json, search.json, report.html, model")],
    data: DataOpt = "digits",
    space: Annotated[str, typer.Option("--space", help="resnet, mobilenet, dscnn or a space FILE.yaml")] = "resnet",
    runtime: Annotated[
        str, typer.Option("--runtime", help="runtime(s) to search for: onnxruntime, executorch, litert (comma list)")
    ] = "onnxruntime",
    max_latency_ms: Annotated[
        float | None, typer.Option("--max-latency-ms", help="latency limit in each runtime")
    ] = None,
    max_arena_kb: Annotated[float | None, typer.Option("--max-arena-kb", help="int8 tensor arena limit (KiB)")] = None,
    max_flash_kb: Annotated[
        float | None, typer.Option("--max-flash-kb", help="int8 weight (flash) limit (KiB)")
    ] = None,
    max_params: Annotated[int | None, typer.Option("--max-params", help="parameter limit")] = None,
    max_macs: Annotated[int | None, typer.Option("--max-macs", help="MACs limit per inference")] = None,
    mcu: Annotated[
        str | None, typer.Option("--mcu", help="microcontroller preset the model must fit (hw predict)")
    ] = None,
    trials: Annotated[int | None, typer.Option("--trials", help="this worker's trials (default 20)")] = None,
    minutes: Annotated[float | None, typer.Option("--minutes", help="search for this long instead")] = None,
    storage: Annotated[
        str | None, typer.Option("--storage", help="shared study: sqlite:///PATH or postgresql://... (resumable)")
    ] = None,
    study_name: Annotated[str, typer.Option("--study-name", help="study within the storage")] = "edgeopt-search",
    profile: Annotated[
        str | None, typer.Option("--profile", help="device profile(s) per runtime (default: this machine's)")
    ] = None,
    sampler: Annotated[str, typer.Option("--sampler", help="tpe, nsga2 or random")] = "tpe",
    mode: Annotated[
        str, typer.Option("--mode", help="proxy (train each candidate) or supernet (weight sharing, nas_resnet)")
    ] = "proxy",
    supernet_epochs: Annotated[int, typer.Option("--supernet-epochs", help="supernet training (mode supernet)")] = 5,
    epochs: Annotated[int, typer.Option("--epochs", help="proxy training epochs per candidate")] = 2,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="proxy training batch size")] = 32,
    final_epochs: Annotated[
        int | None, typer.Option("--final-epochs", help="training of the front's models (default: --epochs)")
    ] = None,
    front: Annotated[int, typer.Option("--front", min=1, help="Pareto points to retrain and measure")] = 4,
    worker: Annotated[bool, typer.Option("--worker", help="only run trials (no front measurement, no model)")] = False,
    heartbeat: Annotated[
        int, typer.Option("--heartbeat", min=1, help="seconds between heartbeats; a silent trial is retried")
    ] = 60,
    threads: Annotated[int, typer.Option("--threads", min=1, help="runtime threads when measuring")] = 1,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    device: DeviceOpt = "cpu",
    as_json: JsonOpt = False,
) -> None:
    """Search a space of architectures for the most accurate one within a device budget.

    Candidates are priced before training (latency from the runtime's device profile, int8 arena and
    flash, MACs, params), trained briefly if within budget, and ranked by Optuna's multi-objective
    sampler. The Pareto front is retrained, exported and measured in the runtimes; the chosen model
    is saved as OUT/model.edgeopt. Without --storage the study lives in OUT/study.db, so an
    interrupted search resumes when rerun.
    """
    quiet(as_json)
    from edgeopt.nas import Budget, SearchSettings, load_space
    from edgeopt.nas import search as run_search

    out.mkdir(parents=True, exist_ok=True)
    settings = SearchSettings(
        runtimes=[r.strip().lower() for r in runtime.split(",") if r.strip()],
        trials=trials if trials is not None or minutes is not None else 20,
        minutes=minutes,
        storage=storage or f"sqlite:///{(out / 'study.db').resolve()}",
        study_name=study_name,
        sampler=sampler,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        threads=threads,
        heartbeat_s=heartbeat,
        shared=storage is not None,
        mode=mode,
        supernet_epochs=supernet_epochs,
        device=device,
    )
    budget = Budget(max_latency_ms, max_arena_kb, max_flash_kb, max_macs, max_params, mcu)
    result = run_search(
        load_space(space), data, budget, settings, out, profile=profile, final=not worker,
        final_epochs=final_epochs, front_limit=front,
    )  # fmt: skip
    chosen = result.get("chosen") or {}
    if result.get("model"):  # the chosen model at chance: too few epochs, or the data is fed wrongly
        from edgeopt.model import load_model

        accuracies = {f"{r}_accuracy": m.get("accuracy") for r, m in chosen.get("measured", {}).items()}
        warn_at_chance(result, load_model(result["model"]).meta, **accuracies)
    if as_json:
        emit(result, True)
        return
    emit(
        {
            "model": result["model"],
            "trials": result["trials"],
            "trials_this_worker": result["trials_this_worker"],
            "feasible_trials": result["feasible_trials"],
            "latency_source": result["latency_source"],
            "pareto_points": len(result["pareto"]),
            "chosen_config": chosen.get("config"),
            "chosen_measured": {
                r: f"acc {m['accuracy']:.4f}, {m['latency_ms']:.4f} ms" for r, m in chosen.get("measured", {}).items()
            },  # fmt: skip
            "report": result.get("report"),
            **({"warning": result["warning"]} if result.get("warning") else {}),
        },
        False,
        "search",
    )
