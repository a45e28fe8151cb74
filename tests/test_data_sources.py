"""Array data sources (issue 14): npz (incl. memory-mapped), csv, mnist1d, synthetic anomaly windows.

All on small files the tests write; no ../shared data and no downloads.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from edgeopt.data import load_dataset
from edgeopt.data.dataset import ImageDataset, RowView
from edgeopt.errors import EdgeoptError
from edgeopt.model import InputSpec


def test_npz_named_splits(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x_tr, x_te = rng.normal(size=(30, 2, 16)).astype(np.float32), rng.normal(size=(10, 2, 16)).astype(np.float32)
    y_tr, y_te = rng.integers(0, 3, 30), rng.integers(0, 3, 10)
    y_tr[0] = 2  # three classes present
    np.savez(tmp_path / "d.npz", x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
    tr, te = load_dataset(f"npz:{tmp_path / 'd.npz'}", "train"), load_dataset(f"npz:{tmp_path / 'd.npz'}", "test")
    assert tr.task == "classification" and tr.class_names == ["0", "1", "2"]
    assert tr.sample_shape == (2, 16) and not tr.is_image
    np.testing.assert_array_equal(np.asarray(te.images), x_te)
    np.testing.assert_array_equal(te.labels, y_te)


def test_npz_seeded_split_is_reproducible_disjoint_and_complete(tmp_path: Path) -> None:
    x = np.arange(50, dtype=np.float32)[:, None] * np.ones((1, 4), np.float32)
    y = np.linspace(0, 1, 50).astype(np.float32)  # real-valued: regression
    np.savez(tmp_path / "xy.npz", x=x, y=y)
    spec = f"npz:{tmp_path / 'xy.npz'}"
    tr, te, tr2 = load_dataset(spec, "train"), load_dataset(spec, "test"), load_dataset(spec, "train")
    assert tr.task == "regression" and len(tr) == 40 and len(te) == 10
    ids_tr, ids_te = np.asarray(tr.images)[:, 0], np.asarray(te.images)[:, 0]
    assert set(ids_tr).isdisjoint(ids_te) and sorted({*ids_tr, *ids_te}) == list(range(50))
    np.testing.assert_array_equal(np.asarray(tr.images), np.asarray(tr2.images))
    assert not np.array_equal(ids_te, np.arange(40, 50))  # shuffled, not the tail
    np.testing.assert_allclose(tr.labels, y[ids_tr.astype(int)])  # labels travel with their samples


def test_uncompressed_npz_and_npy_folder_are_memory_mapped(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(64, 8)).astype(np.float32), rng.integers(0, 2, 64)
    np.savez(tmp_path / "plain.npz", x=x, y=y)
    np.savez_compressed(tmp_path / "packed.npz", x=x, y=y)
    (tmp_path / "dir").mkdir()
    np.save(tmp_path / "dir" / "x.npy", x)
    np.save(tmp_path / "dir" / "y.npy", y)
    plain = load_dataset(f"npz:{tmp_path / 'plain.npz'}", "train")
    folder = load_dataset(f"npz:{tmp_path / 'dir'}", "train")
    packed = load_dataset(f"npz:{tmp_path / 'packed.npz'}", "train")
    assert isinstance(plain.images, RowView) and isinstance(plain.images.base, np.memmap)
    assert isinstance(folder.images, RowView) and isinstance(folder.images.base, np.memmap)
    assert isinstance(packed.images, np.ndarray) and not isinstance(packed.images, np.memmap)
    for ds in (plain, folder):
        np.testing.assert_array_equal(np.asarray(ds.images), packed.images)
        np.testing.assert_array_equal(ds.labels, packed.labels)
    # a subset of a memory map stays lazy, and reads the right rows in the asked order
    sub = plain.take(5, seed=3)
    assert isinstance(sub.images, RowView)
    np.testing.assert_array_equal(sub.images[[3, 0]], np.asarray(packed.take(5, seed=3).images)[[3, 0]])


def test_rowview_indexing() -> None:
    base = np.arange(20, dtype=np.float32).reshape(10, 2)
    v = RowView(base, np.array([7, 2, 5]))
    assert v.shape == (3, 2) and len(v) == 3 and v.dtype == np.float32
    np.testing.assert_array_equal(v[[2, 0]], base[[5, 7]])
    np.testing.assert_array_equal(v[1:], base[[2, 5]])
    np.testing.assert_array_equal(v[0], base[7])


def test_npz_refuses_pickles_and_wrong_names(tmp_path: Path) -> None:
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}, {"b": 2}], dtype=object), y=np.array([0, 1]))
    with pytest.raises(EdgeoptError, match="without pickles|Python objects"):
        load_dataset(f"npz:{tmp_path / 'obj.npz'}", "train")
    np.savez(tmp_path / "names.npz", features=np.zeros((4, 2)), target=np.zeros(4))
    with pytest.raises(EdgeoptError, match="expected x_train"):
        load_dataset(f"npz:{tmp_path / 'names.npz'}", "train")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(EdgeoptError, match="not a .npz"):
        load_dataset(f"npz:{tmp_path / 'bad.npz'}", "train")
    with zipfile.ZipFile(tmp_path / "empty.npz", "w"):
        pass
    with pytest.raises(EdgeoptError):
        load_dataset(f"npz:{tmp_path / 'empty.npz'}", "train")


def _write_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def test_csv_label_column_and_tasks(tmp_path: Path) -> None:
    rows = [f"{i * 0.5},{i % 3},{'cat' if i % 2 else 'dog'}" for i in range(20)]
    t = _write_csv(tmp_path / "t.csv", "a,b,kind", rows)
    cls = load_dataset(f"csv:{t}", "train", label="kind")  # text labels: classes by sorted name
    assert cls.task == "classification" and cls.class_names == ["cat", "dog"] and cls.sample_shape == (2,)
    f = _write_csv(tmp_path / "f.csv", "a,b,c,price", [f"{i * 0.5},{i % 3},1,{i * 1.25}" for i in range(20)])
    reg = load_dataset(f"csv:{f}#price", "train")
    assert reg.task == "regression" and reg.labels.dtype == np.float32 and reg.sample_shape == (3,)
    g = _write_csv(tmp_path / "g.csv", "a,b", [f"{i * 0.5},{i % 3}" for i in range(20)])
    ints = load_dataset(f"csv:{g}", "test", label="b")
    assert ints.task == "classification" and ints.class_names == ["0", "1", "2"] and len(ints) == 4
    # features and label of one row stay together
    x, y = np.asarray(reg.images), reg.labels
    np.testing.assert_allclose(y, x[:, 0] * 2.5, rtol=1e-6)


def test_csv_errors(tmp_path: Path) -> None:
    f = _write_csv(tmp_path / "t.csv", "a,b,c", ["1,2,3", "4,5,6"])
    with pytest.raises(EdgeoptError, match=r"no label column \(columns: a, b, c\).*--label"):
        load_dataset(f"csv:{f}", "train")
    with pytest.raises(EdgeoptError, match="no column 'price'"):
        load_dataset(f"csv:{f}", "train", label="price")
    g = _write_csv(tmp_path / "g.csv", "a,label", ["x,1", "y,0"])
    with pytest.raises(EdgeoptError, match="not numeric"):
        load_dataset(f"csv:{g}", "train")
    with pytest.raises(EdgeoptError, match="--label names a CSV column"):
        load_dataset("digits", "train", label="x")


def test_mnist1d_offline_and_reproducible(monkeypatch: pytest.MonkeyPatch) -> None:
    import mnist1d.data

    def no_download(*a, **k):  # the source must never download
        raise AssertionError("get_dataset() downloads")

    monkeypatch.setattr(mnist1d.data, "get_dataset", no_download)
    before = np.random.get_state()[1].copy()
    tr, te = load_dataset("mnist1d:200", "train"), load_dataset("mnist1d:200", "test")
    np.testing.assert_array_equal(np.random.get_state()[1], before)  # the global RNG is left alone
    assert tr.images.shape == (160, 1, 40) and te.images.shape == (40, 1, 40)
    assert tr.images.dtype == np.float32 and tr.num_classes == 10 and tr.task == "classification"
    assert len(np.unique(tr.labels)) == 10
    again = load_dataset("mnist1d:200", "train")  # from the cache: identical
    np.testing.assert_array_equal(np.asarray(again.images), np.asarray(tr.images))
    with pytest.raises(EdgeoptError, match="sample count"):
        load_dataset("mnist1d:many", "train")


def test_anomaly_windows() -> None:
    tr, te = load_dataset("anomaly:80", "train"), load_dataset("anomaly:80", "test")
    assert tr.images.shape == (80, 640) and te.images.shape == (40, 640) and tr.task == te.task == "anomaly"
    assert (tr.labels == 0).all() and te.labels.sum() == 20  # train: normal only; test: half abnormal
    np.testing.assert_array_equal(load_dataset("anomaly:80", "test").images, te.images)
    x = te.images.reshape(-1, 5, 128)
    # normal windows share the machine's hum: their spectra are closer to the normal mean than abnormal ones
    mean = tr.images.reshape(-1, 5, 128).mean(0)
    dist = ((x - mean) ** 2).mean((1, 2))
    assert dist[te.labels == 1].mean() > dist[te.labels == 0].mean()


def test_array_input_spec_shapes() -> None:
    spec = InputSpec(shape=(1, 40), layout="NCL")
    assert spec.to_model_input(np.zeros((3, 40), np.float32)).shape == (3, 1, 40)  # size-1 dims filled in
    with pytest.raises(EdgeoptError, match=r"model expects input of shape 1x40 \(NCL\) but the data has 32"):
        spec.to_model_input(np.zeros((3, 32), np.float32))
    with pytest.raises(EdgeoptError, match="not images"):
        _ = InputSpec(shape=(640,), layout="NC").image_shape
    with pytest.raises(EdgeoptError, match="does not fit layout"):
        InputSpec(shape=(3, 8), layout="NCHW")
    norm = InputSpec(shape=(2, 4), layout="NCL", mean=(1.0, 2.0), std=(2.0, 4.0))
    got = norm.to_model_input(np.stack([np.full((2, 4), [[3.0], [6.0]], np.float32)]))
    np.testing.assert_allclose(got[0], [[1.0] * 4, [1.0] * 4])
    ex = InputSpec(shape=(640,), layout="NC", value_range=(-1.0, 1.0)).example_batch(4)
    assert ex.shape == (4, 640) and ex.min() >= -1 and ex.max() <= 1


def test_dataset_refuses_non_numeric_samples() -> None:
    with pytest.raises(EdgeoptError, match="numeric arrays"):
        ImageDataset(np.array([["a"], ["b"]]), np.array([0, 1]), ["0", "1"], "strs")
