"""The input value range a model file states, where it states one.

Two places say it: the quantization parameters of an integer input (the float values its
scale and zero point can represent: int8 with scale 1 and zero point -128 is 0..255, the
MLPerf Tiny int8 ResNet-8), and normalisation ops at the start of the graph (``x / 255``,
``(x - 127.5) / 127.5``, ``(x - mean) / std``): the range those ops map onto a few units
around zero is the range the model was trained on. A float model without such ops (the
MLPerf float ResNet-8) says nothing; its range must be given (``--input-range``).
All functions here are pure.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

# ranges models are commonly trained on; an inferred range within SNAP of one is reported as it
COMMON_RANGES: tuple[tuple[float, float], ...] = ((0.0, 1.0), (0.0, 255.0), (-1.0, 1.0), (-128.0, 127.0))
SNAP = 0.02  # fraction of the range's span
GRAPH_CANDIDATES: tuple[tuple[float, float], ...] = ((0.0, 1.0), (0.0, 255.0))
NORMALISED_MAX = 4.0  # |values| a normalised input stays within
NORMALISED_MIN_SPAN = 0.5  # ... and the span it covers at least

_PASS_THROUGH = {"permute", "reshape", "identity"}
_AFFINE = {"add", "sub", "mul", "div"}


def snap_range(lo: float, hi: float) -> tuple[float, float]:
    """``(lo, hi)``, or the common range it is within ``SNAP`` of its span from."""
    span = hi - lo
    for clo, chi in COMMON_RANGES:
        if abs(lo - clo) <= SNAP * span and abs(hi - chi) <= SNAP * span:
            return clo, chi
    return float(lo), float(hi)


def range_from_quantization(scale: float, zero_point: int, dtype: np.dtype | str) -> tuple[float, float]:
    """The float range an integer tensor of ``dtype`` represents with ``scale`` and ``zero_point``."""
    info = np.iinfo(np.dtype(dtype))
    lo, hi = (info.min - zero_point) * scale, (info.max - zero_point) * scale
    return snap_range(float(lo), float(hi))


def _affine_prefix(ir: dict[str, Any], weights: dict[str, torch.Tensor]) -> tuple[np.ndarray, np.ndarray] | None:
    """(a, b) with the graph's leading elementwise ops computing ``a * x + b``, or None if it has none."""
    consts: dict[str, np.ndarray] = {}
    consumers: dict[str, list[dict[str, Any]]] = {}
    for node in ir["nodes"]:
        if node["op"] == "const":
            w = weights.get(f"consts.{node['name']}")
            if w is not None and w.is_floating_point():
                consts[node["outputs"][0]] = w.detach().cpu().numpy().astype(np.float64)
        for v in node["inputs"]:
            consumers.setdefault(v, []).append(node)
    value = ir["inputs"][0]["name"]
    a, b = np.ones(1), np.zeros(1)
    found = False
    while len(consumers.get(value, [])) == 1:
        node = consumers[value][0]
        op, ins = node["op"], node["inputs"]
        if op in _PASS_THROUGH:
            value = node["outputs"][0]
            continue
        if op not in _AFFINE or len(ins) != 2 or ins.count(value) != 1:
            break
        other = ins[1] if ins[0] == value else ins[0]
        c = consts.get(other)
        if c is None:
            break
        first = ins[0] == value
        if op == "mul":
            a, b = a * c, b * c
        elif op == "div" and first:
            a, b = a / c, b / c
        elif op == "add":
            b = b + c
        elif op == "sub":
            a, b = (a, b - c) if first else (-a, c - b)
        else:  # c / x is not affine
            break
        found = True
        value = node["outputs"][0]
    return (a, b) if found else None


def range_from_graph(ir: dict[str, Any], weights: dict[str, torch.Tensor]) -> tuple[float, float] | None:
    """The input range the graph's leading normalisation ops expect, or None when they do not say.

    Of ``GRAPH_CANDIDATES``, the one range the ops map into ``±NORMALISED_MAX`` while covering at
    least ``NORMALISED_MIN_SPAN``; None when there are no such ops or no single candidate fits.
    """
    if len(ir.get("inputs", [])) != 1:
        return None
    prefix = _affine_prefix(ir, weights)
    if prefix is None:
        return None
    a, b = prefix
    fits = []
    for lo, hi in GRAPH_CANDIDATES:
        try:
            ends = np.concatenate([np.ravel(a * lo + b), np.ravel(a * hi + b)])
        except ValueError:  # constants that do not broadcast together (a permute between them)
            return None
        if not np.all(np.isfinite(ends)):
            return None
        if np.abs(ends).max() <= NORMALISED_MAX and np.abs(a * (hi - lo)).min() >= NORMALISED_MIN_SPAN:
            fits.append((lo, hi))
    return fits[0] if len(fits) == 1 else None
