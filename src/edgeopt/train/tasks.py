"""Tasks: what a model's outputs mean, its training loss and the metrics ``eval`` reports.

- ``classification``: class scores; cross-entropy (label smoothing); accuracy (score: accuracy).
- ``regression``: K real targets; mean squared error; MSE, MAE and R² (score: R², 1 is perfect,
  0 is predicting the mean: a drop in it is comparable across target scales).
- ``anomaly``: an autoencoder reconstructs its input; MSE against the input, trained on normal
  samples only; each sample is scored by its mean squared reconstruction error and the scores
  are ranked against labelled anomalies: ROC AUC (scikit-learn's ``roc_auc_score``), score AUC.

Every task has one *score* (higher is better) that accuracy-aware passes (quantization's
``--max-drop``, pruning's recovery, distillation's report) compare before and after.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from edgeopt.errors import EdgeoptError

TASKS = ("classification", "regression", "anomaly")
# the metric each task's score is; a multi-output model's is ``score``, the mean of its outputs' (train.multi)
SCORE_NAMES = {"classification": "accuracy", "regression": "r2", "anomaly": "roc_auc", "multi": "score"}


def check_task(task: str) -> str:
    if task not in TASKS:
        raise EdgeoptError(f"unknown task '{task}'", f"use one of {', '.join(TASKS)}")
    return task


def loss_function(
    task: str, label_smoothing: float = 0.0
) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """The task's training loss ``loss(outputs, targets, inputs) -> scalar``."""
    check_task(task)
    if task == "classification":
        ce = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        return lambda out, y, _x: ce(out, y)
    if task == "regression":
        return lambda out, y, _x: nn.functional.mse_loss(out.reshape(y.shape), y)
    return lambda out, _y, x: nn.functional.mse_loss(out.reshape(x.shape), x)


def batch_targets(task: str, labels: np.ndarray) -> torch.Tensor:
    """Labels of one batch as the loss wants them (int64 classes, float32 targets, int64 flags)."""
    if task == "regression":
        return torch.from_numpy(np.asarray(labels, np.float32))
    return torch.from_numpy(np.asarray(labels, np.int64))


def sample_stats(task: str, outputs: np.ndarray, inputs: np.ndarray) -> np.ndarray:
    """Per-sample summary of a batch's outputs: argmax class, the outputs (regression), or the
    mean squared reconstruction error (anomaly). Cost: one pass over the batch."""
    out = np.asarray(outputs)
    if task == "classification":
        return out.reshape(len(out), -1).argmax(1)
    if task == "regression":
        return out.reshape(len(out), -1).astype(np.float32)
    x = np.asarray(inputs, np.float32).reshape(len(inputs), -1)
    if out.size != x.size:
        raise EdgeoptError(
            f"an anomaly model must reconstruct its input ({x.shape[1]} values) but outputs {out.size // len(out)}",
            "use an autoencoder (zoo:fc_autoencoder)",
        )
    return ((out.reshape(x.shape).astype(np.float32) - x) ** 2).mean(1)


def metrics(task: str, stats: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The task's metrics from :func:`sample_stats` over a split and its labels. Pure."""
    if task == "classification":
        return {"accuracy": float((stats == labels).mean())}
    if task == "regression":
        y = np.asarray(labels, np.float32).reshape(len(labels), -1)
        pred = stats.reshape(y.shape) if stats.size == y.size else None
        if pred is None:
            raise EdgeoptError(
                f"the model predicts {stats.shape[1]} values per sample but the data has {y.shape[1]} targets",
                "build the model with the data's target count",
            )
        err = pred - y
        mse = float((err**2).mean())
        var = float(((y - y.mean(0)) ** 2).mean())
        return {"mse": mse, "mae": float(np.abs(err).mean()), "r2": 1.0 - mse / var if var > 0 else float("nan")}
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels)
    out = {"mean_error_normal": float(stats[labels == 0].mean()) if (labels == 0).any() else float("nan")}
    if (labels == 1).any():
        out["mean_error_anomaly"] = float(stats[labels == 1].mean())
    if len(np.unique(labels)) < 2:
        raise EdgeoptError(
            "ROC AUC needs normal and abnormal samples, but the split has only one kind",
            "evaluate on the test split (anomaly data's train split is all normal)",
        )
    out["roc_auc"] = float(roc_auc_score(labels, stats))
    return out


def article(word: str) -> str:
    """``a`` or ``an`` before ``word``. Pure."""
    return "an" if word[:1] in "aeiou" else "a"


def task_score(task: str, outputs: np.ndarray, inputs: np.ndarray, labels: np.ndarray) -> float:
    """The task's score (higher is better) of one batch of outputs: accuracy, R² or ROC AUC. Pure."""
    found = metrics(task, sample_stats(task, outputs, inputs), labels)
    return float(found[SCORE_NAMES[task]])


def check_model_data(model_task: str, data_task: str, where: str = "") -> None:
    """Refuse data whose labels are for another task than the model's, in one line.

    Classification data (integer labels) may train a regression model (the labels become numbers);
    every other mix is refused.
    """
    if model_task == data_task or (model_task == "regression" and data_task == "classification"):
        return
    if "multi" in (model_task, data_task):
        raise EdgeoptError(
            f"the model has {'several outputs' if model_task == 'multi' else 'one output'} but the data{where} has"
            f" {'one label array per output' if data_task == 'multi' else 'one label array'}",
            "give a multi-output model data with a label array per output (and a single-output model one array);"
            " a zoo: model trained on multi-output data gets one output per label array",
        )
    raise EdgeoptError(
        f"the model is {article(model_task)} {model_task} model but the data{where} is {data_task} data",
        f"give data for the model's task, or a model for {data_task} (--task {data_task} on train, or on eval of"
        " an artifact that records no task)",
    )
