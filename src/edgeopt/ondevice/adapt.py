"""``adapt``: fine-tune a model on local data inside a runtime, within a memory budget.

:func:`adapt` prepares the scope (:mod:`edgeopt.ondevice.scopes`), trains in the named runtime
(``executorch``: a training program with its frozen part in XNNPACK; ``litert``: a trainable head in a
.tflite; ``torch``: eager, for comparison), reads the weights back into a copy of the model and takes the
three memory figures (:mod:`edgeopt.ondevice.memory`). :func:`choose_scope` picks ``--scope auto``: the
candidate scopes in order of expected gain, the first whose *measured* memory fits the budget (when none fits
at the whole batch, the same candidates again as micro-batches with gradient accumulation).

Expected gain is a prior, not a measurement: the more parameters a scope trains, the more it can adapt
(full fine-tuning first, the head alone last). The benchmark (``benchmarks/ondevice.py``) measures how
well that prior ranks the real gains.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from edgeopt.data import ImageDataset
from edgeopt.data.classes import match_classes
from edgeopt.errors import EdgeoptError
from edgeopt.model import EdgeModel, refuse_multi_output
from edgeopt.ondevice.loops import DEFAULT_CLIP_NORM, ExecuTorchTrainer, LoopResult, make_batches, torch_train
from edgeopt.ondevice.memory import MemoryFigures, analytic_memory, measured_memory, planned_memory
from edgeopt.ondevice.program import TrainingProgram, build_training_program
from edgeopt.ondevice.scopes import Scope, blocks, finish_scope, parse_scope, prepare_scope
from edgeopt.progress import phase

RUNTIMES = ("executorch", "litert", "torch")


@dataclass
class AdaptConfig:
    """Settings of one on-device adaptation.

    ``steps`` wins over ``epochs`` (default: 100 steps); ``frozen`` is how ExecuTorch runs the frozen part
    (float, int8 or none: see :mod:`edgeopt.ondevice.program`); ``memory_budget_kb`` is checked against the
    measured figure; ``measure`` takes the measured figure even without a budget (a subprocess, seconds);
    ``clip_norm`` caps the gradients' global L2 norm before each update (ExecuTorch and torch; ``None``: off;
    see :mod:`edgeopt.ondevice.loops`). LiteRT's train signature updates inside the .tflite, unclipped.
    ``micro_batch_size`` (ExecuTorch; ``None``: the whole batch) runs each batch as equal micro-batches through
    a program of that static batch and averages their gradients before the one update (gradient
    accumulation): the same data, steps and update, with activation memory sized for the micro-batch.
    """

    scope: str = "head"
    runtime: str = "executorch"
    steps: int | None = None
    epochs: float | None = None
    lr: float = 0.01
    batch_size: int = 32
    momentum: float = 0.0
    clip_norm: float | None = DEFAULT_CLIP_NORM
    frozen: str = "float"
    delegate: str = "frozen"
    memory_budget_kb: float | None = None
    measure: bool = True
    seed: int = 0
    threads: int = 1  # the runtime's threads (ExecuTorch's pool, LiteRT's interpreter)
    micro_batch_size: int | None = None

    def micro_batch(self, batch: int) -> int:
        """The program's static batch for batches of ``batch``: ``micro_batch_size``, which must divide it."""
        mb = self.micro_batch_size or batch
        if mb < 1 or batch % mb:
            raise EdgeoptError(f"--micro-batch-size {mb} does not divide the batch of {batch}",
                               "choose a divisor of --batch-size")  # fmt: skip
        return mb

    def num_steps(self, samples: int) -> int:
        """Steps to run on ``samples`` training samples."""
        if self.steps is not None:
            return max(1, int(self.steps))
        if self.epochs is not None:
            return max(1, round(self.epochs * max(1, samples // self.batch_size)))
        return 100


@dataclass
class AdaptResult:
    """What an adaptation did: accuracies, the adapted model, memory and per-step losses."""

    model: EdgeModel
    accuracy_before: float | None
    accuracy_after: float | None
    runtime: str
    scope: str
    steps: int
    seconds: float
    memory: MemoryFigures
    losses: list[float] = field(default_factory=list)
    step_ms: float = 0.0
    program_bytes: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` record: exactly the keys the CLI promises."""
        m = self.memory
        return {
            "accuracy_before": self.accuracy_before,
            "accuracy_after": self.accuracy_after,
            "runtime": self.runtime,
            "scope": self.scope,
            "steps": self.steps,
            "seconds": round(self.seconds, 3),
            "memory": {"analytic_bytes": m.analytic_bytes, "planned_bytes": m.planned_bytes,
                       "measured_bytes": m.measured_bytes},  # fmt: skip
        }


def candidate_scopes(module: torch.nn.Module) -> list[Scope]:
    """Concrete scopes for ``auto``, by expected gain (trainable parameter count, largest first)."""
    from edgeopt.ondevice.scopes import trainable_names

    nblocks = len(blocks(module))
    cands = [Scope("all"), Scope("head"), Scope("bias"), Scope("lora", 4)]
    cands += [Scope("lastk", k) for k in range(2, min(4, nblocks))]
    if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in module.modules()):
        cands.append(Scope("bn"))
    sizes = dict(module.named_parameters())

    def count(s: Scope) -> int:
        if s.kind == "lora":
            work, names = prepare_scope(module, s)
            keep = set(names)
            return sum(p.numel() for n, p in work.named_parameters() if n in keep)
        return sum(sizes[n].numel() for n in trainable_names(module, s))

    ranked = sorted(((count(s), i, s) for i, s in enumerate(cands)), key=lambda t: (-t[0], t[1]))
    return [s for _, _, s in ranked]


def memory_figures(
    model: EdgeModel, scope: Scope, x: torch.Tensor, y: torch.Tensor, cfg: AdaptConfig,
    program: TrainingProgram | None = None, measure: bool = True,
) -> tuple[MemoryFigures, TrainingProgram]:  # fmt: skip
    """Analytic, planned and (if ``measure``) measured memory of ``scope``'s ExecuTorch training program.

    ``x``/``y`` are one training batch; under ``cfg.micro_batch_size`` the program takes a micro-batch of it
    and every figure counts gradient accumulation (:meth:`AdaptConfig.micro_batch`). Builds the program unless
    given. Cost: one export (seconds) and a measuring subprocess (seconds).
    """
    mb = cfg.micro_batch(int(x.shape[0]))
    accumulate = int(x.shape[0]) // mb
    x, y = x[:mb], y[:mb]
    work, trainable = prepare_scope(model.module, scope)
    parts = analytic_memory(work, x, y, cfg.momentum, accumulate)
    if program is None:
        program = build_training_program(work, trainable, x, y, cfg.frozen, [x], cfg.delegate)
    figs = MemoryFigures(parts["total"], planned_memory(program.buffer), None, parts)
    if measure:
        figs.measured_bytes = _measure(program.buffer, tuple(x.shape), model, cfg, accumulate)
    return figs, program


def _measure(buffer: bytes, shape: tuple[int, ...], model: EdgeModel, cfg: AdaptConfig, accumulate: int) -> int:
    """The measured figure of a program whose static batch has ``shape``, ``accumulate`` calls per step."""
    return int(measured_memory(buffer, shape, model.meta.num_classes, lr=cfg.lr, threads=cfg.threads,
                               accumulate=accumulate)["bytes"])  # fmt: skip


def choose_scope(
    model: EdgeModel, x: torch.Tensor, y: torch.Tensor, cfg: AdaptConfig, budget_kb: float,
    cache: dict[str, tuple[MemoryFigures, TrainingProgram]] | None = None, candidates: list[Scope] | None = None,
    micro_batches: bool = True,
) -> tuple[Scope, MemoryFigures, TrainingProgram, list[dict[str, Any]]]:  # fmt: skip
    """The scope with the best expected gain whose measured memory fits ``budget_kb``, and the candidates tried.

    A candidate whose planned buffers alone exceed the budget is skipped without measuring (the runtime
    allocates them in full). When none fits at the batch (``cfg.micro_batch_size`` unset, ``micro_batches``
    on), the candidates are tried again, in the same order, as micro-batches of 1 with gradient accumulation
    (the same data and updates, more calls per step); the first that fits then takes the largest divisor of the
    batch that still fits (the returned program's ``batch_size``). Nothing fits: ``EdgeoptError`` naming the
    smallest measured figure. ``cache`` (scope name, ``NAME@M`` for micro-batch M -> figures and program, same
    model, batch and settings) reuses figures already taken and keeps new ones; ``candidates`` replaces
    :func:`candidate_scopes` (kept in the order given). Cost: one program export and measurement per candidate
    tried and not cached; the micro-batch pass adds one per candidate and one per larger micro-batch tried.
    """
    budget = budget_kb * 1024
    batch = int(x.shape[0])
    tried: list[dict[str, Any]] = []
    scopes = list(candidates if candidates is not None else candidate_scopes(model.module))

    def attempt(scope: Scope, c: AdaptConfig) -> tuple[MemoryFigures, TrainingProgram] | None:
        mb = c.micro_batch(batch)
        key = scope.name if c.micro_batch_size is None else f"{scope.name}@{mb}"
        try:
            if cache is not None and key in cache:
                figs, program = cache[key]
            else:
                figs, program = memory_figures(model, scope, x, y, c, measure=False)
        except EdgeoptError as e:  # e.g. an int8 backbone under a scope that trains the first block
            tried.append({"scope": key, "refused": e.problem})
            return None
        row: dict[str, Any] = {"scope": key, "planned_bytes": figs.planned_bytes}
        tried.append(row)
        if figs.planned_bytes is not None and figs.planned_bytes > budget:
            row["fits"] = False
            return None
        if figs.measured_bytes is None:
            figs.measured_bytes = _measure(program.buffer, (mb, *x.shape[1:]), model, c, batch // mb)
        if cache is not None:
            cache[key] = (figs, program)
        row["measured_bytes"] = figs.measured_bytes
        row["fits"] = figs.measured_bytes <= budget
        return (figs, program) if row["fits"] else None

    with phase("choosing a scope"):
        for scope in scopes:
            if found := attempt(scope, cfg):
                return scope, *found, tried
        if micro_batches and cfg.micro_batch_size is None and batch > 1:
            for scope in scopes:
                if not (found := attempt(scope, AdaptConfig(**{**cfg.__dict__, "micro_batch_size": 1}))):
                    continue
                for mb in (d for d in range(2, batch) if batch % d == 0):  # memory grows with the micro-batch
                    if not (larger := attempt(scope, AdaptConfig(**{**cfg.__dict__, "micro_batch_size": mb}))):
                        break
                    found = larger
                return scope, *found, tried
    measured = [r for r in tried if r.get("measured_bytes") is not None]
    planned = [r for r in tried if r.get("planned_bytes") is not None]
    if measured:
        best = min(measured, key=lambda r: r["measured_bytes"])
        figure = f"{best['scope']} measured {best['measured_bytes'] / 1024:.0f} KB"
    elif planned:
        best = min(planned, key=lambda r: r["planned_bytes"])
        figure = f"{best['scope']} needs {best['planned_bytes'] / 1024:.0f} KB in planned buffers alone"
    else:
        figure = "no scope could be built"
    raise EdgeoptError(f"no trainable scope fits {budget_kb:g} KB (smallest: {figure})",
                       "raise --memory-budget-kb, lower --batch-size, or use a smaller model")  # fmt: skip


def _accuracy_torch(model: EdgeModel, data: ImageDataset) -> float:
    from edgeopt.train import evaluate

    return evaluate(model, data).accuracy


def adapt(model: EdgeModel, train: ImageDataset, test: ImageDataset | None, cfg: AdaptConfig) -> AdaptResult:
    """Fine-tune ``model`` on ``train`` inside ``cfg.runtime``; accuracy before/after on ``test`` (if given).

    ExecuTorch measures both accuracies with the training program itself (its prediction output, no update);
    torch and litert in PyTorch on the weights read back. The returned model is a copy with the adapted
    weights and one more lineage step. Cost: the export (seconds), ``steps`` training steps, one pass over
    ``test`` twice, and for ExecuTorch the measuring subprocess (seconds).
    """
    refuse_multi_output(model, "adapt (on-device learning)")
    if cfg.runtime not in RUNTIMES:
        raise EdgeoptError(f"unknown training runtime '{cfg.runtime}'", "use executorch, litert or torch")
    if cfg.batch_size < 1:
        raise EdgeoptError("--batch-size must be at least 1")
    if cfg.frozen != "float" and cfg.runtime != "executorch":
        raise EdgeoptError(f"an {cfg.frozen} frozen part needs --runtime executorch")
    train, _ = match_classes(model.meta.class_names, model.meta.num_classes, train)
    if test is not None:
        test, _ = match_classes(model.meta.class_names, model.meta.num_classes, test)
    batch = min(cfg.batch_size, len(train))
    cfg = AdaptConfig(**{**cfg.__dict__, "batch_size": batch})
    cfg.micro_batch(batch)  # refuses a micro-batch that does not divide the batch
    steps = cfg.num_steps(len(train))
    start = time.perf_counter()
    data = list(make_batches(train, model.meta.input, batch, steps, cfg.seed))
    x0, y0 = data[0]
    scope = parse_scope(cfg.scope)
    figs: MemoryFigures | None = None
    program: TrainingProgram | None = None
    detail: dict[str, Any] = {}
    if scope.kind == "auto":
        if cfg.memory_budget_kb is None:
            raise EdgeoptError("--scope auto needs --memory-budget-kb", "for example --memory-budget-kb 512")
        if cfg.runtime == "litert":
            raise EdgeoptError("--scope auto is for --runtime executorch or torch", "use --scope head with litert")
        scope, figs, program, detail["candidates"] = choose_scope(model, x0, y0, cfg, cfg.memory_budget_kb)
    if cfg.runtime == "litert":
        from edgeopt.ondevice.litert import litert_adapt

        return litert_adapt(model, scope, data, test, cfg, start)
    work, trainable = prepare_scope(model.module, scope)
    if cfg.runtime == "executorch" or cfg.memory_budget_kb is not None:
        if program is None:
            with phase("exporting the training program"):
                figs, program = memory_figures(model, scope, x0, y0, cfg, measure=cfg.measure or
                                               cfg.memory_budget_kb is not None)  # fmt: skip
        assert figs is not None
        if cfg.memory_budget_kb is not None and (figs.measured_bytes or 0) > cfg.memory_budget_kb * 1024:
            raise EdgeoptError(
                f"scope {scope.name} needs {figs.measured_bytes / 1024:.0f} KB measured, over the "  # type: ignore[operator]
                f"{cfg.memory_budget_kb:g} KB budget", "use --scope auto, a smaller scope, or a smaller --batch-size")
    else:
        parts = analytic_memory(work, x0, y0, cfg.momentum)
        figs = MemoryFigures(parts["total"], None, None, parts)
    out = EdgeModel(_copy_module(model.module), model.meta)
    if cfg.runtime == "executorch":
        assert program is not None
        trainer = ExecuTorchTrainer(program.buffer, cfg.lr, cfg.momentum, cfg.clip_norm, cfg.threads,
                                    micro_batch=program.batch_size)  # fmt: skip
        before = trainer.accuracy(test, model.meta.input, batch) if test is not None else None
        loop = trainer.train(data)
        after = trainer.accuracy(test, model.meta.input, batch) if test is not None else None
        _load_trained(work, trainer.parameters(), trainable)
        detail.update(frozen=program.frozen, delegated_parameters=len(program.delegated),
                      accuracy_measured_in="executorch training program",
                      micro_batch_size=program.batch_size)  # fmt: skip
        detail.update(program.detail)
    else:
        before = _accuracy_torch(model, test) if test is not None else None
        loop: LoopResult = torch_train(work, data, cfg.lr, cfg.momentum, cfg.clip_norm)  # type: ignore[no-redef]
        after = None
    finish_scope(work, out.module)
    step: dict[str, Any] = {"pass": "adapt", "scope": scope.name, "runtime": cfg.runtime, "steps": steps, "lr": cfg.lr,
                            "batch_size": batch, "frozen": cfg.frozen}  # fmt: skip
    if cfg.runtime == "executorch" and program is not None and program.batch_size < batch:  # given, or auto's
        step["micro_batch_size"] = program.batch_size
    out = out.with_lineage(step)
    if after is None and test is not None:
        after = _accuracy_torch(out, test)
    if cfg.runtime == "executorch" and cfg.frozen == "float" and test is not None:
        detail["accuracy_after_torch"] = _accuracy_torch(out, test)
    return AdaptResult(out, before, after, cfg.runtime, scope.name, steps, time.perf_counter() - start, figs,
                       loop.losses, loop.step_ms, program.size_bytes if program else None, detail)  # fmt: skip


def _copy_module(module: torch.nn.Module) -> torch.nn.Module:
    import copy

    return copy.deepcopy(module).eval()


def _load_trained(work: torch.nn.Module, trained: dict[str, torch.Tensor], trainable: list[str]) -> None:
    """Copy the runtime's trained parameters into ``work``; every trainable one must come back."""
    own = dict(work.named_parameters())
    missing = [n for n in trainable if n not in trained]
    if missing:
        raise EdgeoptError(f"the runtime did not return trained parameter '{missing[0]}'",
                           "re-export the training program")  # fmt: skip
    with torch.no_grad():
        for name in trainable:
            value = trained[name]
            if not torch.isfinite(value).all():
                raise EdgeoptError(f"training diverged: parameter '{name}' holds NaN or Inf", "lower --lr")
            own[name].copy_(value)


def export_training_program(
    model: EdgeModel, scope: str, out: str | Path, batch_size: int = 32, frozen: str = "float"
) -> dict[str, Any]:
    """Write the ExecuTorch training program an app would ship for ``scope`` (static ``batch_size``).

    ``scope`` must be concrete (not ``auto``). The program's method ``forward`` takes ``(images, int64 labels)``
    and returns the loss, the predicted classes, the gradients and the parameters (ExecuTorch's training
    module and SGD consume them). Cost: one export (seconds).
    """
    refuse_multi_output(model, "export --trainable (on-device learning)")
    from edgeopt.fileio import write_bytes_atomic

    parsed = parse_scope(scope)
    if parsed.kind == "auto":
        raise EdgeoptError("--trainable auto needs a budget", "name a scope (head, bias, lastk:2, ...)")
    work, trainable = prepare_scope(model.module, parsed)
    x = model.example_input(batch_size)
    y = torch.zeros(batch_size, dtype=torch.int64)
    program = build_training_program(work, trainable, x, y, frozen, [x])
    path = write_bytes_atomic(Path(out), program.buffer)
    return {
        "artifact": str(path),
        "format": "pte",
        "trainable": parsed.name,
        "trainable_parameters": len(trainable),
        "frozen": frozen,
        "delegated_parameters": len(program.delegated),
        "batch_size": batch_size,
        "size_bytes": program.size_bytes,
        "planned_bytes": planned_memory(program.buffer),
    }
