"""The ``hw_train`` recipe pass: hardware-aware training toward a latency / arena budget."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from edgeopt.model import EdgeModel
from edgeopt.pipeline.passes import PassContext, register_pass


@register_pass
@dataclass
class HwTrainPass:
    """Train with the device budget in the loss (``edgeopt.hwtrain``). Cost: ``epochs`` of training
    plus one prediction per width choice and one export and timing of the result."""

    name: ClassVar[str] = "hw_train"
    runtime: str = "onnxruntime"
    target_latency_ms: float | None = None
    target_arena_kb: float | None = None
    epochs: int = 10
    profile: str | None = None
    lr: float | None = None
    seed: int = 0

    def apply(self, model: EdgeModel, ctx: PassContext) -> EdgeModel:
        from edgeopt.hwtrain import train_for_device
        from edgeopt.train import FitConfig

        cfg = FitConfig(lr=self.lr, seed=self.seed, device=ctx.device)
        model, metrics = train_for_device(
            model, ctx.train_data, self.runtime, self.target_latency_ms, self.target_arena_kb, self.epochs,
            ctx.threads, self.profile, cfg,
        )  # fmt: skip
        ctx.metrics.update(metrics)
        return model
