"""Foundation commands: train, import, eval, run, export, bench, profile, recipe, demo, zoo.

Each is a thin call into the Python API.
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from edgeopt.cli.app import (
    ClassesOpt,
    DataOpt,
    DeviceOpt,
    JsonOpt,
    LabelOpt,
    LayoutOpt,
    ModelArg,
    RangeOpt,
    RuntimeOpt,
    TaskOpt,
    TrainThreadsOpt,
    app,
    emit,
    model_for_data,
    parse_range,
    parse_shape,
    quiet,
    warn,
)
from edgeopt.errors import EdgeoptError

if TYPE_CHECKING:
    from edgeopt.runtimes.memory_plan import MemoryPlan


@app.command()
def train(
    model: ModelArg,
    out: Annotated[Path, typer.Option("--out", help="where to write the trained .edgeopt model")],
    data: DataOpt = "digits",
    epochs: Annotated[int, typer.Option(min=1)] = 10,
    optimizer: Annotated[str, typer.Option(help="sgd or adam")] = "sgd",
    lr: Annotated[
        float | None, typer.Option(help="peak learning rate (default 0.05 sgd, 2e-3 adam; zoo:mlp x6, zoo:dscnn x3)")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1)] = 128,
    seed: int = 0,
    device: DeviceOpt = "cpu",
    input_range: RangeOpt = None,
    task: TaskOpt = None,
    label: LabelOpt = None,
    target_latency_ms: Annotated[
        float | None, typer.Option("--target-latency-ms", help="hardware-aware: batch-1 latency budget in --runtime")
    ] = None,
    target_arena_kb: Annotated[
        float | None, typer.Option("--target-arena-kb", help="hardware-aware: activation arena budget (KiB)")
    ] = None,
    runtime: Annotated[str, typer.Option(help="runtime the latency budget is for")] = "onnxruntime",
    threads: Annotated[
        int, typer.Option(min=1, help="runtime threads for the latency budget (torch's: --train-threads)")
    ] = 1,
    train_threads: TrainThreadsOpt = None,
    profile: Annotated[
        str | None, typer.Option(help="device profile predicting --runtime's latency (default: this machine's)")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Train MODEL on the train split of DATA and save it.

    With --target-latency-ms / --target-arena-kb, training is hardware-aware: channel widths are
    chosen during training with the budget in the loss, the model is cut to them and fine-tuned,
    then timed in --runtime (see docs/hardware.md).
    """
    quiet(as_json)
    import time

    from edgeopt.data import load_dataset
    from edgeopt.model import save_model
    from edgeopt.train import FitConfig, evaluate, fit

    m, train_data = model_for_data(model, data, parse_range(input_range), seed=seed, task=task, label=label)
    cfg = FitConfig(epochs=epochs, optimizer=optimizer, lr=lr, batch_size=batch_size, seed=seed, device=device,
                    threads=train_threads)  # fmt: skip
    start = time.perf_counter()
    extra: dict = {}
    if target_latency_ms is None and target_arena_kb is None:
        m, history = fit(m, train_data, cfg)
        m = m.with_lineage({"pass": "train", "epochs": epochs, "data": data})
        extra["train_loss"] = history.epochs[-1]["loss"]
    else:
        from edgeopt.hwtrain import train_for_device

        say = None if as_json else (lambda text: print(text, file=sys.stderr))
        m, metrics = train_for_device(m, train_data, runtime, target_latency_ms, target_arena_kb, epochs, threads,
                                      profile, cfg, log=say)  # fmt: skip
        report = metrics["hw_train"]
        extra.update(widths=report["widths"], widths_before=report["widths_before"], arena_kb=report["arena_kb"])
        if "latency_check" in metrics:
            check = metrics["latency_check"]
            extra.update(
                latency_ms=check["measured_ms"],
                predicted_latency_ms=check["predicted_ms"],
                target_latency_ms=target_latency_ms,
                latency_source=metrics["latency_source"]["latency"],
                input_latency_ms=metrics["latency_source"].get("anchor", {}).get("measured_ms"),
                latency_confirmations=report["confirmations"],
                latency_table_timing=report["table_timing"],
            )
    test = evaluate(m, load_dataset(data, "test", label=label).for_task(m.meta.task), diagnose=True)
    path = save_model(m, out)
    if m.meta.task == "classification":
        scores: dict[str, Any] = {"test_accuracy": test.accuracy}
    else:
        scores = {"task": m.meta.task, **{f"test_{k}": v for k, v in test.metrics.items()}}
    result = {
        "model": str(path),
        **scores,
        "samples": test.samples,
        **extra,
        "class_names": m.meta.class_names,
        **{k: v for k, v in test.to_json().items() if k in ("note", "warning")},
        "seconds": round(time.perf_counter() - start, 2),
    }
    warn(result)
    emit(result, as_json, "train")


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help=".tflite or .onnx file")],
    out: Annotated[Path, typer.Option("--out", help="where to write the .edgeopt model")],
    input_range: RangeOpt = None,
    input_shape: Annotated[
        str | None,
        typer.Option("--input-shape", help="the input's shape without the batch, e.g. 640 or 1,40: fills free dims"),
    ] = None,
    dequantize: Annotated[
        bool, typer.Option("--dequantize", help="quantized .tflite: import as a plain float model")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Import a .tflite or .onnx model into a trainable PyTorch model.

    The input range is read from the file where it says (normalisation ops at the graph's start);
    otherwise 0..1 is assumed and a note says so: give --input-range for models trained on other values.
    A quantized .tflite (int8, or hybrid int8-weight ops) keeps its quantization as LiteRT runs it.
    """
    quiet(as_json)
    from edgeopt.model import InputSet, load_model, save_model

    if file.suffix.lower() not in (".tflite", ".onnx"):
        raise EdgeoptError(f"cannot import '{file.suffix or file.name}' files", "give a .tflite or .onnx file")
    given = parse_range(input_range)
    if dequantize and file.is_file():
        from edgeopt.interop import import_model

        m = import_model(file, dequantize=True, input_shape=parse_shape(input_shape))
        if given is not None:
            m.meta.input.value_range = given
    else:
        m = load_model(file, input_range=given, input_shape=parse_shape(input_shape))
    path = save_model(m, out)
    spec = m.meta.input
    source = "given" if given else m.meta.lineage[0].get("input_range", "assumed")
    shown: dict[str, Any] = {"input_shape": list(spec.shape), "layout": spec.layout,
                             "input_range": list(spec.value_range)} if not isinstance(spec, InputSet) else {
        "inputs": spec.to_json()}  # fmt: skip
    result: dict[str, Any] = {
        "model": str(path),
        **shown,
        "input_range_source": source,
        "num_classes": m.meta.num_classes,
        "class_names": m.meta.class_names,
    }
    quant = m.meta.lineage[0].get("quantization") if m.meta.lineage else None
    if quant:
        result["quantization"] = quant["note"]
    if source == "assumed" and isinstance(spec, InputSet):
        result["note"] = f"{file.name} does not state its inputs' ranges: 0..1 assumed for each (parity inputs)"
    elif source == "assumed":
        result["note"] = (
            f"{file.name} does not state its input range: 0..1 assumed; if the model takes raw pixels"
            " (the MLPerf Tiny models do), import again with --input-range 0,255"
        )
    warn(result)
    emit(result, as_json, "import")


@app.command("eval")
def eval_(
    model: ModelArg,
    data: DataOpt = "digits",
    split: Annotated[str, typer.Option(help="train or test")] = "test",
    limit: Annotated[int | None, typer.Option(min=1, help="evaluate N samples spread over the split")] = None,
    runtime: RuntimeOpt = None,
    threads: Annotated[int, typer.Option(min=1, help="threads the runtime runs the model with")] = 1,
    input_range: RangeOpt = None,
    layout: LayoutOpt = None,
    classes: ClassesOpt = None,
    task: TaskOpt = None,
    label: LabelOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The task's metrics of MODEL on DATA (accuracy; MSE/MAE/R²; ROC AUC), measured inside RUNTIME.

    A bare .pte/.tflite/.onnx runs alone in its own runtime: its input interface is what edgeopt
    embedded in it, or what the file states (input_source says which); the flags override it.
    """
    quiet(as_json)
    from edgeopt.data import load_dataset
    from edgeopt.runtimes.interface import parse_classes
    from edgeopt.runtimes.resolve import open_model

    opened = open_model(model, runtime, threads, parse_range(input_range), layout, parse_classes(classes))
    from edgeopt.train import evaluate
    from edgeopt.train.tasks import article

    meta = opened.meta
    if task is not None and task != meta.task:
        if opened.meta_source not in ("inferred", "graph"):  # a foreign artifact (no edgeopt record) takes --task
            raise EdgeoptError(f"{model} is {article(meta.task)} {meta.task} model; --task {task} does not fit it",
                               f"drop --task, or give --task {meta.task}")  # fmt: skip
        from dataclasses import replace

        meta = replace(meta, task=task)
    dataset = load_dataset(data, split, label=label).for_task(meta.task)
    result = evaluate(meta, dataset, predict=opened.runner.run, limit=limit, diagnose=True)
    out = {**result.to_json(), "runtime": opened.runtime, "input_source": opened.meta_source}
    warn(out)
    emit(out, as_json, "eval")


@app.command()
def run(
    model: ModelArg,
    inputs: Annotated[Path, typer.Option("--inputs", help=".npy batch in the model's own input interface")],
    out: Annotated[Path, typer.Option("--out", help="where to write the raw outputs (.npy)")],
    runtime: RuntimeOpt = None,
    threads: Annotated[int, typer.Option(min=1, help="threads the runtime runs the model with")] = 1,
    as_json: JsonOpt = False,
) -> None:
    """Run MODEL on raw inputs and write its raw outputs (a bare artifact alone, in its own runtime)."""
    quiet(as_json)
    from edgeopt.runtimes.resolve import open_model, run_raw

    opened = open_model(model, runtime, threads=threads)
    y = run_raw(opened, inputs, out)
    shape: Any = {h.name: list(a.shape) for h, a in zip(opened.meta.outputs, y, strict=True)} if isinstance(
        y, tuple) and opened.meta.outputs else list(y.shape)  # fmt: skip
    emit({"out": str(out), "output_shape": shape, "runtime": opened.runtime}, as_json, "run")


@app.command()
def export(
    model: ModelArg,
    format: Annotated[str, typer.Option("--format", help="onnx, pte or tflite")],
    out: Annotated[Path, typer.Option("--out", help="artifact path")],
    input_range: RangeOpt = None,
    trainable: Annotated[
        str | None, typer.Option("--trainable", help="pte: write the training program for this scope (ondevice)")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Export MODEL to a runtime artifact and check parity with PyTorch inside that runtime.

    With --trainable SCOPE (--format pte) it writes the ExecuTorch training program an app ships for
    on-device learning instead (see docs/ondevice.md).
    """
    quiet(as_json)
    from edgeopt.interop.export import export_model
    from edgeopt.model import load_model

    if trainable is not None:
        if format != "pte":
            raise EdgeoptError("--trainable writes an ExecuTorch training program", "use it with --format pte")
        from edgeopt.ondevice.adapt import export_training_program

        m = load_model(model, input_range=parse_range(input_range))
        emit(export_training_program(m, trainable, out), as_json, "export")
        return
    result = export_model(load_model(model, input_range=parse_range(input_range)), format, out)
    emit(
        {
            "artifact": str(result.path),
            "format": result.format,
            "runtime": result.runtime,
            "size_bytes": result.size_bytes,
            "parity": asdict(result.parity),
        },
        as_json,
        "export",
    )


@app.command()
def bench(
    model: Annotated[str, typer.Argument(help="model or artifact (.onnx, .pte, .tflite, .edgeopt, .pt2, zoo:NAME)")],
    runtime: RuntimeOpt = None,
    threads: Annotated[int, typer.Option(min=1, help="threads the runtime runs the model with")] = 1,
    runs: Annotated[int, typer.Option(min=5)] = 200,
    warmup: Annotated[int, typer.Option(min=0)] = 20,
    seconds: Annotated[float, typer.Option(min=0, help="keep timing until this long has passed")] = 1.0,
    input_range: RangeOpt = None,
    layout: LayoutOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Batch-1 latency (p50/p90) of MODEL inside a runtime, with its planned memory.

    latency_ms_quiet_p50 is the median of the quietest tenth of the timed calls (consecutive windows):
    on a shared machine other work only adds time, in phases, so it is the model's cost on a free core.

    arena_bytes / weights_bytes come from the artifact's memory plan (memory_source names whose:
    ExecuTorch's own plan, or edgeopt's liveness estimate), the same figures whichever way the
    artifact is reached (the file alone, or a model exported for --runtime); process_rss_rise_bytes
    is how far this process's resident memory rose while loading and running, runtime libraries
    included: not the model's memory. A bare artifact is fed an image through its input interface.
    """
    quiet(as_json)
    from edgeopt.runtimes import benchmark
    from edgeopt.runtimes.resolve import artifact_example, resolve_source

    name, target = resolve_source(model, runtime)
    x = artifact_example(target, name, threads, parse_range(input_range), layout) if isinstance(target, Path) else None
    s = benchmark(name, target, threads=threads, x=x, warmup=warmup, runs=runs, min_seconds=seconds)
    out = {
        "latency_ms_p50": s.p50_ms,
        "latency_ms_quiet_p50": s.quiet_p50_ms,
        "latency_ms_p90": s.p90_ms,
        "latency_ms_mean": s.mean_ms,
        "runs": s.runs,
        "threads": s.threads,
        "runtime": name,
    }
    if s.memory_plan is not None:
        out.update(_memory_fields(s.memory_plan, as_json))
    out["process_rss_rise_bytes"] = s.process_rss_rise_bytes
    emit(out, as_json, "bench")


def _memory_fields(plan: MemoryPlan, as_json: bool) -> dict[str, Any]:
    """A memory plan as output fields: the whole detail in JSON, the XNNPACK workspace estimate in tables."""
    out: dict[str, Any] = {
        "arena_bytes": plan.arena_bytes,
        "weights_bytes": plan.weights_bytes,
        "memory_source": plan.source,
    }
    if as_json:
        out["memory_detail"] = plan.detail
    elif plan.detail.get("xnnpack_workspace_bytes_estimate") is not None:
        out["xnnpack_workspace_bytes_estimate"] = plan.detail["xnnpack_workspace_bytes_estimate"]
    return out


@app.command()
def profile(
    model: ModelArg,
    input_range: RangeOpt = None,
    layout: LayoutOpt = None,
    classes: ClassesOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Parameters, MACs, size and peak activation memory of MODEL, or what a .pte/.tflite/.onnx says alone.

    peak_activation_bytes is edgeopt's liveness estimate on the torch.export graph
    (peak_activation_source). A .pte, .tflite or .onnx artifact is profiled on its own: its input
    interface (input_source: embedded by edgeopt, or read from the file; the flags override it),
    file_bytes, and arena_bytes / weights_bytes / memory_source from its own memory plan
    (ExecuTorch's plan, or edgeopt's liveness over the artifact's graph); params/MACs where edgeopt
    imports the graph (float .onnx/.tflite), else counts_note says why not.
    """
    quiet(as_json)
    from edgeopt.profile.artifact import ARTIFACT_SUFFIXES, profile_artifact
    from edgeopt.runtimes.interface import InterfaceFlags, parse_classes

    if Path(model).suffix.lower() in ARTIFACT_SUFFIXES:
        prof = profile_artifact(model, InterfaceFlags(parse_range(input_range), layout, parse_classes(classes)))
        emit({**prof.fields(), **_memory_fields(prof.plan, as_json)}, as_json, "profile")
        return
    if input_range is not None or layout is not None or classes is not None:
        raise EdgeoptError("--input-range, --layout and --classes describe a bare artifact", "drop them for a model")
    from edgeopt.model import load_model
    from edgeopt.profile import profile_model

    emit(profile_model(load_model(model)).to_json(), as_json, "profile")


@app.command()
def recipe(
    file: Annotated[Path, typer.Argument(help="recipe YAML")],
    out: Annotated[Path, typer.Option("--out", help="run directory")],
    resume: Annotated[bool, typer.Option(help="continue an interrupted run in --out")] = False,
    device: DeviceOpt = "cpu",
    as_json: JsonOpt = False,
) -> None:
    """Run a recipe (a list of passes) in a resumable run directory and write the report.

    --device is where its passes train (train, distill, prune's fine-tuning, compress, hw_train); it is not
    part of the recipe, so a run may resume on another device."""
    quiet(as_json)
    from edgeopt.pipeline import load_recipe
    from edgeopt.pipeline.demo import run_and_report

    result = run_and_report(load_recipe(file), out, resume=resume, verbose=not as_json, device=device)
    emit(result, as_json, "recipe")


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="run directory")] = Path("runs/demo"),
    as_json: JsonOpt = False,
) -> None:
    """The main job on built-in digits: train ResNet-8 → distill into a half-width student → prune half
    its MACs → quantize to int8 → export to ONNX Runtime, ExecuTorch and LiteRT, measured in each.
    Then `edgeopt optimize` searches such recipes for the trained model under a device budget in LiteRT
    (3 minutes).

    Writes report.html in --out (and OUT/optimize: best.yaml, report.html). An earlier demo in --out is
    continued, not redone (it says so).
    """
    quiet(as_json)
    from edgeopt.pipeline.demo import run_demo

    emit(run_demo(out, verbose=not as_json), as_json, "demo")


@app.command()
def zoo(as_json: JsonOpt = False) -> None:
    """List the models in the zoo."""
    from edgeopt.models import list_models

    emit({e.name: e.description for e in list_models()}, as_json, "zoo")
