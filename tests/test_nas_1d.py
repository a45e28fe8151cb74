"""Architecture search on 1-D sequences (N, C, L): the DS-CNN space builds Conv1d networks (issues 11, 14).

Synthetic sequences stand in for ``mnist1d:`` (whose build costs seconds): 1 x 40 windows whose
class sets the frequency of a sine, plus noise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgeopt.data import ImageDataset
from edgeopt.errors import EdgeoptError
from edgeopt.model import load_model, save_model
from edgeopt.nas import Budget, SearchSettings, load_space
from edgeopt.nas import search as run_search
from edgeopt.nas.cost import architecture_cost, violations
from edgeopt.nas.search import candidate_model, refuse_unsearchable
from edgeopt.nas.space import random_chooser, sample


def sequences(n: int, classes: int = 3, length: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    t = np.linspace(0, 2 * np.pi, length, dtype=np.float32)
    x = np.sin(np.outer(y + 1, t)) + 0.3 * rng.standard_normal((n, length))
    return x[:, None, :].astype(np.float32), y.astype(np.int64)


def seq_data(n: int = 60, classes: int = 3) -> ImageDataset:
    x, y = sequences(n, classes)
    return ImageDataset(x, y, [str(i) for i in range(classes)], "seq")


def kinds(module: nn.Module) -> set[type]:
    return {type(m) for m in module.modules()}


def test_sampled_1d_dscnn_builds_prices_saves_and_exports(tmp_path: Path) -> None:
    space, data = load_space("dscnn"), seq_data()
    config = sample(space, random_chooser(np.random.default_rng(3)))
    model = candidate_model(space, config, data, seed=0)
    assert model.meta.input.layout == "NCL" and model.meta.input.shape == (1, 40)
    assert nn.Conv1d in kinds(model.module) and nn.Conv2d not in kinds(model.module)
    lo, hi = model.meta.input.value_range  # the arrays' own range, as `edgeopt train` records it
    assert lo < -0.5 and hi > 0.5
    x = torch.from_numpy(np.asarray(data.images[:5]))
    with torch.no_grad():
        y = model.module.eval()(x)
    assert y.shape == (5, 3)

    cost = architecture_cost(model)
    assert cost["macs"] > 0 and cost["params"] >= sum(p.numel() for p in model.module.parameters())
    # the .tflite schedule adds the NCL -> NLC input copy (and PAD copies of strided convs)
    assert cost["arena_bytes_int8_tflite"] >= cost["arena_bytes_int8"] > 0
    cons = violations(cost, Budget(arena_kb=0.001, flash_kb=1e6, params=10), ["onnxruntime"])
    assert cons["arena_kb"] > 0 and cons["flash_kb"] < 0 and cons["params"] > 0

    path = save_model(model, tmp_path / "m.edgeopt")
    back = load_model(path)
    assert back.meta.arch["name"] == "nas_dscnn" and back.meta.arch["kwargs"]["input_shape"] == [1, 40]
    with torch.no_grad():
        torch.testing.assert_close(back.module.eval()(x), y)

    from edgeopt.interop.export import export_model

    res = export_model(back, "onnx", tmp_path / "m.onnx")
    assert res.parity is not None and res.parity.top1_agreement == 1.0


def test_stem_kernel_spans_time_on_sequences() -> None:
    from edgeopt.models import create_model

    m = create_model("nas_dscnn", input_shape=(2, 40), num_classes=4, stem=8, stem_kernel=[5, 3], widths=[8, 16],
                     strides=[2, 1])  # fmt: skip
    conv = m.module.stem[0]
    assert isinstance(conv, nn.Conv1d) and conv.kernel_size == (5,) and conv.in_channels == 2
    assert m.module(torch.zeros(1, 2, 40)).shape == (1, 4)
    # the 2-D (spectrogram) network is unchanged: a 5 x 3 Conv2d stem
    m2 = create_model("nas_dscnn", input_shape=(1, 49, 10), num_classes=4, stem=8, stem_kernel=[5, 3], widths=[8])
    assert isinstance(m2.module.stem[0], nn.Conv2d) and m2.module.stem[0].kernel_size == (5, 3)


def test_spectrogram_arrays_build_2d_networks() -> None:
    rng = np.random.default_rng(0)
    data = ImageDataset(rng.random((12, 1, 16, 8), dtype=np.float32), np.arange(12) % 2, ["a", "b"], "spec")
    space = load_space("dscnn")
    refuse_unsearchable(space, data, "spec")  # (C, H, W) arrays: allowed
    model = candidate_model(space, sample(space, random_chooser(np.random.default_rng(0))), data)
    assert model.meta.input.layout == "NCHW" and nn.Conv2d in kinds(model.module)
    assert model.module(torch.from_numpy(data.images[:2])).shape == (2, 2)


def test_refusals_are_one_line_before_any_trial() -> None:
    seq = seq_data(12)
    refuse_unsearchable(load_space("dscnn"), seq, "seq")  # allowed
    with pytest.raises(EdgeoptError, match="the 'resnet' space builds image networks") as e:
        refuse_unsearchable(load_space("resnet"), seq, "seq")
    assert "--space dscnn" in e.value.fix
    with pytest.raises(EdgeoptError, match="the weight-sharing supernet trains on images"):
        refuse_unsearchable(load_space("resnet"), seq, "seq", mode="supernet")
    images = ImageDataset(np.zeros((4, 8, 8, 1), np.uint8), np.arange(4) % 2, ["a", "b"], "img")
    refuse_unsearchable(load_space("resnet"), images, "img", mode="supernet")  # the supernet's own case
    with pytest.raises(EdgeoptError, match="supernet is built for nas_resnet spaces, not nas_dscnn"):
        refuse_unsearchable(load_space("dscnn"), images, "img", mode="supernet")
    flat = ImageDataset(np.zeros((4, 640), np.float32), np.zeros(4), ["x"], "flat")
    with pytest.raises(EdgeoptError, match="flat vectors of shape 640"):
        refuse_unsearchable(load_space("dscnn"), flat, "flat")


def test_tiny_search_on_sequences_writes_its_model(tmp_path: Path) -> None:
    x, y = sequences(60)
    xt, yt = sequences(30, seed=1)
    np.savez(tmp_path / "seq.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
    settings = SearchSettings(trials=2, epochs=1, proxy_images=30, batch_size=16, corners=True)
    summary = run_search(load_space("dscnn"), f"npz:{tmp_path / 'seq.npz'}", Budget(), settings, tmp_path / "run",
                         front_limit=1, export_all=False)  # fmt: skip
    assert summary["trials"] == 2 and summary["feasible_trials"] == 2
    assert summary["cost_axis"] == "mmacs"
    model = load_model(summary["model"])
    assert model.meta.input.layout == "NCL" and model.meta.arch["name"] == "nas_dscnn"
    assert model.meta.arch["kwargs"] | summary["chosen"]["config"] == model.meta.arch["kwargs"]
    measured = summary["chosen"]["measured"]["onnxruntime"]
    assert 0.0 <= measured["accuracy"] <= 1.0 and measured["latency_ms"] > 0
    assert (tmp_path / "run" / "report.html").is_file() and (tmp_path / "run" / "trials.json").is_file()
