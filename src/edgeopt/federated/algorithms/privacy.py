"""DP-FedAvg: per-client clipping, Gaussian noise on the sum, and ε from Opacus' RDP accountant.

McMahan et al. 2018 ("Learning Differentially Private Recurrent Language Models"): each
client's delta is clipped to L2 norm ``clip``; the server averages the clipped deltas with
a fixed denominator (the expected number of clients per round) and adds Gaussian noise of
standard deviation ``noise_multiplier · clip / expected_clients`` to the mean. This is the
sampled Gaussian mechanism with sampling rate ``q = per_round / num_clients`` per round,
so the privacy loss over ``rounds`` rounds is what an RDP accountant computes for it
(client-level DP; ``delta`` defaults to 1e-5). The accounting is Opacus'
``opacus.accountants.analysis.rdp`` (Mironov et al. 2019).
Cost: O(P) per client for clipping; the accountant is milliseconds.
"""

from __future__ import annotations

import functools

import numpy as np

RDP_ORDERS = tuple([1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)) + [128, 256, 512])


def l2_norm(x: np.ndarray) -> float:
    """L2 norm accumulated in float64, without BLAS (whose threads stall on a busy machine)."""
    return float(np.sqrt(np.sum(np.square(np.asarray(x), dtype=np.float64))))


def clip_by_norm(delta: np.ndarray, clip: float) -> tuple[np.ndarray, float]:
    """``delta`` scaled down to L2 norm ``clip`` if longer; also returns the original norm."""
    norm = l2_norm(delta)
    factor = min(1.0, clip / norm) if norm > 0 else 1.0
    return (np.asarray(delta, np.float32) * np.float32(factor)).astype(np.float32), norm


def noisy_mean(clipped_sum: np.ndarray, expected_clients: float, clip: float, noise_multiplier: float,
               rng: np.random.Generator) -> np.ndarray:  # fmt: skip
    """(Σ clipped + N(0, (σ·C)²)) / expected_clients — the DP-FedAvg server average."""
    noise = rng.normal(0.0, noise_multiplier * clip, size=clipped_sum.shape)
    return ((np.asarray(clipped_sum, np.float64) + noise) / expected_clients).astype(np.float32)


def dp_epsilon(noise_multiplier: float, sample_rate: float, rounds: int, delta: float = 1e-5) -> float:
    """ε of ``rounds`` sampled-Gaussian rounds (RDP accountant, converted at ``delta``); inf without noise.

    RDP composes additively, so one round's RDP curve is computed once (cached) and scaled.
    """
    if noise_multiplier <= 0:
        return float("inf")
    if rounds <= 0:
        return 0.0
    from opacus.accountants.analysis import rdp

    per_round = _rdp_one_round(float(noise_multiplier), float(sample_rate))
    eps, _ = rdp.get_privacy_spent(orders=list(RDP_ORDERS), rdp=per_round * int(rounds), delta=float(delta))
    return float(eps)


@functools.lru_cache(maxsize=64)
def _rdp_one_round(noise_multiplier: float, sample_rate: float) -> np.ndarray:
    from opacus.accountants.analysis import rdp

    r = rdp.compute_rdp(q=sample_rate, noise_multiplier=noise_multiplier, steps=1, orders=list(RDP_ORDERS))
    return np.asarray(r, np.float64)
