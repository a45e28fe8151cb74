"""Top-1 evaluation of anything that maps an input batch to logits.

``predict`` is a PyTorch module's forward or a runtime runner's ``run``, so the same loop
measures accuracy in PyTorch, ONNX Runtime, ExecuTorch and LiteRT.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from edgeopt.data import ImageDataset
from edgeopt.data.classes import match_classes
from edgeopt.errors import EdgeoptError
from edgeopt.model import EdgeModel, InputSpec, ModelMeta
from edgeopt.progress import progress_iter
from edgeopt.train.diagnose import chance_warning

Predict = Callable[[np.ndarray], np.ndarray]


@dataclass
class EvalResult:
    accuracy: float
    samples: int
    predictions: np.ndarray  # argmax class per sample
    note: str | None = None  # how labels were matched, when not one to one (a subset of the model's classes)
    warning: str | None = None  # the accuracy is at chance, and the likely cause

    def to_json(self) -> dict[str, float | int | str]:
        out: dict[str, float | int | str] = {"accuracy": self.accuracy, "samples": self.samples}
        if self.note:
            out["note"] = self.note
        if self.warning:
            out["warning"] = self.warning
        return out


def torch_predict(model: EdgeModel) -> Predict:
    module = model.module.eval()

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(x)).float().numpy()

    return predict


def predict_classes(predict: Predict, spec: InputSpec, data: ImageDataset, batch_size: int = 256) -> np.ndarray:
    """Argmax class for every image in ``data``."""
    out = []
    starts = range(0, len(data), batch_size)
    for s in progress_iter(starts, "evaluating"):
        logits = predict(spec.to_model_input(data.images[s : s + batch_size]))
        out.append(np.asarray(logits).reshape(len(logits), -1).argmax(1))
    return np.concatenate(out)


def evaluate(
    model: EdgeModel | ModelMeta,
    data: ImageDataset,
    predict: Predict | None = None,
    limit: int | None = None,
    diagnose: bool = False,
) -> EvalResult:
    """Top-1 accuracy of ``predict`` on ``limit`` samples of ``data`` (all when None).

    The ``limit`` samples are drawn reproducibly from the whole split, in order (folder datasets are
    sorted by class, so the first ``limit`` would be a few classes only). Labels are matched to the
    model's classes by name (:func:`edgeopt.data.classes.match_classes`: a subset is mapped and
    noted, other classes are refused). An accuracy at chance carries a ``warning``; with
    ``diagnose`` it re-scores a small sample under other input ranges to name the cause.

    ``predict`` defaults to the PyTorch module; with only a model's metadata it is required.
    """
    meta = model if isinstance(model, ModelMeta) else model.meta
    data, note = match_classes(meta.class_names, meta.num_classes, data)
    data = data.take(limit, seed=0)
    if predict is None:
        if isinstance(model, ModelMeta):
            raise EdgeoptError("evaluate() needs predict= when given only metadata")
        predict = torch_predict(model)
    preds = predict_classes(predict, meta.input, data)
    accuracy = float((preds == data.labels).mean())
    probe = (predict, predict_classes) if diagnose else (None, None)
    warning = chance_warning(accuracy, meta, data, *probe)
    return EvalResult(accuracy, len(data), preds, note, warning)
