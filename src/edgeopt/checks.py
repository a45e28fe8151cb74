"""Numeric settings checked before any work starts, with one-line errors.

A parameter name means the same thing everywhere in edgeopt (a recipe pass's ``lr``, the CLI's
``--lr``, ``FitConfig.lr``), so its valid range is stated once, here, and every config, workflow
and recipe pass checks its numbers through :func:`check_numbers` before it trains or writes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from edgeopt.errors import EdgeoptError


def _gt(lo: float) -> tuple[str, Callable[[float], bool]]:
    return f"> {lo:g}", lambda v: v > lo


def _ge(lo: float) -> tuple[str, Callable[[float], bool]]:
    return f">= {lo:g}", lambda v: v >= lo


def _within(lo: float, hi: float, lo_open: bool = False, hi_open: bool = False) -> tuple[str, Callable[[float], bool]]:
    text = f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    return text, lambda v: (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)


RULES: dict[str, tuple[str, Callable[[float], bool]]] = {
    # training
    "lr": _gt(0),
    "server_lr": _gt(0),
    "epochs": _ge(0),
    "prune_epochs": _ge(0),
    "cluster_epochs": _ge(0),
    "qat_epochs": _ge(0),
    "local_epochs": _ge(1),
    "rounds": _ge(1),
    "steps": _ge(1),
    "batch_size": _ge(1),
    "momentum": _within(0, 1, hi_open=True),
    "weight_decay": _ge(0),
    "label_smoothing": _within(0, 1, hi_open=True),
    "warmup_epochs": _ge(0),
    "threads": _ge(1),
    # distillation
    "temperature": _gt(0),
    "alpha": _within(0, 1),
    "hint_weight": _ge(0),
    # compression
    "ratio": _within(0, 1, hi_open=True),
    "sparsity": _within(0, 1, hi_open=True),
    "bits": _within(1, 8),
    "float_bits": _within(1, 32),
    "round_to": _ge(1),
    "min_keep": _ge(1),
    "target_macs": _ge(1),
    "target_latency_ms": _gt(0),
    "target_arena_kb": _gt(0),
    "latency_budget_ms": _gt(0),
    "calib_samples": _ge(1),
    "max_drop": _ge(0),
    "budget": _within(0, 1, lo_open=True),
    "energy": _within(0, 1, lo_open=True),
    # federated
    "mu": _ge(0),
    "dropout": _within(0, 1, hi_open=True),
    "min_completion": _within(0, 1, lo_open=True),
    "dp_clip": _gt(0),
    "dp_noise": _ge(0),
    "deadline": _gt(0),
    "clients": _ge(1),
    "per_round": _ge(1),
    "eval_limit": _ge(1),
}


def check_numbers(values: Mapping[str, Any], where: str = "", skip: tuple[str, ...] = ()) -> None:
    """Raise a one-line :class:`EdgeoptError` for the first number outside its range in ``RULES``.

    ``values`` maps parameter names to values (None and names without a rule pass); ``where``
    prefixes the message (e.g. ``"recipe pass 'train': "``); ``skip`` names parameters the caller
    checks itself because they mean something else there. Pure.
    """
    for name, value in values.items():
        rule = RULES.get(name)
        if rule is None or name in skip or value is None or isinstance(value, bool):
            continue
        if not isinstance(value, int | float):
            continue  # types are the caller's check (recipes validate them first)
        text, ok = rule
        if math.isnan(value) or not ok(value):
            raise EdgeoptError(f"{where}{name} must be {text} (got {value:g})")
