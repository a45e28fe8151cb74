"""Multi-output models: training loss, per-head metrics and the one combined score.

A multi-output model's record lists its outputs (:class:`edgeopt.model.OutputSpec`: name, task
``classification`` or ``regression``, width, loss weight); its module returns one tensor per output,
in that order, and its data holds one label array per output (:mod:`edgeopt.data.heads`).

- **Loss**: ``sum_h weight_h * loss_h``, each head's own task loss (:func:`edgeopt.train.tasks.loss_function`:
  cross-entropy with label smoothing, MSE).
- **Metrics**: each head's task metrics (accuracy; MSE, MAE, R²), keyed ``<head>_<metric>``.
- **Combined score**: the plain mean of the heads' scores (accuracy, R²): higher is better, 1 is
  perfect, on the scale the single-task scores use. Not weighted by the loss weights: those
  compensate for the losses' scales (an MSE of targets in 0..1 is ~100x smaller than a
  cross-entropy), which the scores do not have. It is what an accuracy-aware step would compare
  (``evaluate``'s ``accuracy``/``score``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from edgeopt.errors import EdgeoptError
from edgeopt.model import OutputSpec
from edgeopt.train.tasks import SCORE_NAMES, loss_function, sample_stats
from edgeopt.train.tasks import batch_targets as task_targets
from edgeopt.train.tasks import metrics as task_metrics

COMBINED = "score"  # the combined score's key in metrics and JSON


def as_outputs(heads: Sequence[OutputSpec], out: Any) -> tuple[Any, ...]:
    """A module's or runtime's outputs as one entry per head, widths checked (one clear line otherwise)."""
    outs = tuple(out) if isinstance(out, list | tuple) else (out,)
    if len(outs) != len(heads):
        raise EdgeoptError(
            f"the model returns {len(outs)} output(s) but its record describes {len(heads)}"
            f" ({', '.join(h.name for h in heads)})",
            "rebuild the record from the model's outputs (re-import or re-train it)",
        )
    for h, o in zip(heads, outs, strict=True):
        width = int(np.prod(tuple(o.shape[1:]))) if len(o.shape) > 1 else 1
        if width != h.width:
            raise EdgeoptError(f"output '{h.name}' has {width} values per sample but its record says {h.width}")
    return outs


def check_heads(model_heads: Sequence[OutputSpec], data_heads: Sequence[OutputSpec] | None, where: str = "") -> None:
    """Refuse data whose outputs are not the model's (names, order, task, class count) in one line. Pure."""
    if data_heads is None:
        raise EdgeoptError(
            f"the model has outputs {', '.join(h.name for h in model_heads)} but the data{where} has one label array",
            "give data with one label array per output (npz y_train_<head>, y_test_<head>)",
        )
    want = [(h.name, h.task) for h in model_heads]
    got = [(h.name, h.task) for h in data_heads]
    if want != got:
        show = lambda hs: ", ".join(f"{n} ({t})" for n, t in hs)  # noqa: E731
        raise EdgeoptError(
            f"the model's outputs {show(want)} are not the data's{where} {show(got)}",
            "give data with a label array per model output, same names and order",
        )
    for m, d in zip(model_heads, data_heads, strict=True):
        if m.task == "classification" and d.width > m.width:
            raise EdgeoptError(f"output '{m.name}': the data has {d.width} classes but the model outputs {m.width}")
        if m.task == "regression" and d.width != m.width:
            raise EdgeoptError(f"output '{m.name}': the data has {d.width} targets but the model predicts {m.width}")


def loss(heads: Sequence[OutputSpec], label_smoothing: float = 0.0) -> Callable[..., torch.Tensor]:
    """``loss(outputs, targets, inputs)``: the weighted sum of the heads' task losses."""
    parts = [(h.weight, loss_function(h.task, label_smoothing)) for h in heads]

    def total(out: Any, y: Sequence[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        outs = as_outputs(heads, out)
        return sum(w * fn(o, t, x) for (w, fn), o, t in zip(parts, outs, y, strict=True))  # type: ignore[return-value]

    return total


def batch_targets(
    heads: Sequence[OutputSpec], labels: np.ndarray, device: torch.device | str = "cpu"
) -> list[torch.Tensor]:
    """One batch of structured labels as each head's loss wants them (:func:`tasks.batch_targets` per head; a field
    of a structured array is a strided view, copied contiguous first)."""
    return [task_targets(h.task, np.ascontiguousarray(labels[h.name])).to(device) for h in heads]


def sample_stats_multi(heads: Sequence[OutputSpec], outputs: Any, inputs: np.ndarray) -> np.ndarray:
    """Per-sample summaries of a batch (argmax class / predicted targets per head) as one structured array."""
    outs = as_outputs(heads, outputs)
    stats = [sample_stats(h.task, np.asarray(o), inputs) for h, o in zip(heads, outs, strict=True)]
    fields = [(h.name, s.dtype, s.shape[1:]) if s.ndim > 1 and s.shape[1] > 1 else (h.name, s.dtype) for h, s in
              zip(heads, stats, strict=True)]  # fmt: skip
    rec = np.empty(len(stats[0]), dtype=fields)
    for h, s in zip(heads, stats, strict=True):
        rec[h.name] = s if rec.dtype[h.name].shape else s.reshape(len(s))
    return rec


def head_metrics(heads: Sequence[OutputSpec], stats: np.ndarray, labels: np.ndarray) -> dict[str, dict[str, float]]:
    """Each head's task metrics from :func:`sample_stats_multi` over a split. Pure."""
    found = {}
    for h in heads:
        s = np.asarray(stats[h.name])
        if h.task == "regression":
            s = s.reshape(len(s), -1)
        found[h.name] = task_metrics(h.task, s, np.asarray(labels[h.name]))
    return found


def combined_score(heads: Sequence[OutputSpec], per_head: dict[str, dict[str, float]]) -> float:
    """The plain mean of the heads' scores (accuracy, R²; see the module notes). Pure."""
    return float(np.mean([per_head[h.name][SCORE_NAMES[h.task]] for h in heads]))


def flat_metrics(heads: Sequence[OutputSpec], per_head: dict[str, dict[str, float]]) -> dict[str, float]:
    """``{"<head>_<metric>": value, ..., "score": combined}``: every figure in one flat mapping. Pure."""
    flat = {f"{h.name}_{k}": v for h in heads for k, v in per_head[h.name].items()}
    flat[COMBINED] = combined_score(heads, per_head)
    return flat
