"""Dataset specs: digits, imagefolder (dir and zip), CIFAR-10 python batches, MNIST idx; cache; safety."""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeopt.data import load_dataset
from edgeopt.data.cache import cache_dir
from edgeopt.errors import EdgeoptError


def test_digits_split_is_deterministic_and_disjoint() -> None:
    a, b = load_dataset("digits", "train"), load_dataset("digits", "train")
    test = load_dataset("digits", "test")
    assert a.images.shape[1:] == (8, 8, 1) and a.images.dtype == np.uint8
    assert np.array_equal(a.labels, b.labels) and len(a) + len(test) == 1797
    assert a.images.max() == 255 and a.num_classes == 10


def _write_imagefolder(root: Path, classes: dict[str, int], size=(12, 10), mode="RGB") -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name, count in classes.items():
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(count):
                arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(arr).convert(mode).save(d / f"{i:04d}.png")


def test_imagefolder_directory_and_zip_agree(tmp_path: Path) -> None:
    root = tmp_path / "folder"
    _write_imagefolder(root, {"cat": 3, "ant": 2})
    zpath = tmp_path / "data.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for p in root.rglob("*.png"):
            zf.write(p, "wrapped/" + p.relative_to(root).as_posix())
    d = load_dataset(f"imagefolder:{root}", "test")
    z = load_dataset(f"imagefolder:{zpath}", "test")
    assert d.class_names == ["ant", "cat"] and d.images.shape == (5, 10, 12, 3)
    assert np.array_equal(d.images, z.images) and np.array_equal(d.labels, [0, 0, 1, 1, 1])


def test_second_load_comes_from_cache_until_the_source_changes(tmp_path: Path, monkeypatch) -> None:
    import edgeopt.data.imagefolder as imagefolder

    root = tmp_path / "folder"
    _write_imagefolder(root, {"a": 2, "b": 2}, mode="L")
    first = load_dataset(f"imagefolder:{root}", "train")
    assert first.images.shape[-1] == 1 and list(cache_dir().glob("imagefolder-train-*.npz"))

    def no_decoding(*_a, **_k):
        raise AssertionError("decoded again")

    monkeypatch.setattr(imagefolder, "load_imagefolder", no_decoding)
    again = load_dataset(f"imagefolder:{root}", "train")  # the decoder is never called
    assert np.array_equal(first.images, again.images)
    Image.new("L", (12, 10), 7).save(root / "train" / "a" / "0000.png")  # an edited source is re-decoded
    with pytest.raises(AssertionError, match="decoded again"):
        load_dataset(f"imagefolder:{root}", "train")


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda p: p.mkdir(), "no class folders under train/"),
        (lambda p: (p / "train" / "x").mkdir(parents=True), "no class folders under train/"),
        (lambda p: p.write_bytes(b"not a zip"), "neither a directory nor a valid .zip"),
    ],
)
def test_imagefolder_bad_layouts(tmp_path: Path, setup, message: str) -> None:
    target = tmp_path / "ds"
    setup(target)
    with pytest.raises(EdgeoptError, match=message):
        load_dataset(f"imagefolder:{target}", "train")


def test_imagefolder_corrupt_image_names_the_file(tmp_path: Path) -> None:
    root = tmp_path / "folder"
    _write_imagefolder(root, {"a": 1})
    (root / "train" / "a" / "bad.png").write_bytes(b"garbage")
    with pytest.raises(EdgeoptError, match="cannot decode image .*bad.png"):
        load_dataset(f"imagefolder:{root}", "train")


def test_zip_with_parent_traversal_is_refused(tmp_path: Path) -> None:
    zpath = tmp_path / "evil.zip"
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, "PNG")
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("train/a/0.png", buf.getvalue())
        zf.writestr("../../escape/train/a/1.png", buf.getvalue())
    with pytest.raises(EdgeoptError, match="unsafe path"):
        load_dataset(f"imagefolder:{zpath}", "train")


def _cifar_batch(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"x",
        b"labels": [int(v) for v in rng.integers(0, 10, n)],
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [b"f.png"] * n,
    }


def test_cifar10_python_batches_from_folder_and_tarball(tmp_path: Path) -> None:
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    for i in range(1, 3):
        (d / f"data_batch_{i}").write_bytes(pickle.dumps(_cifar_batch(4, i), protocol=2))
    (d / "test_batch").write_bytes(pickle.dumps(_cifar_batch(3, 9), protocol=2))
    train = load_dataset(f"cifar10:{tmp_path}", "train")
    assert train.images.shape == (8, 32, 32, 3) and train.class_names[0] == "airplane"
    raw = _cifar_batch(3, 9)[b"data"][0]
    test = load_dataset(f"cifar10:{d}", "test")
    assert np.array_equal(test.images[0, :, :, 0].ravel(), raw[:1024])  # red plane first, row-major
    tgz = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(tgz, "w:gz") as tf:
        tf.add(d, arcname="cifar-10-batches-py")
    assert np.array_equal(load_dataset(f"cifar10:{tgz}", "test").images, test.images)


def test_cifar10_refuses_pickled_code(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(EdgeoptError, match="refusing to load builtins.print"):
        load_dataset(f"cifar10:{tmp_path}", "test")


def test_tarball_with_symlink_is_refused(tmp_path: Path) -> None:
    tgz = tmp_path / "evil.tar.gz"
    with tarfile.open(tgz, "w:gz") as tf:
        info = tarfile.TarInfo("cifar-10-batches-py/test_batch")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tf.addfile(info)
    with pytest.raises(EdgeoptError, match="link"):
        load_dataset(f"cifar10:{tgz}", "test")


def _idx(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def test_mnist_idx_plain_and_gzip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.array([1, 2, 3, 4, 5], np.uint8)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx(imgs)))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx(labels))
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(_idx(imgs[:2]))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx(labels[:2]))
    train = load_dataset(f"mnist:{tmp_path}", "train")
    assert train.images.shape == (5, 28, 28, 1) and np.array_equal(train.images[..., 0], imgs)
    assert list(train.labels) == [1, 2, 3, 4, 5]
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(_idx(imgs[:2])[:-10])
    with pytest.raises(EdgeoptError, match="truncated"):
        load_dataset(f"mnist:{tmp_path}", "test")


@pytest.mark.parametrize("spec", ["nope", "imagefolder:", "cifar10"])
def test_unknown_specs(spec: str) -> None:
    with pytest.raises(EdgeoptError, match="unknown dataset spec"):
        load_dataset(spec)


def test_missing_path() -> None:
    with pytest.raises(EdgeoptError, match="dataset path not found"):
        load_dataset("imagefolder:/nonexistent/dir")
