"""Quantization math against hand-computed values; BN folding and CLE preserve the function.

Pure and fast (no runtimes): calibration ranges, scales, KL/MSE, bit allocation, transforms.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from edgeopt.compress.quantize import calibration as cal
from edgeopt.compress.quantize.mixed import allocate_bits, weight_bytes
from edgeopt.compress.quantize.ptq import QuantRecipe, bias_shift, calibration_indices
from edgeopt.compress.quantize.transforms import (
    apply_equalization,
    equalization_scales,
    equalize,
    fold_batchnorm,
    fold_bn_weights,
)
from edgeopt.errors import EdgeoptError


def test_qparams_from_range_hand_values() -> None:
    assert cal.qparams_from_range(0.0, 2.55) == (pytest.approx(0.01), -128)
    s, z = cal.qparams_from_range(-1.0, 1.0)  # float32: -1 / 0.0078431377 = -127.49999 -> -127
    assert s == pytest.approx(2 / 255, rel=1e-6) and z == -1
    s, z = cal.qparams_from_range(0.5, 2.0)  # widened to include 0
    assert s == pytest.approx(2 / 255) and z == -128
    s, z = cal.qparams_from_range(-1.0, 0.5, symmetric=True, qmin=-127, qmax=127)
    assert s == pytest.approx(1 / 127) and z == 0
    assert cal.qparams_from_range(0.0, 0.0)[0] == pytest.approx(cal.ACT_EPS)


@pytest.mark.parametrize("lo,hi", [(-1.0, 1.0), (0.0, 6.3), (-14.18, 11.99), (-0.001, 250.0)])
def test_qparams_match_torchao_observer(lo: float, hi: float) -> None:
    from torchao.quantization.pt2e.observer import MinMaxObserver

    obs = MinMaxObserver(dtype=torch.int8, quant_min=-128, quant_max=127, eps=cal.ACT_EPS)
    obs(torch.tensor([lo, hi]))
    scale, zp = obs.calculate_qparams()
    assert cal.qparams_from_range(lo, hi) == (float(scale), int(zp))


def test_fake_quantize_rounds_and_clips() -> None:
    x = np.array([-1.0, 0.004, 0.006, 0.015, 0.025, 5.0])
    y = cal.fake_quantize(x, 0.01, -128, -128, 127)
    np.testing.assert_allclose(y, [0.0, 0.0, 0.01, 0.02, 0.02, 2.55])  # half to even: 1.5->2, 2.5->2


def test_histogram_merge_preserves_mass_and_matches_one_shot() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=5000), rng.normal(loc=2.0, size=5000)
    h = cal.merge_into(cal.merge_into(None, a, 512), b, 512)
    one = cal.histogram_of(np.concatenate([a, b]), 512)
    assert h.total == pytest.approx(10000)
    assert (h.lo, h.hi) == (one.lo, one.hi)
    # rebinning moves mass by at most one bin: the cumulative curves stay within a bin's mass
    assert np.abs(np.cumsum(h.counts) - np.cumsum(one.counts)).max() < 0.02 * 10000


def test_rebin_hand_example() -> None:
    h = cal.Histogram(np.array([2.0, 2.0]), 0.0, 2.0)
    r = cal.rebin(h, 0.0, 4.0)
    np.testing.assert_allclose(r.counts, [4.0, 0.0])


def test_percentile_and_minmax_ranges() -> None:
    h = cal.Histogram(np.ones(1000), 0.0, 100.0)
    assert cal.minmax_range(h) == (0.0, 100.0)
    lo, hi = cal.percentile_range(h, 99.0)
    assert lo == 0.0 and hi == pytest.approx(99.0)
    h2 = cal.Histogram(np.ones(1000), -50.0, 50.0)
    lo, hi = cal.percentile_range(h2, 98.0)  # 2% clipped at each tail
    assert lo == pytest.approx(-48.0) and hi == pytest.approx(48.0)
    with pytest.raises(ValueError):
        cal.percentile_range(h, 40.0)


def test_kl_and_quantized_distribution_hand_values() -> None:
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert cal.kl_divergence(np.array([1.0, 1.0]), np.array([1.0, 3.0])) == pytest.approx(expected)
    assert cal.kl_divergence(np.array([1.0, 1.0]), np.array([1.0, 0.0])) == float("inf")
    np.testing.assert_allclose(cal.quantized_distribution(np.array([1.0, 3.0, 2.0, 2.0]), 2), [2, 2, 2, 2])
    np.testing.assert_allclose(cal.quantized_distribution(np.array([2.0, 0.0, 4.0, 4.0]), 2), [2, 0, 4, 4])


def test_expected_mse_hand_value() -> None:
    h = cal.Histogram(np.array([1.0, 1.0]), 0.0, 2.0)  # centres 0.5 and 1.5, both inside [0, 2.55]
    assert cal.expected_mse(h, 0.0, 2.55) == pytest.approx(0.01**2 / 12)
    # range [0, 1.0]: 1.5 is clipped to 1.0 (error 0.25, half the mass) + rounding noise for the rest
    s = 1.0 / 255
    assert cal.expected_mse(h, 0.0, 1.0) == pytest.approx(0.5 * s * s / 12 + 0.5 * 0.25, rel=1e-3)


def test_mse_and_entropy_clip_a_long_tail_but_not_a_uniform() -> None:
    counts = np.zeros(2048)
    counts[:20] = 1e6  # the bulk in [0, ~1]: its rounding noise at full range outweighs clipping
    counts[-1] = 1.0  # one outlier at ~100
    h = cal.Histogram(counts, 0.0, 100.0)
    assert cal.mse_range(h)[1] < 50.0
    # KL cannot see rounding inside a flat bulk, so give it a decaying one (and the same outlier)
    rng = np.random.default_rng(0)
    he = cal.histogram_of(np.concatenate([rng.exponential(size=200_000), [100.0]]))
    assert cal.entropy_range(he)[1] < 50.0
    u = cal.Histogram(np.ones(2048), 0.0, 1.0)
    assert cal.mse_range(u)[1] == pytest.approx(1.0)
    assert cal.entropy_range(u)[1] == pytest.approx(1.0)


def test_entropy_keeps_relu_spike_out_of_the_decision() -> None:
    rng = np.random.default_rng(0)
    v = np.maximum(rng.normal(size=200_000), 0.0)  # half exact zeros
    h = cal.histogram_of(v)
    lo, hi = cal.entropy_range(h)
    assert lo == 0.0 and 0.6 * h.hi < hi <= h.hi  # clips the rare tail only


def test_choose_range_dispatch_and_errors() -> None:
    h = cal.histogram_of(np.linspace(-1, 1, 1001))
    for m in cal.RANGE_METHODS:
        lo, hi = cal.choose_range(h, m)
        assert lo <= 0 <= hi
    with pytest.raises(ValueError):
        cal.choose_range(h, "magic")


def test_weight_scales_and_sqnr() -> None:
    w = np.array([[0.5, -1.27], [0.1, 0.2]])
    np.testing.assert_allclose(cal.weight_scales(w, 8), [0.01, 0.2 / 127], rtol=1e-6)
    np.testing.assert_allclose(cal.weight_scales(w, 4), [1.27 / 7, 0.2 / 7], rtol=1e-6)
    rng = np.random.default_rng(0)
    wt = rng.standard_t(3, size=(8, 64))
    for bits in (4, 8):
        e_mm = ((cal.quantize_weight(wt, cal.weight_scales(wt, bits), bits) - wt) ** 2).sum()
        e_mse = ((cal.quantize_weight(wt, cal.weight_scales(wt, bits, "mse"), bits) - wt) ** 2).sum()
        assert e_mse <= e_mm + 1e-9
    assert cal.sqnr_db(np.array([1.0, 1.0]), np.array([1.1, 0.9])) == pytest.approx(20.0)
    assert cal.sqnr_db(np.ones(3), np.ones(3)) == float("inf")


def test_allocate_bits_under_budget() -> None:
    numels = {"a": 1000, "b": 1000, "c": 100}
    assert weight_bytes(numels) == 2100
    assert weight_bytes(numels, {"a": 4, "c": 0}) == 500 + 1000 + 400
    bits = allocate_bits(numels, {"a": 5.0, "b": 0.1, "c": 0.0}, budget=0.8)
    assert bits == {"a": 8, "b": 4, "c": 4}  # c costs nothing, then the least sensitive per byte (b)
    assert allocate_bits(numels, {}, budget=1.0) == {"a": 8, "b": 8, "c": 8}
    with pytest.raises(EdgeoptError):
        allocate_bits(numels, {}, budget=0.3)


def test_calibration_indices_are_reproducible() -> None:
    a, b = calibration_indices(1000, 50, seed=3), calibration_indices(1000, 50, seed=3)
    np.testing.assert_array_equal(a, b)
    assert len(set(a.tolist())) == 50 and not np.array_equal(a, calibration_indices(1000, 50, seed=4))
    assert len(calibration_indices(10, 50)) == 10


def test_bias_shift_is_channel_mean() -> None:
    f = torch.zeros(2, 3, 4, 4)
    q = f.clone()
    q[:, 1] += 0.5
    torch.testing.assert_close(bias_shift(f, q), torch.tensor([0.0, 0.5, 0.0]))


def test_recipe_validation() -> None:
    with pytest.raises(EdgeoptError, match="unknown calibration method"):
        QuantRecipe(calib="kl").validate()
    with pytest.raises(EdgeoptError, match="layer bits"):
        QuantRecipe(layer_bits={"x": 3}).validate()


def test_fold_bn_weights_hand_value() -> None:
    w, b = fold_bn_weights(np.ones((1, 1, 1, 1)), np.array([1.0]), np.array([2.0]), np.array([0.5]),
                           np.array([3.0]), np.array([4.0 - 1e-5]), 1e-5)  # fmt: skip
    assert w.item() == pytest.approx(1.0) and b.item() == pytest.approx(0.5 + (1 - 3) * 1.0)


def _depthwise_net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 4, 1),
    )  # fmt: skip
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.1, 4)
                m.weight.uniform_(0.05, 3)  # very different channel scales: what CLE fixes
                m.bias.uniform_(-1, 1)
    return net.eval()


def test_bn_folding_and_cle_preserve_the_function() -> None:
    net = _depthwise_net()
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        ref = net(x)
    assert fold_batchnorm(net, x[:1]) == 2
    with torch.no_grad():
        torch.testing.assert_close(net(x), ref, atol=1e-4, rtol=1e-4)
    w_dw = net[3].weight.detach().abs().reshape(8, -1).amax(1)
    spread_before = float(w_dw.max() / w_dw.min())
    assert equalize(net, x[:1]) == 2
    with torch.no_grad():
        torch.testing.assert_close(net(x), ref, atol=1e-4, rtol=1e-4)
    w_dw = net[3].weight.detach().abs().reshape(8, -1).amax(1)
    assert float(w_dw.max() / w_dw.min()) < spread_before


def test_equalization_pure_functions() -> None:
    w1 = np.array([[[[4.0]]], [[[1.0]]]])  # 2 out channels
    w2 = np.array([[[[1.0]], [[4.0]]]])  # 1 out, 2 in
    s = equalization_scales(w1, w2, depthwise2=False)
    np.testing.assert_allclose(s, [2.0, 0.5])
    a, b, c = apply_equalization(w1, np.array([2.0, 2.0]), w2, s, depthwise2=False)
    np.testing.assert_allclose(a.reshape(-1), [2.0, 2.0])
    np.testing.assert_allclose(b, [1.0, 4.0])
    np.testing.assert_allclose(c.reshape(-1), [2.0, 2.0])


def test_accuracy_aware_raises_the_most_sensitive_layers_first() -> None:
    from edgeopt.compress.quantize.mixed import accuracy_aware
    from edgeopt.model import EdgeModel, InputSpec, ModelMeta

    class Toy(nn.Module):
        def __init__(self, acc: float) -> None:
            super().__init__()
            self.acc = acc

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # predicts class 0 for the first acc share
            n = x.shape[0]
            out = torch.zeros(n, 2)
            k = int(round(self.acc * n))
            out[:k, 0] = 1.0
            out[k:, 1] = 1.0
            return out

    meta = ModelMeta(InputSpec((1, 2, 2)), 2, {"kind": "toy"})
    penalty = {"a": 0.04, "b": 0.01, "c": 0.0}  # accuracy each int4 layer costs

    def fake_quantize(model: EdgeModel, _data: object, recipe: QuantRecipe) -> EdgeModel:
        bits = {n: recipe.layer_bits.get(n, recipe.weight_bits) for n in penalty}
        return EdgeModel(Toy(1.0 - sum(p for n, p in penalty.items() if bits[n] == 4)), meta)

    x, y = torch.zeros(100, 1, 2, 2), np.zeros(100, dtype=np.int64)
    recipe = QuantRecipe(weight_bits=4)
    _, info = accuracy_aware(EdgeModel(Toy(1.0), meta), None, recipe, 2.0, x, y, ["a", "b", "c"], fake_quantize)
    assert info["met"] and [k["layer"] for k in info["kept_higher"]] == ["a"]
    assert info["drop_points"] == pytest.approx(1.0)
    _, info = accuracy_aware(EdgeModel(Toy(1.0), meta), None, recipe, 0.0, x, y, ["a", "b", "c"], fake_quantize)
    assert info["met"] and [k["layer"] for k in info["kept_higher"]] == ["a", "b"]


def test_lsq_fake_quant_forward_and_straight_through_gradients() -> None:
    from edgeopt.compress.quantize.qat import lsq_fake_quant

    x = torch.tensor([-1.0, 0.004, 0.006, 0.5, 5.0], requires_grad=True)
    step = torch.tensor(0.01, requires_grad=True)
    y = lsq_fake_quant(x, step, torch.tensor(-128.0), -128, 127, g=1.0)
    np.testing.assert_allclose(y.detach().numpy(), cal.fake_quantize(x.detach().numpy(), 0.01, -128, -128, 127),
                               atol=1e-6)  # fmt: skip
    y.sum().backward()
    # STE: gradient 1 inside the representable range [0, 2.55], 0 where clipped
    np.testing.assert_allclose(x.grad.numpy(), [0, 1, 1, 1, 0])
    assert step.grad is not None and float(step.grad) != 0.0  # the step is learned
