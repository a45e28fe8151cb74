"""A per-kernel latency model: each kernel's time from its features and its place in the model.

nn-Meter predicts each fused kernel with its own regressor and sums them. This is that regressor,
fitted on kernel times the runtime's profiler gave during calibration (``hardware.op_timings``),
brought in line with the whole-model timings first (``consistent_kernel_us``): one LightGBM model
over all kernel types (the type is a categorical feature), stored as LightGBM's own text model,
never as a pickle.

What a kernel costs depends on more than its shape, as measured on ONNX Runtime calibration
models (2026-12-05): convolutions with the same shapes in different models differ by a median 9%,
and by over 10% in half the cases. Most of that follows the kernel's neighbours (ONNX Runtime
folds a following add into a convolution and reorders the layout before a pooling) and the whole
model's size (a large model's weights leave the cache between calls). So each kernel's features
include the kernel types before and after it and the model's total weight and activation bytes;
with them the per-kernel fit went from 70% to 87% of models whose kernel times sum to within ±10%
of the profiled sum (5-fold, 260 models).

The regressor predicts ``log(time / base)``, where ``base`` is a crude cost (MACs with output
channels padded to the SIMD block, plus bytes moved): a kernel's efficiency varies far less than
its time, which spans four orders of magnitude, so trees fit it with fewer splits. Pure apart from
LightGBM.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgeopt.hardware.kernels import KERNEL_TYPES, Kernel
from edgeopt.hardware.predictor import SIMD_BLOCK, booster, ceil_to, valid_fraction

ACTIVATIONS = ("relu", "relu6", "hardtanh", "clamp", "hardsigmoid", "hardswish", "sigmoid", "silu", "gelu")
FEATURES = (  # ``kernel_features``' columns, in order
    "type", "type_before", "type_after", "activation",
    "log_macs", "log_valid_macs", "valid_fraction", "cin", "cout", "k", "stride", "log_hw",
    "cin_mod_block", "cout_mod_block", "cin_blocked", "cout_blocked",
    "log_in_bytes", "log_out_bytes", "log_weight_bytes", "cin_before_mod_block",
    "log_model_weight_bytes", "log_model_moved_bytes", "model_kernels",
)  # fmt: skip
CATEGORICAL = [0, 1, 2, 3]  # own type, previous type, next type, fused activation
BAGGED_FROM = 100  # models from which ``fit_kernel_model`` bags small trees (a calibration, not a transfer)
# ... and, where the profiler's kernel times sum to more than the call for most models (``profile_excess``
# over this: ONNX Runtime's, a median 1.27-1.34x on four calibrations, against 0.90x for ExecuTorch's and
# 0.98x for LiteRT's), fits them with a Huber loss, squared up to ``HUBER_DELTA`` of a log kernel time
HUBER_FROM_EXCESS = 1.1
HUBER_DELTA = 0.1
_OFFSET_US = 0.5  # a fused-away kernel has 0 µs; the log needs something above it


def _type(k: Kernel | None) -> int:
    return KERNEL_TYPES.index(k.type) if k is not None else -1


def base_us(k: Kernel) -> float:
    """A crude cost (µs at 1 GMAC/s and 1 GB/s) that the regressor scales. Pure."""
    macs = k.macs * ceil_to(k.cout, SIMD_BLOCK) / k.cout if k.type == "conv" and k.cout else k.macs
    return macs / 1e3 + (k.in_bytes + k.out_bytes + k.weight_bytes) / 1e3 + 1.0


def kernel_features(kernels: Sequence[Kernel]) -> np.ndarray:
    """One row of features per kernel of one model (see the module notes). Pure."""
    weights = math.log1p(sum(k.weight_bytes for k in kernels))
    moved = math.log1p(sum(k.in_bytes + k.out_bytes for k in kernels))
    rows = []
    for i, k in enumerate(kernels):
        before = kernels[i - 1] if i > 0 else None
        after = kernels[i + 1] if i + 1 < len(kernels) else None
        act = next((ACTIVATIONS.index(f) for f in k.fused if f in ACTIVATIONS), -1)
        vf = valid_fraction(k)
        rows.append([
            _type(k), _type(before), _type(after), act,
            math.log1p(k.macs), math.log1p(k.macs * vf), vf, k.cin, k.cout, k.k, k.stride, math.log(max(k.hw, 1)),
            k.cin % SIMD_BLOCK, k.cout % SIMD_BLOCK, ceil_to(k.cin, SIMD_BLOCK), ceil_to(k.cout, SIMD_BLOCK),
            math.log1p(k.in_bytes), math.log1p(k.out_bytes), math.log1p(k.weight_bytes),
            before.cin % SIMD_BLOCK if before is not None else -1,
            weights, moved, len(kernels),
        ])  # fmt: skip
    return np.array(rows, dtype=np.float64).reshape(len(kernels), len(FEATURES))


@dataclass(frozen=True)
class KernelRows:
    """Models' kernels featurised once: each model's ``kernel_features`` rows and ``base_us`` costs.

    Cross-validating a predictor fits, tunes and prices the same models' kernels some forty times;
    featurising them once took the fit on 636 ONNX Runtime models from 19 s to ~14 s. Every function
    below takes either models (lists of kernels) or these rows."""

    features: tuple[np.ndarray, ...]
    base: tuple[np.ndarray, ...]

    @classmethod
    def of(cls, models: Sequence[Sequence[Kernel]] | KernelRows) -> KernelRows:
        if isinstance(models, KernelRows):
            return models
        features = tuple(kernel_features(m) for m in models)
        return cls(features, tuple(np.array([base_us(k) for k in m], dtype=np.float64) for m in models))

    def take(self, models: Sequence[int]) -> KernelRows:
        """The rows of the models at these indices."""
        return KernelRows(tuple(self.features[i] for i in models), tuple(self.base[i] for i in models))

    def stacked(self) -> tuple[np.ndarray, np.ndarray]:
        """All kernels' features and base costs, model after model."""
        return np.vstack([np.zeros((0, len(FEATURES))), *self.features]), np.concatenate([np.zeros(0), *self.base])

    def counts(self) -> list[int]:
        return [len(b) for b in self.base]


def share_weights(kernel_us: Sequence[Sequence[float]]) -> np.ndarray:
    """Each kernel's weight in ``fit_kernel_model(..., by_share=True)``: the square root of its share
    of its model's profiled time, plus a floor of 0.02. Pure.

    A model's time error is its kernels' log errors weighted by their shares, so a kernel that is 60%
    of its model matters more than the twenty 1% kernels around it, which equal weights let dominate
    (most kernels are small). The square root and the floor keep the small kernels in the fit: by
    share alone, ONNX Runtime's held-out set lost more (82.5% within ±10% against 84.5%). Measured
    2026-12-05 (twenty-sixth session; 5-fold CV on the calibrations, the best candidate without → with
    this weighting): ExecuTorch 82.8 → 87.1% of models within ±10%, LiteRT 73.7 → 80.1%, ONNX Runtime
    79.6 → 83.0% (its held-out set, though, 87.0 → 84.5%).
    """
    t = [np.asarray(v, dtype=np.float64) for v in kernel_us]
    return np.concatenate([np.sqrt(v / max(float(v.sum()), 1e-9)) + 0.02 for v in t]) if t else np.zeros(0)


def consistent_kernel_us(kernel_us: Sequence[Sequence[float]], latency_ms: Sequence[float]) -> list[np.ndarray]:
    """Profiled kernel times brought in line with the whole-model timings: the profiler gives each
    kernel's share of its model, the timing gives the total. Pure apart from SciPy.

    A profiled pass is not the timed one: the profiler adds a cost to every operator it times, and
    the machine may run at another speed while it profiles. So:

    1. fit ``latency ≈ a · Σ kernels + b · count + c`` over the models (``_robust_linear``); a negative
       ``b`` is the profiler's cost per operator (ONNX Runtime: ~2.7 µs, ``-b/a``), taken off every
       kernel (down to no less than 5% of its time; a kernel fused away stays at 0);
    2. refit on those times, and scale each model's kernels by the factor (within 1/3–3) that makes
       the fit give its measured time exactly.

    The per-kernel model then learns times that sum to what the model costs when it is not profiled.
    Measured 2026-12-06 (2-core AMD EPYC; ONNX Runtime's profiled sums were a median 1.54× the timings
    of models under 0.05 ms, IQR 1.24–1.95): ONNX Runtime's per-kernel candidates went from 57–80% of
    models within ±10% (5-fold CV) to 91–95% on one calibration and from 36–74% to 88–91% on a second,
    and its held-out set from 87.5% to 95.0% and from 85.0% to 94.5% (those two time the same
    architectures; a calibration of other architectures: 85.0% to 86.0%, CV 83.2% to 88.4%); ExecuTorch's
    from 94.5% to 98.0%, LiteRT's (lent ExecuTorch's per-kernel model) from 91.0% to 94.0% (docs/hardware.md).
    """
    from edgeopt.hardware.predictor import KERNEL_TERMS, _robust_linear, _sum_rows, matrix

    times = [np.asarray(t, dtype=np.float64) for t in kernel_us]
    y = np.asarray(latency_ms, dtype=np.float64)

    def linear_stage(ts: list[np.ndarray]) -> np.ndarray:  # the predictor's (a, b, c): latency ≈ a·Σ + b·count + c
        return _robust_linear(matrix(_sum_rows(ts), KERNEL_TERMS), y)

    a, b, _ = linear_stage(times)
    overhead_us = max(0.0, -b / a * 1e3) if a > 0 else 0.0
    times = [np.maximum(t - overhead_us, 0.05 * t) for t in times]
    a, b, c = linear_stage(times)

    def scale(t: np.ndarray, measured_ms: float) -> float:  # the factor that makes the fit give the timing
        s = (measured_ms - b * len(t) - c) / (a * t.sum() / 1e3) if a > 0 and t.sum() > 0 else 1.0
        return float(np.clip(s, 1 / 3, 3))

    return [t * scale(t, ym) for t, ym in zip(times, y, strict=True)]


def profile_excess(kernel_us: Sequence[Sequence[float]], latency_ms: Sequence[float]) -> float:
    """The median over models of their profiled kernel times' sum over their measured time: over 1 where
    the profiler adds to every operator (ONNX Runtime's), under where it misses some of the call
    (XNNPACK's). Pure."""
    return float(np.median([sum(t) / 1e3 / y for t, y in zip(kernel_us, latency_ms, strict=True)]))


def fit_kernel_model(models: Sequence[Sequence[Kernel]] | KernelRows, kernel_us: Sequence[Sequence[float]],
                     latency_ms: Sequence[float], seed: int = 0, by_share: bool = False) -> str:  # fmt: skip
    """LightGBM's text model of each kernel's time (µs) given ``kernel_features``, fitted on the
    kernels of ``models`` and their profiled times made consistent with the models' measured
    ``latency_ms`` (``consistent_kernel_us``); with ``by_share``, each kernel weighted by its share
    of its model's time (``share_weights``), else all alike. Cost: ~1–3 s for ~5,000 kernels on one
    thread.

    Fitted on a calibration (``BAGGED_FROM`` models or more), the trees are kept small and bagged (15
    leaves of at least 20 kernels, each tree on 80% of the kernels and 80% of the features): with 31
    leaves of 10 and no bagging, the fit followed each calibration's draw of architectures closely
    enough that ONNX Runtime's held-out score ranged over 88.4–95.0% across four draws. Measured
    2026-12-07 (fortieth session; 4 ONNX Runtime calibrations × 3 fit seeds, 199 held-out models): mean
    92.1 → 92.9%, worst draw 88.6 → 91.8% (its three seeds); ExecuTorch 97.2 → 97.0%, LiteRT 94.0 →
    94.3% (3 fit seeds each), docs/hardware.md. A transfer's 20 models keep the larger trees: bagged,
    their ~150 kernels are too few to fit.

    A calibration's fit on a profiler that adds to every operator (``profile_excess`` over
    ``HUBER_FROM_EXCESS``: ONNX Runtime's, ~2 µs an operator, its shares moving by a median 2-3% between
    runs) takes a Huber loss on the log kernel times, squared within ``HUBER_DELTA`` (10%) and linear
    beyond, so that a few odd kernel times do not pull whole regions of the trees. Measured 2026-12-07
    (forty-second session; four ONNX Runtime calibrations × 3 fit seeds, 199 held-out models): mean 92.9 →
    95.5%, worst fit 91.0 → 93.5%; deltas of 5 / 15 / 20%: 94.6 / 95.0 / 94.6%, LightGBM's fair loss (c =
    0.1) 93.3%. On XNNPACK's profiles (which sum to under the call) it bought nothing and cost the
    transfers that re-use or refit their kernel costs: ExecuTorch's held-out 97.0 → 96.7%, its 1 → 2
    thread transfer 86.0 → 82.8%, ExecuTorch → LiteRT 83.4 → 79.5%, ONNX Runtime → ExecuTorch from 100
    timings 87.9 → 76.8%. A transfer's 20 models keep the squared loss."""
    import lightgbm as lgb

    excess = profile_excess(kernel_us, latency_ms)  # of the profiles as the profiler gave them
    kernel_us = consistent_kernel_us(kernel_us, latency_ms)
    x, base = KernelRows.of(models).stacked()
    y = np.log((np.concatenate([np.zeros(0), *kernel_us]) + _OFFSET_US) / base)
    params = {
        "objective": "l2", "learning_rate": 0.05, "num_leaves": 31, "min_data_in_leaf": 10, "lambda_l2": 1.0,
        "verbose": -1, "seed": seed, "num_threads": 1, "deterministic": True,
    }  # fmt: skip
    if len(kernel_us) >= BAGGED_FROM:
        params |= {"num_leaves": 15, "min_data_in_leaf": 20, "feature_fraction": 0.8, "bagging_fraction": 0.8,
                   "bagging_freq": 1}  # fmt: skip
        if excess > HUBER_FROM_EXCESS:
            params |= {"objective": "huber", "alpha": HUBER_DELTA}
    weight = share_weights(kernel_us) if by_share else None
    data = lgb.Dataset(x, y, weight=weight, categorical_feature=CATEGORICAL, free_raw_data=False)
    return lgb.train(params, data, num_boost_round=500).model_to_string()


def predict_kernel_us(
    model_text: str, models: Sequence[Sequence[Kernel]] | KernelRows, tuning: str | None = None
) -> list[np.ndarray]:
    """Each kernel's predicted time (µs), model by model (one LightGBM call for all of them), with
    ``tune_kernel_model``'s trees added to the log times where given."""
    rows = KernelRows.of(models)
    x, base = rows.stacked()
    if not len(base):
        return [np.zeros(0) for _ in rows.base]
    pred = _predict_rows(model_text, x, base, tuning)
    return np.split(pred, np.cumsum(rows.counts())[:-1])


def _predict_rows(model_text: str, x: np.ndarray, base: np.ndarray, tuning: str | None = None) -> np.ndarray:
    """``predict_kernel_us`` on kernel rows already featurised (``x``) with their ``base_us``."""
    pred = np.maximum(np.exp(booster(model_text).predict(x)) * base - _OFFSET_US, 0.0)
    if tuning is not None:
        pred = (pred + _OFFSET_US) * np.exp(booster(tuning).predict(x, raw_score=True)) - _OFFSET_US
    return pred


def tune_kernel_model(model_text: str, models: Sequence[Sequence[Kernel]] | KernelRows, latency_ms: Sequence[float],
                      seed: int = 0, rounds: int = 300) -> str:  # fmt: skip
    """Boosted trees that correct ``model_text``'s per-kernel times so that each model's kernel sum
    matches its measured whole-model time, as LightGBM's text model of a log factor per kernel.

    What a runtime's profiler reports per operator is not what the operators cost inside an
    unprofiled call (profiling overhead, caches), and a per-kernel model lent by another runtime
    (ExecuTorch's, for LiteRT) prices the kernels of that runtime, not of this one. Whole-model
    timings are the ground truth, but they give only each model's *sum*. The trees here learn a
    correction per kernel from those sums: gradient boosting over kernel rows with a custom
    objective, the squared log error of each model's sum (through a linear stage fitted first:
    ``a · Σ kernels + b · count + c``), starting from ``model_text``'s predictions. No library fits
    a per-row model from per-group sums, hence the hand-written gradient; LightGBM does the rest.
    Cost: ~1 s for ~5,000 kernels and 300 rounds on one thread.
    """
    import lightgbm as lgb

    from edgeopt.hardware.predictor import _fit_linear

    y = np.asarray(latency_ms, dtype=np.float64)
    rows = KernelRows.of(models)
    x, base = rows.stacked()
    start = np.log(_predict_rows(model_text, x, base) + _OFFSET_US)
    owner = np.concatenate([np.full(n, i) for i, n in enumerate(rows.counts())])
    count = np.bincount(owner, minlength=len(y)).astype(np.float64)
    sums = np.bincount(owner, weights=np.exp(start) - _OFFSET_US, minlength=len(y)) / 1e3
    a, b, c = _fit_linear(np.column_stack([sums, count, np.ones_like(y)]), y, positive=False)
    fixed, log_y = b * count + c, np.log(y)

    def squared_log_error(score: np.ndarray, _: object) -> tuple[np.ndarray, np.ndarray]:
        slope = a * np.exp(score) / 1e3  # d(model's time, ms)/d(kernel's log time)
        pred = np.bincount(owner, weights=slope - a * _OFFSET_US / 1e3, minlength=len(y)) + fixed
        pred = np.maximum(pred, 1e-6)
        share = slope / pred[owner]
        return 2 * (np.log(pred) - log_y)[owner] * share, 2 * share**2 + 1e-9  # Gauss-Newton Hessian

    params = {
        "objective": squared_log_error, "learning_rate": 0.05, "num_leaves": 7, "min_data_in_leaf": 20,
        "lambda_l2": 1.0, "min_sum_hessian_in_leaf": 1e-6, "verbose": -1, "seed": seed, "num_threads": 1,
        "deterministic": True,
    }  # fmt: skip
    data = lgb.Dataset(x, init_score=start, categorical_feature=CATEGORICAL, free_raw_data=False)
    return lgb.train(params, data, num_boost_round=rounds).model_to_string()
