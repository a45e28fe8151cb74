"""Labels of multi-output data: one label array per output (head), kept together as one structured array.

``head_labels({"digit": y1, "ink": y2})`` gives the structured label array (one field per head, in
the given order) and each head's :class:`~edgeopt.model.OutputSpec`: integer labels make a
classification head (width: the class count), float labels a regression head (width: the targets per
sample). A structured array indexes, splits and subsets like any label array, so a dataset's
``subset``/``take`` need nothing new. ``digits-multi`` is the offline demo set built on it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from edgeopt.data.dataset import ImageDataset
from edgeopt.errors import EdgeoptError
from edgeopt.model import OutputSpec, check_outputs


def head_task(y: np.ndarray) -> str:
    """``classification`` for integer labels, ``regression`` for real-valued targets. Pure."""
    return "classification" if np.asarray(y).dtype.kind in "iub" else "regression"


def head_labels(
    labels: Mapping[str, np.ndarray],
    widths: Mapping[str, int] | None = None,
    weights: Sequence[float] | None = None,
    class_names: Mapping[str, list[str]] | None = None,
) -> tuple[np.ndarray, list[OutputSpec]]:
    """The structured label array of ``labels`` (head name -> (N,) or (N, K) array) and its heads. Pure.

    ``widths`` fixes a classification head's class count (default: its largest label + 1, or its
    ``class_names``); ``weights`` are the heads' loss weights in order (default 1 each).
    """
    names = list(labels)
    lengths = {len(np.asarray(y)) for y in labels.values()}
    if len(lengths) != 1:
        raise EdgeoptError(f"the outputs' label arrays differ in length ({', '.join(map(str, sorted(lengths)))})")
    if weights is not None and len(weights) != len(names):
        raise EdgeoptError(f"{len(weights)} head weights for {len(names)} outputs ({', '.join(names)})")
    n = lengths.pop()
    fields, outputs = [], []
    for i, name in enumerate(names):
        y = np.asarray(labels[name])
        task = head_task(y)
        given = (class_names or {}).get(name)
        if task == "classification":
            if y.ndim != 1:
                raise EdgeoptError(f"output '{name}': class labels must be one per sample, not shape {y.shape}")
            width = int((widths or {}).get(name) or (len(given) if given else (int(y.max()) + 1 if n else 1)))
            if n and (y.min() < 0 or y.max() >= width):
                raise EdgeoptError(f"output '{name}': labels outside 0..{width - 1}", "labels must be 0..K-1")
            fields.append((name, np.int64))
        else:
            width = 1 if y.ndim == 1 else int(np.prod(y.shape[1:]))
            fields.append((name, np.float32) if y.ndim == 1 else (name, np.float32, (width,)))
        weight = 1.0 if weights is None else float(weights[i])
        outputs.append(OutputSpec(name, task, width, weight, list(given) if given else None))
    check_outputs(outputs)
    out = np.empty(n, dtype=fields)
    for name in names:
        y = np.asarray(labels[name])
        out[name] = y.reshape(n, -1) if out.dtype[name].shape else y
    return out, outputs


def head_arrays(labels: np.ndarray) -> dict[str, np.ndarray]:
    """Structured labels back to one plain array per head (views, no copy). Pure."""
    return {name: labels[name] for name in labels.dtype.names or ()}


def multi_dataset(x: object, labels: Mapping[str, np.ndarray], name: str, **kw: object) -> ImageDataset:
    """A multi-output dataset of samples ``x`` and one label array per head (see :func:`head_labels`)."""
    y, outputs = head_labels(labels, **kw)  # type: ignore[arg-type]
    return ImageDataset(x, y, [o.name for o in outputs], name, "multi", outputs)


INK_MEAN, INK_STD = 0.3053, 0.0336  # mean pixel intensity (0..1) of all 1,797 digits: its mean and std


def load_digits_multi(split: str) -> ImageDataset:
    """``digits-multi``: scikit-learn's digits with two outputs, the same split as ``digits``.

    ``digit``: the class (10 classes); ``ink``: the image's mean pixel intensity, standardised over the
    whole set (``(mean/255 - INK_MEAN) / INK_STD``, so an ink error of 1 is one standard deviation
    of 0.0336 in intensity): a regression target of the image the shared body must compute. Both heads
    weigh 1 in the loss (a standardised target's MSE starts near the cross-entropy's scale).
    """
    from edgeopt.data.digits import load_digits_split

    base = load_digits_split(split)
    intensity = np.asarray(base.images, np.float32).reshape(len(base), -1).mean(1) / 255.0
    ink = ((intensity - INK_MEAN) / INK_STD).astype(np.float32)
    return multi_dataset(
        base.images,
        {"digit": base.labels, "ink": ink},
        f"digits-multi:{split}",
        widths={"digit": 10},
        class_names={"digit": [str(i) for i in range(10)]},
    )
