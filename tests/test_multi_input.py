"""Multi-input graphs (issue 14, item 4): the record of inputs, ONNX import of a two-input graph, npz data with one
sample array per input, training and evaluation in PyTorch and ONNX Runtime, ``run`` on a ``.npz`` of inputs,
export to ONNX and LiteRT with parity over every combination of the inputs' examples, re-import of both
artifacts, and one-line refusals elsewhere. Offline, tiny (a conv branch on an 8x8 image and a dense branch on
a 6-vector, concatenated)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgeopt.data import load_dataset
from edgeopt.errors import EdgeoptError
from edgeopt.model import EdgeModel, InputSet, InputSpec, ModelMeta, load_model, save_model
from edgeopt.train import FitConfig, evaluate, fit


class TwoInputs(nn.Module):
    """An image branch and a vector branch, concatenated into one classifier head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(6, 8)
        self.head = nn.Linear(4 * 4 * 4 + 8, 3)

    def forward(self, img: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
        a = nn.functional.avg_pool2d(torch.relu(self.conv(img)), 2).flatten(1)
        return self.head(torch.cat([a, torch.relu(self.fc(vec))], 1))


def two_input_data(n: int = 300, seed: int = 0) -> dict[str, np.ndarray]:
    """Class = (image brighter than 0.5) + (vector above 0.5): both inputs are needed."""
    rng = np.random.default_rng(seed)
    bi, bv = rng.uniform(0, 1, n), rng.uniform(0, 1, n)
    img = np.clip(bi[:, None, None, None] + rng.normal(0, 0.1, (n, 1, 8, 8)), 0, 1).astype(np.float32)
    vec = np.clip(bv[:, None] + rng.normal(0, 0.1, (n, 6)), 0, 1).astype(np.float32)
    return {"img": img, "vec": vec, "y": ((bi > 0.5).astype(np.int64) + (bv > 0.5))}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A two-input .onnx (dynamic batch, TorchScript exporter: fast) and npz data in both forms."""
    d = tmp_path_factory.mktemp("multi_input")
    torch.manual_seed(0)
    m = TwoInputs().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (torch.rand(1, 1, 8, 8), torch.rand(1, 6)), str(d / "two.onnx"), dynamo=False,
                          input_names=["img", "vec"], output_names=["y"],
                          dynamic_axes={"img": {0: "n"}, "vec": {0: "n"}, "y": {0: "n"}})  # fmt: skip
    a = two_input_data()
    np.savez(d / "seeded.npz", x_img=a["img"], x_vec=a["vec"], y=a["y"])
    np.savez(d / "split.npz", x_train_img=a["img"][:240], x_train_vec=a["vec"][:240], y_train=a["y"][:240],
             x_test_img=a["img"][240:], x_test_vec=a["vec"][240:], y_test=a["y"][240:])  # fmt: skip
    return {"dir": d, "onnx": d / "two.onnx", "seeded": d / "seeded.npz", "split": d / "split.npz", "module": m}


@pytest.fixture(scope="module")
def trained(files) -> EdgeModel:
    m = load_model(files["onnx"])
    m, _ = fit(m, load_dataset(f"npz:{files['seeded']}", "train"),
               FitConfig(epochs=15, optimizer="adam", lr=0.02, batch_size=32, threads=1))  # fmt: skip
    return m


def test_import_records_every_input_and_round_trips(files, tmp_path: Path) -> None:
    m = load_model(files["onnx"])
    spec = m.meta.input
    assert isinstance(spec, InputSet) and m.meta.is_multi_input
    assert spec.names == ["img", "vec"] and spec.shapes == ((1, 8, 8), (6,))
    assert [s.layout for s in spec.specs] == ["NCHW", "NC"] and m.meta.num_classes == 3
    img, vec = torch.rand(5, 1, 8, 8), torch.rand(5, 6)
    assert torch.allclose(m.module(img, vec), files["module"](img, vec), atol=1e-6)  # the graph is the module
    record = m.meta.to_json()
    assert "input" not in record and [i["name"] for i in record["inputs"]] == ["img", "vec"]
    back = load_model(save_model(m, tmp_path / "m"))
    assert back.meta.input == spec and torch.equal(back.module(img, vec), m.module(img, vec))
    x = spec.example_batch(2, seed=1)  # a structured batch: a field per input, each its spec's example
    assert x.dtype.names == ("img", "vec") and np.array_equal(x["vec"], spec.specs[1].example_batch(2, seed=1010))
    single = ModelMeta.from_json({**{k: v for k, v in record.items() if k != "inputs"},
                                  "input": record["inputs"][1]})  # fmt: skip
    assert "inputs" not in single.to_json() and single.input == spec.specs[1]  # single-input records unchanged
    with pytest.raises(EdgeoptError, match="two or more distinctly named inputs"):
        InputSet(["a"], [InputSpec((6,), "NC")])
    with pytest.raises(EdgeoptError, match="the input shape is a single-input model's"):
        _ = spec.shape
    with pytest.raises(EdgeoptError, match="fills a single-input model's shape"):
        load_model(files["onnx"], input_shape=(6,))


def test_npz_inputs_both_forms_and_mismatches(files, tmp_path: Path) -> None:
    test = load_dataset(f"npz:{files['split']}", "test")
    assert test.is_multi_input and len(test) == 60 and test.images.dtype.names == ("img", "vec")
    assert test.images["img"].shape == (60, 1, 8, 8) and test.task == "classification"
    seeded = load_dataset(f"npz:{files['seeded']}", "test")
    assert len(seeded) == 60 and seeded.images["vec"].shape == (60, 6)
    a = two_input_data(20)
    bad = {
        "no_test": (dict(x_train_img=a["img"], x_train_vec=a["vec"], y_train=a["y"], x_test_img=a["img"],
                         y_test=a["y"]), r"do not match \(no x_test_vec\)"),  # fmt: skip
        "length": (dict(x_img=a["img"], x_vec=a["vec"][:10], y=a["y"]), "differ in sample count"),
        "both": (dict(x=a["vec"], x_img=a["img"], y=a["y"]), "both a single sample array and per-input ones"),
        "one": (dict(x_img=a["img"], y=a["y"]), r"do not match \(only one\)"),
    }
    for name, (arrays, message) in bad.items():
        np.savez(tmp_path / f"{name}.npz", **arrays)
        with pytest.raises(EdgeoptError, match=message):
            load_dataset(f"npz:{tmp_path / name}.npz", "train")
    model = load_model(files["onnx"])
    np.savez(tmp_path / "flat.npz", x=a["vec"], y=a["y"])
    with pytest.raises(EdgeoptError, match=r"takes inputs \['img', 'vec'\] but the data has one input array"):
        evaluate(model, load_dataset(f"npz:{tmp_path / 'flat.npz'}", "test"))
    single = EdgeModel(nn.Linear(6, 3), ModelMeta(InputSpec((6,), "NC"), 3, {"kind": "test"}))
    with pytest.raises(EdgeoptError, match=r"the data has inputs \['img', 'vec'\] but the model takes one input"):
        evaluate(single, test)


def test_train_eval_run_in_torch_and_onnxruntime(trained: EdgeModel, files, tmp_path: Path) -> None:
    from edgeopt.runtimes.resolve import open_model, run_raw

    test = load_dataset(f"npz:{files['seeded']}", "test")
    acc = evaluate(trained, test).accuracy
    assert acc > 0.8  # trained: chance is 1/3 and each input alone tells at most 2 of the 3 classes apart
    path = save_model(trained, tmp_path / "trained")
    opened = open_model(str(path), "onnxruntime")
    try:
        assert evaluate(opened.meta, test, predict=opened.runner.run).accuracy == acc
        np.savez(tmp_path / "in.npz", img=test.images["img"][:4], vec=test.images["vec"][:4])
        y = run_raw(opened, tmp_path / "in.npz", tmp_path / "y.npy")
        ref = trained.module(torch.from_numpy(test.images["img"][:4]), torch.from_numpy(test.images["vec"][:4]))
        assert np.allclose(y, ref.detach().numpy(), atol=1e-5) and np.load(tmp_path / "y.npy").shape == (4, 3)
        np.savez(tmp_path / "one.npz", img=test.images["img"][:4])
        with pytest.raises(EdgeoptError, match=r"has arrays \['img'\] but the model takes inputs"):
            run_raw(opened, tmp_path / "one.npz", tmp_path / "y.npy")
        with pytest.raises(EdgeoptError, match="give them in one .npz"):
            run_raw(opened, tmp_path / "y.npy", tmp_path / "y2.npy")
    finally:
        opened.runner.close()


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_export_parity_over_input_combinations_and_reimport(trained: EdgeModel, fmt: str, tmp_path: Path) -> None:
    from edgeopt.interop.export import export_model, parity_inputs
    from edgeopt.runtimes import open_runner

    x = parity_inputs(trained, 8)
    assert len(x) == 64 and len(np.unique(x["img"], axis=0)) == 8 and len(np.unique(x["vec"], axis=0)) == 8
    r = export_model(trained, fmt, tmp_path / "m")
    assert r.parity.samples == 64 and r.parity.rel_diff < 1e-5
    runner = open_runner(r.runtime, r.path)
    try:
        assert runner.input_shapes == ((1, 8, 8), (6,))
        with pytest.raises(EdgeoptError, match=r"takes 2 input\(s\)"):
            runner.run(np.zeros((1, 6), np.float32))
    finally:
        runner.close()
    back = load_model(r.path)  # the embedded record restores names, layouts and ranges
    assert back.meta.input == trained.meta.input
    ex = trained.example_args(3, seed=2)
    assert torch.allclose(back.module(*ex), trained.module(*ex), atol=1e-5)


def test_refusals_name_the_supported_commands(trained: EdgeModel, files) -> None:
    from edgeopt.compress.workflows import prune_model
    from edgeopt.interop.debug import debug_artifact
    from edgeopt.profile import profile_model

    data = load_dataset(f"npz:{files['seeded']}", "train")
    supported = "multi-input models go through train, eval, export, run, bench, import"
    for call in (lambda: prune_model(trained, data), lambda: profile_model(trained),
                 lambda: debug_artifact(trained, files["onnx"])):  # fmt: skip
        with pytest.raises(EdgeoptError, match=supported):
            call()
    with pytest.raises(EdgeoptError, match="takes one input, but npz:seeded.npz:train has inputs"):
        from edgeopt.cli.app import model_for_data

        model_for_data("zoo:mlp", f"npz:{files['seeded']}")
