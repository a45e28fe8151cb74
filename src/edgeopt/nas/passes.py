"""The ``search`` recipe pass: replace the incoming model with the architecture a search finds."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from edgeopt.model import EdgeModel
from edgeopt.pipeline.passes import PassContext, register_pass


@register_pass
@dataclass
class SearchPass:
    """Architecture search under a device budget (``edgeopt.nas.search``) on the recipe's data.

    The incoming model is replaced (put ``search`` first in a recipe): the pass returns the chosen
    architecture, trained ``final_epochs``, as the next stage's model. Its trials, measured
    Pareto front and report land in the stage folder. Cost: ``trials`` short trainings plus the
    front's retraining, exports and timings.
    """

    name: ClassVar[str] = "search"
    space: str = "resnet"
    runtimes: list[str] = field(default_factory=lambda: ["onnxruntime"])
    trials: int = 20
    epochs: int = 2
    final_epochs: int | None = None
    max_latency_ms: float | None = None
    max_arena_kb: float | None = None
    max_flash_kb: float | None = None
    max_params: int | None = None
    max_macs: int | None = None
    mcu: str | None = None
    profile: str | None = None
    sampler: str = "tpe"
    front: int = 4
    seed: int = 0

    def apply(self, model: EdgeModel, ctx: PassContext) -> EdgeModel:
        from edgeopt.model import load_model
        from edgeopt.nas import Budget, SearchSettings, load_space, search

        settings = SearchSettings(
            runtimes=list(self.runtimes), trials=self.trials, epochs=self.epochs, sampler=self.sampler,
            seed=self.seed, threads=ctx.threads, storage=f"sqlite:///{(ctx.stage_dir / 'study.db').resolve()}",
        )  # fmt: skip
        budget = Budget(self.max_latency_ms, self.max_arena_kb, self.max_flash_kb, self.max_macs, self.max_params,
                        self.mcu)  # fmt: skip
        result = search(
            load_space(self.space), ctx.data_spec, budget, settings, ctx.stage_dir, profile=self.profile,
            final_epochs=self.final_epochs, front_limit=self.front, export_all=False,
        )  # fmt: skip
        for key in ("trials", "feasible_trials", "latency_source", "cost_axis", "pareto", "chosen"):
            ctx.metrics[f"search_{key}"] = result.get(key)
        return load_model(result["model"])
