"""Focused tests that kill mutants the rest of the suite let live (issue 17; see benchmarks/mutation.py).

Each test pins a boundary or a branch of a core algorithm that a mutation of one operator, constant or
argument would change: hand values, not implementation echoes. Pure functions only: the file runs in
a few seconds.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from edgeopt.compress.distill import attention_loss, attention_map, feature_loss, kd_loss
from edgeopt.compress.prune.channel import normalised, weakest_beyond
from edgeopt.compress.prune.depgraph import ChannelGroup, DepGraph, _make_groups, _UnionFind
from edgeopt.compress.quantize import calibration as cal
from edgeopt.compress.quantize.ptq import _channel_mean, _chunks, bias_shift, calibration_indices
from edgeopt.compress.quantize.transforms import fold_bn_weights
from edgeopt.errors import EdgeoptError
from edgeopt.federated.algorithms import secagg as sa
from edgeopt.federated.algorithms.compression import (
    compress,
    decompress,
    densify,
    dequantize_int8,
    parse_compression,
    payload_bytes,
    quantize_int8,
    topk_sparsify,
)
from edgeopt.federated.algorithms.privacy import clip_by_norm, dp_epsilon, l2_norm, noisy_mean
from edgeopt.federated.algorithms.server import (
    ServerOptConfig,
    aggregate,
    coordinate_median,
    init_state,
    krum,
    krum_scores,
    parse_aggregator,
    sample_clients,
    screen_updates,
    server_update,
    trimmed_mean,
    weighted_mean,
)
from edgeopt.federated.config import FederatedConfig
from edgeopt.federated.rounds import client_config, client_speeds, plan_round, secure_weight
from edgeopt.interop.export import Parity, compare_outputs

# --------------------------------------------------------------------------- federated: server


def test_parse_aggregator_names_and_defaults() -> None:
    assert parse_aggregator("mean") == ("mean", 0.0)
    assert parse_aggregator("median") == ("median", 0.0)
    assert parse_aggregator("trimmed") == ("trimmed", 0.1)
    assert parse_aggregator("krum") == ("krum", 1.0)
    assert parse_aggregator("trimmed:0.25") == ("trimmed", 0.25)
    assert parse_aggregator("krum:2") == ("krum", 2.0)
    with pytest.raises(ValueError, match=r"^unknown aggregator 'avg' \(use mean, median, trimmed, krum\)$"):
        parse_aggregator("avg")
    assert parse_aggregator("median:") == ("median", 0.0)


def test_aggregate_dispatches_each_rule() -> None:
    d = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [50.0, 50.0]], np.float32)
    w = np.array([1, 1, 1, 1, 6], np.float64)
    np.testing.assert_allclose(aggregate(d, w, "mean"), [30.2, 30.2], rtol=1e-6)
    np.testing.assert_allclose(aggregate(d, None, "median"), [1.0, 1.0])
    # trimmed:0.2 of 5 drops one at each end per coordinate: [0, 1, 1] and [0, 1, 1]
    np.testing.assert_allclose(aggregate(d, None, "trimmed:0.2"), [2 / 3, 2 / 3], rtol=1e-6)
    # default trimmed (0.1 of 5 = 0) is the plain mean
    np.testing.assert_allclose(aggregate(d, None, "trimmed"), d.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(aggregate(d, None, "krum:1"), [0.0, 0.0])
    np.testing.assert_allclose(aggregate(d, None, "krum"), [0.0, 0.0])
    with pytest.raises(ValueError):
        aggregate(d, None, "trimmed:0.6")


def test_screening_boundaries() -> None:
    # empty input: nothing accepted, nothing rejected
    s = screen_updates(np.zeros((0, 4), np.float32))
    assert s.accepted.shape == (0,) and s.accepted.dtype == bool and s.reasons == ()
    # the default ratio is 10: 10.5 x the median goes, exactly 10 x stays (strictly greater is rejected)
    col = np.array([[1.0], [1.0], [1.0], [10.5]], np.float32)
    assert screen_updates(col).accepted.tolist() == [True, True, True, False]
    assert "norm 10.5 > 10 x median 1" in screen_updates(col).reasons[3]
    assert screen_updates(np.array([[1.0], [1.0], [1.0], [10.0]])).accepted.all()
    # a non-finite update is named as such
    nan = np.array([[1.0], [np.nan], [1.0]], np.float32)
    assert screen_updates(nan).reasons == ("", "non-finite values", "")
    # two finite updates are too few for the norm test, whatever the ratio; three are enough
    assert screen_updates(np.array([[1.0], [10.0]]), max_norm_ratio=1.5).accepted.all()
    assert screen_updates(np.array([[1.0], [1.0], [100.0]])).accepted.tolist() == [True, True, False]
    # ratio 0 switches the norm test off; a ratio below 1 rejects everything above the median
    assert screen_updates(np.array([[1.0], [1.0], [4.0]]), max_norm_ratio=0).accepted.all()
    assert not screen_updates(np.array([[1.0], [1.0], [4.0]]), max_norm_ratio=0.5).accepted.any()
    # a zero median disables the norm test; a small median does not
    assert screen_updates(np.array([[0.0], [0.0], [0.0], [5.0]])).accepted.all()
    small = screen_updates(np.array([[0.1], [0.1], [0.1], [5.0]]))
    assert small.accepted.tolist() == [True, True, True, False]
    # norms are accumulated in float64: float32 squares of 2e19 would overflow and hide the outlier
    big = np.array([[2e19], [2e19], [2e19], [1e21]], np.float32)
    assert screen_updates(big).accepted.tolist() == [True, True, True, False]


def test_krum_scores_hand_values_small_distances_and_float64() -> None:
    # n = f + 3 is the fewest Krum accepts (one neighbour each); distances under 1 are not floored
    d = np.array([[0.0], [0.1], [0.3]])
    np.testing.assert_allclose(krum_scores(d, 0), [0.01, 0.01, 0.04], rtol=1e-9)
    with pytest.raises(ValueError, match="^Krum with f=1 needs at least 4 updates, got 3$"):
        krum_scores(d, 1)
    # float32 input is scored in float64: at 1e4 a float32 square has a unit error of 8
    far = np.array([[1e4, 0.0], [1e4 + 1, 0.0], [1e4, 1.0], [1e4 + 1, 1.0]], np.float32)
    np.testing.assert_allclose(krum_scores(far, 1), [1.0, 1.0, 1.0, 1.0], rtol=1e-9)


def test_krum_breaks_ties_by_order_among_many_updates() -> None:
    # two far updates, then +-e_i in 8 dimensions: the 16 near ones tie; the first of them (e_0) wins.
    # numpy's default (unstable) sort picks another of the tied 18 scores here.
    d = np.array([np.full(8, 50.0), np.full(8, 51.0), *np.eye(8), *-np.eye(8)])
    np.testing.assert_array_equal(krum(d, 1), np.eye(8)[0])


def test_client_sampling_bounds() -> None:
    assert sample_clients(5, 5, 3, 0).tolist() == [0, 1, 2, 3, 4]
    assert len(sample_clients(5, 1, 3, 0)) == 1
    with pytest.raises(ValueError, match=r"^per_round must be in 1..5, got 6$"):
        sample_clients(5, 6, 0, 0)
    with pytest.raises(ValueError, match=r"^per_round must be in 1..5, got 0$"):
        sample_clients(5, 0, 0, 0)


def test_weighted_mean_edges_and_dtype() -> None:
    np.testing.assert_array_equal(weighted_mean(np.array([[2.0, 4.0]])), [2.0, 4.0])  # one update is fine
    out = weighted_mean(np.array([[1.0], [3.0]]), np.array([0.25, 0.75]))  # weights summing to 1
    assert out.dtype == np.float32 and out.tolist() == [2.5]
    with pytest.raises(ValueError, match="^nothing to aggregate$"):
        weighted_mean(np.array([[1.0], [3.0]]), np.array([0.0, 0.0]))
    with pytest.raises(ValueError, match="^nothing to aggregate$"):
        weighted_mean(np.zeros((0, 2)))


def test_init_state_is_float32_and_only_scaffold_has_a_control() -> None:
    s = init_state(np.array([1.0, 2.0]), ServerOptConfig("sgd"))
    assert s.params.dtype == np.float32 and s.control is None and s.m is None and s.v is None and s.round == 0
    a = init_state(np.array([1.0, 2.0]), ServerOptConfig("adam", tau=0.1), scaffold=True)
    np.testing.assert_allclose(a.v, [0.01, 0.01], rtol=1e-6)
    assert a.control.tolist() == [0.0, 0.0] and a.m.tolist() == [0.0, 0.0]


def test_server_update_dtypes_control_and_errors() -> None:
    p = np.array([1.0, -1.0], np.float32)
    adam = ServerOptConfig("adam", lr=0.5, tau=1e-3)
    a = server_update(init_state(p, adam), np.array([0.1, -0.2]), adam)  # a float64 delta
    assert a.params.dtype == a.m.dtype == a.v.dtype == np.float32
    # FedYogi where v == Δ² exactly (0.25 both): sign 0 leaves v unchanged
    yogi = ServerOptConfig("yogi", lr=1.0, beta2=0.5, tau=0.5)
    y = server_update(init_state(np.zeros(1, np.float32), yogi), np.array([0.5], np.float32), yogi)
    assert y.v.tolist() == [0.25] and np.isfinite(y.params).all()
    # SCAFFOLD's control moves by control_fraction (default 1) x the mean Δc; no control, no change
    sgd = ServerOptConfig("sgd")
    c = server_update(init_state(p, sgd, scaffold=True), np.zeros(2), sgd, control_delta=np.array([0.5, 1.0]))
    assert c.control.tolist() == [0.5, 1.0]
    assert server_update(init_state(p, sgd), np.zeros(2), sgd, control_delta=np.ones(2)).control is None
    assert server_update(init_state(p, sgd, scaffold=True), np.zeros(2), sgd).control.tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match=r"^unknown server optimizer 'sgdx' \(use sgd, adam, yogi\)$"):
        server_update(init_state(p, sgd), np.zeros(2), ServerOptConfig("sgdx"))


def test_robust_aggregators_accumulate_in_float64() -> None:
    # float32 updates near float32's max: a float32 sum of two would overflow to inf
    d = np.array([[3e38], [3e38], [3e38], [3e38]], np.float32)
    med = coordinate_median(d)
    assert med.dtype == np.float32 and np.isfinite(med).all() and med[0] == np.float32(3e38)
    tm = trimmed_mean(d, 0.0)
    assert np.isfinite(tm).all() and tm[0] == np.float32(3e38)


def test_trimmed_mean_bounds_krum_dtype_and_default_rule() -> None:
    d = np.array([[1.0], [2.0], [3.0], [4.0], [100.0]], np.float32)
    tm = trimmed_mean(d, 0.4)  # k = 2 of 5: only the middle value is left
    assert tm.dtype == np.float32 and tm.tolist() == [3.0]
    with pytest.raises(ValueError, match="^trimming 2 from each end leaves nothing of 4 updates$"):
        trimmed_mean(d[:4], 0.5)
    np.testing.assert_array_equal(aggregate(d, np.ones(5)), weighted_mean(d))  # the default rule is the mean
    big = np.full((5, 1), 3e38, np.float32)  # Multi-Krum averages in float64: no float32 overflow
    k = krum(big, 1, m=2)
    assert k.dtype == np.float32 and k.tolist() == [np.float32(3e38)]


def test_adaptive_server_state_carries_its_moments() -> None:
    p = np.zeros(2, np.float32)
    adam = ServerOptConfig("adam", beta1=0.9)
    s1 = server_update(init_state(p, adam), np.array([1.0, -2.0], np.float32), adam)
    np.testing.assert_allclose(s1.m, [0.1, -0.2], rtol=1e-6)  # m = beta1 * 0 + (1 - beta1) * delta
    sgd = ServerOptConfig("sgd")
    c = server_update(init_state(p, sgd, scaffold=True), np.zeros(2), sgd, control_delta=np.array([0.5, 1.0]))
    assert c.control.dtype == np.float32


# --------------------------------------------------------------------------- federated: compression


def test_int8_hand_values_dtypes_and_bytes() -> None:
    # s = max|x| / 127 per chunk; q = round-half-even(x / s)
    p = quantize_int8(np.array([1.0, -0.5, 0.25, 0.0, 2.54], np.float32), chunk=4)
    assert p["q"].dtype == np.int8 and p["scale"].dtype == np.float32
    np.testing.assert_array_equal(p["q"], [127, -64, 32, 0, 127])
    np.testing.assert_allclose(p["scale"], [1 / 127, 2.54 / 127], rtol=1e-6)
    assert payload_bytes(p) == 5 + 4 * 2  # n int8 values + one float32 scale per chunk
    assert payload_bytes({"a": np.zeros(3, np.int8), "b": np.zeros(2, np.float16)}) == 7
    back = dequantize_int8(p, 5, chunk=4)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, [1.0, -64 / 127, 32 / 127, 0.0, 2.54], rtol=1e-6)
    # the upload is quantized from its float32 values: 0.5 + 1e-9 is 0.5 in float32 and rounds to even (0)
    assert quantize_int8(np.array([127.0, 0.5 + 1e-9]), chunk=2)["q"].tolist() == [127, 0]


def test_topk_values_are_the_float32_update_in_float16() -> None:
    # 1 + 2^-11 + 2^-30 is exactly 1 + 2^-11 in float32, a float16 tie that rounds to even (1.0);
    # straight from float64 it would round up to 1 + 2^-10
    p = topk_sparsify(np.array([1 + 2**-11 + 2**-30, 0.0]), 0.5)
    assert p["idx"].tolist() == [0] and p["val"].tolist() == [1.0]


def test_parse_compression_specs() -> None:
    for spec in (None, "", "none"):
        assert parse_compression(spec) == ("none", 1.0)
    assert parse_compression("int8") == ("int8", 1.0)
    assert parse_compression("topk:1") == ("topk", 1.0) and parse_compression("topk:0.01") == ("topk", 0.01)
    for bad in ("topk", "topk:0", "topk:1.5", "topk:abc", "int8:2", "zip"):
        hint = r"\(use none, int8 or topk:F with 0 < F <= 1\)"
        with pytest.raises(ValueError, match=f"^unknown compression '{bad}' {hint}$"):
            parse_compression(bad)


def test_plain_uploads_round_trip_and_topk_of_everything() -> None:
    x = np.array([0.5, -1.0, 2.0], np.float32)
    payload, _ = compress(x, "none")
    back = decompress(payload, 3)
    assert back.dtype == np.float32 and back.tolist() == x.tolist()
    every = topk_sparsify(x, 1.0)  # k == n: every index, sorted
    assert every["idx"].tolist() == [0, 1, 2] and every["val"].tolist() == [0.5, -1.0, 2.0]


def test_uploads_are_float32() -> None:
    payload, residual = compress(np.array([1.0, 2.0]), "none")  # a float64 delta goes up as float32
    assert payload["delta"].dtype == np.float32 and residual is None
    dense = densify({"idx": np.array([2], np.int32), "val": np.array([0.5], np.float16)}, 4)
    assert dense.dtype == np.float32 and dense.tolist() == [0.0, 0.0, 0.5, 0.0]


def test_int8_all_zero_chunk_has_no_invalid_arithmetic() -> None:
    with np.errstate(all="raise"):
        p = quantize_int8(np.zeros(6, np.float32), chunk=4)
    assert p["q"].tolist() == [0] * 6 and p["scale"].tolist() == [0.0, 0.0]


# --------------------------------------------------------------------------- federated: DP-FedAvg


def test_clipping_edges() -> None:
    zero, norm = clip_by_norm(np.zeros(3), 1.0)  # a zero update: no division by its zero norm
    assert zero.tolist() == [0.0, 0.0, 0.0] and norm == 0.0
    short, norm = clip_by_norm(np.array([0.3, 0.4]), 0.1)  # norm 0.5 (< 1) is still clipped to 0.1
    np.testing.assert_allclose(short, [0.06, 0.08], rtol=1e-6)
    assert short.dtype == np.float32 and norm == pytest.approx(0.5)
    # the norm is accumulated in float64: a float32 square of 2e19 would overflow
    assert l2_norm(np.array([2e19], np.float32)) == pytest.approx(2e19, rel=1e-6)


def test_noisy_mean_is_centred_with_std_sigma_times_clip_over_n() -> None:
    rng = np.random.default_rng(0)
    assert noisy_mean(np.array([2.0, -4.0]), 2.0, 1.0, 0.0, rng).tolist() == [1.0, -2.0]  # no noise: the mean
    out = noisy_mean(np.zeros(20_000), 2.0, 10.0, 1.0, rng)  # std = 1 * 10 / 2
    assert out.dtype == np.float32 and 4.8 < out.std() < 5.2 and abs(out.mean()) < 0.1


def test_dp_epsilon_edges() -> None:
    assert dp_epsilon(0.0, 0.1, 10) == float("inf")  # no noise, no privacy
    assert dp_epsilon(1.0, 0.1, 0) == 0.0  # nothing released yet
    one = dp_epsilon(1.0, 0.1, 1)
    assert 0.0 < one < dp_epsilon(1.0, 0.1, 2)


# --------------------------------------------------------------------------- federated: secure aggregation


def test_masks_differ_per_coordinate() -> None:
    # one mask word per coordinate: equal values must not upload as equal words (a single shared word
    # would still cancel in the sum but would show which coordinates are equal)
    m = sa.prg_mask(bytes(range(32)), 4)
    assert m.shape == (4,) and m.dtype == np.uint64 and len(set(m.tolist())) == 4
    keys = {c: sa.private_key(bytes([c])) for c in (0, 1)}
    pub = {c: sa.public_key(k) for c, k in keys.items()}
    up = sa.masked_input(0, np.array([0.5, 0.5, 0.5]), keys[0], pub)
    assert len(set(up.tolist())) == 3
    with pytest.raises(ValueError, match="^no masked inputs to aggregate$"):
        sa.unmask_sum({}, {})


# --------------------------------------------------------------------------- federated: rounds


def test_plan_round_stragglers_by_deadline_and_dropouts() -> None:
    # equal speeds (spread 0): a client needs epochs * size / samples_per_s = 2 * size / 100 seconds
    cfg = FederatedConfig(clients=6, per_round=6, seed=3, speed_spread=0.0, deadline=1.0,
                          device_samples_per_s=100.0, local_epochs=2)  # fmt: skip
    sizes = [10, 40, 50, 51, 60, 100]  # 0.2, 0.8, 1.0 (exactly the deadline: in time), 1.02, 1.2, 2.0 s
    plan = plan_round(cfg, 4, sizes)
    assert plan.round == 4 and plan.selected == (0, 1, 2, 3, 4, 5) and plan.dropouts == ()
    assert plan.stragglers == (3, 4, 5) and plan.expected_replies == (0, 1, 2)
    assert plan.client_config == client_config(cfg) and plan.client_config.epochs == 2
    # a client that drops out is not also a straggler; without a deadline nobody straggles
    gone = plan_round(replace(cfg, dropout=0.9999), 4, sizes)
    assert gone.dropouts == (0, 1, 2, 3, 4, 5) and gone.stragglers == () and gone.expected_replies == ()
    relaxed = plan_round(replace(cfg, deadline=None), 4, sizes)
    assert relaxed.stragglers == () and relaxed.expected_replies == (0, 1, 2, 3, 4, 5)


def test_round_plans_and_device_speeds_depend_only_on_the_seed() -> None:
    # a resumed run must see the same dropouts, stragglers and device speeds as an uninterrupted one
    cfg = FederatedConfig(clients=40, per_round=40, seed=5, dropout=0.5, deadline=1.0, speed_spread=0.5)
    sizes = [200] * 40
    assert plan_round(cfg, 2, sizes) == plan_round(cfg, 2, sizes)
    np.testing.assert_array_equal(client_speeds(cfg), client_speeds(cfg))
    assert len(set(client_speeds(cfg).tolist())) == 40
    # a faster device (speed > 1) finishes sooner: epochs * size / (samples_per_s * speed) seconds
    speeds = client_speeds(cfg)
    steady = replace(cfg, dropout=0.0)
    late = tuple(c for c in range(40) if 1 * 200 / (200.0 * speeds[c]) > 1.0)
    assert 0 < len(late) < 40 and plan_round(steady, 2, sizes).stragglers == late


def test_client_config_per_algorithm_and_secure_weight() -> None:
    prox = client_config(FederatedConfig(algo="fedprox", mu=0.3, lr=0.2, batch_size=16, local_epochs=3))
    assert (prox.mu, prox.scaffold, prox.lr, prox.batch_size, prox.epochs) == (0.3, False, 0.2, 16, 3)
    assert client_config(FederatedConfig(algo="fedavg", mu=0.3)).mu == 0.0
    sgd = client_config(FederatedConfig(momentum=0.9, weight_decay=1e-4))
    assert (sgd.momentum, sgd.weight_decay) == (0.9, 1e-4)
    assert client_config(FederatedConfig(algo="scaffold")).scaffold is True
    assert secure_weight(FederatedConfig(), 37) == 37.0
    assert secure_weight(FederatedConfig(dp_clip=1.0, dp_noise=0.5), 37) == 1.0


# --------------------------------------------------------------------------- quantization: PTQ helpers


def test_weight_scales_default_to_8_bits_per_output_channel() -> None:
    w = np.array([[0.5, -1.27], [0.1, 0.2]])
    np.testing.assert_allclose(cal.weight_scales(w), [0.01, 0.2 / 127], rtol=1e-6)
    np.testing.assert_allclose(cal.weight_scales(w.T, axis=1), [0.01, 0.2 / 127], rtol=1e-6)
    with pytest.raises(ValueError, match=r"^unknown weight method 'l2' \(minmax or mse\)$"):
        cal.weight_scales(w, method="l2")


def test_sqnr_of_float32_signals_is_accumulated_in_float64() -> None:
    ref = np.array([2e19, 2e19], np.float32)  # a float32 square of 2e19 overflows
    assert cal.sqnr_db(ref, np.array([2e19, 0.0], np.float32)) == pytest.approx(10 * np.log10(2.0), rel=1e-6)
    assert cal.sqnr_db(np.array([0.1]), np.array([0.0])) == pytest.approx(0.0, abs=1e-9)  # a signal below 1


def test_fake_quantize_divides_float32_inputs_in_float64() -> None:
    # float32 0.015 is 0.01499999966: 1.4999 steps of 0.01 in float64 (-> 1), a tie 1.5 in float32 (-> 2)
    x = np.array([0.015, 0.025], np.float32)
    np.testing.assert_allclose(cal.fake_quantize(x, 0.01, 0, -128, 127), [0.01, 0.03])


def test_percentile_range_bounds_default_and_quantiles() -> None:
    h = cal.Histogram(np.ones(1000), -50.0, 50.0)
    assert cal.percentile_range(h) == cal.percentile_range(h, 99.99)  # the default percentile
    assert cal.percentile_range(h, 100.0) == (-50.0, 50.0) and cal.percentile_range(h, 50.5)[1] < 1.0
    for bad in (50.0, 100.5):
        with pytest.raises(ValueError, match=rf"^percentile must be in \(50, 100\], not {bad}$"):
            cal.percentile_range(h, bad)
    assert cal.percentile_range(cal.Histogram(np.zeros(4), -1.0, 1.0)) == (-1.0, 1.0)  # nothing observed
    one = cal.percentile_range(cal.Histogram(np.array([1.0, 0.0, 0.0, 0.0]), -1.0, 1.0), 99.0)  # total 1
    assert one[0] == pytest.approx(-0.995) and one[1] == pytest.approx(-0.505)
    two = cal.Histogram(np.array([1.0, 1.0]), 0.0, 2.0)  # a quantile inside the first bin
    assert cal._quantile(two, 0.25) == pytest.approx(0.5)
    frac = cal.Histogram(np.array([0.25, 0.25]), 0.0, 2.0)  # fractional mass (a rebinned histogram) below 1
    assert cal._quantile(frac, 0.5) == pytest.approx(1.0)


def test_expected_mse_two_sided_clipping_by_hand() -> None:
    # centres -1.5, -0.5, 0.5, 1.5 with mass 0.1 each; range [-1, 1]: s = 2/255, zero point -1, so the
    # grid ends are qlo = -127 s and qhi = 128 s; the outer two are clipped, the inner two get s^2/12
    h = cal.Histogram(np.full(4, 0.1), -2.0, 2.0)
    s = float(np.float32(2 / 255))
    qlo, qhi = -127 * s, 128 * s
    want = (0.2 * s * s / 12 + 0.1 * (-1.5 - qlo) ** 2 + 0.1 * (1.5 - qhi) ** 2) / 0.4
    assert cal.expected_mse(h, -1.0, 1.0) == pytest.approx(want, rel=1e-6)
    # unsigned grid (qmin 0, qmax 255) over [0, 2.55]: scale 0.01, and a centre exactly at 0 is inside
    at_zero = cal.Histogram(np.array([1.0]), -1.0, 1.0)
    assert cal.expected_mse(at_zero, 0.0, 2.55, 0, 255) == pytest.approx(0.01**2 / 12, rel=1e-5)


def test_quantize_weight_rounds_and_clips_symmetrically() -> None:
    q4 = cal.quantize_weight(np.array([[3.0, -3.0, 0.26]]), np.array([0.1]), bits=4)  # +-7 steps of 0.1
    assert q4.dtype == np.float32
    np.testing.assert_allclose(q4, [[0.7, -0.7, 0.3]], rtol=1e-6)
    np.testing.assert_allclose(
        cal.quantize_weight(np.array([[1.0, -2.0]]), np.array([0.01])), [[1.0, -1.27]], rtol=1e-6
    )
    cols = cal.quantize_weight(np.array([[3.0], [0.26]]), np.array([0.1]), bits=4, axis=1)
    np.testing.assert_allclose(cols, [[0.7], [0.3]], rtol=1e-6)


def test_mse_weight_scales_pick_the_better_clip_by_hand() -> None:
    # 4 bits (qmax 7), two candidate clips (steps=2: alpha 1.0 and 0.3).
    # channel 0: one 1.0 and 3000 x 0.3. alpha 1 (s = 1/7): each 0.3 rounds to 2/7, error 0.0143^2 x 3000 = 0.61;
    #            alpha 0.3 (s = 0.3/7): the 0.3s are exact, the 1.0 clips to 0.3, error 0.49 -> alpha 0.3 wins.
    # channel 1: a lone 1.0: exact at alpha 1, error 0.49 at alpha 0.3 -> alpha 1 wins.
    w = np.zeros((2, 3001))
    w[0, 0], w[0, 1:] = 1.0, 0.3
    w[1, 0] = 1.0
    mse = cal.weight_scales(w, 4, "mse", steps=2)
    assert mse.dtype == np.float32
    np.testing.assert_allclose(mse, [0.3 / 7, 1.0 / 7], rtol=1e-6)


def test_calibration_indices_edges() -> None:
    idx = calibration_indices(5, 10, seed=1)  # asking for more than there is gives all of it, sorted
    assert idx.tolist() == [0, 1, 2, 3, 4]
    few = calibration_indices(100, 7, seed=1)
    assert len(set(few.tolist())) == 7 and few.tolist() == sorted(few.tolist())
    assert calibration_indices(1, 3).tolist() == [0]
    assert calibration_indices(50, 5).tolist() == calibration_indices(50, 5, seed=0).tolist()  # seed 0 by default
    with pytest.raises(EdgeoptError, match="^the calibration split is empty — give a dataset with training images$"):
        calibration_indices(0, 3)


def test_bias_shift_is_quantized_minus_float() -> None:
    f = torch.full((2, 2, 3), 1.0)
    q = f.clone()
    q[:, 0] = 3.0  # channel 0 comes out 2 higher after quantization
    torch.testing.assert_close(bias_shift(f, q), torch.tensor([2.0, 0.0]))


def test_chunks_and_channel_mean() -> None:
    x = torch.arange(10.0).reshape(5, 2)
    parts = list(_chunks(x, 2))
    assert [len(p) for p in parts] == [2, 2, 1] and torch.equal(torch.cat(parts), x)
    t = torch.arange(24.0).reshape(2, 3, 2, 2)  # channel c: 4c + 0..3 in sample 0, 12 more in sample 1
    m = _channel_mean(t)
    assert m.dtype == torch.float64 and m.tolist() == [7.5, 11.5, 15.5]


# --------------------------------------------------------------------------- distillation


def test_attention_and_feature_hints_hand_values() -> None:
    f = torch.tensor([[[[1.0, 2.0]], [[3.0, 0.0]]]])  # (1, 2, 1, 2): sum_c f^2 / C = [5, 2]
    torch.testing.assert_close(attention_map(f), torch.tensor([[5.0, 2.0]]) / 29**0.5)
    s = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    t = torch.tensor([[[[0.0, 1.0], [0.0, 0.0]]]])
    assert attention_loss(s, t).item() == pytest.approx(0.5)  # maps e_0 and e_1: mean of [1, 1, 0, 0]
    big = torch.zeros(1, 3, 4, 4)
    big[:, :, :2, :2] = 2.0  # pooled to 2x2 it is s's map
    assert attention_loss(s, big).item() == pytest.approx(0.0, abs=1e-7)
    a = torch.tensor([[1.0, 2.0]], requires_grad=True)
    b = torch.zeros(1, 2, requires_grad=True)
    loss = feature_loss(a, b)
    loss.backward()
    assert loss.item() == pytest.approx(2.5) and b.grad is None and a.grad is not None
    fix = "use the attention hint, which needs only equal spatial sizes"
    with pytest.raises(EdgeoptError, match=rf"^feature hint shapes differ \(\(1, 2\) vs \(2, 1\)\) — {fix}$"):
        feature_loss(a, torch.zeros(2, 1))


# --------------------------------------------------------------------------- export parity gate


def test_compare_outputs_edges() -> None:
    assert compare_outputs(np.zeros((0, 3)), np.zeros((0, 3))) == Parity(0.0, 0.0, 0.0, 1.0, 0)
    scalar = compare_outputs(np.array(2.0), np.array(2.5))  # a 0-d output is one sample
    assert (scalar.max_abs_diff, scalar.rel_diff, scalar.samples, scalar.top1_agreement) == (0.5, 0.25, 1, 1.0)
    zero = compare_outputs(np.zeros((2, 2)), np.zeros((2, 2)))  # all-zero reference: exact match is 0
    assert zero.rel_diff == 0.0 and zero.max_abs_ref == 0.0 and zero.ok(0.0)
    off = compare_outputs(np.zeros((2, 2)), np.full((2, 2), 1e-9))
    assert off.rel_diff == float("inf") and not off.ok(1e6)
    # NaN never wins top-1: [NaN, 0.5] votes for class 1
    nan = compare_outputs(np.array([[0.0, 1.0], [1.0, 0.0]]), np.array([[np.nan, 0.5], [np.nan, 0.5]]))
    assert nan.top1_agreement == 0.5 and nan.max_abs_diff == float("inf")
    neg = compare_outputs(np.array([[0.0, 1.0]]), np.array([[np.nan, -0.5]]))  # not even against a negative score
    assert neg.top1_agreement == 1.0
    big = compare_outputs(np.array([[1.0, -3.0]]), np.array([[1.5, -3.0]]))
    assert (big.max_abs_diff, big.max_abs_ref, big.rel_diff) == (0.5, 3.0, 0.5 / 3.0)
    small = compare_outputs(np.array([[0.5, 0.0]]), np.array([[0.6, 0.0]]))  # max |ref| below 1 is still relative
    assert small.rel_diff == pytest.approx(0.2)
    with pytest.raises(EdgeoptError, match=r"^runtime output shape \(1, 3\) differs from PyTorch's \(2, 3\)$"):
        compare_outputs(np.zeros((2, 3)), np.zeros((1, 3)))


def test_parity_gate_boundaries() -> None:
    p = Parity(max_abs_diff=1.0, max_abs_ref=10.0, rel_diff=0.1, top1_agreement=0.5, samples=2)
    assert p.ok(0.1, 0.5)  # both limits are inclusive
    assert not p.ok(0.09, 0.5) and not p.ok(0.1, 0.51)
    assert Parity(0.0, 1.0, 0.0, 0.0, 1).ok(0.0)  # no top-1 requirement by default
    assert not Parity(float("nan"), 1.0, float("nan"), 1.0, 1).ok(1e9)


# --------------------------------------------------------------------------- channel pruning: graph and scores


def test_union_find_joins_to_the_smaller_root_and_compresses_paths() -> None:
    uf = _UnionFind()
    assert uf.new(4).tolist() == [0, 1, 2, 3] and uf.new(2).tolist() == [4, 5]
    uf.union(3, 2)
    uf.union(2, 1)
    uf.union(1, 0)
    assert uf.parent[:4] == [0, 0, 1, 2]  # a chain 3 -> 2 -> 1 -> 0
    assert uf.find(3) == 0 and uf.parent[:4] == [0, 0, 0, 0]  # the whole path now points at the root
    uf.union(5, 4)
    uf.union(4, 4)  # joining a class with itself changes nothing
    assert uf.find(5) == 4 and uf.parent[4:] == [4, 4]
    uf.union(np.int64(5), np.int64(3))
    assert uf.find(4) == 0 and uf.find(5) == 0


def test_make_groups_by_signature_in_first_seen_order() -> None:
    slots = {
        ("a", "out"): np.array([10, 11]),
        ("b", "in"): np.array([10, 11]),
        ("c", "out"): np.array([12]),
        ("d", "in"): np.array([13]),  # consumed only: nothing real to remove
        ("e", "dw"): np.array([14, 15]),
    }
    groups = _make_groups(slots, fixed_roots={11})
    assert groups == [
        ChannelGroup(0, [10], [("a", "out"), ("b", "in")], 1),
        ChannelGroup(1, [12], [("c", "out")], 1),
        ChannelGroup(2, [14, 15], [("e", "dw")], 2),
    ]


def test_normalised_divides_by_the_group_mean() -> None:
    groups = [ChannelGroup(0, [1, 2], [], 2), ChannelGroup(1, [3], [], 1), ChannelGroup(2, [4, 5], [], 2)]
    out = normalised({1: 2.0, 2: 6.0, 4: -1.0, 5: 1.0}, groups)
    # group 0: mean 4; group 1: a missing score is 0 (mean 0 -> divide by 1); group 2: mean 0 -> divide by 1
    assert out == {1: 0.5, 2: 1.5, 3: 0.0, 4: -1.0, 5: 1.0}


def test_weakest_beyond_removes_the_lowest_scores_not_the_lowest_ids() -> None:
    g = ChannelGroup(0, [5, 6, 7], [("a", "out")], 3)
    dep = DepGraph(slots={}, shapes={}, layer_io={}, groups=[g], fixed_roots=set(), is_graph_module=False)
    assert weakest_beyond(dep, {5: 3.0, 6: 1.0, 7: 2.0}, [1]) == {6, 7}  # one channel is a valid width
    assert weakest_beyond(dep, {5: 3.0, 6: 1.0, 7: 2.0}, [3]) == set()
    assert weakest_beyond(dep, {5: 1.0, 6: 1.0}, [2]) == {7}  # a missing score is 0; ties go by class id
    with pytest.raises(EdgeoptError, match=r"^2 widths for 1 channel groups — give one width per group: 3$"):
        weakest_beyond(dep, {}, [1, 1])
    with pytest.raises(
        EdgeoptError, match=r"^width 4 for group 0: 3 ch, producers \['a'\] — keep between 1 and 3 channels$"
    ):
        weakest_beyond(dep, {}, [4])


def test_make_groups_keep_first_seen_order_not_id_order() -> None:
    groups = _make_groups({("a", "out"): np.array([20, 10])}, fixed_roots=set())
    assert groups == [ChannelGroup(0, [20, 10], [("a", "out")], 2)]


def test_kd_loss_defaults_and_label_smoothing() -> None:
    s, t, y = torch.tensor([[1.0, 2.0, 0.5]]), torch.tensor([[0.2, 3.0, -1.0]]), torch.tensor([1])
    assert kd_loss(s, t, y).item() == pytest.approx(kd_loss(s, t, y, 4.0, 0.9).item())  # T = 4, alpha = 0.9
    smooth = kd_loss(s, t, y, 2.0, 0.0, label_smoothing=0.2)  # alpha 0: the smoothed cross-entropy alone
    assert smooth.item() == pytest.approx(torch.nn.functional.cross_entropy(s, y, label_smoothing=0.2).item())


def test_fold_bn_without_a_conv_bias() -> None:
    # no bias: b' = beta - mean * gamma / sigma = 0.5 - 3 * 2 / 2
    w, b = fold_bn_weights(
        np.ones((1, 1)), None, np.array([2.0]), np.array([0.5]), np.array([3.0]), np.array([4.0]), 0.0
    )
    assert w.dtype == b.dtype == np.float32 and w.item() == 1.0 and b.item() == pytest.approx(-2.5)
