"""The device budget of ``edgeopt optimize``: ``--target latency_ms=X[,arena_kb=A][,flash_kb=F][,energy_mj=E]``
plus ``--max-drop P``, and which limits a candidate's figures miss.

``parse_target`` reads the flag (one-line errors for unknown keys, bad numbers, a missing latency);
``Budget.misses`` compares figures (measured or predicted) with every limit and names each one
missed with its value, the limit and how far over it is. Pure.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from edgeopt.errors import EdgeoptError

KIB = 1024
TARGET_KEYS = ("latency_ms", "arena_kb", "flash_kb", "energy_mj")
EXAMPLE = "--target latency_ms=0.1,flash_kb=40"


@dataclass(frozen=True)
class Budget:
    """Every limit a chosen artifact must meet as measured; ``None``: not limited."""

    latency_ms: float
    max_drop: float  # accuracy points below the input model's accuracy (measured in the same runtime)
    arena_kb: float | None = None
    flash_kb: float | None = None
    energy_mj: float | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.max_drop, int | float) and math.isfinite(self.max_drop) and self.max_drop >= 0):
            raise EdgeoptError(f"--max-drop must be >= 0 points, not {self.max_drop}", "e.g. --max-drop 1.0")

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def limits(self, base_accuracy: float) -> dict[str, float]:
        """Each limit in the units the figures use: ms, bytes, mJ, and the lowest accuracy allowed."""
        out = {"latency_ms": self.latency_ms, "accuracy": base_accuracy - self.max_drop / 100}
        if self.arena_kb is not None:
            out["arena_bytes"] = self.arena_kb * KIB
        if self.flash_kb is not None:
            out["flash_bytes"] = self.flash_kb * KIB
        if self.energy_mj is not None:
            out["energy_mj"] = self.energy_mj
        return out

    def violations(self, figures: dict[str, Any], base_accuracy: float) -> dict[str, float]:
        """Per limit: ``value/limit - 1`` (accuracy: ``(limit - value)/points allowed``); <= 0 is met."""
        out = {}
        for key, limit in self.limits(base_accuracy).items():
            value = figures.get(key)
            if value is None:
                continue
            if key == "accuracy":
                out[key] = (limit - value) / max(self.max_drop / 100, 1e-4)
            else:
                out[key] = value / limit - 1
        return out

    def misses(self, figures: dict[str, Any], base_accuracy: float) -> list[dict[str, Any]]:
        """The limits ``figures`` miss: ``{"limit", "value", "allowed", "over"}`` each, worst first."""
        limits = self.limits(base_accuracy)
        out = [
            {"limit": key, "value": figures[key], "allowed": limits[key], "over": round(v, 4)}
            for key, v in self.violations(figures, base_accuracy).items()
            if v > 0
        ]
        return sorted(out, key=lambda m: -m["over"])


def parse_target(text: str, max_drop: float) -> Budget:
    """``latency_ms=0.1,flash_kb=40`` (and ``--max-drop``) as a :class:`Budget`. Pure."""
    values: dict[str, float] = {}
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        key, sep, raw = part.partition("=")
        key = key.strip().lower()
        if not sep or key not in TARGET_KEYS:
            raise EdgeoptError(
                f"--target part '{part}' is not KEY=VALUE with KEY one of {', '.join(TARGET_KEYS)}",
                f"for example {EXAMPLE}",
            )
        if key in values:
            raise EdgeoptError(f"--target sets {key} twice", f"for example {EXAMPLE}")
        try:
            value = float(raw)
        except ValueError as e:
            raise EdgeoptError(f"--target {key}={raw.strip()} is not a number", f"for example {EXAMPLE}") from e
        if not (math.isfinite(value) and value > 0):
            raise EdgeoptError(f"--target {key} must be a positive number, not {raw.strip()}")
        values[key] = value
    if "latency_ms" not in values:
        raise EdgeoptError("--target needs latency_ms=X (the batch-1 p50 limit in the runtime)", f"e.g. {EXAMPLE}")
    return Budget(max_drop=max_drop, **values)


def describe_miss(miss: dict[str, Any]) -> str:
    """``flash_bytes 52,100 > 40,960`` / ``accuracy 0.741 < 0.745``: one missed limit in words. Pure."""
    key, value, allowed = miss["limit"], miss["value"], miss["allowed"]
    if key == "accuracy":
        return f"accuracy {value:.2%} < {allowed:.2%}"
    if key.endswith("_bytes"):
        return f"{key.removesuffix('_bytes')} {value / KIB:.1f} KB > {allowed / KIB:.1f} KB"
    return f"{key} {value:.4g} > {allowed:.4g}"
