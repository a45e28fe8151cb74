"""The in-memory dataset every loader produces: uint8 images (N, H, W, C) and int64 labels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeopt.errors import EdgeoptError


@dataclass
class ImageDataset:
    """Decoded images and labels of one split. Images stay uint8 until a model asks for them."""

    images: np.ndarray  # uint8 (N, H, W, C)
    labels: np.ndarray  # int64 (N,)
    class_names: list[str]
    name: str = ""

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.dtype != np.uint8:
            raise EdgeoptError(f"dataset '{self.name}' images must be uint8 (N, H, W, C), got {self.images.shape}")
        if len(self.images) != len(self.labels):
            raise EdgeoptError(f"dataset '{self.name}' has {len(self.images)} images but {len(self.labels)} labels")
        if len(self.images) == 0:
            raise EdgeoptError(f"dataset '{self.name}' is empty", "check the path and the split")
        self.labels = self.labels.astype(np.int64, copy=False)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_shape(self) -> tuple[int, int, int]:
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
        return ImageDataset(self.images[idx], self.labels[idx], self.class_names, self.name)
