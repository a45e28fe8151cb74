"""Tasks beyond classification (issue 14): regression and anomaly detection, inputs of any shape,
the new zoo models, import of a dense [None, 640] model, 1-D pruning and the one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from edgeopt.cli import main
from edgeopt.data import load_dataset
from edgeopt.data.dataset import ImageDataset
from edgeopt.errors import EdgeoptError
from edgeopt.model import load_model, registered_kinds, save_model
from edgeopt.models import create_model
from edgeopt.profile import profile_model
from edgeopt.train import FitConfig, evaluate, fit
from edgeopt.train.tasks import check_model_data, loss_function, metrics, sample_stats


def test_task_metrics_are_the_textbook_ones() -> None:
    from sklearn.metrics import roc_auc_score

    y = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    pred = np.array([[1.5], [2.0], [2.0], [4.0]], np.float32)
    m = metrics("regression", pred, y)
    assert m["mse"] == pytest.approx((0.25 + 0 + 1 + 0) / 4) and m["mae"] == pytest.approx(1.5 / 4)
    assert m["r2"] == pytest.approx(1 - m["mse"] / 1.25)
    err = np.array([0.1, 0.4, 0.35, 0.8])
    flags = np.array([0, 0, 1, 1])
    got = metrics("anomaly", err, flags)
    assert got["roc_auc"] == pytest.approx(roc_auc_score(flags, err)) == pytest.approx(0.75)
    assert metrics("classification", np.array([0, 1, 1]), np.array([0, 1, 0]))["accuracy"] == pytest.approx(2 / 3)
    x = np.ones((2, 4), np.float32)
    np.testing.assert_allclose(sample_stats("anomaly", x * 3, x), [4.0, 4.0])  # mean squared reconstruction error
    with pytest.raises(EdgeoptError, match="ROC AUC needs normal and abnormal"):
        metrics("anomaly", err, np.zeros(4))


def test_losses_follow_the_task() -> None:
    out, x = torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0, 0.0]])
    assert loss_function("anomaly")(out, torch.tensor([0]), x).item() == pytest.approx(2.0)
    assert loss_function("regression")(torch.tensor([[2.0]]), torch.tensor([0.0]), x).item() == pytest.approx(4.0)
    ce = loss_function("classification")(out, torch.tensor([1]), x).item()
    assert ce == pytest.approx(torch.nn.functional.cross_entropy(out, torch.tensor([1])).item())
    with pytest.raises(EdgeoptError, match="regression model but the data is anomaly data"):
        check_model_data("regression", "anomaly")
    check_model_data("regression", "classification")  # integer targets are numbers too


def _regression_data(n: int, seed: int) -> ImageDataset:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5, 0.0, 1.5, 0.0]) + 0.05 * rng.normal(size=n)).astype(np.float32)
    return ImageDataset(x, y, ["target"], "reg", task="regression")


def test_mlp_regression_on_tabular_rows(one_thread) -> None:
    train, test = _regression_data(400, 0), _regression_data(100, 1)
    m = create_model("mlp", input_shape=(6,), num_classes=1, seed=0, task="regression", hidden=(32,))
    assert m.meta.input.layout == "NC" and m.meta.task == "regression"
    before = evaluate(m, test).metrics
    m, hist = fit(m, train, FitConfig(epochs=15, optimizer="adam", lr=1e-2, batch_size=64))
    after = evaluate(m, test)
    assert after.task == "regression" and "train_accuracy" not in hist.epochs[-1]
    assert after.metrics["r2"] > 0.9 > before["r2"] and after.metrics["mse"] < before["mse"] / 10
    assert after.to_json()["task"] == "regression" and "accuracy" not in after.to_json()
    # quantization's accuracy-aware mode scores the task's own metric (R² here)
    from edgeopt.compress.quantize.mixed import accuracy_of

    x_test = torch.from_numpy(np.asarray(test.images))
    assert accuracy_of(m, x_test, test.labels) == pytest.approx(after.metrics["r2"], abs=1e-5)


def test_autoencoder_learns_normality_and_ignores_abnormal_training_windows(one_thread, tmp_path: Path) -> None:
    test = load_dataset("anomaly:160", "test")
    mixed = test  # normal and abnormal windows: fit must train on the normal ones only
    m = create_model("fc_autoencoder", seed=0, hidden=64)
    assert m.meta.task == "anomaly" and m.meta.input.shape == (640,) and m.meta.num_classes == 640
    m, _ = fit(m, load_dataset("anomaly:400", "train"), FitConfig(epochs=10, optimizer="adam", lr=2e-3, batch_size=32))
    r = evaluate(m, test)
    assert r.task == "anomaly" and r.score == r.metrics["roc_auc"] > 0.85
    assert r.metrics["mean_error_anomaly"] > r.metrics["mean_error_normal"]
    seen: list[int] = []
    m2 = create_model("fc_autoencoder", seed=0, hidden=16)
    fit(m2, mixed, FitConfig(epochs=1, batch_size=1000), loss_fn=lambda o, y, x: seen.extend(y.tolist()) or o.sum() * 0)
    assert len(seen) == 40 and set(seen) == {0}
    # the record says its task and survives a save / load
    path = save_model(m, tmp_path / "ae")
    back = load_model(path)
    assert back.meta.task == "anomaly" and back.meta.input.layout == "NC"
    assert evaluate(back, test).score == pytest.approx(r.score)
    from edgeopt.compress.quantize.api import quantize

    with pytest.raises(EdgeoptError, match="normal windows only"):
        quantize(m, load_dataset("anomaly:400", "train"), max_drop=1.0)


def test_cnn1d_prunes_to_half_its_macs_and_reloads(one_thread, tmp_path: Path) -> None:
    from edgeopt.compress.prune.channel import prune_channels

    m = create_model("cnn1d", input_shape=(2, 32), num_classes=4, seed=0)
    assert m.meta.input.layout == "NCL" and m.module(m.example_input(3)).shape == (3, 4)
    p, _ = prune_channels(m, ratio=0.5)
    before, after = profile_model(m).macs, profile_model(p).macs
    assert after <= 0.52 * before
    convs = [mod for mod in p.module.modules() if isinstance(mod, torch.nn.Conv1d)]
    assert any(c.out_channels < 32 for c in convs)
    back = load_model(save_model(p, tmp_path / "p"))
    x = m.example_input(2)
    torch.testing.assert_close(back.module(x), p.module(x))
    ae = create_model("fc_autoencoder", seed=0, hidden=32)  # dense chains prune too
    pa, _ = prune_channels(ae, ratio=0.5)
    assert profile_model(pa).macs <= 0.55 * profile_model(ae).macs
    assert pa.module(ae.example_input(2)).shape == (2, 640)


def test_import_dense_model_with_free_batch_and_input_shape(tmp_path: Path) -> None:
    from edgeopt.interop import fill_input_shape

    m = create_model("fc_autoencoder", seed=0, hidden=16)
    x = m.example_input(3)
    torch.onnx.export(m.module.eval(), (x,), tmp_path / "ae.onnx", input_names=["x"], dynamic_axes={"x": {0: "n"}},
                      dynamo=False)  # fmt: skip
    imported = load_model(tmp_path / "ae.onnx")  # input [None, 640]
    assert imported.meta.input.shape == (640,) and imported.meta.input.layout == "NC"
    torch.testing.assert_close(imported.module(x), m.module(x), rtol=1e-5, atol=1e-5)
    assert fill_input_shape(Path("m.onnx"), [None, None, 40], (1, 40)) == [1, 40]
    with pytest.raises(EdgeoptError, match="free dimension.*--input-shape"):
        fill_input_shape(Path("m.onnx"), [None, 1, None], None)
    with pytest.raises(EdgeoptError, match="does not fit"):
        fill_input_shape(Path("m.onnx"), [None, 640], (320,))


def test_registry_rebuilds_every_kind_without_model_importing_techniques(tmp_path: Path) -> None:
    import ast

    import edgeopt.model as model_module
    from edgeopt.model import build_module, register_kind

    assert {"zoo", "graph", "quantized"} <= set(registered_kinds())
    tree = ast.parse(Path(model_module.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    # model sources only (the zoo for zoo:NAME, the importers for .onnx/.tflite); no technique
    assert {i for i in imported if i.startswith("edgeopt.")} <= {"edgeopt.errors", "edgeopt.fileio",
                                                                  "edgeopt.models", "edgeopt.interop"}  # fmt: skip
    register_kind("test-linear", lambda arch: torch.nn.Linear(arch["n"], 2))
    assert isinstance(build_module({"kind": "test-linear", "n": 3}), torch.nn.Linear)
    with pytest.raises(EdgeoptError, match="unknown architecture kind 'nope'"):
        build_module({"kind": "nope"})


def _run(capfd: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    out, err = capfd.readouterr()
    return rc, out, err


def _one_line(rc: int, err: str, fragment: str) -> None:
    assert rc == 2 and "Traceback" not in err, err
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and fragment in lines[0], err


def test_cli_regression_and_bad_input(tmp_path: Path, capfd, one_thread) -> None:
    import json

    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 3))
    rows = [f"{a:.4f},{b:.4f},{c:.4f},{a + 2 * b:.4f}" for a, b, c in x]
    (tmp_path / "r.csv").write_text("a,b,c,price\n" + "\n".join(rows) + "\n")
    rc, out, err = _run(capfd, "train", "zoo:mlp", "--data", f"csv:{tmp_path / 'r.csv'}", "--label", "price",
                        "--epochs", "3", "--optimizer", "adam", "--out", tmp_path / "reg", "--json")  # fmt: skip
    assert rc == 0, err
    res = json.loads(out)
    assert res["task"] == "regression" and {"test_mse", "test_mae", "test_r2"} <= res.keys()
    model = tmp_path / "reg.edgeopt"
    lo, hi = load_model(model).meta.input.value_range  # the record states the range of the data it learned
    assert x.min() - 1e-3 <= lo < hi <= x.max() + 1e-3 and hi - lo > 0.8 * (x.max() - x.min())
    rc, _, err = _run(capfd, "eval", model, "--data", f"csv:{tmp_path / 'r.csv'}", "--label", "price",
                      "--task", "classification")  # fmt: skip
    _one_line(rc, err, "is a regression model; --task classification does not fit it")
    rc, _, err = _run(capfd, "eval", model, "--data", f"csv:{tmp_path / 'r.csv'}")
    _one_line(rc, err, "has no label column (columns: a, b, c, price)")
    wide = rng.normal(size=(20, 5)).astype(np.float32)
    np.savez(tmp_path / "wide.npz", x=wide, y=rng.normal(size=20).astype(np.float32))
    rc, _, err = _run(capfd, "eval", model, "--data", f"npz:{tmp_path / 'wide.npz'}")
    _one_line(rc, err, "model expects input of shape 3 (NC) but the data has 5")
    rc, _, err = _run(capfd, "train", "zoo:fc_autoencoder", "--data", "digits", "--out", tmp_path / "x")
    _one_line(rc, err, "anomaly model but the data is classification data")
    assert not (tmp_path / "x.edgeopt").exists()


def test_bias_correction_sees_the_batch_norm_after_dense_and_1d_conv_layers() -> None:
    """PT2E folds a BN into the dense / 1-D conv before it: bias correction must take the BN's output as the
    reference (it took the pre-BN means once and cost the int8 fc_autoencoder 0.08 ROC AUC)."""
    from edgeopt.compress.quantize.transforms import conv_links

    ae = create_model("fc_autoencoder", seed=0, hidden=16).module.eval()
    links = {lk.first: lk.bn for lk in conv_links(ae, torch.zeros(1, 640))}
    assert links["encoder.0.0"] == "encoder.0.1" and links["out"] is None
    seq = create_model("cnn1d", input_shape=(1, 16), num_classes=3, seed=0).module.eval()
    links = {lk.first: lk.bn for lk in conv_links(seq, torch.zeros(1, 1, 16))}
    assert links["features.0.0"] == "features.0.1"


def test_spectrogram_arrays_feed_an_image_shaped_model(tmp_path: Path, one_thread) -> None:
    """Float (N, C, F, T) arrays (spectrograms) train a conv model in NCHW without the image mapping."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images[:, None] / 16.0 * 4.0 - 2.0).astype(np.float32)  # "log energies" in -2..2, not pixels
    np.savez(tmp_path / "spec.npz", x=x, y=d.target)
    spec = f"npz:{tmp_path / 'spec.npz'}"
    train, test = load_dataset(spec, "train"), load_dataset(spec, "test")
    assert not train.is_image and train.sample_shape == (1, 8, 8)
    m = create_model("lenet5", input_shape=train.sample_shape, num_classes=10, seed=0)
    np.testing.assert_array_equal(m.meta.input.to_model_input(np.asarray(test.images[:2])), np.asarray(test.images[:2]))
    m, _ = fit(m, train.take(600, seed=0), FitConfig(epochs=2, optimizer="adam", lr=3e-3, batch_size=32))
    assert evaluate(m, test).accuracy > 0.5  # chance is 0.1
