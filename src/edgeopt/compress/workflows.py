"""End-to-end compression steps shared by the CLI and the recipe passes.

* ``prune_model``: channel (MAC or latency target), magnitude or N:M pruning, then optional
  fine-tuning -- with knowledge distillation from ``teacher`` when given (recovery).
* ``deep_compress``: Deep Compression (Han et al. 2016) -- gradual magnitude pruning,
  k-means weight sharing with centroid fine-tuning, entropy-coded file (``.eoz``); the model
  returned is the one restored from that file, so what is reported is what is stored.
* ``lowrank``: SVD factorisation of linear and 1x1-conv layers (:mod:`edgeopt.compress.lowrank`).

Cost: dominated by the fine-tuning epochs (``fit``), plus a teacher forward per step with KD.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edgeopt.checks import check_numbers
from edgeopt.compress.batchnorm import canonical_batchnorm, fold_batchnorm, needs_unfolding, unfold_batchnorm
from edgeopt.compress.common import strip_output_softmax
from edgeopt.data import ImageDataset
from edgeopt.errors import EdgeoptError
from edgeopt.model import EdgeModel, ModelMeta, refuse_multi_output
from edgeopt.progress import phase

METHODS = ("channel", "magnitude", "nm")
RECOVERY_EPOCHS = 3  # fine-tuning after pruning unless told otherwise (`prune --epochs`, the recipe's prune pass)


@dataclass
class TuneSettings:
    """Fine-tuning after compression: epochs, optimiser, and distillation settings.

    The defaults are for a short recovery (a few epochs): half the loss from the teacher's soft
    targets, half from the labels, and no augmentation. On the MLPerf ResNet-8 (cifar10-jpg, 5
    epochs, docs/pruning.md) that recovered 1.3-1.7 points more than soft targets alone
    (``alpha=0.9``) with random crops and flips: the teacher is only 81% right, and augmented
    images are harder to fit in 5 epochs.
    """

    epochs: int = 0
    lr: float | None = None
    optimizer: str = "sgd"
    batch_size: int = 128
    seed: int = 0
    temperature: float = 4.0
    alpha: float = 0.5
    hint_weight: float = 0.0
    device: str = "cpu"
    augment: bool = False
    threads: int | None = None  # torch threads while fine-tuning (None: torch's)

    def __post_init__(self) -> None:
        check_numbers(self.__dict__)

    def fit_config(self) -> Any:
        from edgeopt.train import FitConfig

        return FitConfig(epochs=self.epochs, lr=self.lr, optimizer=self.optimizer, batch_size=self.batch_size,
                         seed=self.seed, warmup_epochs=min(0.5, 0.1 * self.epochs), device=self.device,
                         augment=self.augment, threads=self.threads)  # fmt: skip


def refuse_quantized(model: EdgeModel, what: str, fix: str) -> None:
    """One-line error for a technique that needs a float model, given a quantized one."""
    if getattr(model.module, "quantized", False):
        raise EdgeoptError(f"a quantized model can't be {what}", fix)


@dataclass
class CompressResult:
    """A compressed model and what was measured on the way."""

    model: EdgeModel
    metrics: dict[str, Any] = field(default_factory=dict)


def trainable(model: EdgeModel, data: ImageDataset, seed: int = 0) -> tuple[EdgeModel, bool]:
    """``model`` as logits, with batch norm unfolded when it is an imported BN-folded graph.

    Returns (model, unfolded); fold back with :func:`edgeopt.compress.batchnorm.fold_batchnorm`
    after training when ``unfolded``. Cost: one forward over 512 training images when unfolding.
    """
    from edgeopt.compress.prune import calibration_inputs

    model = strip_output_softmax(model)
    if not needs_unfolding(model):
        return model, False
    return unfold_batchnorm(model, calibration_inputs(model, data, 512, seed=seed)), True


def tune(
    model: EdgeModel,
    data: ImageDataset,
    settings: TuneSettings,
    teacher: EdgeModel | None = None,
    log: Callable[[dict[str, float]], None] | None = None,
) -> tuple[EdgeModel, list[dict[str, float]]]:
    """Fine-tune ``model`` for ``settings.epochs`` (KD from ``teacher`` when given). No-op at 0 epochs.

    Imported BN-folded graphs train with batch norm unfolded and are folded back afterwards, so the
    result has the input's architecture.
    """
    from edgeopt.compress.distill import DistillConfig, Distiller
    from edgeopt.train import fit

    if settings.epochs <= 0:
        return model, []
    model, unfolded = trainable(model, data, settings.seed)
    if teacher is None:
        model, hist = fit(model, data, settings.fit_config(), on_epoch=log)
    else:
        cfg = DistillConfig(settings.temperature, settings.alpha, hint_weight=settings.hint_weight)
        with Distiller(model, teacher, cfg) as loss_fn:
            model, hist = fit(model, data, settings.fit_config(), loss_fn=loss_fn, on_epoch=log)
    return (fold_batchnorm(model) if unfolded else model), hist.epochs


def confirm_latency(model: EdgeModel, predicted: Callable, runtime: str, threads: int = 1) -> dict[str, Any]:
    """The model's predicted latency beside its latency timed in ``runtime`` (several: combined alike)."""
    from edgeopt.compress.prune.netadapt import runtime_latency

    pred = predicted([model])[0]
    measured = runtime_latency(runtime, threads)([model])[0]
    return {"runtime": runtime, "predicted_ms": pred, "measured_ms": measured, "error_pct": (pred / measured - 1) * 100}


def prune_model(
    model: EdgeModel,
    data: ImageDataset,
    method: str = "channel",
    ratio: float | None = None,
    target_macs: int | None = None,
    target_latency_ms: float | None = None,
    runtime: str = "onnxruntime",
    criterion: str = "l2",
    allocation: str = "uniform",
    round_to: int = 1,
    scope: str = "layer",
    nm: tuple[int, int] = (2, 4),
    min_keep: int = 1,
    reconstruct: bool = True,
    settings: TuneSettings | None = None,
    teacher: EdgeModel | None = None,
    threads: int = 1,
    log: Callable[[str], None] | None = None,
    steps: int = 1,
    widths: list[int] | None = None,
    profile: str | None = None,
    size_weight: float = 0.0,
    test: ImageDataset | None = None,
    timed: bool = False,
) -> CompressResult:
    """Prune ``model`` by ``method`` toward one target, then fine-tune (KD from ``teacher`` if given).

    channel: ``ratio`` (fraction of MACs removed), ``target_macs`` or ``target_latency_ms``
    (measured in ``runtime``). magnitude: ``ratio`` = fraction of weights zeroed, reached
    gradually during fine-tuning (at once with 0 epochs). nm: ``nm`` = (N, M) masks. Channel widths
    stay multiples of ``round_to`` (or exactly ``min_keep`` when that is smaller); with
    ``reconstruct`` the kept weights are re-fitted by least squares on 512 training images.
    ``steps`` > 1 (channel, MAC targets) prunes iteratively: the MAC target is approached in equal
    steps, each but the last followed by one fine-tuning epoch, the last by the remaining epochs
    (on the ResNet-8 benchmark two steps gave +0.8 pt over one at the same 5 epochs in all).
    ``widths`` (channel) replaces the target: the channels each group keeps (steps then go
    linearly from the current widths to these). ``size_weight`` (latency allocation): weights saved count beside
    time saved (:meth:`.netadapt.UnitTable.weighed_savings`), for a flash limit as well as a latency one.
    Latency-driven searches (``target_latency_ms``, ``allocation="latency"``) ask the device profiles
    of ``runtime`` (``profile`` files, or the ones ``edgeopt hw calibrate`` saved for this machine)
    instead of timing every candidate, then time the final model once in ``runtime`` to confirm:
    ``metrics["latency_check"]`` says how far prediction and measurement were apart.
    Before and after: with ``test``, ``metrics["accuracy_before"]`` / ``["accuracy_after"]`` on it;
    with ``timed`` (channel pruning), ``metrics["latency"]`` times the model before and after side by
    side in each runtime of ``runtime`` (:func:`time_before_after`); ``macs_before`` / ``macs_after``
    always. Cost of ``timed``: two exports and timings per runtime.
    """
    refuse_multi_output(model, "prune")
    from edgeopt.compress.prune import (
        GradualPruner,
        apply_masks,
        calibration_inputs,
        channel_macs,
        group_sizes,
        magnitude_masks,
        nm_masks,
        prune_channels,
        prune_to_latency,
        sample_batches,
        sparsity_of,
    )
    from edgeopt.profile import count_macs, export_for_profile

    settings = settings or TuneSettings()
    refuse_quantized(model, "pruned", "prune before quantizing")
    check_numbers({"target_macs": target_macs, "target_latency_ms": target_latency_ms,
                   "round_to": round_to, "min_keep": min_keep, "steps": steps, "threads": threads})  # fmt: skip
    if method not in METHODS:
        raise EdgeoptError(f"unknown pruning method '{method}'", f"use one of: {', '.join(METHODS)}")
    targets = [t is not None for t in (ratio, target_macs, target_latency_ms, widths)]
    if method == "channel" and sum(targets) != 1:
        raise EdgeoptError("give exactly one target", "--ratio R, --target-macs M, --target-latency-ms L or --widths")
    if method != "channel" and (target_macs is not None or target_latency_ms is not None or widths is not None):
        raise EdgeoptError(
            f"{method} pruning cannot meet a MAC or latency target: dense runtimes run zeros at full cost",
            "use --method channel for MAC or latency targets",
        )
    if method == "magnitude" and ratio is None:
        raise EdgeoptError("magnitude pruning needs --ratio (the fraction of weights to zero)", "e.g. --ratio 0.8")
    if ratio is not None and not 0.0 <= ratio < 1.0:
        raise EdgeoptError(f"pruning ratio {ratio} is not in [0, 1)", "e.g. --ratio 0.5 removes half")
    if size_weight and allocation != "latency":
        raise EdgeoptError("--size-weight weighs the cuts of a latency allocation", "add --allocation latency")
    if steps > 1 and (method != "channel" or target_latency_ms is not None):
        raise EdgeoptError("iterative steps are for channel pruning to a MAC target", "drop --steps")
    if steps > 1 and settings.epochs < steps:
        raise EdgeoptError(f"{steps} pruning steps need at least {steps} fine-tuning epochs", f"--epochs {steps}")
    metrics: dict[str, Any] = {"method": method}
    say = log or (lambda _s: None)
    model = strip_output_softmax(model)
    original = model  # channel pruning builds new modules; magnitude masks change this one in place
    metrics["macs_before"] = count_macs(export_for_profile(model).graph)
    if test is not None:
        from edgeopt.train import evaluate

        with phase("accuracy before pruning"):
            metrics["accuracy_before"] = evaluate(model, test).accuracy
    hist: list[dict[str, float]] = []
    latency_search = method == "channel" and (target_latency_ms is not None or allocation == "latency")
    latency_fn = None
    if latency_search:
        from edgeopt.compress.prune.netadapt import latency_source, short_term_data, timed_beside

        latency_fn, metrics["latency_source"] = latency_source(
            runtime, threads, profile, say, anchor=model if target_latency_ms is not None else None
        )
        say(f"latency: {metrics['latency_source']['latency']} ({runtime})")
    if method == "channel":
        if target_latency_ms is not None:
            holdout, cal = short_term_data(model, data, reconstruct)
            # a predicted search times the model it lands on (beside the input model), and goes on if it misses
            anchor = metrics["latency_source"].get("anchor")
            timer = timed_beside(model, anchor["measured_ms"], runtime, threads) if anchor else None
            model, lrep = prune_to_latency(model, target_latency_ms, holdout, runtime, threads, criterion,
                                           round_to=round_to, log=say, calibration=cal, latency_fn=latency_fn,
                                           confirm=timer)  # fmt: skip
            model = _fold_branch_constants(model)
            metrics["latency_search"] = lrep.to_json()
            with phase("recovery"):
                model, hist = tune(model, data, settings, teacher)
        else:
            # where each step cuts to: equal MAC steps, or widths moving linearly to ``widths``
            if widths is None:
                before = channel_macs(model)
                final = int(round(before * (1 - ratio))) if ratio is not None else int(target_macs or 0)
            else:
                sizes = group_sizes(model)
            cal = calibration_inputs(model, data) if reconstruct else None
            # latency allocation weighs each cut's measured accuracy loss on images the search holds out
            holdout = data.take(min(2000, len(data)), seed=1) if allocation == "latency" and reconstruct else None
            for k in range(1, steps + 1):
                batches = sample_batches(model, data) if criterion == "taylor" else None
                if widths is None:
                    cut: dict[str, Any] = {"target_macs": before - (before - final) * k // steps}
                elif len(widths) == len(sizes):  # (a wrong count gets prune_channels' one-line error)
                    cut = {"widths": [math.ceil(s - (s - w) * k / steps) for s, w in zip(sizes, widths, strict=True)]}
                else:
                    cut = {"widths": widths}
                step_name = f" step {k}/{steps}" if steps > 1 else ""
                with phase(f"prune{step_name}"):
                    model, rep = prune_channels(model, criterion=criterion, allocation=allocation, round_to=round_to,
                                                min_keep=min_keep, batches=batches, calibration=cal, runtime=runtime,
                                                threads=threads, eval_data=holdout,
                                                latency_fn=latency_fn, size_weight=size_weight, **cut)  # fmt: skip
                    model = _fold_branch_constants(model)
                epochs = 1 if k < steps else settings.epochs - (steps - 1)
                say(f"prune{step_name}: {rep.macs_after:,} MACs, widths {rep.widths_text()}, "
                    f"then {epochs} recovery epoch(s)")  # fmt: skip
                with phase(f"recovery{step_name}", epochs=(len(hist), settings.epochs)):
                    model, step_hist = tune(model, data, replace(settings, epochs=epochs), teacher)
                hist += step_hist
                if k == 1:
                    first = rep
            metrics["channels"] = rep.to_json()
            if len(first.groups) == len(rep.groups):  # over all steps: first widths -> last widths
                for g, g0 in zip(metrics["channels"]["groups"], first.groups, strict=True):
                    g["before"] = g0["before"]
            metrics["steps"] = steps
    else:
        total_steps = settings.epochs * max(1, math.ceil(len(data) / settings.batch_size))
        if settings.epochs > 0:
            gp = GradualPruner(
                float(ratio or 0.0), total_steps, "nm" if method == "nm" else "magnitude", scope,
                frequency=max(1, total_steps // 40), n=nm[0], m=nm[1],
            )  # fmt: skip
            model, unfolded = trainable(model, data, settings.seed)  # before the masks hook the layers
            gp.attach(model.module)
            try:
                target = f"{ratio:.0%} zeros" if method == "magnitude" else f"{nm[0]}:{nm[1]}"
                with phase(f"recovery, pruning to {target}"):
                    model, hist = tune(model, data, settings, teacher)
            finally:
                gp.detach()
            model = fold_batchnorm(model) if unfolded else model  # per-channel rescale: zeros stay zero
        else:
            masks = nm_masks(model.module, *nm) if method == "nm" else magnitude_masks(model.module, ratio, scope)
            apply_masks(model.module, masks)
        sp = sparsity_of(model.module)
        metrics["sparsity"] = sp["sparsity"]
        metrics["note"] = "zeros are not skipped by dense runtimes: same latency, smaller compressed file"
    metrics["macs_after"] = count_macs(export_for_profile(model).graph)
    if latency_search and metrics["latency_source"]["latency"] == "predicted":
        check = metrics["latency_check"] = confirm_latency(model, latency_fn, runtime, threads)
        say(f"latency: predicted {check['predicted_ms']:.4f} ms, measured {check['measured_ms']:.4f} ms "
            f"({check['error_pct']:+.1f}%)")  # fmt: skip
    if test is not None:
        with phase("accuracy after pruning"):
            metrics["accuracy_after"] = evaluate(model, test).accuracy
    if timed and method == "channel":
        metrics["latency"] = time_before_after(original, model, runtime, threads)
    metrics["fine_tune"] = {"epochs": settings.epochs, "distilled": teacher is not None, "history": hist}
    step = {
        "pass": "prune",
        "method": method,
        "ratio": ratio,
        "target_macs": target_macs,
        "target_latency_ms": target_latency_ms,
        "widths": widths,
        "epochs": settings.epochs,
        "distilled": teacher is not None,
        "steps": steps,
    }
    return CompressResult(model.with_lineage(step), metrics)  # fmt: skip


def _fold_branch_constants(model: EdgeModel) -> EdgeModel:
    """``model`` with its removed branches' constants folded into biases (:func:`.branches.fold_branch_constants`),
    before recovery training absorbs what the fold changes. No lineage step: part of the pruning."""
    from edgeopt.compress.prune.branches import fold_branch_constants
    from edgeopt.interop.graph import GraphModule

    if not isinstance(model.module, GraphModule):
        return model
    folded = fold_branch_constants(model.module)
    if folded is model.module:
        return model
    meta = ModelMeta.from_json(model.meta.to_json())
    meta.arch = {"kind": "graph", "ir": folded.ir}
    return EdgeModel(folded, meta)


def time_before_after(before: EdgeModel, after: EdgeModel, runtime: str, threads: int = 1) -> dict[str, Any]:
    """Batch-1 p50 latency (ms) of ``before`` and ``after``, timed side by side (fresh sessions, interleaved
    rounds) in each runtime of ``runtime`` (a comma list): ``{runtime: {before_ms, after_ms, ratio}}``."""
    from edgeopt.compress.prune.netadapt import runtime_latency

    out: dict[str, Any] = {}
    for name in [r.strip() for r in runtime.split(",") if r.strip()]:
        with phase(f"timing before and after in {name}"):
            b, a = runtime_latency(name, threads)([before, after])
        out[name] = {"before_ms": b, "after_ms": a, "ratio": a / b if b > 0 else float("nan")}
    return out


def accuracy_drop(before: float, after: float, points: float = 3.0) -> str | None:
    """A one-line warning when accuracy fell by more than ``points`` percentage points, else None. Pure."""
    drop = (before - after) * 100
    if drop <= points:
        return None
    return f"accuracy fell {drop:.1f} points ({before:.2%} -> {after:.2%})"


def deep_compress(
    model: EdgeModel,
    data: ImageDataset,
    out: str | Path,
    sparsity: float = 0.75,
    bits: int = 4,
    prune_epochs: int = 1,
    cluster_epochs: int = 1,
    settings: TuneSettings | None = None,
    teacher: EdgeModel | None = None,
    scope: str = "layer",
    float_bits: int = 16,
    log: Callable[[dict[str, float]], None] | None = None,
) -> CompressResult:
    """Prune to ``sparsity`` (gradually over ``prune_epochs``), cluster to ``2**bits`` values per layer
    (centroids fine-tuned ``cluster_epochs``), write the entropy-coded ``out`` (.eoz) and return
    the model restored from it. KD from ``teacher`` in both fine-tunings when given."""
    refuse_multi_output(model, "compress")
    from edgeopt.compress.cluster import ClusteredTraining, cluster_model
    from edgeopt.compress.prune import GradualPruner, apply_masks, magnitude_masks, sparsity_of
    from edgeopt.compress.storage import entropy_report, load_packed, packed_path, save_packed

    refuse_quantized(model, "compressed", "compress the float model, before quantizing")
    check_numbers({"sparsity": sparsity, "bits": bits, "prune_epochs": prune_epochs,
                   "cluster_epochs": cluster_epochs, "float_bits": float_bits})  # fmt: skip
    packed_path(out)  # a wrong suffix is refused before any training
    base = settings or TuneSettings(optimizer="adam")  # centroid gradients sum many weights: SGD diverges
    # Imported graphs train with BN unfolded; the BNs stay in the stored model (folded into a
    # per-channel scale and shift), because folding them into the convs would break the codebooks.
    model, _ = trainable(model, data, base.seed)
    metrics: dict[str, Any] = {}
    if prune_epochs > 0 and sparsity > 0:
        s1 = TuneSettings(**{**base.__dict__, "epochs": prune_epochs})
        steps = prune_epochs * max(1, math.ceil(len(data) / s1.batch_size))
        gp = GradualPruner(sparsity, steps, "magnitude", scope, frequency=max(1, steps // 40)).attach(model.module)
        try:
            with phase(f"pruning to {sparsity:.0%} zeros"):
                model, h1 = tune(model, data, s1, teacher, log=log)
        finally:
            gp.detach()
        metrics["prune_history"] = h1
    elif sparsity > 0:
        apply_masks(model.module, magnitude_masks(model.module, sparsity, scope))
    metrics["sparsity"] = sparsity_of(model.module)["sparsity"]
    books = cluster_model(model.module, bits)
    if cluster_epochs > 0:
        s2 = TuneSettings(**{**base.__dict__, "epochs": cluster_epochs})
        with ClusteredTraining(model.module, books):
            with phase(f"fine-tuning {2**bits} shared values per layer"):
                model, h2 = tune(model, data, s2, teacher, log=log)
        metrics["cluster_history"] = h2
    model = model.with_lineage({"pass": "compress", "sparsity": sparsity, "bits": bits,
                                "prune_epochs": prune_epochs, "cluster_epochs": cluster_epochs})  # fmt: skip
    path, info = save_packed(canonical_batchnorm(model), out, float_bits)
    metrics["file"] = str(path)
    metrics["file_bytes"] = path.stat().st_size
    metrics["packing"] = info.to_json()
    metrics["entropy"] = entropy_report(model)
    restored = load_packed(path)
    return CompressResult(restored, metrics)
