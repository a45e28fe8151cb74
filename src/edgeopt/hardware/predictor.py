"""Latency predictor: each fused kernel's cost from its features, summed, with a whole-model correction.

Two forms of the kernel sum, and cross-validation at ``fit`` picks one (with or without the
correction):

* **Per-kernel model** (nn-Meter's form), when calibration read each kernel's time from the
  runtime's profiler (``hardware.op_timings``) or was given another runtime's model of the same
  kernels (ExecuTorch's for a LiteRT whose profiler cannot be read: both run XNNPACK): a LightGBM
  regressor predicts every kernel's time from its features and neighbours
  (``hardware.kernel_model``; fitted with all kernels alike, or each weighted by its share of its
  model's time), and a linear stage maps the sum to the model's time
  (``KERNEL_TERMS``: the sum, the kernel count, a constant). Optionally *tuned*: boosted trees
  correct each kernel's time so that the sums match the whole-model timings
  (``kernel_model.tune_kernel_model``), which is what the profiler's times (or a lent model's) miss.
* **Additive terms**, fitted from whole-model timings alone (a runtime without kernel times or a
  given per-kernel model; older profiles):

      latency(model) = Σ_kernels  w_type · φ_type(kernel)          (additive kernel costs)
                       × exp(g(model features))                     (optional correction)

  ``φ_type`` are a few cost terms per kernel type: a fixed per-kernel overhead, MACs, MACs with the
  output channels padded to the SIMD block (runtimes pack 8 or 16 channels; a 20-channel conv costs
  like a 32-channel one), bytes read and written, weight bytes; for convolutions also the MACs on
  real input rather than zero padding (``valid_fraction``), 5×5 / 7×7 / 1×1 / strided MACs, the MACs
  of convolutions off the channel-blocked path (``_blocked``) and per-row overhead (``kernel_terms``).
  Because the sum is linear in the weights ``w``, the per-kernel costs are identifiable from
  whole-model timings of varied architectures: ``w ≥ 0`` is fitted by non-negative least squares on
  *relative* error (scikit-learn's ``LinearRegression(positive=True)`` with weights 1/latency²), so
  every kernel cost stays physical.

``g`` is a small LightGBM regressor on the log residual, kept only when cross-validation says it
helps. LightGBM models are stored as LightGBM's own text, never as a pickle.

The candidates (each form, with and without ``g``) err differently, so ``fit`` averages several of them:
Caruana's ensemble selection over their cross-validated predictions (``ensemble_selection``) picks
which, and how much each counts in a weighted geometric mean (``members``). On ONNX Runtime that took
the held-out models within ±10% from 88.0% (the best candidate) to 95.0% on the journals it was built on,
and from 80.0% (its best member) to 87.5% on a fresh calibration (2-core AMD EPYC, 2026-12-06); 95.0% on
that one since the per-kernel candidates learn from profiled times made consistent with the timings
(``kernel_model.consistent_kernel_us``).

The error band is the 90th percentile of the cross-validated relative error. Everything here is
pure (arrays in, arrays out) except ``to_json``/``from_json`` which only convert.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeopt.hardware.kernels import KERNEL_TYPES, Kernel

if TYPE_CHECKING:
    from edgeopt.hardware.kernel_model import KernelRows

MB, KB = 1e6, 1e3
SIMD_BLOCK = 16  # channels a SIMD block packs (AVX-512 float: 16; ONNX Runtime's NCHWc block there)


def ceil_to(n: int, block: int) -> int:
    """``n`` rounded up to a multiple of ``block``. Pure."""
    return -(-n // block) * block


def _blocked(c: int, block: int = SIMD_BLOCK) -> bool:
    """Whether ``c`` input channels fit the runtimes' channel-blocked kernels: ONNX Runtime's NCHWc
    convolution (AVX-512: 16 channels a block) takes a multiple of the block, or fewer channels than
    one block (read from plain NCHW); anything else falls back to im2col + GEMM with layout reorders."""
    return c < block or c % block == 0


def valid_fraction(k: Kernel) -> float:
    """The share of a convolution's MACs that read real input rather than zero padding. Pure.

    ONNX Runtime's NCHWc kernels (and XNNPACK's) skip the taps that fall in the padding, so a 7×7
    convolution on a 4×4 map does under half the MACs counted. Taken per spatial axis from the
    input and output sizes (square maps, batch 1, 4-byte elements; symmetric padding inferred from
    the sizes), then squared; 1 for anything that is not a convolution.
    """
    if k.type not in ("conv", "dwconv") or k.k <= 1 or k.cin <= 0 or k.hw <= 0:
        return 1.0
    size_in = math.sqrt(k.in_bytes / (4 * k.cin))
    size_out = max(1, round(math.sqrt(k.hw)))
    kk = max(1, round(math.sqrt(k.k)))
    pad = max(0.0, ((size_out - 1) * k.stride + kk - size_in) / 2)
    valid = sum(min(o * k.stride - pad + kk, size_in) - max(o * k.stride - pad, 0.0) for o in range(size_out))
    return float(np.clip(valid / (size_out * kk), 0.0, 1.0) ** 2)


def kernel_terms(k: Kernel) -> dict[str, float]:
    """The cost terms of one kernel, named ``type.term`` (MACs in millions, bytes in KB). Pure.

    Beside MACs, bytes and a per-kernel overhead, convolutions get terms for what makes a MAC cost
    more or less on CPUs: the output channels padded to the SIMD block, few input channels, 1×1,
    5×5 and 7×7 kernels (each a different micro-kernel), strides, channel counts that miss the
    channel-blocked path (``_blocked``), and per-output-row overhead (small spatial sizes).
    """
    t = k.type
    io = (k.in_bytes + k.out_bytes) / KB
    terms = {f"{t}.n": 1.0}
    if t in ("conv", "dwconv"):
        macs = k.macs / MB
        per_out = k.macs / max(1, k.cout)
        terms[f"{t}.macs"] = macs
        terms[f"{t}.io"] = io
        valid = macs * valid_fraction(k)  # taps on real input, not zero padding
        terms[f"{t}.macs_valid"] = valid
        for size, name in ((25, "k5"), (49, "k7")):
            terms[f"{t}.macs_{name}"] = valid if k.k == size else 0.0
        terms[f"{t}.macs_stride2"] = macs if k.stride > 1 else 0.0
        rows = math.sqrt(max(k.hw, 1)) * -(-max(k.cout, 1) // SIMD_BLOCK)  # row × channel-block calls
        terms[f"{t}.rows"] = rows / KB
    if t == "conv":
        padded = ceil_to(k.cout, SIMD_BLOCK) * ceil_to(k.cin, SIMD_BLOCK) / max(1, k.cin)
        terms[f"{t}.macs_pad16"] = per_out * padded / MB
        terms[f"{t}.macs_smallcin"] = k.macs / MB if k.cin < 8 else 0.0
        terms[f"{t}.macs_k1"] = k.macs / MB if k.k == 1 else 0.0
        terms[f"{t}.weights"] = k.weight_bytes / KB
        unblocked = not _blocked(k.cin)
        terms[f"{t}.macs_unblocked"] = k.macs / MB if unblocked else 0.0
        terms[f"{t}.io_unblocked"] = io if unblocked else 0.0
    elif t == "dwconv":
        terms[f"{t}.macs_pad16"] = k.macs * ceil_to(k.cout, SIMD_BLOCK) / max(1, k.cout) / MB
        terms[f"{t}.stride2"] = io if k.stride > 1 else 0.0
        terms[f"{t}.io_unblocked"] = io if k.cout % SIMD_BLOCK else 0.0
    elif t == "linear":
        terms[f"{t}.macs"] = k.macs / MB
        terms[f"{t}.weights"] = k.weight_bytes / KB
    else:
        terms[f"{t}.io"] = io
    return terms


def model_terms(kernels: Sequence[Kernel]) -> dict[str, float]:
    """The sum of ``kernel_terms`` over a model's kernels, plus a per-model constant and
    ``add.io_unblocked``: the bytes of residual adds that follow a convolution off the
    channel-blocked path (ONNX Runtime folds an add into the NCHWc convolution before it, so only
    those run as a kernel of their own). Pure."""
    total: dict[str, float] = {"model.n": 1.0, "add.io_unblocked": 0.0}
    blocked = True  # whether the last convolution ran channel-blocked
    for k in kernels:
        for name, v in kernel_terms(k).items():
            total[name] = total.get(name, 0.0) + v
        if k.type == "conv":
            blocked = _blocked(k.cin)
        elif k.type == "dwconv":
            blocked = k.cout % SIMD_BLOCK == 0
        elif k.type == "add" and not blocked:
            total["add.io_unblocked"] += (k.in_bytes + k.out_bytes) / KB
    return total


def model_summary(kernels: Sequence[Kernel]) -> dict[str, float]:
    """Whole-model features for the correction: log sizes, each kernel type's share of MACs and count,
    and the share of MACs in 5×5, 7×7, strided and channel-unblocked convolutions. Pure."""
    macs = sum(k.macs for k in kernels)
    io = sum(k.in_bytes + k.out_bytes for k in kernels)
    out = {"log_macs": math.log1p(macs), "log_io": math.log1p(io), "n_kernels": float(len(kernels))}
    for t in KERNEL_TYPES:
        out[f"share.{t}"] = sum(k.macs for k in kernels if k.type == t) / macs if macs else 0.0
        out[f"count.{t}"] = float(sum(1 for k in kernels if k.type == t))
    convs = [k for k in kernels if k.type in ("conv", "dwconv")]
    for name, sel in (("k5", lambda k: k.k == 25), ("k7", lambda k: k.k == 49), ("stride2", lambda k: k.stride > 1),
                      ("unblocked", lambda k: k.type == "conv" and not _blocked(k.cin))):  # fmt: skip
        out[f"share.{name}"] = sum(k.macs for k in convs if sel(k)) / macs if macs else 0.0
    return out


def matrix(rows: Sequence[dict[str, float]], names: Sequence[str]) -> np.ndarray:
    """Rows of named terms as a dense matrix with columns ``names`` (missing terms are 0). Pure."""
    return np.array([[r.get(n, 0.0) for n in names] for r in rows], dtype=np.float64)


def _fit_linear(x: np.ndarray, y: np.ndarray, positive: bool = True) -> np.ndarray:
    """Weights (non-negative unless ``positive`` is False) minimising the relative squared error of
    ``x @ w`` against ``y``."""
    from sklearn.linear_model import LinearRegression

    # scale columns to unit size so the solver treats terms alike; relative error via 1/y² weights
    scale = np.maximum(np.abs(x).max(axis=0), 1e-12)
    reg = LinearRegression(positive=positive, fit_intercept=False)
    reg.fit(x / scale, y, sample_weight=1.0 / np.square(y))
    return reg.coef_ / scale


def _fit_correction(z: np.ndarray, log_ratio: np.ndarray, seed: int = 0) -> str:
    import lightgbm as lgb

    params = {
        "objective": "l2", "learning_rate": 0.05, "num_leaves": 7, "min_data_in_leaf": 8,
        "lambda_l2": 1.0, "verbose": -1, "seed": seed, "num_threads": 1, "deterministic": True,
    }  # fmt: skip
    return lgb.train(params, lgb.Dataset(z, log_ratio), num_boost_round=150).model_to_string()


@functools.lru_cache(maxsize=32)
def booster(model_text: str) -> Any:
    """A LightGBM text model, parsed once: searches predict thousands of candidates from one profile,
    and parsing a 500-tree model takes longer than predicting with it."""
    import lightgbm as lgb

    return lgb.Booster(model_str=model_text)


def _apply_correction(model_text: str, z: np.ndarray) -> np.ndarray:
    return np.asarray(booster(model_text).predict(z), dtype=np.float64)


@dataclass
class ErrorStats:
    """How far predictions fall from measurements (relative errors, on held-out data)."""

    median_abs_pct: float
    within_10pct: float
    p90_abs_pct: float
    spearman: float
    n: int

    @staticmethod
    def of(pred: np.ndarray, measured: np.ndarray) -> ErrorStats:
        from scipy.stats import spearmanr

        rel = np.abs(pred / measured - 1.0)
        rho = float(spearmanr(pred, measured).statistic) if len(pred) > 2 else float("nan")
        return ErrorStats(
            float(np.median(rel) * 100), float(np.mean(rel <= 0.10)), float(np.percentile(rel, 90) * 100), rho,
            int(len(pred)),
        )  # fmt: skip


class _Batch:
    """Models to predict, with their features computed once each, on first use: an ensemble's members
    share them (featurising took a third of an ensemble's prediction time)."""

    def __init__(self, models: Sequence[Sequence[Kernel]]) -> None:
        self.models = models

    @functools.cached_property
    def summaries(self) -> list[dict[str, float]]:
        return [model_summary(k) for k in self.models]

    @functools.cached_property
    def terms(self) -> list[dict[str, float]]:
        return [model_terms(k) for k in self.models]

    @functools.cached_property
    def kernel_rows(self) -> KernelRows:
        from edgeopt.hardware.kernel_model import KernelRows

        return KernelRows.of(self.models)


TRANSFER_FOLDS = 20  # a transfer's cross-validation: leave-one-out up to this many models, this many folds above
KERNEL_TERMS = ["kernels.ms", "kernels.n", "model.n"]  # the linear stage over a per-kernel model's sum
# what a transfer between runtimes scales as one (``kernel_group``); the group stage's columns are these
# groups' predicted times, then the kernel count and a constant
KERNEL_GROUPS = ("conv1x1", "conv", "dwconv", "linear", "other")


def kernel_group(k: Kernel) -> str:
    """The ``KERNEL_GROUPS`` entry of a kernel: 1×1 convolutions (a plain matrix product in XNNPACK
    and MLAS), other convolutions (an indirect one), depthwise convolutions and matrix products each
    run their own micro-kernels, and another runtime prices each family by its own factor; the rest
    (element-wise, pooling, layout) is per-operator overhead. Pure."""
    if k.type == "conv":
        return "conv1x1" if k.k == 1 else "conv"
    return k.type if k.type in ("dwconv", "linear") else "other"


def kernel_sum_rows(model_text: str, models: Sequence[Sequence[Kernel]] | KernelRows, tuning: str | None = None
                    ) -> list[dict[str, float]]:  # fmt: skip
    """The linear stage's rows when a per-kernel model (``kernel_model``, with its ``tuning``) prices
    the kernels: their predicted sum (ms), their count and a per-model constant."""
    from edgeopt.hardware.kernel_model import predict_kernel_us

    return _sum_rows(predict_kernel_us(model_text, models, tuning))


def _sum_rows(per_kernel_us: Sequence[np.ndarray]) -> list[dict[str, float]]:
    """``kernel_sum_rows`` from each model's per-kernel times (µs). Pure."""
    return [{"kernels.ms": float(t.sum()) / 1e3, "kernels.n": float(len(t)), "model.n": 1.0} for t in per_kernel_us]


_Form = tuple[str, Callable[[np.ndarray], "LatencyPredictor"]]  # a transfer's name, its fit on the models indexed


@dataclass
class LatencyPredictor:
    """Fitted kernel weights (and an optional correction) that map kernels to milliseconds.

    Two forms, chosen by cross-validation at ``fit``: the additive terms (``model_terms``, weights
    ``≥ 0``), or, when calibration profiled each kernel's time, a per-kernel LightGBM model
    (``kernel_model``) whose sum a linear stage over ``KERNEL_TERMS`` maps to the model's time (the
    kernel count's weight is small: the per-kernel model learns times with the profiler's cost per
    operator taken off, ``kernel_model.consistent_kernel_us``)."""

    terms: list[str]
    weights: list[float]
    correction: str | None = None  # LightGBM text model over ``summary_names`` + log linear prediction
    summary_names: list[str] = field(default_factory=list)
    band_pct: float = 0.0  # 90th percentile of cross-validated relative error, in percent
    cv: dict[str, Any] = field(default_factory=dict)
    log_affine: tuple[float, float] = (0.0, 1.0)  # transfer map: log y = a + b log ŷ
    kernel_model: str | None = None  # per-kernel LightGBM text model (``hardware.kernel_model``)
    kernel_tuning: str | None = None  # its correction from whole-model times (``tune_kernel_model``)
    kernel_speedup: tuple[float, float, float, float] | None = None  # transfer map: ``sped_up``'s parameters
    group_stage: list[float] | None = None  # transfer map: weights over ``_group_ms``' columns
    # an ensemble (``ensemble_selection``): the weighted geometric mean of these predictors' times; the fields
    # above then go unused but for ``band_pct``, ``cv`` and ``log_affine``
    members: list[LatencyPredictor] = field(default_factory=list)
    member_weights: list[float] = field(default_factory=list)

    def lendable_kernel_model(self) -> str | None:
        """The per-kernel model this predictor prices kernels with (an ensemble's heaviest member's), for
        another runtime on this CPU that runs the same kernel library (``fit(kernel_model=...)``)."""
        if self.kernel_model is not None:
            return self.kernel_model
        return next((k for m in self.members if (k := m.lendable_kernel_model()) is not None), None)

    def _members_mean(self, values: Callable[[LatencyPredictor], np.ndarray]) -> np.ndarray:
        """``Σ weight · values(member)`` over an ensemble's members."""
        return sum(w * values(m) for m, w in zip(self.members, self.member_weights, strict=True))  # type: ignore[return-value]

    def term_rows(self, models: Sequence[Sequence[Kernel]]) -> list[dict[str, float]]:
        """The linear stage's input rows for ``models``: their terms, or their per-kernel sums."""
        return self._term_rows(_Batch(models))

    def _term_rows(self, batch: _Batch) -> list[dict[str, float]]:
        if self.kernel_model is not None:
            return _sum_rows(self._kernel_us(batch.kernel_rows))
        return batch.terms

    def _kernel_us(self, models: Sequence[Sequence[Kernel]] | KernelRows) -> list[np.ndarray]:
        """Each model's per-kernel times (µs) from the per-kernel model and its tuning."""
        from edgeopt.hardware.kernel_model import predict_kernel_us

        assert self.kernel_model is not None
        return predict_kernel_us(self.kernel_model, models, self.kernel_tuning)

    def predict_many(self, models: Sequence[Sequence[Kernel]]) -> np.ndarray:
        """Milliseconds for several models, each given by its kernels."""
        return self._predict(_Batch(models))

    def _predict(self, batch: _Batch) -> np.ndarray:
        """``predict_many`` on a batch whose features an ensemble's members share."""
        if self.members:
            return self._mapped(np.exp(self._members_mean(lambda m: np.log(m._predict(batch)))))
        if self.group_stage is not None:
            return np.maximum(self._group_ms(batch) @ np.asarray(self.group_stage), 1e-6)
        if self.kernel_speedup is None:
            return self.predict_rows(self._term_rows(batch), batch.summaries)
        per_kernel = self._kernel_us(batch.kernel_rows)  # once, for the linear stage and for the speedup
        pred = self.predict_rows(_sum_rows(per_kernel), batch.summaries)
        parts, rest = self._kernel_parts(per_kernel, pred)
        return np.array([sped_up(p, r, self.kernel_speedup) for p, r in zip(parts, rest, strict=True)])

    def _base_kernel_ms(self, batch: _Batch) -> list[np.ndarray]:
        """Each model's kernel times (ms) before the linear stage: the per-kernel model's, or each kernel's
        additive terms (``kernel_terms``)."""
        if self.kernel_model is not None:
            return [t / 1e3 for t in self._kernel_us(batch.kernel_rows)]
        w = dict(zip(self.terms, self.weights, strict=True))

        def cost(k: Kernel) -> float:
            return sum(w.get(n, 0.0) * v for n, v in kernel_terms(k).items())

        return [np.array([cost(k) for k in ks]) for ks in batch.models]

    def _group_ms(self, batch: _Batch) -> np.ndarray:
        """Each model's kernel times (``_base_kernel_ms``) summed by ``KERNEL_GROUPS``, then its kernel count
        and 1: the columns the group stage weighs. The additive terms' model-level ``add.io_unblocked``
        counts as "other"; the linear stage's count and constant and the correction are left out, since
        the group stage refits them."""
        w = dict(zip(self.terms, self.weights, strict=True))
        out = np.zeros((len(batch.models), len(KERNEL_GROUPS) + 2))
        for i, (ks, t) in enumerate(zip(batch.models, self._base_kernel_ms(batch), strict=True)):
            for k, v in zip(ks, t, strict=True):
                out[i, KERNEL_GROUPS.index(kernel_group(k))] += v
            if self.kernel_model is None:  # a model-level term
                unblocked_adds = batch.terms[i]["add.io_unblocked"]
                out[i, KERNEL_GROUPS.index("other")] += w.get("add.io_unblocked", 0.0) * unblocked_adds
            out[i, -2:] = len(ks), 1.0
        return out

    def group_ms(self, models: Sequence[Sequence[Kernel]]) -> np.ndarray:
        """Each model's base kernel time (ms) summed by ``KERNEL_GROUPS`` (the first columns of
        ``_group_ms``); an ensemble's is its members' weighted geometric mean."""
        return self._grouped(_Batch(models))

    def _grouped(self, batch: _Batch) -> np.ndarray:
        if not self.members:
            return self._group_ms(batch)[:, : len(KERNEL_GROUPS)]
        return np.exp(self._members_mean(lambda m: np.log(np.maximum(m._grouped(batch), 1e-9))))

    def _kernel_parts(self, per_kernel_us: list[np.ndarray], pred: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        """Each model's kernels' shares of ``pred`` (ms), and the rest of it (per-call overhead, correction)."""
        w = dict(zip(self.terms, self.weights, strict=True))["kernels.ms"]
        parts = [np.maximum(w * t / 1e3, 0.0) for t in per_kernel_us]
        return parts, np.maximum(pred - np.array([p.sum() for p in parts]), 0.0)

    def predict_rows(
        self, term_rows: Sequence[dict[str, float]], summary_rows: Sequence[dict[str, float]]
    ) -> np.ndarray:
        """Milliseconds for models given by their ``term_rows`` and ``model_summary`` rows."""
        lin = np.maximum(matrix(term_rows, self.terms) @ np.asarray(self.weights), 1e-6)
        pred = lin
        if self.correction is not None:
            z = np.column_stack([matrix(summary_rows, self.summary_names), np.log(lin)])
            pred = lin * np.exp(_apply_correction(self.correction, z))
        return self._mapped(pred)

    def _mapped(self, pred: np.ndarray) -> np.ndarray:
        """``pred`` through the transfer map ``log_affine`` (the identity unless transferred that way)."""
        a, b = self.log_affine
        return pred if (a, b) == (0.0, 1.0) else np.exp(a + b * np.log(pred))

    def transferred(
        self, models: Sequence[Sequence[Kernel]], latency_ms: Sequence[float], other_threads: bool = False
    ) -> LatencyPredictor:
        """This predictor re-targeted to another runtime or thread count from a few new timings.

        **Another runtime** (``other_threads`` False): the *group stage*. The base's kernel times
        (its per-kernel model's, or each kernel's additive terms) are summed by ``KERNEL_GROUPS``
        (1×1 convolutions, other convolutions, depthwise, matrix products, the rest), and the new
        timings fit one scale per group, a per-kernel cost and a constant (``_fit_group_stage``:
        relative error, soft-L1, the scales pulled towards a common one). Another runtime on the same
        CPU runs each family of kernels on its own micro-kernels, at its own speed against the base's,
        and adds its own per-operator and per-call overheads. The base's correction is dropped: it was
        fitted to the base runtime's residuals.

        **Another thread count** (the same runtime), with a per-kernel model: the geometric mean of
        two forms (a two-member ensemble, ``kernel_blend``), each fitted on the new timings:

        * the per-kernel model's linear stage (``KERNEL_TERMS``: the kernels' sum, their count, a
          constant) refitted, the correction dropped;
        * each kernel's time scaled by a factor that grows with its size (``sped_up``: four
          parameters, robust least squares in log space): a second thread speeds a large convolution
          up about twofold and a microsecond kernel not at all.

        Without a per-kernel model, ``log y = a + b log ŷ`` over the whole prediction, fitted by
        Theil-Sen regression (the median of pairwise slopes) rather than least squares: a few of 20
        timings are far off (a VM's hiccup) and least squares follows them. Until 2026-12-06 (thirty-
        third session) leave-one-out on the 20 chose one of the three forms; over 16 choices of 20
        among the held-out models, on two sets of 2-thread timings (2-core AMD EPYC), the blend scored
        a mean 75.2 / 78.0% within ±10% (LiteRT), 70.8 / 75.2% (ONNX Runtime), 87.2 / 85.3%
        (ExecuTorch) against the choice's 72.6 / 76.7, 67.1 / 70.8 and 86.1 / 84.4%, with a better worst
        choice (ONNX Runtime 66% against 37%); either form alone lost somewhere.

        An ensemble re-targets each member and averages them as before. Measured on a 2-core AMD EPYC
        (2026-12-06, benchmarks/hardware.py; 20 timings chosen as ``calibrate.transfer`` chooses them
        (``transfer_design``), 200 held-out models; over 16 other choices of 20 among the held-out
        models, each scored on 100 others, the mean in brackets): ExecuTorch → LiteRT 88.5% within
        ±10% (89.1%), LiteRT → ExecuTorch 94.0% (91.7%); ONNX Runtime → ExecuTorch 44.0% (39.7%),
        ONNX Runtime → LiteRT 39.5% (33.6%), the XNNPACK runtimes → ONNX Runtime 43.5–44.0%:
        ONNX Runtime's kernels differ from XNNPACK's in more than one scale per group (depthwise 7×7
        convolutions cost ExecuTorch ~7× what they cost ONNX Runtime, 3×3 ones about the same), and
        no number of timings shows which (from 100: 38–56%). So ``calibrate.transfer`` gives a runtime
        of another kernel library ``from_kernel_times`` instead. Offered for thread counts as well, the
        group stage scored 2–6 points under the forms above (over 16 draws), so it is not. From one
        thread to two (timed with ``calibrate.measure_samples``' quiet rounds and deferred slow chunks;
        the blend): ExecuTorch 89.5%, LiteRT 87.0%, ONNX Runtime 76.0% (over 16 other choices of 20:
        87.3 / 79.6 / 80.4%; of 100: 91.0 / 85.0 / 82.4%), where two timings of one model agree within
        ±10% for 95 / 100 / 100% (docs/hardware.md, "A blend for thread counts", "Slow chunks timed
        again later" and "Where the limit is").
        """
        y = np.asarray(latency_ms, dtype=np.float64)
        if self.members:  # each member re-targeted (its own form), then averaged as before
            moved = replace(self, members=[m.transferred(models, latency_ms, other_threads) for m in self.members])
            loo_ms = np.exp(moved._members_mean(lambda m: np.log(m.cv["transfer_loo_ms"])))
            forms = ", ".join(m.cv["transfer_form"] for m in moved.members)
            band_pct, cv = _transfer_cv(f"ensemble of {forms}", loo_ms, y, short="ensemble")
            return replace(moved, band_pct=band_pct, cv=cv)
        base = replace(self, log_affine=(0.0, 1.0), kernel_speedup=None, group_stage=None)
        form = base._thread_form(models, y) if other_threads else base._group_form(models, y)
        return _cross_validated(form, models, y)

    @classmethod
    def from_kernel_times(
        cls,
        models: Sequence[Sequence[Kernel]],
        latency_ms: Sequence[float],
        kernel_us: Sequence[Sequence[float] | None],
    ) -> LatencyPredictor:
        """A predictor from a few models' timings and their profiled kernel times alone, for a transfer
        to a runtime that runs another kernel library than the base's (ONNX Runtime's MLAS against
        XNNPACK): a per-kernel model (``kernel_model.fit_kernel_model``, each kernel weighted by its share)
        fitted on the models' kernels, and its linear stage (``KERNEL_TERMS``) on their timings, robust
        to a few far off (``_robust_linear``). The base's kernel costs do not carry over: fitted on all
        200 of the target's held-out timings, re-scaling them by kernel group puts 45.8–56.7% of those
        very models within ±10% (2-core AMD EPYC, 2026-12-06). This form, from 20 models chosen for their
        kernels (``transfer_design.kernel_coverage``), puts a mean of 63–65% of 100 others within ±10%
        over 16 draws (the group stage: 34–46%), and 74–87% from 100 timings (docs/hardware.md, "Across
        kernel libraries, models chosen for their kernels"); with the kernel times made consistent with
        the timings (``kernel_model.consistent_kernel_us``, a fresh calibration): 59–64% from 20, 85–90%
        from 100. Cost: one LightGBM fit per leave-one-out
        fold on a few hundred kernels (~0.2 s each for 20 models)."""
        from edgeopt.hardware.kernel_model import fit_kernel_model, predict_kernel_us

        y = np.asarray(latency_ms, dtype=np.float64)

        def own_kernels(train: np.ndarray) -> LatencyPredictor:
            timed = [i for i in train if kernel_us[i] is not None]
            kernel_model = fit_kernel_model([models[i] for i in timed], [kernel_us[i] for i in timed], y[timed],
                                            by_share=True)
            sums = _sum_rows(predict_kernel_us(kernel_model, [models[i] for i in train]))
            w = _robust_linear(matrix(sums, KERNEL_TERMS), y[train])
            return cls(KERNEL_TERMS, [float(v) for v in w], kernel_model=kernel_model)

        return _cross_validated(("own_kernels", own_kernels), models, y)

    def _group_form(self, models: Sequence[Sequence[Kernel]], y: np.ndarray) -> _Form:
        """``transferred``'s form for another runtime, fitted on the models indexed by its argument."""
        groups = self._group_ms(_Batch(models))
        return "group_stage", lambda train: replace(self, group_stage=_fit_group_stage(groups[train], y[train]))

    def _thread_form(self, models: Sequence[Sequence[Kernel]], y: np.ndarray) -> _Form:
        """``transferred``'s form for another thread count, fitted on the models indexed by its argument."""
        batch = _Batch(models)
        per_kernel = self._kernel_us(batch.kernel_rows) if self.kernel_model else None  # once, for both members
        rows = _sum_rows(per_kernel) if per_kernel is not None else batch.terms
        x = np.log(self.predict_rows(rows, batch.summaries))
        if per_kernel is None:
            return "log_affine", lambda train: replace(self, log_affine=_log_affine(x[train], np.log(y[train])))
        stage = matrix(rows, KERNEL_TERMS)
        parts, rest = self._kernel_parts(per_kernel, np.exp(x))

        def kernel_blend(train: np.ndarray) -> LatencyPredictor:
            w = _fit_linear(stage[train], y[train], positive=False)
            refitted = replace(self, terms=KERNEL_TERMS, weights=[float(v) for v in w], correction=None,
                               summary_names=[])  # fmt: skip
            sped = replace(self, kernel_speedup=_fit_speedup([parts[i] for i in train], rest[train], y[train]))
            return LatencyPredictor([], [], members=[refitted, sped], member_weights=[0.5, 0.5])

        return "kernel_blend", kernel_blend

    def predict(self, kernels: Sequence[Kernel]) -> float:
        """Predicted latency (ms) of one model from its kernels."""
        return float(self.predict_many([kernels])[0])

    def kernel_ms(self, kernels: Sequence[Kernel]) -> list[float]:
        """Each kernel's share of the linear (uncorrected) prediction, in milliseconds (an ensemble: its members'
        shares, weighted); after a thread transfer's per-kernel speedup, each sped up as ``sped_up`` speeds
        it. A ``log_affine`` map of the whole prediction has no per-kernel share and is left out."""
        if self.members:
            return list(self._members_mean(lambda m: np.array(m.kernel_ms(kernels))))
        base = self._base_kernel_ms(_Batch([kernels]))[0]
        if self.group_stage is not None:  # transferred: each kernel scaled by its group's factor
            scales = [self.group_stage[KERNEL_GROUPS.index(kernel_group(k))] for k in kernels]
            return [s * float(v) for s, v in zip(scales, base, strict=True)]
        scale = dict(zip(self.terms, self.weights, strict=True))["kernels.ms"] if self.kernel_model is not None else 1.0
        if self.kernel_speedup is None:
            return [scale * float(v) for v in base]
        parts = np.maximum(scale * base, 0.0)  # as ``_kernel_parts`` hands them to ``sped_up``
        return [float(v) for v in sped_up_parts(parts, self.kernel_speedup)]

    @classmethod
    def fit(
        cls,
        models: Sequence[Sequence[Kernel]],
        latency_ms: Sequence[float],
        folds: int = 5,
        seed: int = 0,
        correction: bool = True,
        kernel_us: Sequence[Sequence[float] | None] | None = None,
        kernel_model: str | None = None,
        ensemble: bool = True,
    ) -> LatencyPredictor:
        """Fit on measured models (their kernels and latencies) and, where given, their kernels'
        profiled times (``kernel_us``, None for a model whose operators did not line up). With
        ``ensemble`` (the default), the result averages the candidates ``ensemble_selection`` picks
        from their cross-validated predictions (an ensemble, or the best candidate alone when that
        ranks best); without, it is the best candidate.

        Cross-validation scores each candidate (the additive terms; when at least 40 models have
        kernel times, the per-kernel model as fitted on them with every kernel alike and with each
        weighted by its share of its model's time, ``kernel_model.share_weights``, each as it is and
        as tuned to the whole-model times, ``kernel_model.tune_kernel_model``; each with and without
        the correction), ranks them by the models within ±10% (then the lowest median error), and
        gives the error band (of the ensemble's cross-validated predictions: the folds it was picked
        on, so a little optimistic; the held-out benchmark is the check). Those predictions are kept in
        ``cv["cv_ms"]``: ``calibrate.retime_slowest`` times again the models furthest above them.
        Without kernel times, a per-kernel model fitted elsewhere (``kernel_model``: another
        runtime's on this CPU that runs the same kernel library, ExecuTorch's XNNPACK for LiteRT's)
        is the per-kernel candidate, as it is and tuned to this runtime's timings. Cost: ~1 s for
        the additive terms, ~5–30 s more with kernel times (two per-kernel LightGBM fits and two
        tunings per fold; the ensemble's members fitted once more on every model)."""
        y = np.asarray(latency_ms, dtype=np.float64)
        summary_rows = [model_summary(k) for k in models]
        summary_names = sorted({n for r in summary_rows for n in r})
        s = matrix(summary_rows, summary_names)
        timed = [i for i, t in enumerate(kernel_us or []) if t is not None]
        given = kernel_model if len(timed) < 40 else None  # the per-kernel candidate, unless fitted here
        use_kernels = len(timed) >= 40 or given is not None
        use_correction = correction and len(y) >= 40

        term_rows = [model_terms(k) for k in models]  # the additive stage does not depend on the fold
        additive_terms = sorted({n for r in term_rows for n in r})
        additive_x = matrix(term_rows, additive_terms)
        from edgeopt.hardware.kernel_model import KernelRows, fit_kernel_model, tune_kernel_model

        # featurised once for every fold and candidate (no rows where no candidate prices kernels)
        rows = KernelRows.of(models) if use_kernels else KernelRows((), ())
        given_x = matrix(kernel_sum_rows(given, rows), KERNEL_TERMS) if given is not None else None

        kernel_texts: dict[tuple[bytes, bool], str] = {}  # the per-kernel models of each training set

        def kernel_text(train: np.ndarray, by_share: bool) -> str:
            if given is not None:
                return given
            key = (train.tobytes(), by_share)
            if key not in kernel_texts:
                in_train = set(train.tolist())
                fit_on = [i for i in timed if i in in_train]
                profiled = [kernel_us[i] for i in fit_on]  # type: ignore[index]
                kernel_texts[key] = fit_kernel_model(rows.take(fit_on), profiled, y[fit_on], seed, by_share)
            return kernel_texts[key]

        def stage(train: np.ndarray, kind: str) -> tuple[np.ndarray, list[str], str | None, str | None]:
            """The linear stage's matrix for every model, fitted on ``train``; its terms; its kernel
            model (``kernel_by_share``: fitted with kernels weighted by their share of their model's
            time) and that model's tuning to whole-model times (``_tuned``)."""
            if kind == "additive":
                return additive_x, additive_terms, None, None
            if kind == "kernel" and given_x is not None:  # priced by the given model as it is
                return given_x, KERNEL_TERMS, given, None
            text = kernel_text(train, kind.startswith("kernel_by_share"))
            tuning = None
            if kind.endswith("_tuned"):
                tuning = tune_kernel_model(text, rows.take(train.tolist()), y[train], seed)
            return matrix(kernel_sum_rows(text, rows, tuning), KERNEL_TERMS), KERNEL_TERMS, text, tuning

        kinds = ["additive"] + (["kernel", "kernel_tuned"] if use_kernels else [])
        kinds += ["kernel_by_share", "kernel_by_share_tuned"] if use_kernels and given is None else []
        pred = {f"{k}{c}": np.empty_like(y) for k in kinds for c in ("", "+correction") if c == "" or use_correction}
        order = np.random.default_rng(seed).permutation(len(y))
        for f in range(folds):
            test = order[f::folds]
            train = np.setdiff1d(order, test)
            for kind in kinds:
                x, *_ = stage(train, kind)
                lin_all = np.maximum(x @ _fit_linear(x[train], y[train], positive=kind == "additive"), 1e-6)
                pred[kind][test] = lin_all[test]
                if use_correction:
                    z = np.column_stack([s, np.log(lin_all)])
                    model = _fit_correction(z[train], np.log(y[train] / lin_all[train]), seed)
                    pred[f"{kind}+correction"][test] = lin_all[test] * np.exp(_apply_correction(model, z[test]))
        stats = {name: ErrorStats.of(p, y) for name, p in pred.items()}
        picked = ensemble_selection(pred, y) if ensemble else {max(stats, key=lambda n: _rank(stats[n])): 1}
        everything = np.arange(len(y))

        def fitted(name: str) -> LatencyPredictor:  # candidate ``name`` fitted on every model
            kind, keep = name.removesuffix("+correction"), name.endswith("+correction")
            x, terms, text, tuning = stage(everything, kind)
            w = _fit_linear(x, y, positive=kind == "additive")
            model_text = None
            if keep:
                lin_all = np.maximum(x @ w, 1e-6)
                model_text = _fit_correction(np.column_stack([s, np.log(lin_all)]), np.log(y / lin_all), seed)
            return cls(terms, [float(v) for v in w], model_text, summary_names if keep else [],
                       stats[name].p90_abs_pct, kernel_model=text, kernel_tuning=tuning)  # fmt: skip

        weights = {n: c / sum(picked.values()) for n, c in sorted(picked.items(), key=lambda t: -t[1])}
        chosen_ms = _geometric_mean(pred, weights)
        chosen = ErrorStats.of(chosen_ms, y)
        cv = {"folds": folds, "candidates": {n: st.__dict__ for n, st in stats.items()},
              "chosen": next(iter(weights)) if len(weights) == 1 else "ensemble", "ensemble": weights,
              "chosen_stats": chosen.__dict__, "models_with_kernel_times": len(timed),
              "kernel_model_given": given is not None,
              "cv_ms": chosen_ms.tolist()}  # each model as predicted by the folds that did not see it  # fmt: skip
        if len(weights) == 1:
            return replace(fitted(next(iter(weights))), cv=cv)
        return cls([], [], band_pct=chosen.p90_abs_pct, cv=cv, members=[fitted(n) for n in weights],
                   member_weights=list(weights.values()))  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        """The predictor as JSON. An ensemble's members share per-kernel models (``fit`` fits one per
        kind and tunes it, or not, per member): each text is stored once, under ``kernel_models``, and a
        member names its own by index (ONNX Runtime's six members: 7.9 → 4.6 MB)."""
        shared: list[str] = []
        d = self._json(shared, self.kernel_model)
        if shared:
            d["kernel_models"] = shared
        return d

    def _json(self, shared: list[str], kernel_model: str | int | None) -> dict[str, Any]:
        """``to_json`` of one level, members at any depth (a thread transfer's blend nests two) naming their
        per-kernel models by index into ``shared``, which it extends."""

        def named(m: LatencyPredictor) -> int | None:
            if m.kernel_model is None:
                return None
            if m.kernel_model not in shared:
                shared.append(m.kernel_model)
            return shared.index(m.kernel_model)

        return {
            "terms": self.terms, "weights": self.weights, "correction": self.correction,
            "summary_names": self.summary_names, "band_pct": self.band_pct, "cv": self.cv,
            "log_affine": list(self.log_affine), "kernel_model": kernel_model,
            "kernel_tuning": self.kernel_tuning, "kernel_speedup": self.kernel_speedup, "group_stage": self.group_stage,
            "members": [m._json(shared, named(m)) for m in self.members], "member_weights": self.member_weights,
        }  # fmt: skip

    @classmethod
    def from_json(cls, d: dict[str, Any], shared: Sequence[str] = ()) -> LatencyPredictor:
        shared = d.get("kernel_models", shared)  # members name their per-kernel models by index (older: the text)
        kernel_model = d.get("kernel_model")
        return cls(
            list(d["terms"]), [float(v) for v in d["weights"]], d.get("correction"), list(d.get("summary_names", [])),
            float(d.get("band_pct", 0.0)), dict(d.get("cv", {})), tuple(d.get("log_affine", (0.0, 1.0))),
            shared[kernel_model] if isinstance(kernel_model, int) else kernel_model, d.get("kernel_tuning"),
            tuple(d["kernel_speedup"]) if d.get("kernel_speedup") else None,  # type: ignore[arg-type]
            d.get("group_stage"), [cls.from_json(m, shared) for m in d.get("members", [])],
            [float(w) for w in d.get("member_weights", [])],
        )  # fmt: skip


def _rank(st: ErrorStats) -> tuple[float, float]:
    """How ``fit`` ranks predictions: most models within ±10%, then the lowest median error."""
    return st.within_10pct, -st.median_abs_pct


def _geometric_mean(pred: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
    return np.exp(sum(w * np.log(pred[n]) for n, w in weights.items()))


def ensemble_selection(pred: dict[str, np.ndarray], y: np.ndarray, rounds: int = 10) -> dict[str, int]:
    """Which candidates to average, and how often each counts: Caruana et al.'s ensemble selection (2004)
    over cross-validated predictions ``pred`` of ``y``. Pure.

    Starting from the best candidate, each round adds the one (again, if it helps most) whose geometric
    mean with those picked ranks best (``_rank``); the best-ranked prefix of the ``rounds`` picks is kept.
    The candidates err differently (the additive terms against the per-kernel models, with and without
    the correction), so their mean errs less than any of them: on ONNX Runtime (639 calibration models,
    2026-12-06, AMD EPYC) the best candidate put 88.0% of 200 held-out models within ±10%, the
    ensemble this selection picked (six candidates) 95.0%. Written here because scikit-learn's ensembles
    fit their own estimators, and these candidates are fitted per fold by ``fit``.
    """

    def counted(picks: list[str]) -> dict[str, int]:
        return {n: picks.count(n) for n in dict.fromkeys(picks)}

    def ranked(picks: list[str]) -> tuple[float, float]:  # the geometric mean of ``picks``, ranked
        weights = {n: c / len(picks) for n, c in counted(picks).items()}
        return _rank(ErrorStats.of(_geometric_mean(pred, weights), y))

    picks = [max(pred, key=lambda n: ranked([n]))]
    best_picks = list(picks)
    for _ in range(rounds - 1):
        picks.append(max(pred, key=lambda n: ranked([*picks, n])))
        if ranked(picks) > ranked(best_picks):
            best_picks = list(picks)
    return counted(best_picks)


def sped_up_parts(parts: np.ndarray, theta: tuple[float, float, float, float]) -> np.ndarray:
    """Each kernel's time (ms) ``parts`` sped up by a factor rising from 1 (a tiny kernel) towards
    ``speedup`` for one well over ``half_ms``, then scaled (``theta = (speedup, half_ms, scale, _)``). Pure."""
    speedup, half_ms, scale, _ = theta
    return scale * parts / (1.0 + (speedup - 1.0) * parts / (parts + half_ms))


def sped_up(parts: np.ndarray, rest: float, theta: tuple[float, float, float, float]) -> float:
    """A model's time (ms) from its kernels' times ``parts`` and the ``rest`` of its time on the base:
    ``sped_up_parts`` summed, plus ``rest`` and ``theta``'s ``constant_ms``
    (``theta = (speedup, half_ms, scale, constant_ms)``). Pure."""
    return float(np.sum(sped_up_parts(parts, theta)) + rest + theta[3])


def _fit_speedup(parts: Sequence[np.ndarray], rest: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    """``sped_up``'s parameters from a few timings ``y``: least squares on the log error with a soft-L1
    loss, so that one far-off timing of the few does not pull the fit. Pure apart from SciPy."""
    from scipy.optimize import least_squares

    def theta_of(v: np.ndarray) -> tuple[float, float, float, float]:
        return 1.0 + float(np.exp(v[0])), float(np.exp(v[1])), float(v[2]), float(v[3])

    def residuals(v: np.ndarray) -> np.ndarray:
        pred = [sped_up(p, r, theta_of(v)) for p, r in zip(parts, rest, strict=True)]
        return np.log(np.maximum(pred, 1e-6)) - np.log(y)

    fit = least_squares(residuals, np.array([0.0, np.log(0.05), 1.0, 0.0]), loss="soft_l1", f_scale=0.1)
    return theta_of(fit.x)


def _cross_validated(form: _Form, models: Sequence[Sequence[Kernel]], y: np.ndarray) -> LatencyPredictor:
    """``form`` fitted on all the models, with its error band and held-out predictions of ``y`` in ``cv``:
    leave-one-out up to ``TRANSFER_FOLDS`` models (a transfer's default 20), that many folds above."""
    name, fit = form
    everyone = np.arange(len(y))
    held_out_ms = np.empty_like(y)
    for fold in np.array_split(everyone, min(len(y), TRANSFER_FOLDS)):
        held_out_ms[fold] = fit(np.setdiff1d(everyone, fold)).predict_many([models[i] for i in fold])
    band_pct, cv = _transfer_cv(name, held_out_ms, y)
    return replace(fit(everyone), band_pct=band_pct, cv=cv)


def _transfer_cv(form: str, loo_ms: np.ndarray, y: np.ndarray, short: str | None = None
                 ) -> tuple[float, dict[str, Any]]:  # fmt: skip
    """A transfer's error band (the 90th percentile of its held-out relative errors) and what ``cv``
    records of them: the form, the held-out predictions, their median error and the share within ±10%
    (what the benchmark scores on other models; from 20 a coarse guide: on the benchmark's nine
    acceptance draws it was 24 points under to 30 over the share of 200 held-out models, docs/hardware.md);
    the median keyed by ``short``, else the form. Pure."""
    err = np.abs(loo_ms / y - 1.0)
    cv = {"transfer_fit": len(y), "transfer_form": form,
          "transfer_loo_median_pct": {short or form: float(np.median(err) * 100)},
          "transfer_loo_within_10pct": float(np.mean(err <= 0.10)),
          "transfer_loo_ms": loo_ms.tolist()}  # fmt: skip
    return float(np.percentile(err, 90) * 100), cv


def _robust_linear(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Weights ``w`` of ``x @ w ≈ y`` on the log error with a soft-L1 loss, from ``_fit_linear``'s: with
    a few models, one whose profiled kernels sum to 5× its time (ONNX Runtime's profiler adds time to
    each operator) otherwise drags the kernels' weight down for all (LiteRT → ONNX Runtime, 2026-12-06:
    7% of held-out models within ±10% by least squares, 57% so). Pure apart from SciPy."""
    from scipy.optimize import least_squares

    scale = np.maximum(np.abs(x).max(axis=0), 1e-12)
    start = _fit_linear(x, y, positive=False) * scale

    def residuals(v: np.ndarray) -> np.ndarray:
        return np.log(np.maximum((x / scale) @ v, 1e-9)) - np.log(y)

    return least_squares(residuals, start, loss="soft_l1", f_scale=0.1).x / scale


def _log_affine(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """``(a, b)`` of ``y = a + b x`` by Theil-Sen regression; a shift only under 5 points. Pure."""
    from sklearn.linear_model import TheilSenRegressor

    if len(y) < 5:  # too few points for a slope
        return float(np.median(y - x)), 1.0
    fit = TheilSenRegressor(random_state=0).fit(x[:, None], y)
    return float(fit.intercept_), float(fit.coef_[0])


def _fit_group_stage(x: np.ndarray, y: np.ndarray, prior: float = 1.0) -> list[float]:
    """Weights ``w`` of ``x @ w ≈ y`` (``x``: ``_group_ms``' columns) on relative error, each group's
    scale ``≥ 0`` and pulled towards one scale common to all groups: the pull costs ``prior`` times a
    scale's difference from the common one, as much as a model ``prior · difference`` off. Twenty
    timings cannot pin five scales alone (a group in few of them), and without the pull the fit
    scored worse than with one common scale. Soft-L1 loss, so that one far-off timing of the few
    does not pull the fit. Pure apart from SciPy (a bounded, robust least squares)."""
    from scipy.optimize import least_squares

    g = len(KERNEL_GROUPS)
    rel = x / y[:, None]
    common = np.column_stack([rel[:, :g].sum(axis=1), rel[:, g:]])  # one scale, the count, the constant

    def robust(a: np.ndarray, b: np.ndarray, lower: np.ndarray) -> np.ndarray:
        start = np.r_[np.ones(len(lower) - 2), 0.0, 0.0]  # the scales at 1, no count or constant term
        fit = least_squares(lambda w: a @ w - b, start, bounds=(lower, np.inf), loss="soft_l1", f_scale=0.1)
        return fit.x

    scale = robust(common, np.ones_like(y), np.array([0.0, -np.inf, -np.inf]))[0]
    pull = np.hstack([prior * np.eye(g), np.zeros((g, x.shape[1] - g))])
    w = robust(np.vstack([rel, pull]), np.r_[np.ones_like(y), np.full(g, prior * scale)],
               np.r_[np.zeros(g), -np.inf, -np.inf])  # fmt: skip
    return [float(v) for v in w]


def macs_only_fit(macs: np.ndarray, latency_ms: np.ndarray, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Cross-validated predictions of the baseline ``latency = a + b · MACs`` (least squares). Pure."""
    y = np.asarray(latency_ms, dtype=np.float64)
    x = np.column_stack([np.ones_like(y), np.asarray(macs, dtype=np.float64) / MB])
    pred = np.empty_like(y)
    order = np.random.default_rng(seed).permutation(len(y))
    for f in range(folds):
        test = order[f::folds]
        train = np.setdiff1d(order, test)
        coef, *_ = np.linalg.lstsq(x[train], y[train], rcond=None)
        pred[test] = x[test] @ coef
    return pred
