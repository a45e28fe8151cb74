"""Server side: aggregation rules, server optimizers, update screening (all pure numpy).

Aggregators take the stacked client deltas ``(n_clients, n_params)``:

- :func:`weighted_mean`: FedAvg, weights = samples per client. Cost O(n·P).
- :func:`coordinate_median`, :func:`trimmed_mean`: per-coordinate robust rules (Yin et al.
  2018). Cost O(n·P·log n).
- :func:`krum`: (Multi-)Krum (Blanchard et al. 2017): the update(s) closest to their
  ``n - f - 2`` nearest neighbours. Cost O(n²·P).

:func:`server_update` applies the aggregate with plain SGD (FedAvg, server lr), FedAdam or
FedYogi (Reddi et al. 2021, "Adaptive Federated Optimization", Algorithm 2, no bias
correction, ``v`` starts at ``tau²``), and updates SCAFFOLD's global control.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

AGGREGATORS = ("mean", "median", "trimmed", "krum")
SERVER_OPTIMIZERS = ("sgd", "adam", "yogi")


def weighted_mean(deltas: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Σ w_i Δ_i / Σ w_i (uniform when ``weights`` is None)."""
    deltas = np.asarray(deltas, np.float64)
    w = np.ones(len(deltas)) if weights is None else np.asarray(weights, np.float64)
    if len(deltas) == 0 or w.sum() <= 0:
        raise ValueError("nothing to aggregate")
    return ((w[:, None] * deltas).sum(axis=0) / w.sum()).astype(np.float32)


def coordinate_median(deltas: np.ndarray) -> np.ndarray:
    """Per-coordinate median of the client deltas."""
    return np.median(np.asarray(deltas, np.float64), axis=0).astype(np.float32)


def trimmed_mean(deltas: np.ndarray, beta: float) -> np.ndarray:
    """Per coordinate, drop the ``floor(beta·n)`` largest and smallest values and average the rest."""
    d = np.sort(np.asarray(deltas, np.float64), axis=0)
    k = int(np.floor(beta * len(d)))
    if 2 * k >= len(d):
        raise ValueError(f"trimming {k} from each end leaves nothing of {len(d)} updates")
    return d[k : len(d) - k].mean(axis=0).astype(np.float32)


def krum_scores(deltas: np.ndarray, f: int) -> np.ndarray:
    """Krum score per update: sum of squared distances to its ``n - f - 2`` nearest other updates."""
    d = np.asarray(deltas, np.float64)
    n = len(d)
    k = n - f - 2
    if k < 1:
        raise ValueError(f"Krum with f={f} needs at least {f + 3} updates, got {n}")
    sq = np.sum(d * d, axis=1)
    dist = np.maximum(sq[:, None] + sq[None, :] - 2 * d @ d.T, 0.0)
    np.fill_diagonal(dist, np.inf)
    return np.sort(dist, axis=1)[:, :k].sum(axis=1)


def krum(deltas: np.ndarray, f: int, m: int = 1) -> np.ndarray:
    """Mean of the ``m`` updates with the lowest Krum score (``m=1``: Krum; more: Multi-Krum)."""
    order = np.argsort(krum_scores(deltas, f), kind="stable")
    return np.asarray(deltas, np.float64)[order[:m]].mean(axis=0).astype(np.float32)


def parse_aggregator(spec: str) -> tuple[str, float]:
    """``mean`` | ``median`` | ``trimmed:β`` | ``krum:f`` -> (name, parameter)."""
    name, _, arg = spec.partition(":")
    if name not in AGGREGATORS:
        raise ValueError(f"unknown aggregator '{spec}' (use {', '.join(AGGREGATORS)})")
    default = {"mean": 0.0, "median": 0.0, "trimmed": 0.1, "krum": 1.0}[name]
    return name, float(arg) if arg else default


def aggregate(deltas: np.ndarray, weights: np.ndarray | None, spec: str = "mean") -> np.ndarray:
    """Aggregate the stacked deltas with the rule named by ``spec`` (see :func:`parse_aggregator`)."""
    name, arg = parse_aggregator(spec)
    if name == "mean":
        return weighted_mean(deltas, weights)
    if name == "median":
        return coordinate_median(deltas)
    if name == "trimmed":
        return trimmed_mean(deltas, arg)
    return krum(deltas, int(arg))


@dataclass(frozen=True)
class Screening:
    """Which updates were accepted, and why the others were not."""

    accepted: np.ndarray  # bool per update
    reasons: tuple[str, ...]  # '' when accepted


def screen_updates(deltas: np.ndarray, max_norm_ratio: float = 10.0) -> Screening:
    """Reject non-finite updates and those whose L2 norm exceeds ``max_norm_ratio`` × the median norm.

    The norm test needs at least three finite updates (a median of two says little).
    """
    d = np.asarray(deltas)
    finite = np.isfinite(d).all(axis=1) if d.size else np.ones(len(d), bool)
    norms = np.full(len(d), np.inf)
    if finite.any():
        norms[finite] = np.sqrt(np.sum(np.square(d[finite], dtype=np.float64), axis=1))
    reasons = ["" if ok else "non-finite values" for ok in finite]
    if finite.sum() >= 3 and max_norm_ratio > 0:
        med = float(np.median(norms[finite]))
        for i in np.flatnonzero(finite):
            if med > 0 and norms[i] > max_norm_ratio * med:
                reasons[i] = f"norm {norms[i]:.3g} > {max_norm_ratio:g} x median {med:.3g}"
    accepted = np.array([r == "" for r in reasons], bool)
    return Screening(accepted, tuple(reasons))


@dataclass(frozen=True)
class ServerOptConfig:
    """Server optimizer: ``sgd`` (FedAvg: x += lr·Δ), ``adam`` (FedAdam) or ``yogi`` (FedYogi)."""

    name: str = "sgd"
    lr: float = 1.0
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3


@dataclass(frozen=True)
class ServerState:
    """Everything the server carries between rounds (what a checkpoint holds)."""

    params: np.ndarray
    round: int = 0
    m: np.ndarray | None = None  # first moment (FedAdam/FedYogi)
    v: np.ndarray | None = None  # second moment
    control: np.ndarray | None = None  # SCAFFOLD global control c


def init_state(params: np.ndarray, opt: ServerOptConfig, scaffold: bool = False) -> ServerState:
    """The round-0 server state for ``params``."""
    params = np.asarray(params, np.float32).copy()
    adaptive = opt.name in ("adam", "yogi")
    return ServerState(
        params=params,
        m=np.zeros_like(params) if adaptive else None,
        v=np.full_like(params, opt.tau**2) if adaptive else None,
        control=np.zeros_like(params) if scaffold else None,
    )


def server_update(
    state: ServerState,
    delta: np.ndarray,
    opt: ServerOptConfig,
    control_delta: np.ndarray | None = None,
    control_fraction: float = 1.0,
) -> ServerState:
    """Apply the aggregated ``delta`` (pseudo-gradient, a weight change) and return the next state.

    SCAFFOLD: ``c += control_fraction * control_delta`` where ``control_delta`` is the mean of
    the clients' Δc_i and ``control_fraction`` is |S|/N.
    """
    delta = np.asarray(delta, np.float32)
    m, v = state.m, state.v
    if opt.name == "sgd":
        params = state.params + np.float32(opt.lr) * delta
    elif opt.name in ("adam", "yogi"):
        assert m is not None and v is not None
        m = np.float32(opt.beta1) * m + np.float32(1 - opt.beta1) * delta
        d2 = delta * delta
        if opt.name == "adam":
            v = np.float32(opt.beta2) * v + np.float32(1 - opt.beta2) * d2
        else:
            v = v - np.float32(1 - opt.beta2) * d2 * np.sign(v - d2)
        params = state.params + np.float32(opt.lr) * m / (np.sqrt(v) + np.float32(opt.tau))
    else:
        raise ValueError(f"unknown server optimizer '{opt.name}' (use {', '.join(SERVER_OPTIMIZERS)})")
    control = state.control
    if control is not None and control_delta is not None:
        control = control + np.float32(control_fraction) * np.asarray(control_delta, np.float32)
    return replace(state, params=params.astype(np.float32), round=state.round + 1, m=m, v=v, control=control)


def sample_clients(num_clients: int, per_round: int, round_index: int, seed: int) -> np.ndarray:
    """The sorted ids of ``per_round`` clients drawn without replacement for ``round_index``.

    Depends only on (seed, round), so a resumed run samples exactly as an uninterrupted one.
    """
    if not 1 <= per_round <= num_clients:
        raise ValueError(f"per_round must be in 1..{num_clients}, got {per_round}")
    rng = np.random.default_rng([seed, round_index, 0x5A])
    return np.sort(rng.choice(num_clients, size=per_round, replace=False))
