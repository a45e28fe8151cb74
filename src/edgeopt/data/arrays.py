"""Array data: ``npz:PATH`` (a ``.npz`` file or a folder of ``.npy`` files) and ``csv:PATH``.

``npz:PATH`` reads arrays ``x_train``, ``y_train``, ``x_test``, ``y_test``, or ``x`` and ``y``
split reproducibly (a seeded permutation, ``TEST_FRACTION`` to test). Arrays are read without
pickles (``allow_pickle=False``). Arrays larger than memory stay on disk: a folder of ``.npy``
files is opened with ``np.load(mmap_mode='r')``, and so are the members of an *uncompressed*
``.npz`` (``np.savez``; each member is memory-mapped at its offset in the zip); a seeded split
of a memory map is a lazy :class:`~edgeopt.data.dataset.RowView`. A compressed ``.npz``
(``np.savez_compressed``) is read into memory.

``csv:PATH`` reads a header row and numeric columns; the label column is named by ``label``
(``--label COLUMN``; default: a column named ``label``, ``target`` or ``y``), split like ``x``/``y``.

The task the labels are for is read from them: integer labels are classes (names from
``class_names`` in the npz when present, else ``0..K-1``), float labels are regression
targets; an ``anomaly`` array (or ``task`` naming it) marks anomaly flags (1 = abnormal).

Multi-output data has one label array per output instead of ``y``: ``y_train_<head>`` and
``y_test_<head>`` (or ``y_<head>`` beside ``x``), heads in the file's order (or as a ``heads``
array names them), loss weights from an optional ``head_weights`` array, class names from
``class_names_<head>`` (:mod:`edgeopt.data.heads`).

Multi-input data has one sample array per input instead of ``x``: ``x_train_<input>`` and
``x_test_<input>`` (or ``x_<input>`` beside ``y``), inputs in the file's order (or as an ``inputs``
array names them); they are joined into one structured sample array, a field per input
(:class:`edgeopt.model.InputSet`), read into memory.
"""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.data.dataset import ImageDataset, RowView
from edgeopt.errors import EdgeoptError

TEST_FRACTION = 0.2
SPLIT_SEED = 0
LABEL_COLUMNS = ("label", "target", "y")


def _npz_member_memmap(path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray | None:
    """A read-only memory map of one stored (uncompressed) ``.npy`` member of a zip, else None."""
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
        if local[:4] != b"PK\x03\x04":
            return None
        name_len = int.from_bytes(local[26:28], "little")
        extra_len = int.from_bytes(local[28:30], "little")
        start = info.header_offset + 30 + name_len + extra_len
        f.seek(start)
        try:
            fmt = np.lib.format
            version = fmt.read_magic(f)
            read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, fortran, dtype = read_header(f)
        except ValueError:
            return None
        if dtype.hasobject:
            raise EdgeoptError(f"{path}: '{info.filename}' holds Python objects", "save plain numeric arrays")
        offset = f.tell()
    if int(np.prod(shape)) == 0:
        return None
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


def read_arrays(path: Path, mmap: bool = True) -> dict[str, Any]:
    """Every array in a ``.npz`` file or a folder of ``.npy`` files, memory-mapped where possible.

    No pickles are read (``allow_pickle=False``); an object array is refused in one line.
    Cost: reading the headers (memory-mapped) or the whole file (compressed members).
    """
    out: dict[str, Any] = {}
    try:
        if path.is_dir():
            files = sorted(path.glob("*.npy"))
            if not files:
                raise EdgeoptError(
                    f"no .npy files in {path}", "put x_train.npy, y_train.npy, ... (or x.npy, y.npy) there"
                )
            for f in files:
                out[f.stem] = np.load(f, mmap_mode="r" if mmap else None, allow_pickle=False)
            return out
        with zipfile.ZipFile(path) as zf:
            members = [i for i in zf.infolist() if i.filename.endswith(".npy")]
            lazy = {i.filename[:-4]: _npz_member_memmap(path, zf, i) for i in members} if mmap else {}
        with np.load(path, allow_pickle=False) as z:
            for key in z.files:
                out[key] = lazy.get(key) if lazy.get(key) is not None else z[key]
    except zipfile.BadZipFile as e:
        raise EdgeoptError(f"{path} is not a .npz file ({e})", "write it with np.savez") from e
    except ValueError as e:
        first = str(e).splitlines()[0]
        raise EdgeoptError(f"cannot read {path} without pickles ({first})", "save plain numeric arrays") from e
    return out


def split_indices(n: int, split: str, seed: int = SPLIT_SEED, test_fraction: float = TEST_FRACTION) -> np.ndarray:
    """Sorted indices of ``split`` in a seeded permutation of ``n`` samples (the last fraction is test). Pure."""
    order = np.random.default_rng(seed).permutation(n)
    n_test = max(1, int(round(n * test_fraction))) if n > 1 else 0
    idx = order[n - n_test :] if split == "test" else order[: n - n_test]
    return np.sort(idx)


def _labels_task(y: np.ndarray, stated: str | None) -> str:
    from edgeopt.data.heads import head_task

    return stated if stated is not None else head_task(y)


def _class_names(y_all: list[np.ndarray], given: Any) -> list[str]:
    if given is not None:
        return [str(c) for c in np.asarray(given).tolist()]
    top = max(int(np.max(y)) for y in y_all if len(y))
    return [str(i) for i in range(top + 1)]


def make_dataset(
    x: Any, y: np.ndarray, split_name: str, names: list[str], task: str, class_names: list[str]
) -> ImageDataset:
    """An ImageDataset of arrays (uint8 (N, H, W) images get a channel axis; others stay as they are)."""
    if isinstance(x, np.ndarray) and not isinstance(x, np.memmap) and x.dtype == np.uint8 and x.ndim == 3:
        x = x[..., None]  # grey images (N, H, W) -> (N, H, W, 1)
    if task == "classification" and len(y) and (np.min(y) < 0 or np.max(y) >= len(class_names)):
        raise EdgeoptError(f"{split_name}: labels outside 0..{len(class_names) - 1}", "labels must be 0..K-1")
    if task == "regression":
        names = names or ["target"]
    return ImageDataset(x, y, class_names if task != "regression" else names, split_name, task)


def _per_name_arrays(
    path: Path, arrays: dict[str, Any], stem: str, order_key: str, minimum: int
) -> tuple[list[str], str] | None:
    """The names of per-name arrays ``<stem>_train_<name>``/``<stem>_test_<name>`` (or ``<stem>_<name>``) and that
    prefix, in the file's order or as ``arrays[order_key]`` lists them; None when there are none. One line when
    they clash with a single ``<stem>``/``<stem>_train`` array, do not pair up, or are fewer than ``minimum``.
    Per-output labels (``y``, ``heads``) and per-input samples (``x``, ``inputs``) share this."""
    split_form = "x_train" in arrays if stem == "y" else any(k.startswith("x_train_") for k in arrays)
    prefix = f"{stem}_train_" if split_form else f"{stem}_"
    found = [k[len(prefix) :] for k in arrays if k.startswith(prefix) and k not in (f"{stem}_train", f"{stem}_test")]
    if not found:
        return None
    per, side, kind = ("input", "input", "sample") if stem == "x" else ("head", "output", "label")
    if stem in arrays or f"{stem}_train" in arrays:
        raise EdgeoptError(
            f"{path} has both a single {kind} array and per-{side} ones ({prefix}{found[0]})",
            f"keep one form: {stem}_train/{stem}_test, or {stem}_train_<{per}>/{stem}_test_<{per}> per {side}",
        )
    names = [str(n) for n in np.asarray(arrays[order_key]).tolist()] if order_key in arrays else found
    want = [f"{prefix}{n}" for n in names] + ([f"{stem}_test_{n}" for n in names] if split_form else [])
    missing = [k for k in want if k not in arrays]
    extra = [n for n in found if n not in names]
    if missing or extra or len(names) < minimum:
        what = (f"no {', '.join(missing)}" if missing else f"{', '.join(prefix + n for n in extra)} not in "
                f"'{order_key}'" if extra else "only one")  # fmt: skip
        fix = f"give {prefix}<{per}>" + (f" and {stem}_test_<{per}>" if split_form else "")
        fix += " for every output" if stem == "y" else " for two or more inputs"
        raise EdgeoptError(f"{path}: {side}s {names} and {kind} arrays do not match ({what})", fix)
    return names, prefix


def _npz_heads(path: Path, arrays: dict[str, Any]) -> tuple[list[str], str] | None:
    """The heads of multi-output npz arrays and their label prefix (``y_train_``/``y_``), or None."""
    return _per_name_arrays(path, arrays, "y", "heads", 1)


def _load_npz_multi(path: Path, split: str, arrays: dict[str, Any], heads: list[str], seed: int) -> ImageDataset:
    from edgeopt.data.heads import head_task, multi_dataset

    if "x_train" in arrays:
        if "x_test" not in arrays:
            raise EdgeoptError(f"{path} has x_train but no x_test", "save x_test and y_test_<head> too")
        x = arrays[f"x_{split}"]
        ys = {h: np.asarray(arrays[f"y_{split}_{h}"]) for h in heads}
        every = {h: [np.asarray(arrays[f"y_train_{h}"]), np.asarray(arrays[f"y_test_{h}"])] for h in heads}
    else:
        if "x" not in arrays:
            raise EdgeoptError(f"{path} has per-output labels but no x (or x_train, x_test)", "save the samples as x")
        base = arrays["x"]
        idx = split_indices(len(base), split, seed)
        x = RowView(base, idx) if isinstance(base, np.memmap) else base[idx]
        ys, every = {}, {}
        for h in heads:
            full = np.asarray(arrays[f"y_{h}"])
            if len(full) != len(base):
                raise EdgeoptError(f"{path}: x has {len(base)} samples but y_{h} has {len(full)}", "one per sample")
            ys[h], every[h] = full[idx], [full]
    for h, y in ys.items():
        if len(y) != len(x):
            raise EdgeoptError(f"{path}: x_{split} has {len(x)} samples but y_{split}_{h} has {len(y)}")
    widths = {h: max(int(v.max()) + 1 for v in every[h] if len(v)) for h in heads
              if head_task(ys[h]) == "classification"}  # fmt: skip
    names = {h: [str(c) for c in np.asarray(arrays[f"class_names_{h}"]).tolist()]
             for h in heads if f"class_names_{h}" in arrays}  # fmt: skip
    weights = np.asarray(arrays["head_weights"], np.float64).tolist() if "head_weights" in arrays else None
    if isinstance(x, np.ndarray) and not isinstance(x, np.memmap) and x.dtype == np.uint8 and x.ndim == 3:
        x = x[..., None]
    return multi_dataset(x, ys, f"npz:{path.name}:{split}", widths=widths, weights=weights, class_names=names)


def _npz_inputs(path: Path, arrays: dict[str, Any]) -> dict[str, Any]:
    """``arrays`` with a multi-input file's per-input samples joined into one structured ``x_train``/``x_test``
    (or ``x``): a field per input, in the file's order or as an ``inputs`` array names them. Unchanged for a
    single-input file. Per-input arrays are read into memory (the structured copy). One line on a mismatch."""
    found = _per_name_arrays(path, arrays, "x", "inputs", 2)
    if found is None:
        return arrays
    names, prefix = found
    split_form = prefix == "x_train_"
    out = {k: v for k, v in arrays.items() if not any(k == p + n for n in names for p in (prefix, "x_test_"))}
    for split in ("train", "test") if split_form else ("",):
        key = f"x_{split}" if split else "x"
        parts = [np.asarray(arrays[f"{key}_{n}"]) for n in names]
        if len({len(a) for a in parts}) != 1:
            sizes = ", ".join(f"{key}_{n}: {len(a)}" for n, a in zip(names, parts, strict=True))
            raise EdgeoptError(f"{path}: the inputs differ in sample count ({sizes})", "one row per sample in each")
        joined = np.empty(len(parts[0]), [(n, a.dtype, a.shape[1:]) for n, a in zip(names, parts, strict=True)])
        for n, a in zip(names, parts, strict=True):
            joined[n] = a
        out[key] = joined
    return out


def load_npz(path: Path, split: str, seed: int = SPLIT_SEED) -> ImageDataset:
    """One split of ``npz:PATH`` (see the module notes)."""
    arrays = _npz_inputs(path, read_arrays(path))
    multi = _npz_heads(path, arrays)
    if multi is not None:
        return _load_npz_multi(path, split, arrays, multi[0], seed)
    stated = None
    if "task" in arrays:
        stated = str(np.asarray(arrays["task"]).reshape(-1)[0])
    if {"x_train", "y_train", "x_test", "y_test"} <= arrays.keys():
        x, y = arrays[f"x_{split}"], np.asarray(arrays[f"y_{split}"])
        y_all = [np.asarray(arrays["y_train"]), np.asarray(arrays["y_test"])]
    elif {"x", "y"} <= arrays.keys():
        base, y_full = arrays["x"], np.asarray(arrays["y"])
        if len(base) != len(y_full):
            raise EdgeoptError(f"{path}: x has {len(base)} samples but y has {len(y_full)}", "one label per sample")
        idx = split_indices(len(base), split, seed)
        x = RowView(base, idx) if isinstance(base, np.memmap) else base[idx]
        y, y_all = y_full[idx], [y_full]
    else:
        raise EdgeoptError(
            f"{path} has arrays {sorted(arrays)}; expected x_train, y_train, x_test, y_test (or x and y)",
            "save them with np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)",
        )
    if len(x) != len(y):
        raise EdgeoptError(f"{path}: x_{split} has {len(x)} samples but y_{split} has {len(y)}")
    task = _labels_task(y, stated)
    names = _class_names(y_all, arrays.get("class_names")) if task == "classification" else []
    if task == "anomaly":
        names = ["normal", "anomaly"]
    targets = [str(t) for t in np.asarray(arrays["target_names"]).tolist()] if "target_names" in arrays else []
    return make_dataset(x, y, f"npz:{path.name}:{split}", targets, task, names)


def load_csv(path: Path, split: str, label: str | None = None, seed: int = SPLIT_SEED) -> ImageDataset:
    """One split of ``csv:PATH``: numeric feature columns and the ``label`` column (see the module notes).

    Cost: one parse of the whole file (numpy, in memory).
    """
    try:
        with open(path, newline="") as f:
            header = next(csv.reader(f), None)
    except (OSError, UnicodeDecodeError) as e:
        raise EdgeoptError(f"cannot read {path} as CSV ({e})", "give a text CSV file with a header row") from e
    if not header:
        raise EdgeoptError(f"{path} is empty", "give a CSV file with a header row")
    header = [h.strip() for h in header]
    if label is None:
        label = next((c for c in LABEL_COLUMNS if c in header), None)
        if label is None:
            raise EdgeoptError(
                f"{path} has no label column (columns: {', '.join(header[:12])}{', …' if len(header) > 12 else ''})",
                "name it with --label COLUMN",
            )
    if label not in header:
        raise EdgeoptError(
            f"{path} has no column '{label}' (columns: {', '.join(header[:12])}{', …' if len(header) > 12 else ''})",
            "name the label column with --label COLUMN",
        )
    col = header.index(label)
    raw = np.genfromtxt(path, delimiter=",", skip_header=1, dtype=str, ndmin=2)
    if raw.size == 0:
        raise EdgeoptError(f"{path} has a header but no rows", "add data rows")
    raw = np.char.strip(raw)
    y_text = raw[:, col]
    feats = np.delete(raw, col, axis=1)
    try:
        x = feats.astype(np.float32)
    except ValueError as e:
        raise EdgeoptError(f"{path}: a feature column is not numeric ({e})", "give numeric feature columns") from e
    try:
        y_num = y_text.astype(np.float64)
        integral = np.all(np.mod(y_num, 1) == 0) and all("." not in t and "e" not in t.lower() for t in y_text)
        if integral and y_num.min() >= 0:
            y: np.ndarray = y_num.astype(np.int64)
            names = [str(i) for i in range(int(y.max()) + 1)]
        else:
            y, names = y_num.astype(np.float32), [label]
    except ValueError:  # text labels are class names, sorted
        names = sorted(set(y_text.tolist()))
        y = np.searchsorted(np.array(names), y_text).astype(np.int64)
    idx = split_indices(len(x), split, seed)
    task = "classification" if y.dtype.kind == "i" else "regression"
    return make_dataset(x[idx], y[idx], f"csv:{path.name}:{split}", [label], task, names)
