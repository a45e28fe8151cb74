"""Class names a model file carries, where it carries them.

- ``.onnx``: a ``metadata_props`` entry named ``class_names``, ``classes``, ``labels`` or
  ``names``, holding a JSON list, a JSON object ``{"0": "cat", ...}``, a Python literal of
  either (Ultralytics writes ``{0: 'person', ...}``; read with ``ast.literal_eval``, which
  evaluates no code) or one name per line.
- ``.tflite``: a label file packed with the model (TFLite Model Metadata appends its
  associated files as a zip): a ``.txt`` member with one name per line.

Names are kept only when there is one per model output.
"""

from __future__ import annotations

import ast
import json
import zipfile
from pathlib import Path
from typing import Any

ONNX_KEYS = ("class_names", "classes", "labels", "names")
MAX_LABEL_FILE = 1 << 20


def parse_names(text: str) -> list[str] | None:
    """A list of class names from JSON, a Python literal (list or {index: name}) or lines; else None."""
    value: Any = None
    for parse in (json.loads, ast.literal_eval):
        try:
            value = parse(text)
            break
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
    if isinstance(value, dict):
        try:
            items = sorted((int(k), v) for k, v in value.items())
        except (TypeError, ValueError):
            return None
        if [k for k, _ in items] != list(range(len(items))):
            return None
        value = [v for _, v in items]
    if isinstance(value, list):
        return [str(v) for v in value] if all(isinstance(v, (str, int)) for v in value) else None
    if value is None or isinstance(value, str):
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        return lines if len(lines) > 1 else None
    return None


def _onnx_names(path: Path) -> list[str] | None:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # the importer reports a bad file itself
        return None
    props = {p.key: p.value for p in model.metadata_props}
    for key in ONNX_KEYS:
        if key in props:
            return parse_names(props[key])
    return None


def _tflite_names(path: Path, num_classes: int) -> list[str] | None:
    if not zipfile.is_zipfile(path):
        return None
    try:
        with zipfile.ZipFile(path) as zf:
            texts = [i for i in zf.infolist() if i.filename.lower().endswith(".txt") and i.file_size <= MAX_LABEL_FILE]
            texts.sort(key=lambda i: "label" not in i.filename.lower())
            for info in texts:
                lines = [ln.strip() for ln in zf.read(info).decode("utf-8", "replace").splitlines() if ln.strip()]
                if len(lines) == num_classes:
                    return lines
    except (zipfile.BadZipFile, OSError):
        return None
    return None


def class_names_from_file(path: str | Path, num_classes: int) -> list[str] | None:
    """The model file's class names, one per output, or None when it carries none."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        names = _onnx_names(path)
    elif suffix == ".tflite":
        names = _tflite_names(path, num_classes)
    else:
        return None
    if names is None or len(names) != num_classes or len(set(names)) != len(names):
        return None
    return names
