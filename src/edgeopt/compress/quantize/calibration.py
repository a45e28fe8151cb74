"""Calibration math: pure functions over histograms and arrays (numpy only, no torch).

An activation observer accumulates a histogram of the values it sees (``Histogram``, merged batch
by batch with ``merge_into``); a *range method* then picks the clipping range ``[lo, hi]`` that
becomes the int8 scale and zero point (``qparams_from_range``):

- ``minmax_range``: the full observed range (no clipping).
- ``percentile_range``: the ``p``-th percentile at each tail (drops rare outliers).
- ``entropy_range``: the range minimising the KL divergence between the clipped distribution and
  its quantized version (TensorRT's calibration, over shrink factors of the observed range).
- ``mse_range``: the range minimising the expected squared error, rounding noise ``s²/12`` inside
  the range plus clipping error outside it.

Weights use ``weight_scales`` (per-channel symmetric, minmax or MSE-optimal clipping). ``sqnr_db``
measures how much of a signal survives quantization. Cost: every function is O(bins x candidates)
at most (2,048 x 100 by default: well under a millisecond to a few milliseconds).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RANGE_METHODS = ("minmax", "percentile", "entropy", "mse")  # ranges chosen from a histogram (choose_range)
CALIBRATION_METHODS = (*RANGE_METHODS, "meanmax")  # + per-sample extremes (SampleExtremes, meanmax_range)
DEFAULT_BINS = 2048
ACT_EPS = 2.0**-12  # smallest activation scale (XNNPACK's quantizer uses the same floor)


@dataclass(frozen=True)
class Histogram:
    """Counts of values in ``bins`` equal-width bins spanning ``[lo, hi]``."""

    counts: np.ndarray
    lo: float
    hi: float

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(self.lo, self.hi, len(self.counts) + 1)

    @property
    def centers(self) -> np.ndarray:
        e = self.edges
        return 0.5 * (e[:-1] + e[1:])

    @property
    def total(self) -> float:
        return float(self.counts.sum())


def histogram_of(
    x: np.ndarray, bins: int = DEFAULT_BINS, lo: float | None = None, hi: float | None = None
) -> Histogram:
    """Histogram of the finite values of ``x`` over ``[lo, hi]`` (default: their min and max). Pure."""
    v = np.asarray(x, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return Histogram(np.zeros(bins), 0.0, 0.0)
    lo = float(v.min()) if lo is None else float(lo)
    hi = float(v.max()) if hi is None else float(hi)
    if hi <= lo:
        counts = np.zeros(bins)
        counts[0] = v.size
        return Histogram(counts, lo, lo)
    counts, _ = np.histogram(np.clip(v, lo, hi), bins=bins, range=(lo, hi))
    return Histogram(counts.astype(np.float64), lo, hi)


def rebin(h: Histogram, lo: float, hi: float) -> Histogram:
    """``h`` redistributed over ``[lo, hi]`` (which must contain ``h``'s range), same bin count. Pure.

    Mass moves by linear interpolation of the cumulative distribution, so totals are preserved
    exactly and values stay where they were to within one new bin.
    """
    bins = len(h.counts)
    if h.total == 0 or (lo == h.lo and hi == h.hi):
        return Histogram(h.counts.copy() if h.total else np.zeros(bins), lo, hi)
    if h.hi <= h.lo:  # a point mass
        counts = np.zeros(bins)
        i = 0 if hi <= lo else min(bins - 1, int((h.lo - lo) / (hi - lo) * bins))
        counts[i] = h.total
        return Histogram(counts, lo, hi)
    cdf = np.concatenate([[0.0], np.cumsum(h.counts)])
    new_edges = np.linspace(lo, hi, bins + 1)
    new_cdf = np.interp(new_edges, h.edges, cdf, left=0.0, right=cdf[-1])
    return Histogram(np.diff(new_cdf), lo, hi)


def merge_into(h: Histogram | None, x: np.ndarray, bins: int = DEFAULT_BINS) -> Histogram:
    """Add the values of ``x`` to histogram ``h`` (None: start one), widening its range if needed. Pure."""
    v = np.asarray(x, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if h is None or h.total == 0:
        return histogram_of(v, bins)
    if v.size == 0:
        return h
    lo, hi = min(h.lo, float(v.min())), max(h.hi, float(v.max()))
    base = rebin(h, lo, hi)
    if hi <= lo:
        counts = base.counts.copy()
        counts[0] += v.size
        return Histogram(counts, lo, hi)
    add = histogram_of(v, bins, lo, hi)
    return Histogram(base.counts + add.counts, lo, hi)


def qparams_from_range(
    lo: float, hi: float, qmin: int = -128, qmax: int = 127, symmetric: bool = False, eps: float = ACT_EPS
) -> tuple[float, int]:
    """Scale and zero point that map ``[lo, hi]`` (widened to include 0) onto ``[qmin, qmax]``. Pure.

    Affine: ``scale = (hi - lo) / (qmax - qmin)``, ``zero_point = qmin - round(lo / scale)``;
    symmetric: ``scale = max(|lo|, |hi|) / ((qmax - qmin) / 2)``, zero point 0. Same formulas
    (and the same round-half-to-even and ``eps`` floor) as torchao's observers, so our ranges
    become exactly the parameters PT2E would compute from them.
    """
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if symmetric:
        scale = max(max(-lo, hi) / ((qmax - qmin) / 2), eps)
        return float(np.float32(scale)), 0
    scale = float(np.float32(max((hi - lo) / float(qmax - qmin), eps)))
    zp = int(qmin - np.round(np.float32(lo) / np.float32(scale)))
    return scale, int(np.clip(zp, qmin, qmax))


def fake_quantize(x: np.ndarray, scale: float, zero_point: int, qmin: int, qmax: int) -> np.ndarray:
    """Quantize then dequantize ``x`` (round half to even, clipped), as PT2E's q/dq pair does. Pure."""
    q = np.clip(np.round(np.asarray(x, np.float64) / scale) + zero_point, qmin, qmax)
    return (q - zero_point) * scale


def minmax_range(h: Histogram) -> tuple[float, float]:
    """The whole observed range. Pure."""
    return h.lo, h.hi


def _quantile(h: Histogram, q: float) -> float:
    cdf = np.concatenate([[0.0], np.cumsum(h.counts)]) / max(h.total, 1e-300)
    return float(np.interp(q, cdf, h.edges))


def percentile_range(h: Histogram, percentile: float = 99.99) -> tuple[float, float]:
    """Clip ``100 - percentile`` percent of the mass at each tail (``percentile`` in (50, 100]). Pure."""
    if not 50.0 < percentile <= 100.0:
        raise ValueError(f"percentile must be in (50, 100], not {percentile}")
    if h.total == 0 or h.hi <= h.lo:
        return h.lo, h.hi
    tail = (100.0 - percentile) / 100.0
    lo = _quantile(h, tail) if h.lo < 0 else h.lo
    return lo, _quantile(h, 1.0 - tail)


def _shrink_candidates(h: Histogram, min_bins: int, steps: int) -> list[tuple[float, float, int, int]]:
    """Ranges ``alpha * [lo, hi]`` (clamped to the histogram) as (lo, hi, first bin, end bin)."""
    n = len(h.counts)
    width = (h.hi - h.lo) / n
    out = []
    for alpha in np.linspace(1.0, 0.0, steps, endpoint=False):
        lo, hi = max(h.lo, alpha * h.lo) if h.lo < 0 else h.lo, alpha * h.hi if h.hi > 0 else h.hi
        i0 = int(np.clip(np.floor((lo - h.lo) / width + 1e-9), 0, n - 1))
        i1 = int(np.clip(np.ceil((hi - h.lo) / width - 1e-9), i0 + 1, n))
        if i1 - i0 < min_bins:
            break
        out.append((h.lo + i0 * width, h.lo + i1 * width, i0, i1))
    return out


def kl_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """KL(p || q) of two (unnormalised) histograms, over the bins where p > 0. Pure.

    Returns inf when q is zero where p is not.
    """
    p = np.asarray(p, np.float64)
    q = np.asarray(q, np.float64)
    p = p / p.sum()
    q = q / q.sum()
    m = p > 0
    if np.any(q[m] <= 0):
        return float("inf")
    return float(np.sum(p[m] * np.log(p[m] / q[m])))


def quantized_distribution(p: np.ndarray, levels: int) -> np.ndarray:
    """``p`` merged into ``levels`` equal groups of bins, each group's mass spread evenly over its
    non-empty bins: the histogram a ``levels``-level quantizer leaves of ``p``. Pure."""
    p = np.asarray(p, np.float64)
    n = len(p)
    group = np.minimum((np.arange(n) * levels) // n, levels - 1)
    mass = np.bincount(group, weights=p, minlength=levels)
    nonzero = np.bincount(group, weights=(p > 0).astype(np.float64), minlength=levels)
    per_bin = np.divide(mass, nonzero, out=np.zeros(levels), where=nonzero > 0)
    return np.where(p > 0, per_bin[group], 0.0)


def entropy_range(h: Histogram, levels: int = 256, steps: int = 128) -> tuple[float, float]:
    """The clipping range (a shrink of the observed range) with the least KL divergence. Pure.

    For each candidate, values beyond it are folded into its edge bins (``p``); the values inside
    it, quantized to ``levels`` levels, give ``q`` (empty bins where ``p`` has mass get a tiny
    floor); the smallest ``KL(p || q)`` wins (TensorRT's entropy calibration, two-sided). The bin
    holding 0 is left out of both: zero is represented exactly.
    """
    if h.total == 0 or h.hi <= h.lo:
        return h.lo, h.hi
    best, best_kl = (h.lo, h.hi), float("inf")
    for lo, hi, i0, i1 in _shrink_candidates(h, levels, steps):
        raw = h.counts[i0:i1].copy()
        p = raw.copy()
        p[0] += h.counts[:i0].sum()
        p[-1] += h.counts[i1:].sum()
        # zero is exactly representable (the zero point): the bin holding it, often a ReLU's spike of
        # exact zeros, is left out, else smearing that spike over its level would favour tiny ranges
        z = int(np.floor((0.0 - lo) / (hi - lo) * len(raw))) if lo <= 0.0 < hi else -1
        if 0 <= z < len(raw):
            raw[z] = p[z] = 0.0
        if p.sum() <= 0:
            continue
        # q is built from the clipped values alone: the folded-in outliers are what it cannot represent
        q = quantized_distribution(raw, levels)
        q = np.where((p > 0) & (q <= 0), 1e-7 * max(q.sum(), 1e-300), q)
        kl = kl_divergence(p, q)
        if kl < best_kl:
            best, best_kl = (lo, hi), kl
    return best


def expected_mse(h: Histogram, lo: float, hi: float, qmin: int = -128, qmax: int = 127) -> float:
    """Expected squared error of quantizing ``h``'s values with range ``[lo, hi]``. Pure.

    Values inside the range get uniform rounding noise (``scale² / 12``); values outside are
    clipped to the nearest representable end, costing ``(value - end)²`` (bin centres).
    """
    scale, zp = qparams_from_range(lo, hi, qmin, qmax)
    qlo, qhi = (qmin - zp) * scale, (qmax - zp) * scale
    c, n = h.centers, h.counts
    inside = (c >= qlo) & (c <= qhi)
    err = n[inside].sum() * scale**2 / 12.0
    err += float(np.sum(n[c < qlo] * (c[c < qlo] - qlo) ** 2) + np.sum(n[c > qhi] * (c[c > qhi] - qhi) ** 2))
    return float(err / max(h.total, 1e-300))


def mse_range(h: Histogram, qmin: int = -128, qmax: int = 127, steps: int = 100) -> tuple[float, float]:
    """The clipping range (a shrink of the observed range) with the least expected squared error. Pure."""
    if h.total == 0 or h.hi <= h.lo:
        return h.lo, h.hi
    best, best_err = (h.lo, h.hi), float("inf")
    for lo, hi, _, _ in _shrink_candidates(h, 1, steps):
        err = expected_mse(h, lo, hi, qmin, qmax)
        if err < best_err:
            best, best_err = (lo, hi), err
    return best


def choose_range(h: Histogram, method: str, percentile: float = 99.99, qmin: int = -128, qmax: int = 127):
    """Dispatch to one of ``RANGE_METHODS``. Pure."""
    if method == "minmax":
        return minmax_range(h)
    if method == "percentile":
        return percentile_range(h, percentile)
    if method == "entropy":
        return entropy_range(h, levels=qmax - qmin + 1)
    if method == "mse":
        return mse_range(h, qmin, qmax)
    raise ValueError(f"unknown calibration method '{method}' (choose one of {', '.join(RANGE_METHODS)})")


@dataclass
class SampleExtremes:
    """Running sums of each calibration sample's min and max, per tensor shape (for ``meanmax``).

    A shared observer (a pool or reshape sharing its input's parameters) sees tensors of several
    shapes; each shape keeps its own sums, and the range covers the widest of their means.
    """

    sums: dict[tuple[int, ...], list[float]]

    def add(self, x: np.ndarray) -> None:
        """Add a batch (samples on axis 0)."""
        v = np.asarray(x, np.float64).reshape(len(x), -1) if np.ndim(x) > 1 else np.asarray(x, np.float64)[:, None]
        s = self.sums.setdefault(tuple(np.shape(x)[1:]), [0.0, 0.0, 0])
        s[0] += float(v.min(axis=1).sum())
        s[1] += float(v.max(axis=1).sum())
        s[2] += len(v)


def meanmax_range(ex: SampleExtremes) -> tuple[float, float]:
    """Mean over samples of each sample's min and max (NNCF's ``MEAN_MINMAX``), widened to hold 0 and,
    when it is signed, made symmetric (NNCF's signed activations are symmetric). Pure.

    Clips the rare large values more than ``minmax`` or a histogram method: on the MLPerf ResNet-8 with
    JPEG calibration images this clipping alone, given to the float model, moves its accuracy (see
    docs/quantization.md: it is domain adaptation, not quantization accuracy).
    """
    lo = min((s[0] / s[2] for s in ex.sums.values() if s[2]), default=0.0)
    hi = max((s[1] / s[2] for s in ex.sums.values() if s[2]), default=0.0)
    if lo < 0:  # a signed tensor gets a symmetric range, as NNCF gives it (its per-sample min is rarely -max)
        m = max(-lo, hi)
        return -m, m
    return 0.0, max(hi, 0.0)


def weight_scales(w: np.ndarray, bits: int = 8, method: str = "minmax", steps: int = 50, axis: int = 0) -> np.ndarray:
    """Per-channel symmetric scales for weight ``w`` (channels on ``axis``), range ±(2^(bits-1) - 1). Pure.

    ``minmax`` uses each channel's max |w|; ``mse`` searches a clipping factor per channel that
    minimises the channel's squared quantization error (it pays off at 4 bits).
    """
    qmax = 2 ** (bits - 1) - 1
    w2 = np.moveaxis(np.asarray(w, np.float64), axis, 0).reshape(np.shape(w)[axis], -1)
    amax = np.abs(w2).max(axis=1)
    scales = np.maximum(amax / qmax, ACT_EPS)
    if method == "minmax":
        return scales.astype(np.float32)
    if method != "mse":
        raise ValueError(f"unknown weight method '{method}' (minmax or mse)")
    best_err = np.full(len(amax), np.inf)
    best = scales.copy()
    for alpha in np.linspace(1.0, 0.3, steps):
        s = np.maximum(alpha * amax / qmax, ACT_EPS)[:, None]
        err = ((np.clip(np.round(w2 / s), -qmax, qmax) * s - w2) ** 2).sum(axis=1)
        better = err < best_err
        best_err[better] = err[better]
        best[better] = s[better, 0]
    return best.astype(np.float32)


def quantize_weight(w: np.ndarray, scales: np.ndarray, bits: int = 8, axis: int = 0) -> np.ndarray:
    """Fake-quantized (quantize + dequantize) weight with per-channel symmetric ``scales``. Pure."""
    qmax = 2 ** (bits - 1) - 1
    shape = [1] * np.ndim(w)
    shape[axis] = -1
    s = np.asarray(scales, np.float64).reshape(shape)
    return (np.clip(np.round(np.asarray(w, np.float64) / s), -qmax, qmax) * s).astype(np.float32)


def sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio ``10 log10(Σref² / Σ(ref - test)²)`` in dB. Pure.

    inf when the two are identical; higher is better (each extra bit adds about 6 dB).
    """
    ref = np.asarray(reference, np.float64)
    noise = float(np.sum((ref - np.asarray(test, np.float64)) ** 2))
    signal = float(np.sum(ref**2))
    if noise == 0:
        return float("inf")
    return float(10.0 * np.log10(max(signal, 1e-300) / noise))
