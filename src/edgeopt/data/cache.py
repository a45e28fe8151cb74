"""Decoded-array cache: a second load of the same files is a memory-mapped-speed ``np.load``.

Keyed by loader, split and the source's path, size and mtime, so an edited source is
re-decoded. Stored as ``.npz`` without pickles (``allow_pickle=False``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgeopt.data.dataset import ImageDataset
from edgeopt.fileio import atomic_path

CACHE_VERSION = 1


def cache_dir() -> Path:
    return Path(os.environ.get("EDGEOPT_CACHE", Path.home() / ".cache" / "edgeopt")) / "datasets"


def _fingerprint(source: Path) -> str:
    parts = []
    paths = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    for p in paths[:200000]:
        st = p.stat()
        parts.append(f"{p}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]


def cached(
    loader: str, split: str, source: Path | None, decode: Callable[[], ImageDataset], key: str | None = None
) -> ImageDataset:
    """Return ``decode()``'s result, from the cache when the source is unchanged.

    ``source`` is a file or folder whose size and mtime key the entry; a generated dataset
    (no source) gives its own ``key`` instead (its generator's parameters and version).
    """
    ident = _fingerprint(source.resolve()) if source is not None else hashlib.sha256(str(key).encode()).hexdigest()[:20]
    name = f"{loader}-{split}-{ident}-v{CACHE_VERSION}"
    path = cache_dir() / f"{name}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                task = str(z["task"]) if "task" in z.files else "classification"
                return ImageDataset(z["images"], z["labels"], [str(c) for c in z["class_names"]], str(z["name"]), task)
        except (OSError, ValueError, KeyError):
            path.unlink(missing_ok=True)  # a corrupt cache entry is re-decoded
    ds = decode()
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, images=np.asarray(ds.images), labels=ds.labels, class_names=np.array(ds.class_names),
                     name=ds.name, task=ds.task)  # fmt: skip
    except OSError:
        pass  # a read-only cache location only costs speed
    return ds
