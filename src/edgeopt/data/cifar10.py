"""``cifar10:DIR``: the canonical CIFAR-10 python batches (``data_batch_1..5``, ``test_batch``).

DIR may be the extracted folder (or its parent) or ``cifar-10-python.tar.gz`` itself, which is
extracted safely into the cache. The batches are pickles; they are read with an unpickler
that only admits the numpy array types the format uses, so a hostile file cannot run code.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.data.archive import safe_extract_tar
from edgeopt.data.cache import cache_dir
from edgeopt.data.dataset import ImageDataset
from edgeopt.errors import EdgeoptError

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def read_batch(path: Path) -> dict[str, Any]:
    """One CIFAR python batch as {'data': uint8 (N, 3072), 'labels': [...]} (keys decoded)."""
    try:
        raw = _ArrayOnlyUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
        return {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}
    except (pickle.UnpicklingError, EOFError, AttributeError, ValueError, TypeError) as e:
        raise EdgeoptError(f"{path} is not a valid CIFAR-10 batch ({e})", "re-download the python version") from e


def _batch_dir(path: Path) -> Path:
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz", ".tar")):
        path = safe_extract_tar(path, cache_dir() / "cifar10-extracted" / path.name.split(".")[0])
    for cand in (path, path / "cifar-10-batches-py"):
        if (cand / "test_batch").is_file():
            return cand
    raise EdgeoptError(
        f"no CIFAR-10 python batches in {path}", "point to the folder holding data_batch_1..5, test_batch"
    )


def load_cifar10(path: Path, split: str) -> ImageDataset:
    if not path.exists():
        raise EdgeoptError(f"dataset path not found: {path}", "check the path after 'cifar10:'")
    d = _batch_dir(path)
    names = ["test_batch"] if split == "test" else sorted(p.name for p in d.glob("data_batch_*"))
    if not names:
        raise EdgeoptError(f"no data_batch_* files in {d}", "the train split is missing")
    data, labels = [], []
    for n in names:
        b = read_batch(d / n)
        arr = np.asarray(b["data"], dtype=np.uint8)
        if arr.ndim != 2 or arr.shape[1] != 3072:
            raise EdgeoptError(f"{d / n}: expected rows of 3072 bytes, got {arr.shape}", "re-download the batches")
        data.append(arr.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.asarray(b["labels"], dtype=np.int64))
    return ImageDataset(np.concatenate(data), np.concatenate(labels), list(CLASSES), f"cifar10:{split}")
