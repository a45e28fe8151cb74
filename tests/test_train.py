"""Training: it learns, it is deterministic, the loss hook is used, shape mismatches are clear."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeopt.data import load_dataset
from edgeopt.errors import EdgeoptError
from edgeopt.models import create_model
from edgeopt.train import FitConfig, evaluate, fit, seed_everything
from edgeopt.train.augment import random_crop_flip


def test_resnet8_learns_digits_and_is_deterministic() -> None:
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    accs, weights = [], []
    for _ in range(2):
        seed_everything(0)
        m = create_model("resnet8", input_shape=(1, 8, 8), num_classes=10)
        m, hist = fit(m, train, FitConfig(epochs=4, batch_size=64))
        accs.append(evaluate(m, test).accuracy)
        weights.append(m.module.fc.weight.detach().clone())
    assert accs[0] > 0.8, accs  # chance is 0.1
    assert torch.equal(weights[0], weights[1]) and hist.epochs[-1]["loss"] < hist.epochs[0]["loss"]


def test_loss_hook_is_what_gets_minimised() -> None:
    train = load_dataset("digits", "train").take(128)
    calls = []

    def loss_fn(logits, y, x):
        calls.append(x.shape)
        return (logits**2).mean()  # drives logits to zero whatever the labels

    m = create_model("mlp", input_shape=(1, 8, 8), seed=0)
    x = torch.from_numpy(m.meta.input.to_model_input(train.images[:16]))
    with torch.no_grad():
        before = float(m.module(x).abs().max())
    fit(m, train, FitConfig(epochs=4, batch_size=64, optimizer="adam", weight_decay=0), loss_fn=loss_fn)
    with torch.no_grad():
        after = float(m.module(x).abs().max())
    assert len(calls) == 8 and after < 0.7 * before, (before, after)  # cross-entropy would grow the logits


def test_shape_mismatch_is_one_clear_error() -> None:
    m = create_model("resnet8")  # 3x32x32
    with pytest.raises(EdgeoptError, match="model expects 32x32x3 images but the data has 8x8x1"):
        fit(m, load_dataset("digits", "train"), FitConfig(epochs=1))


def test_crop_flip_keeps_content() -> None:
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    out = random_crop_flip(imgs, np.random.default_rng(1), pad=0, flip=False)
    assert np.array_equal(out, imgs)
    flipped = random_crop_flip(imgs, np.random.default_rng(1), pad=0, flip=True)
    assert all(np.array_equal(f, i) or np.array_equal(f, i[:, ::-1]) for f, i in zip(flipped, imgs, strict=True))


def test_training_device_is_resolved_or_refused() -> None:
    from edgeopt.train.fit import training_device

    assert training_device("cpu").type == "cpu"
    assert training_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(EdgeoptError, match="unknown training device"):
        training_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(EdgeoptError, match="no CUDA device"):
            fit(create_model("mlp", input_shape=(1, 8, 8), num_classes=10), load_dataset("digits").take(32),
                FitConfig(epochs=1, device="cuda"))  # fmt: skip


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_training_returns_a_cpu_model() -> None:
    m = create_model("resnet8", input_shape=(1, 8, 8), num_classes=10)
    m, _ = fit(m, load_dataset("digits", "train").take(256), FitConfig(epochs=1, device="cuda"))
    assert all(p.device.type == "cpu" for p in m.module.parameters())


def test_batchnorms_re_estimated_from_batches_alone_with_dropout_off_and_state_restored() -> None:
    from torch import nn

    from edgeopt.train.batchnorm import reestimate_batchnorms

    torch.manual_seed(0)
    net = nn.Sequential(nn.Dropout(0.9), nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3, momentum=0.3))
    net.train()
    net[2].running_mean.fill_(5.0)
    x = torch.randn(16, 2, 4, 4) * 3 + 1
    reestimate_batchnorms(net, torch.split(x, 4))
    with torch.no_grad():
        y = net[1](x)  # what the batch norm saw, had dropout stayed off
    assert torch.allclose(net[2].running_mean, y.mean(dim=(0, 2, 3)), atol=1e-5)  # the average of 4 equal batches
    assert net[2].momentum == 0.3 and net.training and net[2].training
