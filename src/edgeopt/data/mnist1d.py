"""``mnist1d:`` — MNIST-1D (Greydanus, 2020): a 1-D, 10-class sequence set built offline.

Built with the ``mnist1d`` package's ``make_dataset()`` (never ``get_dataset()``, which
downloads): 40-step signals from ten digit-like templates, padded, scaled, translated,
sheared and noised, standardised to mean 0 / std 1. Samples are float32 (N, 1, 40) sequences
(NCL, one channel); the package's own 80/20 train/test split with its default seed 42.
``mnist1d:N`` builds N samples in all (default 5,000: 4,000 train, 1,000 test).

Cost: ~1.7 ms a sample on one core (5,000 in ~9 s); the arrays are cached (see
:mod:`edgeopt.data.cache`) so later loads are instant.
"""

from __future__ import annotations

import functools
import random

import numpy as np

from edgeopt.data.dataset import ImageDataset
from edgeopt.errors import EdgeoptError

DEFAULT_SAMPLES = 5000


@functools.lru_cache(maxsize=2)  # both splits come from one build
def build_mnist1d(num_samples: int = DEFAULT_SAMPLES) -> dict[str, np.ndarray]:
    """``mnist1d.make_dataset`` with ``num_samples``; Python's and numpy's global RNG states are restored."""
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as e:  # pragma: no cover - a core dependency
        raise EdgeoptError("the mnist1d package is not installed", "pip install mnist1d") from e
    args = get_dataset_args()
    args.num_samples = int(num_samples)
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        return make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


def load_mnist1d(split: str, num_samples: int = DEFAULT_SAMPLES) -> ImageDataset:
    """One split of MNIST-1D as float32 (N, 1, 40) sequences."""
    if num_samples < 20:
        raise EdgeoptError(f"mnist1d:{num_samples} is too few samples", "give at least 20 (default 5000)")
    d = build_mnist1d(num_samples)
    x, y = (d["x"], d["y"]) if split == "train" else (d["x_test"], d["y_test"])
    x = np.ascontiguousarray(x, np.float32)[:, None, :]
    return ImageDataset(x, np.asarray(y, np.int64), [str(i) for i in range(10)], f"mnist1d:{split}")
