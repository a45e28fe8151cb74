"""Batch-norm unfolding for imported (BN-folded) graphs: identity at start, trains, folds back exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_prune_channel import tiny_imported

from edgeopt.compress.batchnorm import canonical_batchnorm, fold_batchnorm, needs_unfolding, unfold_batchnorm
from edgeopt.compress.common import strip_output_softmax
from edgeopt.data import ImageDataset
from edgeopt.interop.graph import GraphModule
from edgeopt.model import build_module

pytestmark = pytest.mark.usefixtures("one_thread")


def _inputs(n: int = 64, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.uniform(0, 255, (n, 8, 8, 3)).astype(np.float32))


def _ops(model) -> list[str]:
    return [n["op"] for n in model.module.ir["nodes"]]


def test_unfold_is_identity_in_eval_and_normalises_in_training() -> None:
    model = strip_output_softmax(tiny_imported())
    x = _inputs()
    assert needs_unfolding(model)
    unfolded = unfold_batchnorm(model, x)
    assert not needs_unfolding(unfolded)
    assert _ops(unfolded).count("batchnorm") == _ops(model).count("conv2d") == 6
    torch.testing.assert_close(unfolded.module.eval()(x), model.module(x), rtol=1e-3, atol=1e-3)
    # the record rebuilds the same module
    rebuilt = build_module(unfolded.meta.arch)
    rebuilt.load_state_dict(unfolded.module.state_dict())
    torch.testing.assert_close(rebuilt.eval()(x), model.module(x), rtol=1e-3, atol=1e-3)
    # in training mode each conv output is normalised by its batch statistics
    # every conv now has He-init scale (the function is kept by the BN that follows)
    for conv in (m for m in unfolded.module.modules() if isinstance(m, torch.nn.Conv2d)):
        he = (2.0 / conv.weight[0].numel()) ** 0.5
        assert abs(float(conv.weight.std()) / he - 1.0) < 1e-3
    assert unfold_batchnorm(unfolded, x) is unfolded  # nothing left to unfold


def test_fold_after_training_restores_the_architecture_with_the_same_function() -> None:
    model = strip_output_softmax(tiny_imported())
    unfolded = unfold_batchnorm(model, _inputs())
    module = unfolded.module.train()
    opt = torch.optim.SGD(module.parameters(), lr=0.05)
    for i in range(3):  # BN parameters and statistics move away from the identity
        target = torch.randint(0, 10, (32,), generator=torch.Generator().manual_seed(i))
        loss = torch.nn.functional.cross_entropy(module(_inputs(32, seed=i + 1)), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    module.eval()
    folded = fold_batchnorm(unfolded)
    assert _ops(folded) == _ops(model)
    assert isinstance(folded.module, GraphModule)
    x = _inputs(16, seed=9)
    torch.testing.assert_close(folded.module(x), unfolded.module(x), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(folded.module(x), model.module(x), atol=1e-3)  # training did change it


def test_canonical_batchnorm_keeps_the_function_with_constant_statistics() -> None:
    unfolded = unfold_batchnorm(strip_output_softmax(tiny_imported()), _inputs())
    x = _inputs(16, seed=3)
    before = unfolded.module.eval()(x)
    canonical_batchnorm(unfolded)
    torch.testing.assert_close(unfolded.module(x), before, rtol=1e-4, atol=1e-4)
    bn = next(m for m in unfolded.module.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert float(bn.running_mean.abs().max()) == 0.0
    convs = [m for m in unfolded.module.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(float(c.bias.abs().max()) == 0.0 for c in convs)  # moved into the BN shifts


def test_tune_trains_imported_graph_with_bn_and_returns_original_architecture() -> None:
    from edgeopt.compress.workflows import TuneSettings, tune

    model = strip_output_softmax(tiny_imported())
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 256).astype(np.int64)
    images = rng.integers(0, 128, (256, 8, 8, 3), dtype=np.uint8)
    images[..., 0] += (127 * labels).astype(np.uint8)[:, None, None]  # class 1 images are bright red
    data = ImageDataset(images, labels, [str(i) for i in range(10)], "synthetic")
    tuned, hist = tune(model, data, TuneSettings(epochs=3, lr=0.05, optimizer="sgd", batch_size=32))
    assert _ops(tuned) == _ops(model)
    assert hist[-1]["train_accuracy"] > 0.8
