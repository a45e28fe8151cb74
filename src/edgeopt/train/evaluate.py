"""Evaluation of anything that maps an input batch to outputs, with the model's task's metrics.

``predict`` is a PyTorch module's forward or a runtime runner's ``run``, so the same loop
measures accuracy (or MSE/MAE/R², or ROC AUC: :mod:`edgeopt.train.tasks`) in PyTorch, ONNX
Runtime, ExecuTorch and LiteRT.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from edgeopt.data import ImageDataset
from edgeopt.data.classes import match_classes
from edgeopt.errors import EdgeoptError
from edgeopt.model import EdgeModel, InputSpec, ModelMeta, OutputSpec, model_args
from edgeopt.progress import progress_iter
from edgeopt.train import multi
from edgeopt.train.diagnose import chance_warning
from edgeopt.train.tasks import SCORE_NAMES, check_model_data, sample_stats
from edgeopt.train.tasks import metrics as task_metrics

Predict = Callable[[np.ndarray], Any]  # a batch -> the output array (a tuple of them for a multi-output model)
SCORE_NOTE = "mean of the outputs' scores (accuracy for classification, r2 for regression)"


@dataclass
class EvalResult:
    """One evaluation. ``accuracy`` is the task's score (higher is better): top-1 accuracy for
    classifiers, R² for regression, ROC AUC for anomaly detection; ``metrics`` holds all of the
    task's metrics."""

    accuracy: float
    samples: int
    predictions: np.ndarray  # argmax class / predicted targets / reconstruction error, per sample
    note: str | None = None  # how labels were matched, when not one to one (a subset of the model's classes)
    warning: str | None = None  # the accuracy is at chance, and the likely cause
    task: str = "classification"
    metrics: dict[str, float] = field(default_factory=dict)
    heads: dict[str, dict[str, float]] | None = None  # a multi-output model: each output's own metrics

    @property
    def score(self) -> float:
        """The task's score (an alias of ``accuracy``, which holds it for every task)."""
        return self.accuracy

    def to_json(self) -> dict[str, Any]:
        if self.heads is not None:  # one key per head, and the combined score (train.multi)
            return {"task": self.task, "score": self.accuracy, "score_metric": SCORE_NOTE, "heads": self.heads,
                    "samples": self.samples}  # fmt: skip
        if self.task != "classification":
            return {"task": self.task, **self.metrics, "samples": self.samples}
        out: dict[str, float | int | str] = {"accuracy": self.accuracy, "samples": self.samples}
        if self.note:
            out["note"] = self.note
        if self.warning:
            out["warning"] = self.warning
        return out


def torch_predict(model: EdgeModel) -> Predict:
    module = model.module.eval()

    def predict(x: np.ndarray) -> Any:
        with torch.inference_mode():
            y = module(*model_args(x))  # one tensor, or one per input of a multi-input model
        if isinstance(y, tuple | list):  # a multi-output model
            return tuple(t.float().numpy() for t in y)
        return y.float().numpy()

    return predict


def predict_classes(predict: Predict, spec: InputSpec, data: ImageDataset, batch_size: int = 256) -> np.ndarray:
    """Argmax class for every image in ``data``."""
    return predict_stats(predict, spec, data, "classification", batch_size)


def predict_stats(
    predict: Predict,
    spec: InputSpec,
    data: ImageDataset,
    task: str,
    batch_size: int = 256,
    heads: list[OutputSpec] | None = None,
) -> np.ndarray:
    """The task's per-sample statistic for every sample (:func:`edgeopt.train.tasks.sample_stats`); for a
    multi-output model (``heads``) one structured record per sample, a field per head."""
    out = []
    starts = range(0, len(data), batch_size)
    for s in progress_iter(starts, "evaluating"):
        x = spec.to_model_input(data.images[s : s + batch_size])
        if heads is not None:
            out.append(multi.sample_stats_multi(heads, predict(x), x))
        else:
            out.append(sample_stats(task, predict(x), x))
    return np.concatenate(out)


def evaluate(
    model: EdgeModel | ModelMeta,
    data: ImageDataset,
    predict: Predict | None = None,
    limit: int | None = None,
    diagnose: bool = False,
) -> EvalResult:
    """The model's task's metrics of ``predict`` on ``limit`` samples of ``data`` (all when None):
    top-1 accuracy for classifiers (below), MSE/MAE/R² for regression, ROC AUC of the reconstruction
    error for anomaly detection (:mod:`edgeopt.train.tasks`). Data for another task is refused.

    The ``limit`` samples are drawn reproducibly from the whole split, in order (folder datasets are
    sorted by class, so the first ``limit`` would be a few classes only). Labels are matched to the
    model's classes by name (:func:`edgeopt.data.classes.match_classes`: a subset is mapped and
    noted, other classes are refused). An accuracy at chance carries a ``warning``; with
    ``diagnose`` it re-scores a small sample under other input ranges to name the cause.

    ``predict`` defaults to the PyTorch module; with only a model's metadata it is required.
    """
    meta = model if isinstance(model, ModelMeta) else model.meta
    if predict is None:
        if isinstance(model, ModelMeta):
            raise EdgeoptError("evaluate() needs predict= when given only metadata")
        predict = torch_predict(model)
    check_model_data(meta.task, data.task)
    if meta.outputs is not None:
        multi.check_heads(meta.outputs, data.outputs)
        data = data.take(limit, seed=0)
        stats = predict_stats(predict, meta.input, data, meta.task, heads=meta.outputs)
        per_head = multi.head_metrics(meta.outputs, stats, data.labels)
        flat = multi.flat_metrics(meta.outputs, per_head)
        return EvalResult(flat[multi.COMBINED], len(data), stats, task="multi", metrics=flat, heads=per_head)
    if meta.task != "classification":
        data = data.take(limit, seed=0)
        stats = predict_stats(predict, meta.input, data, meta.task)
        found = task_metrics(meta.task, stats, data.labels)
        score = found[SCORE_NAMES[meta.task]]
        return EvalResult(score, len(data), stats, task=meta.task, metrics=found)
    data, note = match_classes(meta.class_names, meta.num_classes, data)
    data = data.take(limit, seed=0)
    preds = predict_classes(predict, meta.input, data)
    accuracy = float((preds == data.labels).mean())
    probe = (predict, predict_classes) if diagnose else (None, None)
    warning = chance_warning(accuracy, meta, data, *probe)
    return EvalResult(accuracy, len(data), preds, note, warning, metrics={"accuracy": accuracy})
