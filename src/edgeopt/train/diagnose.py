"""Why an accuracy sits at chance: the warning every evaluation carries when it does.

A model scoring no better than guessing was almost always fed wrongly: pixels in another
value range than it was trained on (the MLPerf models take 0..255, edgeopt's default is
0..1), another layout, or data whose labels mean other classes. ``chance_warning`` says so;
with a ``predict`` it re-scores a small sample under the common value ranges and names the
one that works.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from edgeopt.data import ImageDataset
from edgeopt.model import ModelMeta

CHANCE_MARGIN = 0.05  # absolute accuracy above the guessing level (1/num_classes) still counted as chance
PROBE_SAMPLES = 256
PROBE_RANGES: tuple[tuple[float, float], ...] = ((0.0, 1.0), (0.0, 255.0), (-1.0, 1.0), (-128.0, 127.0))
PROBE_GAIN = 0.15  # a range must beat the current one by this much on the sample to be named

Predict = Callable[[np.ndarray], np.ndarray]


def chance_level(num_classes: int, majority: float | None = None) -> float:
    """The accuracy of guessing: 1/``num_classes``, or ``majority`` (the most common label's share) when higher."""
    return max(1.0 / max(1, num_classes), majority or 0.0)


def is_at_chance(accuracy: float, level: float) -> bool:
    """Whether ``accuracy`` is within ``CHANCE_MARGIN`` of the guessing ``level``: the one test of "at chance"."""
    return accuracy <= level + CHANCE_MARGIN


def chance_threshold(num_classes: int) -> float:
    """The accuracy at or below which a ``num_classes``-way classifier counts as guessing."""
    return chance_level(num_classes) + CHANCE_MARGIN


def chance_note(accuracy: float, num_classes: int, majority: float | None = None) -> str | None:
    """``accuracy X is at or below chance (1/n for n classes)`` when it is, else None. Pure.

    ``majority``: the most common label's share in the data, when known (chance is then the higher of the two).
    """
    level = chance_level(num_classes, majority)
    if not is_at_chance(accuracy, level):
        return None
    basis = f"{num_classes} classes" if level == 1.0 / max(1, num_classes) else "always the most common label"
    return f"accuracy {accuracy:.4f} is at or below chance ({level:.3g} for {basis})"


def _range_text(r: tuple[float, float]) -> str:
    return f"{r[0]:g},{r[1]:g}"


def probe_ranges(
    predict: Predict, meta: ModelMeta, data: ImageDataset, predict_classes: Callable[..., np.ndarray]
) -> dict[tuple[float, float], float]:
    """Accuracy on up to ``PROBE_SAMPLES`` images under each of ``PROBE_RANGES`` (and the model's own)."""
    sample = data.take(PROBE_SAMPLES, seed=0)
    out = {}
    for r in dict.fromkeys((meta.input.value_range, *PROBE_RANGES)):
        spec = replace(meta.input, value_range=r)
        out[r] = float((predict_classes(predict, spec, sample) == sample.labels).mean())
    return out


def chance_warning(
    accuracy: float,
    meta: ModelMeta,
    data: ImageDataset,
    predict: Predict | None = None,
    predict_classes: Callable[..., np.ndarray] | None = None,
) -> str | None:
    """A one-line warning when ``accuracy`` is at or below chance, naming the likely cause; else None.

    With ``predict`` (and ``predict_classes``) it costs ``len(PROBE_RANGES)`` evaluations of
    ``PROBE_SAMPLES`` images; without, it is free and lists what to check.
    """
    head = chance_note(accuracy, meta.num_classes)
    if head is None:
        return None
    spec = meta.input
    if meta.is_multi_input:  # no range probe: each input has its own
        return f"{head}: check each input's data (the model takes {spec.describe()}) and the class names"
    if predict is not None and predict_classes is not None:
        scores = probe_ranges(predict, meta, data, predict_classes)
        own = scores[spec.value_range]
        best = max(scores, key=lambda r: scores[r])
        if best != spec.value_range and scores[best] >= own + PROBE_GAIN:
            return (
                f"{head}: the input range is the likely cause — the model is fed {_range_text(spec.value_range)}"
                f" but scores {scores[best]:.3f} on {min(PROBE_SAMPLES, len(data))} images with"
                f" --input-range {_range_text(best)}"
            )
    names = "the model records no class names" if meta.class_names is None else "classes matched by name"
    return (
        f"{head}: check the input range (fed {_range_text(spec.value_range)}; MLPerf-style models take 0,255:"
        f" --input-range), the layout (the model takes {spec.layout} {'x'.join(map(str, spec.shape))}),"
        f" and the classes ({names}; is label i the model's class i?)"
    )
