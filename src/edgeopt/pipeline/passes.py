"""Passes: model in, model out, metrics recorded.

A pass is a small dataclass whose fields are its parameters (what a recipe may set) and
whose ``apply`` transforms an :class:`EdgeModel`. Register new techniques with
``@register_pass``; the recipe parser, the run directory and the report pick them up.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

from edgeopt.data import ImageDataset, load_dataset
from edgeopt.model import EdgeModel
from edgeopt.runtimes.base import Runner


@dataclass
class PassContext:
    """What a pass may use besides the model: data, a folder for its files, a metrics record, and where
    it trains (``device``: cpu, cuda or auto, as ``FitConfig`` takes it)."""

    data_spec: str
    stage_dir: Path
    threads: int = 1
    eval_limit: int | None = None
    device: str = "cpu"
    metrics: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def train_data(self) -> ImageDataset:
        return load_dataset(self.data_spec, "train")

    @cached_property
    def test_data(self) -> ImageDataset:
        return load_dataset(self.data_spec, "test").take(self.eval_limit, seed=0)


@runtime_checkable
class Pass(Protocol):
    name: ClassVar[str]

    def apply(self, model: EdgeModel, ctx: PassContext) -> EdgeModel: ...


PASSES: dict[str, type] = {}
# Modules whose import registers more passes (one per technique); imported when a recipe is read.
PASS_MODULES: list[str] = [
    "edgeopt.compress.passes",
    "edgeopt.compress.quantize.passes",
    "edgeopt.hwtrain.passes",
    "edgeopt.nas.passes",
    "edgeopt.ondevice.passes",
]


def available_passes() -> dict[str, type]:
    """Every registered pass, after importing the technique modules that define them."""
    import importlib

    for module in PASS_MODULES:
        importlib.import_module(module)
    return PASSES


def register_pass(cls: type) -> type:
    """Class decorator: make a pass available to recipes under ``cls.name``."""
    PASSES[cls.name] = cls
    return cls


@register_pass
@dataclass
class TrainPass:
    """Train (or fine-tune) the model on the recipe's data. Cost: ``epochs`` passes over train."""

    name: ClassVar[str] = "train"
    epochs: int = 5
    optimizer: str = "sgd"
    lr: float | None = None
    batch_size: int = 128
    label_smoothing: float = 0.1
    augment: bool = True
    seed: int = 0

    def apply(self, model: EdgeModel, ctx: PassContext) -> EdgeModel:
        from edgeopt.train import FitConfig, fit

        cfg = FitConfig(
            epochs=self.epochs, batch_size=self.batch_size, optimizer=self.optimizer, lr=self.lr,
            label_smoothing=self.label_smoothing, augment=self.augment, seed=self.seed, device=ctx.device,
        )  # fmt: skip
        model, history = fit(model, ctx.train_data, cfg)
        ctx.metrics["train_history"] = history.epochs
        ctx.metrics["train_seconds"] = round(history.seconds, 2)
        return model.with_lineage({"pass": "train", "epochs": self.epochs, "data": ctx.data_spec})


@register_pass
@dataclass
class ExportPass:
    """Export to each runtime, check parity, then measure accuracy and latency inside it.

    The model itself is unchanged; artifacts land in the stage folder. Cost: one export per
    format (seconds each) plus one pass over the evaluation split per runtime.
    """

    name: ClassVar[str] = "export"
    formats: list[str] = field(default_factory=lambda: ["onnx", "pte", "tflite"])
    rtol: float | None = None  # None: 1e-4 for float models, the int8 tolerance for quantized ones

    def apply(self, model: EdgeModel, ctx: PassContext) -> EdgeModel:
        from edgeopt.interop.export import export_model
        from edgeopt.runtimes import open_runner

        for fmt in self.formats:
            result = export_model(model, fmt, ctx.stage_dir / f"model{_suffix(fmt)}", rtol=self.rtol)
            with open_runner(result.runtime, result.path, threads=ctx.threads) as runner:
                record_runtime_metrics(ctx.metrics, model, runner, ctx)
            ctx.metrics.setdefault("parity", {})[result.runtime] = asdict(result.parity)
            ctx.metrics.setdefault("artifacts", {})[result.runtime] = result.path.name
            ctx.metrics.setdefault("artifact_bytes", {})[result.runtime] = result.size_bytes
        return model


def _suffix(fmt: str) -> str:
    from edgeopt.interop.export import FORMATS

    return FORMATS[fmt] if fmt in FORMATS else f".{fmt}"


def record_runtime_metrics(metrics: dict[str, Any], model: EdgeModel, runner: Runner, ctx: PassContext) -> None:
    """Accuracy on the evaluation split and batch-1 latency p50 inside ``runner``'s runtime."""
    from edgeopt.runtimes import measure_latency
    from edgeopt.train import evaluate

    acc = evaluate(model, ctx.test_data, predict=runner.run).accuracy
    stats = measure_latency(runner, model.example_input(1).numpy(), threads=ctx.threads)
    metrics.setdefault("accuracy_by_runtime", {})[runner.name] = acc
    metrics.setdefault("latency_ms", {})[runner.name] = stats.p50_ms
