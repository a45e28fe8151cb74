"""The dataset every loader produces: samples and their labels or targets.

Samples are uint8 images (N, H, W, C), or float arrays (N, *shape) in the model's own layout
(sequences (N, C, L), spectrograms (N, C, F, T), feature vectors (N, F)); arrays may be
memory-mapped (``np.memmap``, or a :class:`RowView` of one) and are read batch by batch.
Labels are int64 class indices (classification), float32 targets (regression, (N,) or
(N, K)) or int64 0/1 flags (anomaly: 1 = abnormal). Data for a multi-output model (task
``multi``) holds one label array per output as the fields of one structured array, named and
described by ``outputs`` (:class:`edgeopt.model.OutputSpec`: task and width of each head).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeopt.errors import EdgeoptError

if TYPE_CHECKING:
    from edgeopt.model import OutputSpec

TASKS = ("classification", "regression", "anomaly", "multi")


class RowView:
    """Rows ``index`` of a (memory-mapped) array, read only when indexed: a lazy split.

    Supports what the training and evaluation loops do with samples: ``len``, ``shape``,
    ``dtype``, ``ndim`` and indexing the first axis with an int, slice or index array (the
    rows are read in ascending order, which is what a memory map likes). ``np.asarray`` reads all.
    """

    def __init__(self, base: Any, index: np.ndarray) -> None:
        self.base = base
        self.index = np.asarray(index, np.int64)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.index), *self.base.shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return self.base.dtype

    @property
    def ndim(self) -> int:
        return self.base.ndim

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key: Any) -> np.ndarray:
        rows = self.index[key]
        if np.ndim(rows) == 0:
            return np.asarray(self.base[int(rows)])
        order = np.argsort(rows, kind="stable")
        out = np.asarray(self.base[rows[order]])
        back = np.empty_like(order)
        back[order] = np.arange(len(order))
        return out[back]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[np.arange(len(self))]
        return out if dtype is None else out.astype(dtype)


@dataclass
class ImageDataset:
    """Samples and labels of one split (see the module notes). Images stay uint8 until a model asks."""

    images: Any  # uint8 (N, H, W, C) images, or (N, *shape) float arrays / memmaps / RowViews
    labels: np.ndarray  # int64 (N,) classes or anomaly flags; float32 (N,) or (N, K) regression targets
    class_names: list[str]  # classification: classes; regression: target names; anomaly: normal, anomaly
    name: str = ""
    task: str = "classification"  # the task the labels are for: classification | regression | anomaly | multi
    outputs: list[OutputSpec] | None = None  # task multi: the heads, one structured-label field each

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise EdgeoptError(f"dataset '{self.name}' has unknown task '{self.task}'")
        if (self.task == "multi") != (self.outputs is not None):
            raise EdgeoptError(f"dataset '{self.name}': multi-output labels need task 'multi' and their outputs")
        if self.is_image or self.is_multi_input:
            pass
        elif self.images.ndim < 2 or self.images.dtype.kind not in "fiu":
            raise EdgeoptError(
                f"dataset '{self.name}' samples must be uint8 images (N, H, W, C) or numeric arrays (N, ...),"
                f" got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if len(self.images) != len(self.labels):
            raise EdgeoptError(f"dataset '{self.name}' has {len(self.images)} samples but {len(self.labels)} labels")
        if len(self.images) == 0:
            raise EdgeoptError(f"dataset '{self.name}' is empty", "check the path and the split")
        if self.task == "multi":
            names = np.asarray(self.labels).dtype.names or ()
            if list(names) != [o.name for o in self.outputs or []]:
                raise EdgeoptError(f"dataset '{self.name}': label fields {list(names)} do not match its outputs")
        elif self.task == "regression":
            self.labels = np.asarray(self.labels, np.float32)
        else:
            self.labels = np.asarray(self.labels).astype(np.int64, copy=False)

    @property
    def is_image(self) -> bool:
        """uint8 (N, H, W, C) images (else float arrays in the model's layout)."""
        return self.images.dtype == np.uint8 and self.images.ndim == 4

    @property
    def is_multi_input(self) -> bool:
        """Samples of a multi-input model: a structured array, one field (an input's array) per input."""
        return bool(self.images.dtype.names)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """The model input shape one sample gives: (C, H, W) for images, else the array's own shape."""
        if self.is_image:
            h, w, c = self.image_shape
            return c, h, w
        return tuple(int(s) for s in self.images.shape[1:])

    @property
    def num_outputs(self) -> int:
        """What a model for this data outputs: classes, regression targets, or reconstructed features."""
        if self.task == "classification":
            return self.num_classes
        if self.task == "regression":
            return 1 if self.labels.ndim == 1 else int(self.labels.shape[1])
        if self.task == "multi":
            return sum(o.width for o in self.outputs or [])
        return int(np.prod(self.sample_shape))

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        if not self.is_image:
            raise EdgeoptError(
                f"dataset '{self.name}' holds arrays of shape {'x'.join(map(str, self.sample_shape))}, not images"
            )
        h, w, c = self.images.shape[1:]
        return int(h), int(w), int(c)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def take(self, n: int | None, seed: int | None = None) -> ImageDataset:
        """The first ``n`` samples, or ``n`` drawn reproducibly with ``seed`` (all if ``n`` is None)."""
        if n is None or n >= len(self):
            return self
        idx = np.arange(n) if seed is None else np.sort(np.random.default_rng(seed).permutation(len(self))[:n])
        return self.subset(idx)

    def value_range(self, max_rows: int = 10000) -> tuple[float, float]:
        """(min, max) of the samples (arrays; images: 0..255), over up to ``max_rows`` rows drawn with seed 0.

        What an array model's input spec records as its value range. Cost: reading ``max_rows`` rows.
        """
        if self.is_image:
            return 0.0, 255.0
        rows = np.asarray(self.take(max_rows, seed=0).images, np.float32)
        return float(rows.min()), float(rows.max())

    def for_task(self, task: str) -> ImageDataset:
        """This data for a model of ``task``: class labels become regression targets when asked;
        other mismatches are left for the task check (:func:`edgeopt.train.tasks.check_model_data`)."""
        if task == "regression" and self.task == "classification":
            return ImageDataset(self.images, self.labels.astype(np.float32), ["target"], self.name, "regression")
        return self

    def subset(self, idx: np.ndarray) -> ImageDataset:
        """The samples at ``idx`` (a memory-mapped source stays lazy: a :class:`RowView`)."""
        idx = np.asarray(idx, np.int64)
        images = self.images
        if isinstance(images, RowView):
            images = RowView(images.base, images.index[idx])
        elif isinstance(images, np.memmap):
            images = RowView(images, idx)
        else:
            images = images[idx]
        return ImageDataset(images, self.labels[idx], self.class_names, self.name, self.task, self.outputs)


def refuse_multi_input_data(data: ImageDataset, command: str) -> None:
    """One clear line when ``command`` (a zoo model, NAS search) is given samples with several inputs."""
    if data.is_multi_input:
        from edgeopt.model import MULTI_INPUT_COMMANDS

        raise EdgeoptError(
            f"{command} takes one input, but {data.name or 'the data'} has inputs {list(data.images.dtype.names)}",
            f"import a multi-input .onnx/.tflite graph (multi-input models: {', '.join(MULTI_INPUT_COMMANDS)})",
        )


Dataset = ImageDataset  # the general name: it holds images or arrays
