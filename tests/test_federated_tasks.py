"""Federated training beyond classifiers (issue 14): an autoencoder (anomaly, ROC AUC) and a regression
MLP (R²) federated with their own task's loss and score; the options that need class labels are refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgeopt.cli import main
from edgeopt.data import load_dataset
from edgeopt.data.dataset import ImageDataset
from edgeopt.errors import EdgeoptError
from edgeopt.federated import FederatedConfig, run_federated
from edgeopt.model import load_model, save_model
from edgeopt.models import create_model
from edgeopt.train import evaluate


def _regression_data(n: int, seed: int) -> ImageDataset:  # as tests/test_tasks.py's
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5, 0.0, 1.5, 0.0]) + 0.05 * rng.normal(size=n)).astype(np.float32)
    return ImageDataset(x, y, ["target"], "reg", task="regression")


def test_federated_autoencoder_learns_normality_and_says_its_metric_is_roc_auc(tmp_path: Path, capfd) -> None:
    # clients train on reconstruction (MSE against the input), the server scores ROC AUC on the test split;
    # trained with cross-entropy on the labels, this model stayed at AUC 0.5
    test = load_dataset("anomaly:400", "test")
    m = create_model("fc_autoencoder", seed=0, hidden=64)
    untrained = evaluate(m, test).score
    path = save_model(m, tmp_path / "ae")
    rc = main([
        "federate", str(path), "--data", "anomaly:400", "--clients", "4", "--rounds", "8", "--local-epochs", "3",
        "--lr", "0.2", "--momentum", "0.9", "--train-threads", "1", "--out", str(tmp_path / "run"), "--json",
    ])  # fmt: skip
    out, err = capfd.readouterr()
    assert rc == 0, err
    res = json.loads(out)
    assert res["task"] == "anomaly" and res["score_metric"] == "roc_auc" and "warning" not in res
    assert res["final_accuracy"] > 0.9 and res["final_accuracy"] > untrained + 0.1, (res, untrained)
    curves = json.loads((tmp_path / "run" / "curves.json").read_text())
    s = curves["summary"]
    assert s["task"] == "anomaly" and s["score_metric"] == "roc_auc" and curves["settings"]["task"] == "anomaly"
    assert s["chance_accuracy"] is None and s["stayed_at_chance"] is None  # no "chance" for an AUC
    assert curves["test_loss"][-1] < curves["test_loss"][0] / 2  # reconstruction error on the test split
    page = (tmp_path / "run" / "report.html").read_text()
    assert "Test ROC AUC per round" in page and "Final ROC AUC" in page and "at-chance" not in page
    # the saved model scores the same AUC in edgeopt's evaluation as in the federation's
    assert evaluate(load_model(res["model"]), test).score == pytest.approx(res["final_accuracy"], abs=1e-4)


def test_federated_regression_mlp_reaches_r2(one_thread) -> None:
    train, test = _regression_data(400, 0), _regression_data(100, 1)
    m = create_model("mlp", input_shape=(6,), num_classes=1, seed=0, task="regression", hidden=(32,))
    before = evaluate(m, test).metrics["r2"]
    cfg = FederatedConfig(clients=4, per_round=4, rounds=5, local_epochs=2, lr=0.05, momentum=0.9)
    res = run_federated(m, train, test, cfg)
    r2 = [h["test_accuracy"] for h in res.history]
    assert r2[-1] > 0.9 > before and r2[-1] > r2[0], r2
    assert res.histogram.shape == (4, 0)  # regression targets are not classes
    after = evaluate(res.model, test)
    assert after.task == "regression" and after.metrics["r2"] == pytest.approx(r2[-1], abs=1e-4)
    assert res.history[-1]["test_loss"] == pytest.approx(after.metrics["mse"], rel=1e-4)


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"partition": "shards:2"}, "--partition shards:2 splits by class label, but this is a regression model"),
        ({"personalize": "head"}, "--personalize and --holdout measure per-client accuracy, but this is a regression"),
        ({"holdout": 0.2}, "--personalize and --holdout measure per-client accuracy, but this is a regression"),
    ],
)
def test_federated_regression_refuses_what_needs_class_labels(settings: dict, fragment: str) -> None:
    m = create_model("mlp", input_shape=(6,), num_classes=1, seed=0, task="regression", hidden=(8,))
    data = _regression_data(40, 0)
    with pytest.raises(EdgeoptError, match=fragment.replace("-", r"\-")):
        run_federated(m, data, data, FederatedConfig(clients=2, per_round=2, rounds=1, **settings))
