"""Training and evaluation: ``fit``, ``evaluate`` and the loss hook used by distillation."""

from edgeopt.train.evaluate import EvalResult, evaluate, predict_classes, torch_predict
from edgeopt.train.fit import FitConfig, FitHistory, LossFn, fit, seed_everything

__all__ = [
    "EvalResult", "FitConfig", "FitHistory", "LossFn", "evaluate", "fit", "predict_classes", "seed_everything",
    "torch_predict",
]  # fmt: skip
