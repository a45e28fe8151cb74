"""``mnist:DIR``: MNIST-format idx files (``train-images-idx3-ubyte`` etc., gzipped or not).

Also reads Fashion-MNIST and other datasets in the same format.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from edgeopt.data.dataset import ImageDataset
from edgeopt.errors import EdgeoptError

_PREFIX = {"train": "train", "test": "t10k"}


def read_idx(path: Path) -> np.ndarray:
    """Parse one idx file (magic: 0, 0, dtype code 0x08 = uint8, ndim; then big-endian dims)."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise EdgeoptError(f"{path} is not an idx file of uint8", "re-download the MNIST files")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise EdgeoptError(f"{path} is truncated ({body.size} of {int(np.prod(dims))} values)", "re-download it")
    return body.reshape(dims)


def _find(d: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (d / name).is_file():
            return d / name
    raise EdgeoptError(f"missing {stem}[.gz] in {d}", "put the four MNIST idx files in that folder")


def load_mnist(path: Path, split: str) -> ImageDataset:
    if not path.is_dir():
        raise EdgeoptError(f"dataset folder not found: {path}", "check the path after 'mnist:'")
    images = read_idx(_find(path, f"{_PREFIX[split]}-images-idx3-ubyte"))
    labels = read_idx(_find(path, f"{_PREFIX[split]}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise EdgeoptError(f"MNIST files in {path} disagree: {images.shape} images, {labels.shape} labels")
    return ImageDataset(
        images[..., None].copy(), labels.astype(np.int64), [str(i) for i in range(10)], f"mnist:{split}"
    )
