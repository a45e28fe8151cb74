"""``imagefolder:PATH``: a directory or .zip holding ``train/<class>/*`` and ``test/<class>/*``.

Zip members are read in place (never extracted), after the archive path checks. A single
top-level folder wrapping ``train/`` and ``test/`` is accepted. Class names are the sorted
folder names of the train split (for CIFAR-10 that is its label order).
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError

from edgeopt.data.archive import zip_members
from edgeopt.data.dataset import ImageDataset
from edgeopt.errors import EdgeoptError
from edgeopt.progress import progress_iter

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}


def _split_files(paths: Iterable[PurePosixPath], split: str) -> dict[str, list[PurePosixPath]]:
    """{class: [member paths]} for ``<prefix>/split/<class>/<file>``."""
    by_class: dict[str, list[PurePosixPath]] = {}
    for p in paths:
        if p.suffix.lower() not in IMAGE_SUFFIXES or len(p.parts) < 3 or p.parts[-3] != split:
            continue
        by_class.setdefault(p.parts[-2], []).append(p)
    return by_class


def _decode(read: dict[PurePosixPath, bytes] | None, files: list[PurePosixPath], opener) -> np.ndarray:
    arrays = []
    for f in progress_iter(files, "decoding images"):
        try:
            with Image.open(opener(f)) as im:
                arr = np.asarray(im.convert("L") if im.mode in ("L", "1", "I;16") else im.convert("RGB"))
        except (UnidentifiedImageError, OSError) as e:
            raise EdgeoptError(f"cannot decode image {f} ({e})", "remove or replace the file") from e
        arrays.append(arr if arr.ndim == 3 else arr[..., None])
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        chans = {s[2] for s in shapes}
        if len(chans) > 1 and {s[:2] for s in shapes} == {arrays[0].shape[:2]}:
            arrays = [np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a for a in arrays]  # mixed gray/RGB
        else:
            a, b = sorted(shapes)[:2]
            raise EdgeoptError(f"images have different sizes ({a} and {b})", "resize them to one size first")
    return np.stack(arrays).astype(np.uint8)


def load_imagefolder(path: Path, split: str) -> ImageDataset:
    if not path.exists():
        raise EdgeoptError(f"dataset path not found: {path}", "check the path after 'imagefolder:'")
    if path.is_dir():
        members = [PurePosixPath(p.relative_to(path).as_posix()) for p in path.rglob("*") if p.is_file()]

        def opener(p: PurePosixPath):
            return path / p

        return _build(path, split, members, opener)
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as e:
        raise EdgeoptError(f"{path} is neither a directory nor a valid .zip", "give a folder or a zip file") from e
    with zf:
        infos = dict(zip_members(zf, path))

        def opener(p: PurePosixPath):
            return io.BytesIO(zf.read(infos[p]))

        return _build(path, split, list(infos), opener)


def _build(path: Path, split: str, members: list[PurePosixPath], opener) -> ImageDataset:
    train = _split_files(members, "train")
    if not train:
        raise EdgeoptError(
            f"no class folders under train/ in {path}", "lay it out as train/<class>/*.jpg, test/<class>/*.jpg"
        )
    classes = sorted(train)
    by_class = train if split == "train" else _split_files(members, split)
    if not by_class:
        raise EdgeoptError(f"no '{split}' split in {path}", f"add {split}/<class>/ folders")
    unknown = set(by_class) - set(classes)
    if unknown:
        raise EdgeoptError(f"{split}/ has classes not in train/: {sorted(unknown)[:3]}", "use the same class folders")
    files, labels = [], []
    for label, name in enumerate(classes):
        chosen = sorted(by_class.get(name, []))
        files += chosen
        labels += [label] * len(chosen)
    images = _decode(None, files, opener)
    return ImageDataset(images, np.asarray(labels, np.int64), classes, f"imagefolder:{path.name}:{split}")
