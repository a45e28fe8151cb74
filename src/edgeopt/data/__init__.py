"""Dataset specs: ``digits``, ``imagefolder:PATH``, ``cifar10:DIR``, ``mnist:DIR``.

``load_dataset(spec, split)`` returns an :class:`ImageDataset` of uint8 images; file-backed
datasets are decoded once and cached (see :mod:`edgeopt.data.cache`).
"""

from __future__ import annotations

from pathlib import Path

from edgeopt.data.dataset import ImageDataset
from edgeopt.errors import EdgeoptError

__all__ = ["ImageDataset", "load_dataset", "SPLITS"]

SPLITS = ("train", "test")
KINDS = ("digits", "imagefolder", "cifar10", "mnist")


def load_dataset(spec: str, split: str = "train") -> ImageDataset:
    """Load one split of the dataset named by ``spec`` (see module docstring)."""
    if split not in SPLITS:
        raise EdgeoptError(f"unknown split '{split}'", "use train or test")
    kind, _, arg = spec.partition(":")
    if kind == "digits" and not arg:
        from edgeopt.data.digits import load_digits_split

        return load_digits_split(split)
    if kind not in KINDS[1:] or not arg:
        raise EdgeoptError(f"unknown dataset spec '{spec}'", "use digits, imagefolder:PATH, cifar10:DIR or mnist:DIR")
    from edgeopt.data.cache import cached

    path = Path(arg).expanduser()
    if not path.exists():
        raise EdgeoptError(f"dataset path not found: {path}", f"check the path after '{kind}:'")
    if kind == "imagefolder":
        from edgeopt.data.imagefolder import load_imagefolder as load
    elif kind == "cifar10":
        from edgeopt.data.cifar10 import load_cifar10 as load
    else:
        from edgeopt.data.mnist import load_mnist as load
    return cached(kind, split, path, lambda: load(path, split))
