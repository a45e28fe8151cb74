"""Multi-output models (issue 14): the record of outputs, per-head data, the weighted loss, per-head metrics and
the combined score, tuple outputs exported to ONNX and LiteRT with per-output parity, runners returning every
output, ONNX import of a multi-output graph, and one-line refusals elsewhere. Offline, digits-sized."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from edgeopt.data import load_dataset
from edgeopt.errors import EdgeoptError
from edgeopt.model import EdgeModel, ModelMeta, OutputSpec, load_model, save_model
from edgeopt.models import create_model
from edgeopt.train import FitConfig, evaluate, fit, multi


@pytest.fixture(scope="module")
def dm():
    """digits-multi as (train, test): a 10-class ``digit`` head and a regression ``ink`` head."""
    return load_dataset("digits-multi", "train"), load_dataset("digits-multi", "test")


@pytest.fixture(scope="module")
def trained(dm) -> EdgeModel:
    train, _ = dm
    m = create_model("mlp", input_shape=train.sample_shape, outputs=train.outputs, seed=0, hidden=(32,))
    m, history = fit(m, train, FitConfig(epochs=6, optimizer="adam", lr=0.01, batch_size=32, threads=1))
    m.history = history  # type: ignore[attr-defined]
    return m


def test_record_round_trips_and_refuses_bad_heads(trained: EdgeModel, tmp_path: Path, one_thread) -> None:
    meta = trained.meta
    assert meta.task == "multi" and meta.is_multi_output and meta.num_classes == 11
    heads = [(o.name, o.task, o.width) for o in meta.outputs]
    assert heads == [("digit", "classification", 10), ("ink", "regression", 1)]
    back = load_model(save_model(trained, tmp_path / "m"))
    assert back.meta.outputs == meta.outputs
    x = trained.example_input(3)
    for a, b in zip(trained.module(x), back.module(x), strict=True):
        assert torch.equal(a, b)
    single = ModelMeta.from_json({k: v for k, v in meta.to_json().items() if k not in ("outputs", "task")})
    assert single.outputs is None and "outputs" not in single.to_json()  # single-output records are unchanged
    with pytest.raises(EdgeoptError, match="two or more distinctly named outputs"):
        ModelMeta(meta.input, 10, meta.arch, task="multi", outputs=[OutputSpec("a", "classification", 10)])
    with pytest.raises(EdgeoptError, match="output 'a' has task 'anomaly'"):
        OutputSpec("a", "anomaly", 3)


def test_npz_heads_both_forms_and_mismatches(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.random((50, 6), dtype=np.float32)
    cls, reg = rng.integers(0, 3, 50), rng.random((50, 2)).astype(np.float32)
    p = tmp_path / "split.npz"
    np.savez(p, x_train=x[:40], x_test=x[40:], y_train_kind=cls[:40], y_test_kind=cls[40:], y_train_size=reg[:40],
             y_test_size=reg[40:], head_weights=np.array([1.0, 5.0]))  # fmt: skip
    d = load_dataset(f"npz:{p}", "test")
    assert d.task == "multi" and len(d) == 10
    assert [(o.name, o.task, o.width, o.weight) for o in d.outputs] == [
        ("kind", "classification", 3, 1.0), ("size", "regression", 2, 5.0)]  # fmt: skip
    np.testing.assert_array_equal(d.labels["kind"], cls[40:])
    np.testing.assert_array_equal(d.labels["size"], reg[40:])
    sub = d.subset(np.array([3, 1]))
    np.testing.assert_array_equal(sub.labels["size"], reg[[43, 41]])

    q = tmp_path / "xy.npz"  # x with y_<head>, split by the seeded permutation
    np.savez(q, x=x, y_kind=cls, y_size=reg[:, 0], heads=np.array(["size", "kind"]))
    tr, te = load_dataset(f"npz:{q}", "train"), load_dataset(f"npz:{q}", "test")
    assert [o.name for o in tr.outputs] == ["size", "kind"] and len(tr) + len(te) == 50
    rows = [int(np.flatnonzero((x == r).all(1))[0]) for r in np.asarray(te.images)]
    np.testing.assert_array_equal(te.labels["kind"], cls[rows])

    from edgeopt.cli.app import model_for_data  # a zoo model is sized to the data: one output per label array

    m, _ = model_for_data("zoo:mlp", f"npz:{p}", seed=0)
    assert m.meta.outputs == d.outputs and [t.shape for t in m.module(torch.zeros(2, 6))] == [(2, 3), (2, 2)]
    with pytest.raises(EdgeoptError, match="one label array per output .*--task regression does not fit it"):
        model_for_data("zoo:mlp", f"npz:{p}", task="regression")

    bad = tmp_path / "bad.npz"
    np.savez(bad, x_train=x, x_test=x, y_train_kind=cls, y_test_kind=cls, y_train_size=reg)
    with pytest.raises(EdgeoptError, match=r"\['kind', 'size'\] and label arrays do not match \(no y_test_size\)"):
        load_dataset(f"npz:{bad}", "train")
    both = tmp_path / "both.npz"
    np.savez(both, x=x, y=cls, y_kind=cls, y_size=reg)
    with pytest.raises(EdgeoptError, match="both a single label array and per-output ones"):
        load_dataset(f"npz:{both}", "train")


def test_digits_multi_targets(dm) -> None:
    from edgeopt.data.heads import INK_MEAN, INK_STD

    train, test = dm
    digits = load_dataset("digits", "test")
    np.testing.assert_array_equal(test.labels["digit"], digits.labels)  # the digits split, unchanged
    intensity = np.asarray(digits.images, np.float32).reshape(len(digits), -1).mean(1) / 255
    np.testing.assert_allclose(test.labels["ink"], (intensity - INK_MEAN) / INK_STD, rtol=1e-5)
    ink = np.concatenate([train.labels["ink"], test.labels["ink"]])
    assert abs(ink.mean()) < 0.01 and abs(ink.std() - 1) < 0.01  # standardised over the whole set


def test_loss_is_the_weighted_sum_and_eval_reports_each_head(trained: EdgeModel, dm) -> None:
    train, test = dm
    heads = [OutputSpec("digit", "classification", 10, 2.0), OutputSpec("ink", "regression", 1, 3.0)]
    x = torch.from_numpy(train.images[:16].astype(np.float32) / 255).permute(0, 3, 1, 2)
    out = trained.module(x)
    y = multi.batch_targets(heads, train.labels[:16])
    ce, mse = torch.nn.functional.cross_entropy(out[0], y[0]), torch.nn.functional.mse_loss(out[1][:, 0], y[1])
    want = 2.0 * ce + 3.0 * mse
    assert torch.allclose(multi.loss(heads)(out, y, x), want)
    losses = [e["loss"] for e in trained.history.epochs]  # type: ignore[attr-defined]
    assert losses[-1] < 0.5 * losses[0]

    res = evaluate(trained, test)
    assert set(res.heads) == {"digit", "ink"} and set(res.heads["ink"]) == {"mse", "mae", "r2"}
    digit_pred = trained.module(torch.from_numpy(trained.meta.input.to_model_input(test.images)))[0].argmax(1)
    assert res.heads["digit"]["accuracy"] == pytest.approx(float((digit_pred.numpy() == test.labels["digit"]).mean()))
    assert res.heads["digit"]["accuracy"] > 0.85 and res.heads["ink"]["r2"] > 0.5
    assert res.score == pytest.approx((res.heads["digit"]["accuracy"] + res.heads["ink"]["r2"]) / 2)
    js = res.to_json()
    assert js["heads"] == res.heads and js["score"] == res.score and js["task"] == "multi"
    assert res.metrics["ink_mae"] == res.heads["ink"]["mae"]


def test_data_that_does_not_fit_the_heads_is_one_line(trained: EdgeModel, dm) -> None:
    with pytest.raises(EdgeoptError, match="the model has several outputs but the data has one label array"):
        evaluate(trained, load_dataset("digits", "test"))
    train, _ = dm
    other = [OutputSpec("ink", "regression", 1), OutputSpec("digit", "classification", 10)]
    with pytest.raises(EdgeoptError, match=r"outputs digit \(classification\), ink \(regression\) are not the data's"):
        multi.check_heads(trained.meta.outputs, other)
    with pytest.raises(EdgeoptError, match="returns 1 output"):
        multi.as_outputs(trained.meta.outputs, np.zeros((2, 11)))


def test_export_onnx_and_litert_every_output_and_import(trained: EdgeModel, dm, tmp_path: Path, one_thread) -> None:
    import onnx

    from edgeopt.interop.export import export_model
    from edgeopt.runtimes import open_runner
    from edgeopt.runtimes.resolve import open_model, run_raw

    _, test = dm
    test = test.take(120, seed=0)
    ref = evaluate(trained, test)
    for fmt, runtime in (("onnx", "onnxruntime"), ("tflite", "litert")):
        res = export_model(trained, fmt, tmp_path / f"m.{fmt}")
        assert len(res.parity.outputs) == 2 and res.parity.rel_diff < 1e-4
        assert res.parity.rel_diff == max(p.rel_diff for p in res.parity.outputs)
        with open_runner(runtime, res.path) as runner:
            assert runner.meta.outputs == trained.meta.outputs  # the record travels inside the artifact
            x = test.images[:5].astype(np.float32).transpose(0, 3, 1, 2) / 255
            got, want = runner.run(x), trained.module(torch.from_numpy(x))
            assert isinstance(got, tuple) and [g.shape for g in got] == [(5, 10), (5, 1)]
            for g, w in zip(got, want, strict=True):
                np.testing.assert_allclose(g, w.detach().numpy(), atol=1e-5)
            found = evaluate(runner.meta, test, predict=runner.run)
        assert found.heads["digit"] == ref.heads["digit"]
        assert found.heads["ink"]["mae"] == pytest.approx(ref.heads["ink"]["mae"], rel=1e-4)

    np.save(tmp_path / "x.npy", np.zeros((2, 1, 8, 8), np.float32))
    opened = open_model(str(tmp_path / "m.onnx"))
    with pytest.raises(EdgeoptError, match="one .npz holds them, not y.npy"):
        run_raw(opened, tmp_path / "x.npy", tmp_path / "y.npy")
    run_raw(opened, tmp_path / "x.npy", tmp_path / "y.npz")
    opened.runner.close()
    with np.load(tmp_path / "y.npz") as z:
        assert z.files == ["digit", "ink"] and z["ink"].shape == (2, 1)

    for fmt in ("onnx", "tflite"):  # edgeopt's own artifacts: every output's record comes back (TFLite: SLICE ops)
        imported = load_model(tmp_path / f"m.{fmt}")
        assert imported.meta.task == "multi" and imported.meta.outputs == trained.meta.outputs
        assert evaluate(imported, test).heads["digit"] == ref.heads["digit"]
    proto = onnx.load(str(tmp_path / "m.onnx"))
    del proto.metadata_props[:]  # a multi-output graph from elsewhere: outputs named as the graph names them
    onnx.save(proto, str(tmp_path / "foreign.onnx"))
    foreign = load_model(tmp_path / "foreign.onnx")
    assert [(o.name, o.task, o.width) for o in foreign.meta.outputs] == [
        ("digit", "classification", 10), ("ink", "classification", 1)]  # fmt: skip
    x = trained.example_input(4)
    for a, b in zip(foreign.module(x), trained.module(x), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_other_commands_refuse_in_one_line(trained: EdgeModel, dm) -> None:
    from edgeopt.compress.distill import distill
    from edgeopt.compress.quantize.api import quantize
    from edgeopt.compress.workflows import prune_model
    from edgeopt.federated import FederatedConfig, run_federated

    train, test = dm
    with pytest.raises(EdgeoptError, match="prune does not support multi-output models .*outputs digit, ink"):
        prune_model(trained, train, ratio=0.5)
    with pytest.raises(EdgeoptError, match="distill does not support multi-output models"):
        distill(trained, trained, train)
    with pytest.raises(EdgeoptError, match="federate does not support multi-output models"):
        run_federated(trained, train, test, FederatedConfig())
    with pytest.raises(EdgeoptError, match="quantization other than int8 PTQ") as refused:
        quantize(trained, train, method="qat")
    assert "multi-output models go through train, eval, export, run" in str(refused.value.fix)


def test_cli_eval_json_per_head_and_one_line_refusal(trained: EdgeModel, tmp_path: Path, capfd, one_thread) -> None:
    import json

    from edgeopt.cli import main

    path = save_model(trained, tmp_path / "m")
    rc = main(["eval", str(path), "--data", "digits-multi", "--limit", "100", "--json"])
    out, err = capfd.readouterr()
    got = json.loads(out)
    assert rc == 0 and got["task"] == "multi" and got["samples"] == 100, err
    assert set(got["heads"]) == {"digit", "ink"} and set(got["heads"]["ink"]) == {"mse", "mae", "r2"}
    assert got["score"] == pytest.approx((got["heads"]["digit"]["accuracy"] + got["heads"]["ink"]["r2"]) / 2)
    rc = main(["prune", str(path), "--data", "digits-multi", "--ratio", "0.5", "--out", str(tmp_path / "p")])
    _, err = capfd.readouterr()
    errors = [ln for ln in err.strip().splitlines() if ln.startswith("error:")]
    assert rc == 2 and len(errors) == 1 and "prune does not support multi-output models" in errors[0], err
    assert "Traceback" not in err and not (tmp_path / "p.edgeopt").exists()
