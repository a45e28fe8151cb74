"""Which architectures to time for a transfer: a D-optimal design over the base predictor's view of them,
or, across kernel libraries, the models whose kernels cover the candidates' kernels best.

``LatencyPredictor.transferred`` re-targets a profile from about twenty timings, and which twenty
decides much: a random draw may hold no depthwise-heavy model, and the group stage then guesses the
depthwise scale. In the style of LitePred's and nn-Meter's samplers, the architectures to time are
chosen instead: many candidates are drawn (``sample_arch``; cheap, no runtime), the base predictor
describes each (``design_features``), and a greedy D-optimal design (``d_optimal``) keeps those that
span the description best. Only the kept ones are exported and timed.

Across kernel libraries (``calibrate.other_library``) the base's kernel costs do not carry over and
the transfer fits a per-kernel model of its own on the timed models' profiled kernels
(``LatencyPredictor.from_kernel_times``). What such a fit needs is kernels like the ones it will
price, so there the models are kept for their kernels instead (``kernel_coverage``), in the way
nn-Meter samples kernels rather than models.

Measured on a 2-core AMD EPYC (2026-12-06, 16 draws of 100 candidates among each target's timed
held-out models, 20 kept, scored on 100 others; benchmarks/hardware.py): see docs/hardware.md,
"A designed transfer set" and "Across kernel libraries, models chosen for their kernels".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edgeopt.hardware.kernels import KERNEL_TYPES, Kernel
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


def kernel_descriptions(models: Sequence[Sequence[Kernel]]) -> list[np.ndarray]:
    """Per model, one row per kernel: its type (one-hot), log MACs, kernel size, stride, log output
    size, log bytes in, out and of weights, log channels in and out (from ``kernel_features``). Pure."""
    from edgeopt.hardware.kernel_model import FEATURES, kernel_features

    numeric = [FEATURES.index(f) for f in ("log_macs", "k", "stride", "log_hw", "log_in_bytes", "log_out_bytes",
                                           "log_weight_bytes")]  # fmt: skip
    out = []
    for m in models:
        f = kernel_features(m)
        types = np.eye(len(KERNEL_TYPES))[f[:, FEATURES.index("type")].astype(int)]
        channels = np.log1p(f[:, [FEATURES.index("cin"), FEATURES.index("cout")]])
        out.append(np.column_stack([f[:, numeric], channels, types]))
    return out


def kernel_coverage(models: Sequence[Sequence[Kernel]], n: int, gamma: float = 0.1) -> list[int]:
    """Indices of ``n`` models chosen greedily so that every kernel of all ``models`` has a kept kernel like
    it: each step keeps the model that most raises Σ over all kernels of the similarity to the nearest
    kept one, ``exp(-gamma · distance²)`` on standardised ``kernel_descriptions`` (facility location).
    Pure. Cost: O(n · models · kernels²) similarities; ~0.5 s for 100 candidates of ~15 kernels.

    Written here because scikit-learn and SciPy select no subset of groups (models) by the coverage of
    their members (kernels); the greedy step is the textbook one for a submodular objective, ten lines.
    Measured (2-core AMD EPYC, 2026-12-06, benchmarks/hardware.py: 16 draws of 100 candidates among
    each target's held-out models, 20 kept, scored on 100 others, ``from_kernel_times``): a mean of
    63.0–65.0% within ±10% between ONNX Runtime and the XNNPACK runtimes, against 53.1–59.4% with
    ``d_optimal``; the kept models hold ~1.5× as many kernels."""
    rows = kernel_descriptions(models)
    every = np.vstack([np.zeros((0, rows[0].shape[1] if rows else 1)), *rows])
    mean, std = every.mean(axis=0), every.std(axis=0) + 1e-9
    every = (every - mean) / std

    def reach(r: np.ndarray) -> np.ndarray:  # each kernel's similarity to the nearest of this model's
        if not len(r):
            return np.zeros(len(every))
        return np.exp(-gamma * ((every[:, None, :] - (r - mean) / std) ** 2).sum(-1)).max(axis=1)

    reaches = [reach(r) for r in rows]
    covered, kept = np.zeros(len(every)), []
    for _ in range(min(n, len(rows))):
        gain = np.array([np.maximum(covered, r).sum() for r in reaches])
        gain[kept] = -np.inf
        best = int(np.argmax(gain))
        kept.append(best)
        covered = np.maximum(covered, reaches[best])
    return kept


def design_order(
    predictor: LatencyPredictor, models: Sequence[Sequence[Kernel]], by_kernels: bool = False
) -> list[int]:
    """All of ``models``' indices in the order a transfer times them: ``d_optimal`` on ``design_features``,
    or with ``by_kernels`` (across kernel libraries) ``kernel_coverage``. Pure."""
    if by_kernels:
        return kernel_coverage(models, len(models))
    return d_optimal(design_features(predictor, models), len(models))


def designed_specs(predictor: LatencyPredictor, seed: int = 1, candidates: int = 100,
                   by_kernels: bool = False) -> list[dict[str, Any]]:  # fmt: skip
    """``candidates`` architectures drawn with ``seed``, in ``design_order``: a transfer times the first n
    that export, a later one standing in for one the runtime rejects. Cost: one graph export per
    candidate (~0.25 s each on 2 cores), no runtime."""
    from edgeopt.hardware.archs import arch_model, sample_arch
    from edgeopt.hardware.kernels import kernels_of_model
    from edgeopt.progress import progress_iter

    rng = np.random.default_rng(seed)
    specs = [sample_arch(rng) for _ in range(candidates)]
    models = [kernels_of_model(arch_model(spec)) for spec in progress_iter(specs, "choosing the models to time")]
    return [specs[i] for i in design_order(predictor, models, by_kernels)]
