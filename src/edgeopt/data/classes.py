"""Matching a dataset's classes to a model's: labels follow class names, never folder order.

A model that records its class names takes data whose classes are the same names (in any
order) or a subset of them: the data's labels are mapped to the model's label indices by
name. Data with a class the model does not know is refused in one line naming both sets.
A model without names (an imported file that carried none) is matched by position, as
long as the data has no more classes than the model has outputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgeopt.data.dataset import ImageDataset
from edgeopt.errors import EdgeoptError

MIN_TRAIN_CLASSES = 2


def show_names(names: Sequence[str], limit: int = 12) -> str:
    """``{a, b, c}`` for error lines; long lists are cut with a count."""
    shown = ", ".join(names[:limit])
    return "{" + (shown if len(names) <= limit else f"{shown}, … ({len(names)} in all)") + "}"


def match_classes(
    model_classes: Sequence[str] | None, num_outputs: int, data: ImageDataset
) -> tuple[ImageDataset, str | None]:
    """``data`` with labels in the model's label order, and a note when labels were mapped by name.

    Pure: ``data`` is not changed. Raises EdgeoptError for data with classes the model lacks, or
    (for a model without names) more classes than the model has outputs.
    """
    names = list(data.class_names)
    if model_classes is None:
        if len(names) > num_outputs:
            raise EdgeoptError(
                f"the data has {len(names)} classes {show_names(names)} but the model outputs {num_outputs}",
                "use data with the model's classes, or build the model with the data's class count",
            )
        if len(names) < num_outputs:
            return data, (
                f"the model records no class names: the data's {len(names)} classes {show_names(names)} are taken"
                f" as its first {len(names)} outputs, by folder order"
            )
        return data, None
    model_classes = list(model_classes)
    if names == model_classes:
        return data, None
    index = {c: i for i, c in enumerate(model_classes)}
    unknown = [c for c in names if c not in index]
    if unknown:
        raise EdgeoptError(
            f"the data's classes {show_names(names)} are not the model's {show_names(model_classes)}"
            f" ({show_names(unknown)} unknown to the model)",
            "use data with the model's classes, or train a model on this data",
        )
    table = np.array([index[c] for c in names], np.int64)
    mapped = ImageDataset(data.images, table[data.labels], model_classes, data.name)
    if len(names) == len(model_classes):
        note = "the data lists the model's classes in another order: labels mapped to the model's by name"
    else:
        note = (
            f"the data has {len(names)} of the model's {len(model_classes)} classes {show_names(names)}:"
            " labels mapped to the model's by name"
        )
    return mapped, note


def check_trainable(data: ImageDataset) -> None:
    """Refuse training data with fewer than two classes (any classifier scores 100% on it)."""
    if data.num_classes < MIN_TRAIN_CLASSES:
        raise EdgeoptError(
            f"the training data has {data.num_classes} class {show_names(data.class_names)}; "
            f"a classifier needs at least {MIN_TRAIN_CLASSES}",
            "add a folder for every class under train/",
        )
