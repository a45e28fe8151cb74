"""The recipes ``edgeopt optimize`` searches: ordered passes and their parameters, sampled define-by-run.

A candidate is ``[prune?] -> [quantize?] -> export``, written as the passes of an ordinary recipe
(``edgeopt.pipeline.recipe``), so the chosen one is a ``best.yaml`` that ``edgeopt recipe`` runs:

- **prune** (channel pruning, or not): ratio of MACs removed, allocation (``uniform``, ``global``, and
  ``latency`` — from the runtime's calibrated profile, only when one exists — with how much the weights a cut saves
  count beside its time, ``size_weight``), channel rounding, and whether the
  recovery distills from the input model (knowledge distillation) or learns from labels. The recovery's length is
  not searched: screening cannot see it (it leaves training out), and more recovery is better while time allows, so
  confirmation gives each pruned finalist as many epochs as fit in its share of the time left (``with_recovery``).
- **quantize** (or stay float): int8 PTQ with a calibration method and sample count, or QAT; and whether the stem
  (the layer reading the input) stays float — mixed precision where it pays: a 3-channel int8 convolution is
  slower than float in all three runtimes on an AVX-512 CPU (docs/quantization.md).

int4 and mixed int4/int8 weights are not searched: none of the three runtimes executes a static-int8
convolution with 4-bit weights (docs/quantization.md), so their artifacts store int8 bytes and only
lose accuracy. Architecture search (``edgeopt search``) is not part of the space yet.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

CALIBRATIONS = ("minmax", "percentile", "entropy", "mse")


def sample_passes(
    trial: Any, runtime: str, epochs: tuple[int, ...] = (1, 2, 3), profiled: bool = False
) -> list[dict[str, Any]]:
    """One candidate recipe's passes (``[{name: params}, ...]``), each choice a parameter of ``trial``; a prune
    pass has no ``epochs`` yet (``with_recovery`` sets them).

    ``epochs``: the QAT lengths searched. ``profiled``: the runtime has a calibrated latency profile, so
    ``latency`` allocation (which asks it) is searched too.
    """
    from edgeopt.runtimes import RUNTIME_FORMAT

    cat: Callable[..., Any] = trial.suggest_categorical
    passes: list[dict[str, Any]] = []
    if cat("prune", [True, False]):
        prune = {
            "method": "channel",
            # up to 0.9: a latency allocation that cuts the cheap early convolutions keeps the late, weight-heavy
            # ones, so at 0.8 of the MACs ResNet-8's int8 .pte was still 43 KB against a 40 KB flash limit
            "ratio": trial.suggest_float("prune_ratio", 0.2, 0.9, step=0.05),
            "allocation": (
                cat("allocation_profiled", ["uniform", "global", "latency"])
                if profiled
                else cat("allocation", ["uniform", "global"])
            ),
            "round_to": cat("round_to", [4, 8, 16]),
            "min_keep": 4,
            "distill": cat("distill", [True, False]),
        }
        if prune["allocation"] == "latency":
            prune["runtime"] = runtime
            # weights saved beside time saved: ExecuTorch's latency allocation of ResNet-8 at 0.8 keeps the last,
            # weight-heavy stage whole (a 43 KB .pte); at 0.5 it keeps 48 of its 64 channels (38 KB)
            prune["size_weight"] = cat("size_weight", [0.0, 0.5, 1.0])
        passes.append({"prune": prune})
    quant = cat("quantize", ["ptq", "qat", "none"])
    if quant != "none":
        q: dict[str, Any] = {"method": quant, "calib": cat("calib", list(CALIBRATIONS))}
        if cat("float_stem", [False, True]):
            q["float_ops"] = ["stem"]
        if quant == "ptq":
            q["calib_samples"] = cat("calib_samples", [128, 256, 512])
        else:
            q["qat_epochs"] = cat("qat_epochs", list(epochs))
        passes.append({"quantize": q})
    passes.append({"export": {"formats": [RUNTIME_FORMAT[runtime]]}})
    return passes


def prunes(passes: list[dict[str, Any]]) -> bool:
    """Whether the candidate prunes (and so needs a recovery). Pure."""
    return any(next(iter(p)) == "prune" for p in passes)


def with_recovery(passes: list[dict[str, Any]], epochs: int) -> list[dict[str, Any]]:
    """``passes`` with ``epochs`` of recovery after pruning (a new list; the others unchanged). Pure."""
    return [{"prune": {**p["prune"], "epochs": epochs}} if "prune" in p else p for p in passes]


# the prune pass's parameters that set how it recovers, not which channels it keeps
RECOVERY_PARAMS = frozenset({"epochs", "distill", "distill_from", "temperature", "alpha", "lr", "optimizer"})


def structure(passes: list[dict[str, Any]]) -> str:
    """What decides the candidate's architecture: its prune pass without its recovery settings (``""`` when it does
    not prune). Candidates alike in it differ only in quantization and training. Pure."""
    for p in passes:
        if "prune" in p:
            return json.dumps({k: v for k, v in p["prune"].items() if k not in RECOVERY_PARAMS}, sort_keys=True)
    return ""


def training_epochs(passes: list[dict[str, Any]]) -> int:
    """Epochs over the training data the passes spend (pruning recovery, QAT). Pure."""
    total = 0
    for p in passes:
        ((name, params),) = p.items()
        if name == "prune":
            total += int(params.get("epochs", 0))
        elif name == "quantize" and params.get("method") == "qat":
            total += int(params.get("qat_epochs", 2))
    return total


def describe(passes: list[dict[str, Any]]) -> str:
    """``prune 0.5 global e2 KD → int8 PTQ entropy/256``: a candidate in one short line. Pure."""
    words = []
    for p in passes:
        ((name, q),) = p.items()
        if name == "prune":
            kd = " KD" if q.get("distill") else ""
            epochs = f" e{q['epochs']}" if "epochs" in q else ""
            size = f"+size{q['size_weight']:g}" if q.get("size_weight") else ""
            words.append(f"prune {q['ratio']:.2f} {q['allocation']}{size}/{q['round_to']}{epochs}{kd}")
        elif name == "quantize":
            extra = f"/{q['calib_samples']}" if q["method"] == "ptq" else f" e{q['qat_epochs']}"
            stem = ", float stem" if "stem" in q.get("float_ops", []) else ""
            words.append(f"int8 {q['method'].upper()} {q['calib']}{extra}{stem}")
    return " → ".join(words) or "float, unchanged"
