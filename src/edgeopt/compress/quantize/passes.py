"""The ``quantize`` recipe pass: ``- quantize: {calib: entropy, weights: int8}`` in a recipe.

``target: npu-int8`` / ``mcu-int8`` selects a hardware preset (see ``targets``); ``mix_runtime:
onnxruntime`` with ``max_drop`` or ``latency_budget_ms`` chooses float/int8 per layer (``float_mix``).

The next ``export`` pass then writes integer artifacts (ExecuTorch XNNPACK int8, LiteRT int8,
ONNX QDQ) and measures them in each runtime. Cost: as ``quantize`` (PTQ ~10-20 s for ResNet-8).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from edgeopt.model import EdgeModel
from edgeopt.pipeline.passes import PassContext, register_pass


@register_pass
@dataclass
class QuantizePass:
    """Quantize the model (PTQ or QAT, int8/int4/mixed weights, optional accuracy-aware ``max_drop``)."""

    name: ClassVar[str] = "quantize"
    method: str = "ptq"
    calib: str = "entropy"
    weights: str = "int8"
    max_drop: float | None = None
    calib_samples: int = 500
    budget: float = 0.6
    cle: bool = False
    bias_correction: bool = True
    bias_method: str = "empirical"  # QuantRecipe.bias_method: empirical, fast or fast+empirical
    qat_epochs: int = 2
    seed: int = 0
    target: str = "xnnpack"
    mix_runtime: str | None = None
    latency_budget_ms: float | None = None
    float_ops: list[str] = field(default_factory=list)  # QuantRecipe.float_ops: add, logits, pool, softmax, stem

    def apply(self, model: EdgeModel, ctx: PassContext) -> EdgeModel:
        from edgeopt.compress.quantize.api import quantize

        q, report = quantize(
            model, ctx.train_data, method=self.method, calib=self.calib, weights=self.weights,
            max_drop=self.max_drop, calib_samples=self.calib_samples, budget=self.budget, cle=self.cle,
            bias_correction=self.bias_correction, bias_method=self.bias_method, qat_epochs=self.qat_epochs,
            seed=self.seed, target=self.target,
            mix_runtime=self.mix_runtime, latency_budget_ms=self.latency_budget_ms, float_ops=self.float_ops,
        )  # fmt: skip
        ctx.metrics["quantize"] = {k: v for k, v in report.items() if k != "lineage"}
        return q
