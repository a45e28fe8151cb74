"""Which architectures to time for a transfer: a D-optimal design over the base predictor's view of them.

``LatencyPredictor.transferred`` re-targets a profile from about twenty timings, and which twenty
decides much: a random draw may hold no depthwise-heavy model, and the group stage then guesses the
depthwise scale. In the style of LitePred's and nn-Meter's samplers, the architectures to time are
chosen instead: many candidates are drawn (``sample_arch``; cheap, no runtime), the base predictor
describes each (``design_features``), and a greedy D-optimal design (``d_optimal``) keeps those that
span the description best. Only the kept ones are exported and timed.

Measured on a 2-core AMD EPYC (2026-12-06, 16 draws of 100 candidates among each target's timed
held-out models, 20 kept, scored on 100 others; benchmarks/hardware.py): see docs/hardware.md,
"A designed transfer set".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edgeopt.hardware.kernels import Kernel
from edgeopt.hardware.predictor import LatencyPredictor


def design_features(predictor: LatencyPredictor, models: Sequence[Sequence[Kernel]]) -> np.ndarray:
    """Per model: each kernel group's share of the base predictor's kernel time, the log of its predicted
    time and the log of its kernel count — what a transfer's group scales, per-kernel cost and speedup
    are fitted against. Pure."""
    groups = np.maximum(predictor.group_ms(models), 0.0)
    shares = groups / np.maximum(groups.sum(axis=1, keepdims=True), 1e-12)
    return np.column_stack([shares, np.log(predictor.predict_many(models)), np.log([max(len(m), 1) for m in models])])


def d_optimal(features: np.ndarray, n: int, ridge: float = 1e-3) -> list[int]:
    """Indices of ``n`` rows of ``features`` chosen greedily to maximise ``det(Xᵀ X)`` (X: the rows,
    standardised, with a constant column): each step adds the row with the largest prediction variance
    ``x (Xᵀ X + ridge·I)⁻¹ xᵀ`` under the rows kept so far. Pure.

    Written here because neither scikit-learn nor SciPy selects a D-optimal subset of given candidates;
    the greedy step is the textbook one (Fedorov's exchange without the exchange), ten lines."""
    x = (features - features.mean(axis=0)) / (features.std(axis=0) + 1e-12)
    x = np.column_stack([x, np.ones(len(x))])
    info = ridge * np.eye(x.shape[1])
    kept: list[int] = []
    for _ in range(min(n, len(x))):
        variance = np.einsum("ij,jk,ik->i", x, np.linalg.inv(info), x)
        variance[kept] = -np.inf
        best = int(np.argmax(variance))
        kept.append(best)
        info += np.outer(x[best], x[best])
    return kept


def designed_specs(predictor: LatencyPredictor, seed: int = 1, candidates: int = 100) -> list[dict[str, Any]]:
    """``candidates`` architectures drawn with ``seed``, in the order ``d_optimal`` keeps them on their
    ``design_features``: a transfer times the first n that export, a later one standing in for one the
    runtime rejects. Cost: one graph export per candidate (~0.25 s each on 2 cores), no runtime."""
    from edgeopt.hardware.archs import arch_model, sample_arch
    from edgeopt.hardware.kernels import kernels_of_model
    from edgeopt.progress import progress_iter

    rng = np.random.default_rng(seed)
    specs = [sample_arch(rng) for _ in range(candidates)]
    models = [kernels_of_model(arch_model(spec)) for spec in progress_iter(specs, "choosing the models to time")]
    return [specs[i] for i in d_optimal(design_features(predictor, models), candidates)]
