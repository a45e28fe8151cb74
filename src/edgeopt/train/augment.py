"""Image augmentation on uint8 NHWC batches: random crop (zero-padded) and horizontal flip."""

from __future__ import annotations

import numpy as np


def random_crop_flip(images: np.ndarray, rng: np.random.Generator, pad: int, flip: bool) -> np.ndarray:
    """Pad by ``pad`` pixels, crop back to size at a random offset per image, optionally mirror.

    Pure function of its inputs and the generator state; cost O(batch pixels).
    """
    n, h, w, _ = images.shape
    out = np.empty_like(images)
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    dy = rng.integers(0, 2 * pad + 1, n)
    dx = rng.integers(0, 2 * pad + 1, n)
    mirror = rng.random(n) < 0.5 if flip else np.zeros(n, bool)
    for i in range(n):
        crop = padded[i, dy[i] : dy[i] + h, dx[i] : dx[i] + w]
        out[i] = crop[:, ::-1] if mirror[i] else crop
    return out
