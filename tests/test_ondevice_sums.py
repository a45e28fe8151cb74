"""Accuracy of a float32 ExecuTorch training program's long reductions (``program.staged_sums``).

ExecuTorch's portable ``sum`` adds a reduction's terms one after another in float32, so the bias gradients of a
batch of feature maps (sums of thousands of terms) lose digits that PyTorch keeps. The staged rewrite must
bring them back to float64's neighbourhood; without it (monkeypatched away) the same program is ~100x further.
The opt-in ``float64_convolutions`` must keep a ReLU mask element that the portable float32 convolution flips.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import edgeopt.ondevice.program as program_mod
from edgeopt.ondevice import parse_scope, prepare_scope
from edgeopt.ondevice.loops import ExecuTorchTrainer


def _setup() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(8, 4))  # fmt: skip
    x = torch.randn(8, 3, 48, 48) + 0.5  # bias gradients sum 8*48*48 = 18432 terms
    return net, x, torch.randint(0, 4, (8,))


def _program_gradients(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    work, trainable = prepare_scope(net, parse_scope("bias"))
    program = program_mod.build_training_program(work, trainable, x, y, frozen="none")
    trainer = ExecuTorchTrainer(program.buffer, lr=0.02)
    trainer._forward_backward(x, y)
    return {k.removeprefix("net."): v.double() for k, v in trainer.module.named_gradients().items()}


def _float64_gradients(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    work, _ = prepare_scope(net, parse_scope("bias"))
    work = work.double()
    nn.functional.cross_entropy(work(x.double()), y).backward()
    return {n: p.grad for n, p in work.named_parameters() if p.requires_grad}


def _relative(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float((a - ref).norm() / ref.norm())


@pytest.fixture(scope="module")
def case() -> tuple[nn.Module, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    net, x, y = _setup()
    return net, x, y, _float64_gradients(net, x, y)


def test_staged_sums_keep_bias_gradients_float64_close(case):
    net, x, y, ref = case
    got = _program_gradients(net, x, y)
    for name in ("0.bias", "1.bias"):  # the convolution's (convolution_backward) and batch norm's (sum) bias
        assert _relative(got[name], ref[name]) < 1e-6, name


def test_without_staged_sums_the_bias_gradients_lose_digits(case, monkeypatch):
    net, x, y, ref = case
    monkeypatch.setattr(program_mod, "staged_sums", lambda program: 0)
    got = _program_gradients(net, x, y)
    assert _relative(got["1.bias"], ref["1.bias"]) > 1e-5  # the mechanism the pass exists for is still there


def test_staged_sums_rewrite_the_graph():
    net, x, y = _setup()
    work, trainable = prepare_scope(net, parse_scope("bias"))
    program = program_mod.build_training_program(work, trainable, x, y, frozen="none")
    assert program.detail["staged_sums"] >= 2  # batch norm's bias gradient and the convolution's
    for node in program.lowered.graph.nodes:
        if "convolution_backward" in str(node.target):
            assert not node.args[10][2] if len(node.args) > 10 else not node.kwargs["output_mask"][2]


def _flip_case() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A 1x1 convolution whose exact output at one pixel is 3e-8 > 0, but 0 when its three terms are added in order in
    float32 (1 + 3e-8 rounds to 1): the ReLU mask element there flips, and the convolution's weight gradient with it."""
    net = nn.Sequential(nn.Conv2d(3, 1, 1, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(4, 2))
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        net[3].weight.copy_(torch.tensor([[1.0, 0.5, -0.5, 2.0], [-1.0, 0.3, 0.2, -0.7]]))
        net[3].bias.zero_()
    x = torch.full((1, 3, 2, 2), 0.5)
    x[0, :, 0, 0] = torch.tensor([1.0, 3e-8, -1.0])
    return net, x, torch.tensor([1])


@pytest.mark.parametrize("wide", [False, True])
def test_float64_convolutions_keep_a_near_zero_relu_mask(wide):
    net, x, y = _flip_case()
    work, trainable = prepare_scope(net, parse_scope("all"))
    program = program_mod.build_training_program(work, trainable, x, y, frozen="none", float64_convolutions=wide)
    trainer = ExecuTorchTrainer(program.buffer, lr=0.0)
    trainer._forward_backward(x, y)
    got = trainer.module.named_gradients()["net.0.weight"].double().flatten()
    ref = _float64_gradients_all(net, x, y)
    if wide:
        assert program.detail["float64_convolutions"] == 1
        torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-6)
    else:  # the portable float32 convolution rounds the pixel to 0 and drops its gradient (~0.5 of ~2)
        assert float((got - ref).abs().max()) > 0.1


def _float64_gradients_all(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    work, _ = prepare_scope(net, parse_scope("all"))
    work = work.double()
    nn.functional.cross_entropy(work(x.double()), y).backward()
    return work[0].weight.grad.flatten()
