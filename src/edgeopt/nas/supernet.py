"""Weight-sharing supernet for ``nas_resnet`` spaces (Once-for-All style, trained with the sandwich rule).

One network holds the largest choice of every knob: the most channels, blocks and the largest
kernel per stage. A sub-network uses

* **elastic width**: the first ``w`` output channels of each layer (and the first input channels
  the previous layer kept), batch-norm parameters and statistics sliced alike;
* **elastic depth**: the first ``d`` blocks of each stage;
* **elastic kernel**: the centre ``k x k`` of each kernel.

:func:`extract` copies those slices into the standalone ``nas_resnet`` zoo model of the same
configuration, so a sub-network is an ordinary ``.edgeopt`` record; its outputs equal the
supernet's for that configuration (tested). :func:`train_supernet` applies the sandwich rule with
in-place distillation (BigNAS): each step trains the largest sub-network on the labels, then the
smallest and ``n_random`` random ones on the largest's soft predictions, gradients summed.
:func:`recalibrate_bn` re-estimates a sub-network's batch-norm statistics on training images, as
shared statistics do not fit any one sub-network.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgeopt.data import ImageDataset
from edgeopt.errors import EdgeoptError
from edgeopt.model import EdgeModel
from edgeopt.models.searchable import default_strides
from edgeopt.nas.space import SearchSpace, random_chooser, sample
from edgeopt.train.batchnorm import reestimate_batchnorms


def _extreme(space: SearchSpace, pick: Any) -> dict[str, Any]:
    return sample(space, lambda _name, choices: pick(choices))


def largest(space: SearchSpace) -> dict[str, Any]:
    return _extreme(space, max)


def smallest(space: SearchSpace) -> dict[str, Any]:
    return _extreme(space, min)


class _ElasticConvBN(nn.Module):
    """A conv (no bias) + batch norm at the largest size; runs any leading slice and centre kernel."""

    def __init__(self, cin: int, cout: int, kernel: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(cout, cin, kernel, kernel))
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")
        self.bn = nn.BatchNorm2d(cout)

    def sliced(self, cin: int, cout: int, kernel: int) -> torch.Tensor:
        k_max = self.weight.shape[-1]
        lo = (k_max - kernel) // 2
        return self.weight[:cout, :cin, lo : lo + kernel, lo : lo + kernel]

    def forward(self, x: torch.Tensor, cout: int, kernel: int, stride: int) -> torch.Tensor:
        w = self.sliced(x.shape[1], cout, kernel)
        y = F.conv2d(x, w, None, stride, kernel // 2)
        bn = self.bn
        return F.batch_norm(
            y, bn.running_mean[:cout], bn.running_var[:cout], bn.weight[:cout], bn.bias[:cout],
            self.training, bn.momentum or 0.1, bn.eps,
        )  # fmt: skip

    def copy_into(self, seq: nn.Sequential, cin: int, cout: int, kernel: int) -> None:
        """Write this layer's slices into a standalone ``conv_bn`` Sequential (conv, bn, ...)."""
        conv, bn = seq[0], seq[1]
        conv.weight.copy_(self.sliced(cin, cout, kernel))
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(bn, name).copy_(getattr(self.bn, name)[:cout])
        bn.num_batches_tracked.copy_(self.bn.num_batches_tracked)


class _ElasticBlock(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int) -> None:
        super().__init__()
        self.conv1 = _ElasticConvBN(cin, cout, kernel)
        self.conv2 = _ElasticConvBN(cout, cout, kernel)
        self.shortcut = _ElasticConvBN(cin, cout, 1)

    def forward(self, x: torch.Tensor, cout: int, kernel: int, stride: int) -> torch.Tensor:
        y = self.conv2(F.relu(self.conv1(x, cout, kernel, stride)), cout, kernel, 1)
        short = x if stride == 1 and x.shape[1] == cout else self.shortcut(x, cout, 1, stride)
        return F.relu(y + short)


class ResNetSupernet(nn.Module):
    """The largest network of a ``nas_resnet`` space; ``forward(x, config)`` runs any sub-network."""

    def __init__(self, space: SearchSpace, input_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        if space.family != "nas_resnet":
            raise EdgeoptError(f"a weight-sharing supernet is built for nas_resnet spaces, not {space.family}",
                               "use multi-trial search (the default) for this space")  # fmt: skip
        self.space = space
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        big = largest(space)
        k_max = [max(c) for c in space.knobs["kernels"]]
        self.strides = big.get("strides") or default_strides(space.units)
        self.stem = _ElasticConvBN(input_shape[0], big["stem"], 3)
        cin = big["stem"]
        self.stages = nn.ModuleList()
        for w, d, k in zip(big["widths"], big["depths"], k_max, strict=True):
            self.stages.append(nn.ModuleList(_ElasticBlock(cin if i == 0 else w, w, k) for i in range(d)))
            cin = w
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor, config: dict[str, Any]) -> torch.Tensor:
        x = F.relu(self.stem(x, config["stem"], 3, 1))
        strides = config.get("strides") or self.strides
        for stage, w, d, k, s in zip(self.stages, config["widths"], config["depths"], config["kernels"], strides,
                                     strict=True):  # fmt: skip
            for i in range(d):
                x = stage[i](x, w, k, s if i == 0 else 1)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        w_last = x.shape[1]
        return F.linear(x, self.fc.weight[:, :w_last], self.fc.bias)


@torch.no_grad()
def extract(supernet: ResNetSupernet, config: dict[str, Any], model: EdgeModel) -> EdgeModel:
    """Copy the sub-network ``config`` out of ``supernet`` into ``model`` (its standalone zoo model)."""
    net = model.module
    supernet.stem.copy_into(net.stem, supernet.input_shape[0], config["stem"], 3)
    cin = config["stem"]
    for s, (w, d, k) in enumerate(zip(config["widths"], config["depths"], config["kernels"], strict=True)):
        for i in range(d):
            src, dst = supernet.stages[s][i], net.stages[s][i]
            c_in = cin if i == 0 else w
            src.conv1.copy_into(dst.conv1, c_in, w, k)
            src.conv2.copy_into(dst.conv2, w, w, k)
            if isinstance(dst.shortcut, nn.Sequential):
                src.shortcut.copy_into(dst.shortcut, c_in, w, 1)
        cin = w
    net.head.fc.weight.copy_(supernet.fc.weight[:, :cin])
    net.head.fc.bias.copy_(supernet.fc.bias)
    return model


def recalibrate_bn(model: EdgeModel, data: ImageDataset, images: int = 512, batch_size: int = 64) -> EdgeModel:
    """Re-estimate every batch-norm layer's statistics on ``images`` training images (cumulative average,
    ``train.batchnorm.reestimate_batchnorms``); returns the model in eval mode."""
    subset = data.take(images, seed=0)
    x = torch.from_numpy(model.meta.input.to_model_input(subset.images))
    reestimate_batchnorms(model.module, torch.split(x, batch_size))
    model.module.eval()
    return model


def train_supernet(
    supernet: ResNetSupernet,
    data: ImageDataset,
    spec: Any,
    epochs: int = 5,
    n_random: int = 2,
    lr: float = 0.05,
    batch_size: int = 64,
    seed: int = 0,
    device: str = "cpu",
) -> ResNetSupernet:
    """Sandwich rule with in-place distillation: per step the largest sub-network learns the labels; the
    smallest and ``n_random`` random ones learn the largest's (detached) soft predictions. ``spec`` is
    the model's ``InputSpec`` (how images become inputs). SGD with momentum and a cosine schedule. Trains
    on ``device`` (cpu, cuda or auto) and returns the supernet on the CPU."""
    from edgeopt.train.fit import training_device

    dev = training_device(device)
    torch.manual_seed(seed)
    supernet.to(dev)
    rng = np.random.default_rng(seed)
    space = supernet.space
    big, small = largest(space), smallest(space)
    opt = torch.optim.SGD(supernet.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-5)
    steps = epochs * max(1, int(np.ceil(len(data) / batch_size)))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    labels = torch.from_numpy(data.labels)
    supernet.train()
    for _ in range(epochs):
        order = rng.permutation(len(data))
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            x = torch.from_numpy(spec.to_model_input(data.images[idx])).to(dev)
            y = labels[idx].to(dev)
            opt.zero_grad(set_to_none=True)
            logits = supernet(x, big)
            F.cross_entropy(logits, y, label_smoothing=0.1).backward()
            soft = F.softmax(logits.detach(), 1)
            for cfg in [small] + [sample(space, random_chooser(rng)) for _ in range(n_random)]:
                out = F.log_softmax(supernet(x, cfg), 1)
                F.kl_div(out, soft, reduction="batchmean").backward()
            opt.step()
            sched.step()
    return supernet.cpu().eval()
