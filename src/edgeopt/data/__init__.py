"""Dataset specs: images (``digits``, ``imagefolder:PATH``, ``cifar10:DIR``, ``mnist:DIR``) and
arrays (``npz:PATH``, ``csv:PATH[#LABEL]``, ``mnist1d:[N]``, ``anomaly:[N]``), and ``digits-multi``
(digits with a class and a regression output, :mod:`edgeopt.data.heads`).

``load_dataset(spec, split)`` returns an :class:`ImageDataset`: uint8 images, or float arrays
of any sample shape (see :mod:`edgeopt.data.dataset`) with the task their labels are for.
Image files are decoded once and cached (see :mod:`edgeopt.data.cache`), and so is MNIST-1D;
``npz:`` arrays are memory-mapped where they can be (:mod:`edgeopt.data.arrays`).
"""

from __future__ import annotations

from pathlib import Path

from edgeopt.data.dataset import ImageDataset
from edgeopt.errors import EdgeoptError

__all__ = ["ImageDataset", "load_dataset", "SPLITS"]

SPLITS = ("train", "test")
KINDS = ("digits", "imagefolder", "cifar10", "mnist", "npz", "csv", "mnist1d", "anomaly", "digits-multi")
SPEC_HELP = (
    "use digits, imagefolder:PATH, cifar10:DIR, mnist:DIR, npz:PATH, csv:PATH, mnist1d:, anomaly: or digits-multi"
)


def with_label(spec: str, label: str | None) -> str:
    """``csv:PATH`` with the label column ``label`` (``csv:PATH#LABEL``); other specs refuse a label."""
    if label is None:
        return spec
    if not spec.startswith("csv:"):
        raise EdgeoptError(f"--label names a CSV column, but the data is '{spec}'", "drop --label or give csv:PATH")
    return f"{spec.split('#', 1)[0]}#{label}"


def _count(kind: str, arg: str, default: int) -> int:
    if not arg:
        return default
    try:
        return int(arg)
    except ValueError as e:
        raise EdgeoptError(f"'{kind}:{arg}': the part after ':' is a sample count", f"e.g. {kind}:{default}") from e


def load_dataset(spec: str, split: str = "train", label: str | None = None) -> ImageDataset:
    """Load one split of the dataset named by ``spec`` (see module docstring).

    ``label`` names a ``csv:`` file's label column (the same as ``csv:PATH#LABEL``).
    """
    if split not in SPLITS:
        raise EdgeoptError(f"unknown split '{split}'", "use train or test")
    spec = with_label(spec, label)
    kind, _, arg = spec.partition(":")
    if kind == "digits" and not arg:
        from edgeopt.data.digits import load_digits_split

        return load_digits_split(split)
    if kind == "digits-multi" and not arg:
        from edgeopt.data.heads import load_digits_multi

        return load_digits_multi(split)
    if kind == "mnist1d":
        from edgeopt.data.cache import cached
        from edgeopt.data.mnist1d import DEFAULT_SAMPLES, load_mnist1d

        n = _count(kind, arg, DEFAULT_SAMPLES)
        return cached("mnist1d", split, None, lambda: load_mnist1d(split, n), key=f"mnist1d-0.0.2-{n}")
    if kind == "anomaly":
        from edgeopt.data.anomaly import DEFAULT_TRAIN, load_anomaly

        return load_anomaly(split, _count(kind, arg, DEFAULT_TRAIN))
    if kind not in ("imagefolder", "cifar10", "mnist", "npz", "csv") or not arg:
        raise EdgeoptError(f"unknown dataset spec '{spec}'", SPEC_HELP)
    from edgeopt.data.cache import cached

    column = None
    if kind == "csv" and "#" in arg:
        arg, column = arg.split("#", 1)
    path = Path(arg).expanduser()
    if not path.exists():
        raise EdgeoptError(f"dataset path not found: {path}", f"check the path after '{kind}:'")
    if kind == "npz":
        from edgeopt.data.arrays import load_npz

        return load_npz(path, split)
    if kind == "csv":
        from edgeopt.data.arrays import load_csv

        return load_csv(path, split, column)
    if kind == "imagefolder":
        from edgeopt.data.imagefolder import load_imagefolder as load
    elif kind == "cifar10":
        from edgeopt.data.cifar10 import load_cifar10 as load
    else:
        from edgeopt.data.mnist import load_mnist as load
    return cached(kind, split, path, lambda: load(path, split))
