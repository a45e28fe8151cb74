"""Recipe passes for pruning, distillation and Deep-Compression storage.

```yaml
passes:
  - train: {epochs: 15}
  - distill: {student: "zoo:resnet8", student_kwargs: {width: 8}, epochs: 10}   # the trained model teaches
  - prune: {method: channel, ratio: 0.5, epochs: 3, distill: true}               # KD from the unpruned model
  - compress: {sparsity: 0.75, bits: 4, prune_epochs: 1, cluster_epochs: 1}
```

Each pass records its figures (MACs, sparsity, file bytes, accuracy on the recipe's test split)
in the stage metrics. Cost: the fine-tuning epochs each pass is given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from edgeopt.compress.workflows import RECOVERY_EPOCHS, TuneSettings, deep_compress, prune_model
from edgeopt.model import EdgeModel
from edgeopt.pipeline.passes import PassContext, register_pass


def _accuracy(model: EdgeModel, ctx: PassContext) -> float:
    from edgeopt.train import evaluate

    return evaluate(model, ctx.test_data).accuracy


def _load_other(spec: str, like: EdgeModel, kwargs: dict[str, Any] | None = None) -> EdgeModel:
    """A teacher / student from a path or ``zoo:NAME`` (sized like ``like``)."""
    from edgeopt.model import load_model
    from edgeopt.models import create_model

    if spec.startswith("zoo:"):
        spec_in = like.meta.input
        shape = (spec_in.image_shape[2], *spec_in.image_shape[:2]) if spec_in.is_image else spec_in.shape
        return create_model(spec[4:], input_shape=shape, num_classes=like.meta.num_classes, task=like.meta.task,
                            **(kwargs or {}))  # fmt: skip
    return load_model(spec)


@register_pass
@dataclass
class PrunePass:
    """Prune (channel / magnitude / nm) to a ratio, MAC or latency target, then fine-tune (KD optional)."""

    name: ClassVar[str] = "prune"
    method: str = "channel"
    ratio: float | None = None
    target_macs: int | None = None
    target_latency_ms: float | None = None
    runtime: str = "onnxruntime"
    criterion: str = "l2"
    allocation: str = "uniform"
    round_to: int = 1
    min_keep: int = 1
    reconstruct: bool = True
    nm: list[int] = field(default_factory=lambda: [2, 4])
    epochs: int = RECOVERY_EPOCHS  # was 0 (no recovery): a recipe without epochs now fine-tunes (new fingerprint)
    steps: int = 1  # channel pruning in this many steps, one epoch of fine-tuning between
    widths: list[int] | None = None  # channels each group keeps (instead of a ratio / MAC target)
    size_weight: float = 0.0  # latency allocation: weights saved count beside time saved (for a flash limit)
    lr: float | None = None
    optimizer: str = "sgd"
    distill: bool = True  # KD from the unpruned model during fine-tuning
    distill_from: str | None = None  # or from this teacher (path / zoo)
    temperature: float = 4.0
    alpha: float = 0.5  # weight of the teacher's soft targets; the rest is the labels' (TuneSettings)

    def apply(self, model: EdgeModel, ctx: PassContext) -> EdgeModel:
        import copy

        teacher = None
        if self.epochs > 0 and self.distill_from:
            teacher = _load_other(self.distill_from, model)
        elif self.epochs > 0 and self.distill:
            teacher = EdgeModel(copy.deepcopy(model.module).eval(), model.meta)
        settings = TuneSettings(self.epochs, self.lr, self.optimizer, temperature=self.temperature, alpha=self.alpha,
                                device=ctx.device)  # fmt: skip
        res = prune_model(
            model, ctx.train_data, self.method, self.ratio, self.target_macs, self.target_latency_ms, self.runtime,
            self.criterion, self.allocation, self.round_to, nm=(int(self.nm[0]), int(self.nm[1])),
            min_keep=self.min_keep, reconstruct=self.reconstruct,
            settings=settings, teacher=teacher, threads=ctx.threads, steps=self.steps, widths=self.widths,
            size_weight=self.size_weight,
        )  # fmt: skip
        ctx.metrics.update({k: v for k, v in res.metrics.items() if k != "fine_tune"})
        ctx.metrics["accuracy"] = _accuracy(res.model, ctx)
        return res.model


@register_pass
@dataclass
class DistillPass:
    """Knowledge distillation. With ``student``, the current model teaches a new student (returned);
    with ``teacher``, the current model is the student."""

    name: ClassVar[str] = "distill"
    student: str | None = None
    student_kwargs: dict[str, Any] = field(default_factory=dict)
    teacher: str | None = None
    epochs: int = 5
    lr: float | None = None
    optimizer: str = "sgd"
    temperature: float = 4.0
    alpha: float = 0.9
    hint_weight: float = 0.0
    seed: int = 0

    def apply(self, model: EdgeModel, ctx: PassContext) -> EdgeModel:
        from edgeopt.compress.distill import DistillConfig, distill
        from edgeopt.errors import EdgeoptError

        if (self.student is None) == (self.teacher is None):
            raise EdgeoptError("the distill pass needs exactly one of 'student' or 'teacher'")
        if self.student is not None:
            teacher, student = model, _load_other(self.student, model, self.student_kwargs)
        else:
            teacher, student = _load_other(str(self.teacher), model), model
        settings = TuneSettings(self.epochs, self.lr, self.optimizer, seed=self.seed, device=ctx.device)
        cfg = DistillConfig(self.temperature, self.alpha, hint_weight=self.hint_weight)
        out, hist = distill(student, teacher, ctx.train_data, settings.fit_config(), cfg)
        ctx.metrics["train_history"] = hist.epochs
        ctx.metrics["teacher_accuracy"] = _accuracy(teacher, ctx)
        ctx.metrics["accuracy"] = _accuracy(out, ctx)
        return out


@register_pass
@dataclass
class CompressPass:
    """Deep Compression: gradual magnitude pruning, k-means clustering, entropy-coded ``model.eoz``.

    The returned model is the one restored from the file; metrics hold its size and accuracy.
    """

    name: ClassVar[str] = "compress"
    sparsity: float = 0.75
    bits: int = 4
    prune_epochs: int = 1
    cluster_epochs: int = 1
    lr: float | None = None
    optimizer: str = "adam"  # centroid gradients sum many weights: SGD at fit's lr diverges
    distill: bool = True
    float_bits: int = 16

    def apply(self, model: EdgeModel, ctx: PassContext) -> EdgeModel:
        import copy

        teacher = EdgeModel(copy.deepcopy(model.module).eval(), model.meta) if self.distill else None
        res = deep_compress(
            model, ctx.train_data, ctx.stage_dir / "model.eoz", self.sparsity, self.bits, self.prune_epochs,
            self.cluster_epochs, TuneSettings(0, self.lr, self.optimizer, device=ctx.device), teacher,
            float_bits=self.float_bits,
        )  # fmt: skip
        ctx.metrics.update({k: v for k, v in res.metrics.items() if not k.endswith("history")})
        ctx.metrics["accuracy"] = _accuracy(res.model, ctx)
        ctx.metrics.setdefault("artifact_bytes", {})["eoz"] = res.metrics["file_bytes"]
        return res.model
