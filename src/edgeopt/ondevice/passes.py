"""The ``adapt`` recipe pass: fine-tune the incoming model inside a runtime (edgeopt.ondevice.adapt)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from edgeopt.model import EdgeModel
from edgeopt.pipeline.passes import PassContext, register_pass


@register_pass
@dataclass
class AdaptPass:
    """On-device adaptation on the recipe's data: ``scope`` trains inside ``runtime`` (see docs/ondevice.md).

    Records accuracy before and after on the evaluation split and the three memory figures (analytic,
    ExecuTorch's plan, measured in a fresh process) in the stage's metrics. Cost: one program export,
    ``steps`` training steps and a measuring subprocess (seconds for small models).
    """

    name: ClassVar[str] = "adapt"
    scope: str = "head"
    runtime: str = "executorch"
    steps: int | None = None
    epochs: float | None = None
    lr: float = 0.01
    batch_size: int = 32
    frozen: str = "float"
    memory_budget_kb: float | None = None
    seed: int = 0

    def apply(self, model: EdgeModel, ctx: PassContext) -> EdgeModel:
        from edgeopt.ondevice.adapt import AdaptConfig, adapt

        cfg = AdaptConfig(scope=self.scope, runtime=self.runtime, steps=self.steps, epochs=self.epochs, lr=self.lr,
                          batch_size=self.batch_size, frozen=self.frozen, memory_budget_kb=self.memory_budget_kb,
                          seed=self.seed)  # fmt: skip
        result = adapt(model, ctx.train_data, ctx.test_data, cfg)
        record = result.to_json()
        ctx.metrics["adapt"] = {**record, "step_ms": round(result.step_ms, 3),
                                "memory_detail": result.memory.to_json(), **result.detail}  # fmt: skip
        return result.model
