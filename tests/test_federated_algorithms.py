"""Pure federated algorithm math against hand-computed values (offline, milliseconds)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgeopt.federated.algorithms import (
    ClientConfig,
    LocalTrainer,
    ServerOptConfig,
    client_update,
    compress,
    coordinate_median,
    decompress,
    dp_epsilon,
    init_state,
    krum,
    payload_bytes,
    sample_clients,
    screen_updates,
    server_update,
    trimmed_mean,
    weighted_mean,
)
from edgeopt.federated.algorithms import secagg as sa
from edgeopt.federated.algorithms.privacy import clip_by_norm, noisy_mean
from edgeopt.federated.algorithms.server import krum_scores


def test_fedavg_weights_by_samples() -> None:
    deltas = np.array([[1.0, 0.0], [0.0, 1.0], [4.0, 4.0]], np.float32)
    out = weighted_mean(deltas, np.array([10, 30, 60]))
    np.testing.assert_allclose(out, [(10 + 240) / 100, (30 + 240) / 100], rtol=1e-6)
    np.testing.assert_allclose(weighted_mean(deltas), [5 / 3, 5 / 3], rtol=1e-6)


def test_median_and_trimmed_mean() -> None:
    d = np.array([[1, 10], [2, 20], [3, -30], [100, 40], [5, 50]], np.float32)
    np.testing.assert_allclose(coordinate_median(d), [3, 20])
    # beta 0.2 of 5 drops one from each end per coordinate: [2,3,5] and [10,20,40]
    np.testing.assert_allclose(trimmed_mean(d, 0.2), [10 / 3, 70 / 3], rtol=1e-6)
    with pytest.raises(ValueError):
        trimmed_mean(d, 0.6)


def test_krum_picks_the_central_update_and_ignores_the_outlier() -> None:
    d = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [50.0, 50.0]])
    # n=5, f=1: each score sums the n-f-2 = 2 smallest squared distances
    scores = krum_scores(d, 1)
    np.testing.assert_allclose(scores[:4], [2.0, 2.0, 2.0, 2.0])
    assert scores[4] == pytest.approx(49**2 + 50**2 + 49**2 + 49**2)
    np.testing.assert_allclose(krum(d, 1), [0.0, 0.0])  # ties broken by order
    np.testing.assert_allclose(krum(d, 1, m=4), [0.5, 0.5])


def test_fedadam_and_fedyogi_first_step_by_hand() -> None:
    p = np.array([1.0, -1.0], np.float32)
    delta = np.array([0.1, -0.2], np.float32)
    opt = ServerOptConfig("adam", lr=0.5, beta1=0.9, beta2=0.99, tau=1e-3)
    s1 = server_update(init_state(p, opt), delta, opt)
    m = 0.1 * delta
    v = 0.99 * 1e-6 + 0.01 * delta**2
    np.testing.assert_allclose(s1.params, p + 0.5 * m / (np.sqrt(v) + 1e-3), rtol=1e-5)
    assert s1.round == 1
    yopt = ServerOptConfig("yogi", lr=0.5, beta1=0.9, beta2=0.99, tau=1e-3)
    y1 = server_update(init_state(p, yopt), delta, yopt)
    vy = 1e-6 - 0.01 * delta**2 * np.sign(1e-6 - delta**2)  # v < Δ² -> v grows by 0.01 Δ²
    np.testing.assert_allclose(y1.v, vy, rtol=1e-5)
    sgd = ServerOptConfig("sgd", lr=2.0)
    np.testing.assert_allclose(server_update(init_state(p, sgd), delta, sgd).params, p + 2 * delta)


class _Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # logits for two classes: [w*x, 0]
        return torch.cat([self.w * x, torch.zeros_like(x)], dim=1)


def test_scaffold_correction_and_control_update_by_hand() -> None:
    """One full-batch step: w1 = w0 - lr (g + c - c_i); c_i+ = c_i - c + (w0 - w1)/(K lr)."""
    trainer = LocalTrainer(_Linear())
    x = torch.tensor([[1.0]])
    y = torch.tensor([0])
    g = -0.5  # d/dw CE([w, 0], 0) at w=0 = -(1 - softmax_0) * x = -0.5
    c, ci = np.array([0.3], np.float32), np.array([0.1], np.float32)
    cfg = ClientConfig(epochs=1, batch_size=0, lr=0.1, scaffold=True)
    res = client_update(trainer, np.zeros(1, np.float32), x, y, cfg, seed=0, control=(c, ci))
    assert res.delta[0] == pytest.approx(-0.1 * (g + 0.3 - 0.1), rel=1e-5)
    new_ci = ci - c + (-res.delta) / (1 * 0.1)
    np.testing.assert_allclose(res.control_delta, new_ci - ci, rtol=1e-5)
    assert new_ci[0] == pytest.approx(g, rel=1e-5)  # option II recovers the local gradient
    prox = client_update(trainer, np.ones(1, np.float32), x, y, ClientConfig(1, 0, 0.1, mu=1.0), seed=0)
    g1 = -(1 - np.exp(1) / (np.exp(1) + 1))  # gradient at w=1; the proximal term is 0 at the anchor
    assert prox.delta[0] == pytest.approx(-0.1 * g1, rel=1e-5)


def test_scaffold_server_control_update() -> None:
    p = np.zeros(2, np.float32)
    opt = ServerOptConfig("sgd", 1.0)
    s = server_update(init_state(p, opt, scaffold=True), np.ones(2, np.float32), opt, np.array([1.0, 2.0]), 0.25)
    np.testing.assert_allclose(s.control, [0.25, 0.5])


def test_int8_round_trip_and_bytes() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.01, 10_000).astype(np.float32)
    payload, residual = compress(x, "int8")
    assert residual is None
    back = decompress(payload, len(x))
    scale_max = payload["scale"].max()
    assert np.abs(back - x).max() <= scale_max / 2 + 1e-9
    assert 4 * len(x) / payload_bytes(payload) >= 3.9


def test_topk_round_trip_and_error_feedback() -> None:
    x = np.array([0.1, -5.0, 0.3, 2.0, -0.2, 0.05, 0.0, 1.0, 0.0, 0.0], np.float32)
    payload, residual = compress(x, "topk:0.2")
    np.testing.assert_array_equal(payload["idx"], [1, 3])
    dense = decompress(payload, len(x))
    np.testing.assert_allclose(dense + residual, x, atol=1e-6)  # nothing is lost, only delayed
    # next round: residual is added first; with a zero update the previously unsent 1.0 goes out
    payload2, residual2 = compress(np.zeros_like(x), "topk:0.1", residual)
    np.testing.assert_array_equal(payload2["idx"], [7])
    np.testing.assert_allclose(decompress(payload2, len(x)) + residual2, residual, atol=1e-6)
    big = np.random.default_rng(1).normal(size=100_000).astype(np.float32)
    p, _ = compress(big, "topk:0.01")
    assert 4 * len(big) / payload_bytes(p) >= 50


def test_pairwise_masks_cancel_with_and_without_dropout() -> None:
    rng = np.random.default_rng(0)
    xs = {c: rng.normal(size=50) for c in range(5)}
    priv = {c: sa.private_key(bytes([c])) for c in xs}
    pub = {c: sa.public_key(priv[c]) for c in xs}
    assert sa.pair_seed(priv[0], pub[1]) == sa.pair_seed(priv[1], pub[0])
    masked = {c: sa.masked_input(c, xs[c], priv[c], pub) for c in xs}
    assert np.abs(sa.decode_fixed(masked[0]) - xs[0]).max() > 1e3  # one upload alone reveals nothing useful
    np.testing.assert_allclose(sa.unmask_sum(masked, {}), sum(xs.values()), atol=1e-6)
    dropped = [1, 3]
    survivors = {c: masked[c] for c in xs if c not in dropped}
    revealed = {c: sa.reveal_seeds(c, priv[c], pub, dropped) for c in survivors}
    np.testing.assert_allclose(sa.unmask_sum(survivors, revealed), xs[0] + xs[2] + xs[4], atol=1e-6)


def test_screening_rejects_nan_and_scaled_updates() -> None:
    d = np.ones((5, 3), np.float32)
    d[1, 0] = np.nan
    d[3] *= 1e4
    s = screen_updates(d, max_norm_ratio=10)
    assert s.accepted.tolist() == [True, False, True, False, True]
    assert "non-finite" in s.reasons[1] and "median" in s.reasons[3]


def test_dp_clip_noise_and_accountant() -> None:
    clipped, norm = clip_by_norm(np.array([3.0, 4.0]), 1.0)
    assert norm == pytest.approx(5.0)
    np.testing.assert_allclose(clipped, [0.6, 0.8], rtol=1e-6)
    np.testing.assert_allclose(clip_by_norm(np.array([0.3, 0.4]), 1.0)[0], [0.3, 0.4], rtol=1e-6)
    noise = noisy_mean(np.zeros(100_000), 10, 1.0, 2.0, np.random.default_rng(0))
    assert np.std(noise) == pytest.approx(0.2, rel=0.02)
    e1, e2 = dp_epsilon(1.0, 0.1, 100), dp_epsilon(2.0, 0.1, 100)
    assert 0 < e2 < e1 < 20
    assert dp_epsilon(1.0, 0.1, 200) > e1
    assert dp_epsilon(0.0, 0.1, 10) == float("inf")


def test_client_sampling_is_per_round_deterministic() -> None:
    a = sample_clients(100, 10, 3, seed=0)
    assert len(set(a.tolist())) == 10 and a.tolist() == sorted(a.tolist())
    np.testing.assert_array_equal(a, sample_clients(100, 10, 3, seed=0))
    assert not np.array_equal(a, sample_clients(100, 10, 4, seed=0))
    with pytest.raises(ValueError):
        sample_clients(5, 6, 1, 0)
