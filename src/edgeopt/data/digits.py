"""scikit-learn's built-in 8x8 handwritten digits: the offline default dataset.

1,797 images with values 0..16, scaled to 0..255 uint8; a stratified 80/20 train/test
split with a fixed seed, so every run sees the same split.
"""

from __future__ import annotations

import numpy as np

from edgeopt.data.dataset import ImageDataset

SPLIT_SEED = 0
TEST_FRACTION = 0.2


def load_digits_split(split: str) -> ImageDataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    idx_train, idx_test = train_test_split(
        np.arange(len(images)), test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=bunch.target
    )
    idx = idx_train if split == "train" else idx_test
    return ImageDataset(images[idx], bunch.target[idx], [str(i) for i in range(10)], f"digits:{split}")
