"""Issue 16: NNCF's fast bias correction (``fastbias``) and its recipe switch (``QuantRecipe.bias_method``).

Toy layers with shifts computed by hand; the zoo ResNet-8 on 8x8 digits (batch norms kept as biases
after folding) for the PTQ flow. Offline and fast.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import edgeopt
from edgeopt.compress.quantize.fastbias import apply_fast_bias_correction, fast_bias_shifts
from edgeopt.compress.quantize.ptq import QuantRecipe, calibration_batch, float_model, quantize_ptq
from edgeopt.data import load_dataset
from edgeopt.errors import EdgeoptError


def _conv1x1(seed: int = 0) -> tuple[nn.Conv2d, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    conv = nn.Conv2d(3, 4, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(4, 3, 1, 1, generator=g))
        conv.bias.copy_(torch.tensor([1.0, -2.0, 3.0, 0.5]))
    return conv, torch.randn(64, 3, 5, 5, generator=g) + 1.0


def test_fast_shift_of_a_1x1_conv_is_the_weight_error_times_the_input_mean() -> None:
    conv, x = _conv1x1()
    wq = conv.weight.detach() + 0.01 * torch.arange(12.0).reshape(4, 3, 1, 1)
    shifts = fast_bias_shifts(conv, x, {"": wq})
    ebar = x.double().mean(dim=(0, 2, 3))
    expected = ((conv.weight.detach() - wq).double().reshape(4, 3) @ ebar).float()
    assert torch.allclose(shifts[""], expected, atol=1e-5)
    # float weights: a 1x1 conv without padding sees every position alike, so there is nothing to shift
    assert torch.allclose(fast_bias_shifts(conv, x, {"": conv.weight.detach()})[""], torch.zeros(4), atol=1e-5)


def test_fast_shift_is_skipped_past_the_threshold_or_on_a_zero_bias() -> None:
    conv, x = _conv1x1(1)
    with torch.no_grad():
        conv.bias.fill_(0.01)
    wq = conv.weight.detach() * 0.5  # a shift of many times the bias
    assert fast_bias_shifts(conv, x, {"": wq}, threshold=2.0) == {}
    assert "" in fast_bias_shifts(conv, x, {"": wq}, threshold=1e9)
    with torch.no_grad():
        conv.bias[0] = 0.0
    assert fast_bias_shifts(conv, x, {"": conv.weight.detach() * 0.99}, threshold=1e9) == {}


class _PadConv(nn.Module):
    """A TFLite-style SAME stride-2 conv: an explicit zero pad (bottom/right) before an unpadded conv."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


def test_padding_before_a_conv_stays_zero_in_the_constant_input() -> None:
    torch.manual_seed(0)
    m = _PadConv()
    with torch.no_grad():
        m.conv.bias.copy_(torch.tensor([2.0, -3.0, 4.0]))
    x = torch.rand(32, 2, 6, 6) + 0.5  # never zero: only the pad is
    shifts = fast_bias_shifts(m, x, {"conv": m.conv.weight.detach()}, threshold=1e9)["conv"]
    # by hand: the mean over positions of the float output, minus the conv of the per-channel mean
    # over the *unpadded* positions placed where the data is (zero in the pad)
    with torch.no_grad():
        ref = m(x).double().mean(dim=(0, 2, 3))
        blob = x.mean(dim=(0, 2, 3)).reshape(1, 2, 1, 1).expand(1, 2, 6, 6)
        const = m(blob).double().mean(dim=(0, 2, 3))
    assert torch.allclose(shifts, (ref - const).float(), atol=1e-5)


def test_apply_adds_the_shifts_and_leaves_other_layers() -> None:
    conv, x = _conv1x1(2)
    before = conv.bias.detach().clone()
    wq = conv.weight.detach() + 0.02
    expected = fast_bias_shifts(conv, x, {"": wq})[""]
    out = apply_fast_bias_correction(conv, x, {"": wq})
    assert set(out) == {""} and out[""] == pytest.approx(float(expected.abs().max()))
    assert torch.allclose(conv.bias.detach() - before, expected)
    with torch.no_grad():  # the corrected layer's mean output with quantized weights is the float one again
        y_q = F.conv2d(x, wq, conv.bias).mean(dim=(0, 2, 3))
        y_f = F.conv2d(x, conv.weight, before).mean(dim=(0, 2, 3))
    assert torch.allclose(y_q, y_f, atol=1e-4)


@pytest.fixture(scope="module")
def resnet8():
    """The zoo ResNet-8 (8x8 digits) with seeded batch-norm parameters in place of training: non-zero
    biases everywhere (a zero bias entry makes NNCF skip the layer)."""
    torch.manual_seed(0)
    model = edgeopt.load_model("zoo:resnet8", input_shape=(1, 8, 8), num_classes=10)
    with torch.no_grad():
        for m in model.module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(0.2, 1.0)
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    return model, load_dataset("digits", "train")


def test_ptq_bias_methods(resnet8, tmp_path) -> None:
    model, train = resnet8
    none = quantize_ptq(model, train, QuantRecipe(calib_samples=32, bias_correction=False))
    both = quantize_ptq(model, train, QuantRecipe(calib_samples=32, bias_method="fast+empirical"))
    metrics = both.meta.lineage[-1]["metrics"]
    assert metrics["fast_bias_shift_max"] and metrics["bias_shift_max"]  # both ran
    # the fast shifts land in the float model where the batch norms carry the conv biases (the empirical
    # ones do too: both only touch the carriers), and not in a conv followed by its batch norm
    sd_both, sd_none = float_model(both).module.state_dict(), float_model(none).module.state_dict()
    moved = [k for k in sd_both if k.endswith("bias") and not torch.equal(sd_both[k], sd_none[k])]
    assert any(".bn" in k for k in moved), moved
    assert not {"stem.0.bias", "stack1.conv1.bias", "stack2.conv2.bias"} & set(moved)
    x = calibration_batch(model, train, 8)
    with torch.no_grad():
        assert not torch.equal(both.module(x), none.module(x))
    loaded = edgeopt.load_model(edgeopt.save_model(both, tmp_path / "fast.edgeopt"))  # the shifts are saved weights
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), both.module(x), atol=0, rtol=0)
    assert loaded.meta.arch["recipe"]["bias_method"] == "fast+empirical"
    with pytest.raises(EdgeoptError, match="unknown bias correction"):
        QuantRecipe(bias_method="nncf").validate()


def test_cli_and_recipe_reach_the_bias_method(resnet8, tmp_path, capfd) -> None:
    from edgeopt.cli import main
    from edgeopt.pipeline.recipe import recipe_from_dict

    model, _ = resnet8
    src = edgeopt.save_model(model, tmp_path / "r8.edgeopt")
    args = ["quantize", str(src), "--data", "digits", "--calib-samples", "16", "--no-eval"]
    assert main([*args, "--bias", "fast", "--out", str(tmp_path / "q.edgeopt")]) == 0
    assert edgeopt.load_model(tmp_path / "q.edgeopt").meta.arch["recipe"]["bias_method"] == "fast"
    capfd.readouterr()
    assert main([*args, "--bias", "nncf", "--out", str(tmp_path / "bad.edgeopt")]) == 2
    assert "unknown bias correction 'nncf'" in capfd.readouterr().err
    recipe = recipe_from_dict({"model": str(src), "data": "digits", "passes": [{"quantize": {"bias_method": "fast"}}]})
    assert recipe.passes[0].bias_method == "fast"
