"""Compression commands: prune, distill, compress. Thin calls into ``edgeopt.compress``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from edgeopt.cli.app import (
    DataOpt,
    DeviceOpt,
    JsonOpt,
    ModelArg,
    OldThreadsOpt,
    RangeOpt,
    TrainThreadsOpt,
    app,
    emit,
    model_for_data,
    parse_range,
    quiet,
    renamed,
    torch_threads,
    warn_at_chance,
)
from edgeopt.errors import EdgeoptError

EpochsOpt = Annotated[int, typer.Option("--epochs", min=0, help="fine-tuning epochs after compressing")]
LrOpt = Annotated[
    float | None,
    typer.Option("--lr", help="peak learning rate (default 0.05 sgd, 2e-3 adam; zoo:mlp x6, zoo:dscnn x3)"),
]
OptOpt = Annotated[str, typer.Option("--optimizer", help="sgd or adam")]
TeacherOpt = Annotated[str | None, typer.Option("--teacher", help="teacher model for KD in fine-tuning")]
OldTeacherOpt = Annotated[str | None, typer.Option("--distill-from", hidden=True, help="deprecated: --teacher")]
SeedOpt = Annotated[int, typer.Option("--seed", help="seed for data order and initialisation")]
BatchOpt = Annotated[int, typer.Option("--batch-size", min=1, help="fine-tuning batch size")]


def _parse_nm(text: str) -> tuple[int, int]:
    try:
        n, m = (int(t) for t in text.split(":"))
    except ValueError as e:
        raise EdgeoptError(f"--nm '{text}' is not N:M", "for example --nm 2:4") from e
    return n, m


def _parse_widths(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(t) for t in text.split(",")]
    except ValueError as e:
        raise EdgeoptError(f"--widths '{text}' is not a comma list of channel counts", "e.g. --widths 16,8,16") from e


def _teacher(spec: str | None):
    from edgeopt.model import load_model

    return load_model(spec) if spec else None


def _test_accuracy(model, data: str) -> float:
    from edgeopt.data import load_dataset
    from edgeopt.train import evaluate

    return evaluate(model, load_dataset(data, "test")).accuracy


@app.command()
def prune(
    model: ModelArg,
    out: Annotated[Path, typer.Option("--out", help="where to write the pruned .edgeopt model")],
    data: DataOpt = "digits",
    method: Annotated[str, typer.Option(help="channel, magnitude or nm")] = "channel",
    ratio: Annotated[
        float | None, typer.Option(help="fraction removed: of the MACs (channel) or of the weights (magnitude)")
    ] = None,
    target_macs: Annotated[int | None, typer.Option("--target-macs", help="MAC budget (channel)")] = None,
    target_latency_ms: Annotated[
        float | None, typer.Option("--target-latency-ms", help="batch-1 p50 latency target in --runtime (channel)")
    ] = None,
    runtime: Annotated[
        str, typer.Option(help="runtime timed for --target-latency-ms or --allocation latency (a,b: several)")
    ] = "onnxruntime",
    threads: Annotated[
        int, typer.Option(min=1, help="runtime threads for latency targets (torch's while training: --train-threads)")
    ] = 1,
    criterion: Annotated[str, typer.Option(help="channel importance: l1, l2, bn or taylor")] = "l2",
    allocation: Annotated[
        str, typer.Option(help="uniform, global, or latency (time and accuracy of each cut measured in --runtime)")
    ] = "uniform",
    round_to: Annotated[int, typer.Option("--round-to", min=1, help="keep channel counts multiples of this")] = 1,
    size_weight: Annotated[
        float,
        typer.Option(
            "--size-weight", min=0.0, help="--allocation latency: weights saved count beside time saved (flash limits)"
        ),
    ] = 0.0,
    min_keep: Annotated[int, typer.Option("--min-keep", min=1, help="fewest channels a group keeps")] = 1,
    reconstruct: Annotated[
        bool, typer.Option(help="re-fit kept weights by least squares after channel pruning")
    ] = True,
    scope: Annotated[str, typer.Option(help="magnitude sparsity per layer or global")] = "layer",
    nm: Annotated[str | None, typer.Option("--nm", help="N:M pattern for --method nm (default 2:4)")] = None,
    teacher: TeacherOpt = None,
    distill_from: OldTeacherOpt = None,
    epochs: Annotated[
        int, typer.Option("--epochs", min=0, help="recovery epochs after pruning (0: none; expect a large drop)")
    ] = 3,  # compress.workflows.RECOVERY_EPOCHS (not imported: the CLI loads torch lazily)
    widths: Annotated[
        str | None,
        typer.Option("--widths", help="channels each group keeps, comma-separated; 0 removes a residual branch whole"),
    ] = None,
    steps: Annotated[
        int, typer.Option(min=1, help="channel pruning in N steps, one fine-tuning epoch after each but the last")
    ] = 1,
    lr: LrOpt = None,
    optimizer: OptOpt = "sgd",
    batch_size: BatchOpt = 128,
    seed: SeedOpt = 0,
    train_threads: TrainThreadsOpt = None,
    device: DeviceOpt = "cpu",
    input_range: RangeOpt = None,
    profile: Annotated[
        str | None,
        typer.Option(help="device profile(s) predicting --runtime's latency (default: this machine's, if any)"),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Prune MODEL (physically, for --method channel) and fine-tune it, optionally with distillation.

    Latency searches (--target-latency-ms, --allocation latency) ask a calibrated device profile
    when there is one (`edgeopt hw calibrate`), time only the final model, and report both.
    """
    quiet(as_json)
    from edgeopt.compress.workflows import TuneSettings, accuracy_drop, prune_model
    from edgeopt.data import load_dataset
    from edgeopt.model import save_model

    if nm is not None and method != "nm":
        raise EdgeoptError(f"--nm applies only to --method nm (this is --method {method})", "add --method nm")
    nm_pair = _parse_nm(nm or "2:4")
    settings = TuneSettings(epochs, lr, optimizer, batch_size=batch_size, seed=seed, device=device,
                            threads=train_threads)  # fmt: skip
    teacher = renamed("--teacher", teacher, "--distill-from", distill_from)
    m, train = model_for_data(model, data, parse_range(input_range))
    res = prune_model(
        m, train, method, ratio, target_macs, target_latency_ms, runtime, criterion, allocation, round_to, scope,
        nm_pair, min_keep, reconstruct, settings, _teacher(teacher), threads,
        steps=steps, widths=_parse_widths(widths), profile=profile, size_weight=size_weight,
        log=None if as_json else _say,
        test=load_dataset(data, "test"), timed=method == "channel",
    )  # fmt: skip
    path = save_model(res.model, out)
    summary = {"model": str(path), "test_accuracy_before": res.metrics["accuracy_before"],
               "test_accuracy": res.metrics["accuracy_after"], **res.metrics}  # fmt: skip
    for key in ("fine_tune", "accuracy_before", "accuracy_after"):
        summary.pop(key, None)
    channels = summary.pop("channels", None)
    if channels is not None:
        summary["widths"] = [g["after"] for g in channels["groups"]]
    if "latency_search" in summary:
        ls = summary.pop("latency_search")
        summary.update(latency_ms=ls["final_ms"], target_latency_ms=ls["target_ms"], start_latency_ms=ls["start_ms"])
    drop = accuracy_drop(summary["test_accuracy_before"], summary["test_accuracy"])
    if drop is not None:
        summary["warning"] = f"{drop}; recover with more --epochs (now {epochs}) or distillation: {_KD_FLAG} MODEL"
        if not as_json:
            _say(f"warning: {summary['warning']}")
    warn_at_chance(summary, res.model.meta, test_accuracy_before=summary["test_accuracy_before"],
                   test_accuracy=summary["test_accuracy"])  # fmt: skip
    emit(summary if as_json else _before_after(summary, channels), as_json, "prune")


def _before_after(summary: dict, channels: dict | None) -> dict:
    """The prune summary for people: accuracy, MACs and latency as before -> after, widths as cut."""
    rows: dict = {"model": summary["model"]}
    a, b = summary["test_accuracy_before"], summary["test_accuracy"]
    rows["test accuracy"] = f"{a:.2%} -> {b:.2%} ({(b - a) * 100:+.2f} pt)"
    m0, m1 = summary["macs_before"], summary["macs_after"]
    rows["MACs"] = f"{m0:,} -> {m1:,} ({m1 / max(1, m0):.2f}x)"
    for rt, t in summary.get("latency", {}).items():
        rows[f"latency ({rt}, p50)"] = f"{t['before_ms']:.4f} -> {t['after_ms']:.4f} ms ({t['ratio']:.2f}x)"
    if channels is not None:
        rows["widths"] = ", ".join(str(g["before"]) if g["after"] == g["before"] else f"{g['before']}->{g['after']}"
                                   for g in channels["groups"])  # fmt: skip
    skip = {"model", "test_accuracy_before", "test_accuracy", "macs_before", "macs_after", "latency", "widths"}
    rows.update({k: v for k, v in summary.items() if k not in skip})
    return rows


_KD_FLAG = "--teacher"  # the option naming a teacher for distillation during recovery


def _say(text: str) -> None:
    print(text, file=sys.stderr)


@app.command()
def distill(
    teacher: Annotated[str, typer.Option("--teacher", help="teacher model (.edgeopt, .tflite, .onnx, zoo:NAME)")],
    student: Annotated[str, typer.Option("--student", help="student model (zoo:NAME or a file)")],
    out: Annotated[Path, typer.Option("--out", help="where to write the trained student")],
    data: DataOpt = "digits",
    width: Annotated[int | None, typer.Option(help="zoo student width (resnet8: 16 is full width)")] = None,
    epochs: Annotated[int, typer.Option(min=1)] = 10,
    temperature: Annotated[float, typer.Option(min=0.1)] = 4.0,
    alpha: Annotated[float, typer.Option(min=0.0, max=1.0, help="weight of the soft-target term")] = 0.9,
    hint_weight: Annotated[float, typer.Option("--hint-weight", min=0.0, help="attention-transfer weight")] = 0.0,
    lr: LrOpt = None,
    optimizer: OptOpt = "sgd",
    batch_size: BatchOpt = 128,
    seed: SeedOpt = 0,
    train_threads: TrainThreadsOpt = None,
    threads: OldThreadsOpt = None,
    device: DeviceOpt = "cpu",
    input_range: RangeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Train STUDENT on DATA against TEACHER's soft targets (and optional attention hints)."""
    quiet(as_json)
    from edgeopt.compress.distill import DistillConfig
    from edgeopt.compress.distill import distill as run_distill
    from edgeopt.compress.workflows import TuneSettings
    from edgeopt.model import load_model, refuse_multi_output, save_model
    from edgeopt.models import create_model

    t, train = model_for_data(teacher, data, parse_range(input_range))
    refuse_multi_output(t, "distill")  # before a zoo student is built for the teacher's task
    if student.startswith("zoo:"):
        kwargs = {"width": width} if width else {}
        s = create_model(student[4:], input_shape=train.sample_shape, num_classes=t.meta.num_classes,
                         task=t.meta.task, **kwargs)  # fmt: skip
    else:
        s = load_model(student)
    threads = torch_threads(train_threads, threads)
    settings = TuneSettings(epochs, lr, optimizer, batch_size=batch_size, seed=seed, device=device, threads=threads)
    cfg = DistillConfig(temperature, alpha, hint_weight=hint_weight)
    s, hist = run_distill(s, t, train, settings.fit_config(), cfg)
    path = save_model(s, out)
    result = {"model": str(path), "test_accuracy": _test_accuracy(s, data), "teacher_accuracy": _test_accuracy(t, data),
              "seconds": round(hist.seconds, 1)}  # fmt: skip
    warn_at_chance(result, s.meta, test_accuracy=result["test_accuracy"],
                   teacher_accuracy=result["teacher_accuracy"])  # fmt: skip
    emit(result, as_json, "distill")


@app.command()
def compress(
    model: ModelArg,
    out: Annotated[Path, typer.Option("--out", help="where to write the packed model (.eoz)")],
    data: DataOpt = "digits",
    ratio: Annotated[
        float | None, typer.Option("--ratio", min=0.0, max=0.99, help="fraction of weights zeroed (default 0.75)")
    ] = None,
    sparsity: Annotated[float | None, typer.Option("--sparsity", min=0.0, max=0.99, hidden=True)] = None,
    bits: Annotated[int, typer.Option(min=1, max=8, help="codebook bits per layer (2**bits shared values)")] = 4,
    prune_epochs: Annotated[int, typer.Option("--prune-epochs", min=0)] = 1,
    cluster_epochs: Annotated[int, typer.Option("--cluster-epochs", min=0)] = 1,
    teacher: TeacherOpt = None,
    distill_from: OldTeacherOpt = None,
    lowrank_energy: Annotated[
        float | None, typer.Option("--lowrank-energy", help="first factorise FC / 1x1 convs keeping this SVD energy")
    ] = None,
    lr: LrOpt = None,
    optimizer: Annotated[
        str, typer.Option("--optimizer", help="adam (default: a centroid's gradient sums many weights) or sgd")
    ] = "adam",
    batch_size: BatchOpt = 128,
    seed: SeedOpt = 0,
    train_threads: TrainThreadsOpt = None,
    threads: OldThreadsOpt = None,
    device: DeviceOpt = "cpu",
    input_range: RangeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Deep Compression: prune, cluster, entropy-code MODEL into a .eoz file; reports the restored accuracy."""
    quiet(as_json)
    from edgeopt.compress.workflows import TuneSettings, deep_compress

    sparsity = renamed("--ratio", ratio, "--sparsity", sparsity)
    sparsity = 0.75 if sparsity is None else sparsity
    teacher = renamed("--teacher", teacher, "--distill-from", distill_from)
    threads = torch_threads(train_threads, threads)
    settings = TuneSettings(0, lr, optimizer, batch_size=batch_size, seed=seed, device=device, threads=threads)
    m, train = model_for_data(model, data, parse_range(input_range))
    lowrank = None
    if lowrank_energy is not None:
        from edgeopt.compress.lowrank import lowrank_model

        m, rep = lowrank_model(m, energy=lowrank_energy)
        lowrank = len(rep.layers)
    res = deep_compress(m, train, out, sparsity, bits, prune_epochs, cluster_epochs,
                        settings, _teacher(teacher))  # fmt: skip
    result = {"model": res.metrics["file"], "file_bytes": res.metrics["file_bytes"],
              "sparsity": res.metrics["sparsity"], "bits": bits, "lowrank_layers": lowrank,
              "restored_test_accuracy": _test_accuracy(res.model, data)}  # fmt: skip
    warn_at_chance(result, res.model.meta, restored_test_accuracy=result["restored_test_accuracy"])
    emit(result, as_json, "compress")
