"""Olive's user script for benchmarks/optimize.py's Olive comparison: cifar10-jpg as Olive datasets.

Olive loads this file by path and calls the registered ``edgeopt_images`` with the config's params:
the images go through the edgeopt record's own input transform (``meta.input.to_model_input``), so
Olive's ONNX Runtime sessions see exactly what edgeopt's do.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from olive.data.registry import Registry


class _Images:
    """(inputs, label) pairs: ``{input name: float32 array in the model's layout}`` (Olive's calibration
    reader takes only named inputs) and an int64 label."""

    def __init__(self, name: str, x: np.ndarray, y: np.ndarray) -> None:
        self.name, self.x, self.y = name, x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[dict[str, np.ndarray], np.int64]:
        return {self.name: self.x[i]}, np.int64(self.y[i])


@Registry.register_dataset()
def edgeopt_images(data: str, model: str, input_name: str, split: str, limit: int | None = None, **_: Any) -> _Images:
    """``data`` (an edgeopt data source) for ``model`` (an ``.edgeopt`` record), fed to ONNX input
    ``input_name``: the first ``limit`` images of ``split``."""
    from edgeopt.data import load_dataset
    from edgeopt.model import load_model

    meta = load_model(model).meta
    ds = load_dataset(data, split)
    images, labels = ds.images[:limit], np.asarray(ds.labels[:limit])
    return _Images(input_name, np.ascontiguousarray(meta.input.to_model_input(images), dtype=np.float32), labels)
