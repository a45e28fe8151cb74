"""Bring models from other formats into edgeopt as trainable PyTorch modules.

``import_model`` reads a ``.tflite`` or ``.onnx`` file into a graph IR plus weights
(``tflite_import`` / ``onnx_import``) and wraps the resulting ``GraphModule`` in an
``EdgeModel`` whose metadata keeps the source's input interface (layout and shape).
"""

from __future__ import annotations

from pathlib import Path

import torch

from edgeopt.errors import EdgeoptError
from edgeopt.model import EdgeModel, InputSpec, ModelMeta, layout_for_rank

__all__ = ["DEFAULT_RANGE", "import_model"]

DEFAULT_RANGE = (0.0, 1.0)  # assumed when the file does not state its input range


def fill_input_shape(path: Path, stated: list[int | None], given: tuple[int, ...] | None) -> list[int]:
    """The input shape without the batch: the file's, its free (None) dimensions filled from ``given``.

    ``given`` (``--input-shape``) excludes the batch and must agree with the file's fixed sizes. A
    flat vector (F), a sequence (C, L) or an image/spectrogram (3 dims) is accepted. Pure.
    """
    shape = list(stated[1:])
    if given is not None:
        fixed = [(s, g) for s, g in zip(shape, given, strict=False) if s is not None and s > 0]
        if len(given) != len(shape) or any(s != g for s, g in fixed):
            raise EdgeoptError(
                f"--input-shape {','.join(map(str, given))} does not fit {path.name}'s input {stated}",
                "give the sizes without the batch, the file's fixed sizes unchanged",
            )
        shape = list(given)
    if not 1 <= len(shape) <= 3:
        raise EdgeoptError(
            f"{path} input shape {stated} has {len(shape)} dimensions besides the batch",
            "edgeopt imports flat vectors (N x F), sequences (N x C x L) and images/spectrograms (4 dims)",
        )
    if any(s is None or s < 1 for s in shape):
        raise EdgeoptError(
            f"{path} input shape {stated} has a free dimension besides the batch",
            "fix it with --input-shape (sizes without the batch, e.g. --input-shape 1,40)",
        )
    return [int(s) for s in shape]


def import_model(path: str | Path, input_shape: tuple[int, ...] | None = None) -> EdgeModel:
    """Import a ``.tflite`` or ``.onnx`` model; the module takes input in the file's own layout.

    Inputs may be flat vectors, sequences or images with a dynamic batch; ``input_shape`` (no batch)
    fills free dimensions (:func:`fill_input_shape`).

    The input range comes from normalisation ops at the graph's start where it has them (the
    lineage's ``input_range`` says ``graph``), else 0..1 is assumed (``assumed``); class names
    from the file where it carries them (:mod:`edgeopt.interop.labels`).
    """
    from edgeopt.interop.graph import GraphModule

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".tflite":
        from edgeopt.interop.tflite_import import read_tflite

        graph, fmt = read_tflite(path), "tflite"
    elif suffix == ".onnx":
        from edgeopt.interop.onnx_import import read_onnx

        graph, fmt = read_onnx(path), "onnx"
    else:
        raise EdgeoptError(f"cannot import '{path.suffix or path.name}' files", "give a .tflite or .onnx file")

    inputs = graph.ir["inputs"]
    if len(inputs) != 1:
        raise EdgeoptError(
            f"{path} has {len(inputs)} inputs; edgeopt imports single-input models",
            "export the model with one image input",
        )
    shape = fill_input_shape(path, inputs[0]["shape"], input_shape)
    module = GraphModule(graph.ir)
    module.load_state_dict(graph.weights, strict=True)
    module.eval()
    try:  # one dry run: proves the graph executes and gives the output width
        with torch.no_grad():
            out = module(torch.zeros(1, *shape))
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise EdgeoptError(
            f"{path}: the imported graph does not run ({first})",
            "the model uses a construct edgeopt mis-translates; please report it",
        ) from e
    if isinstance(out, tuple):
        out = out[0]
    rank_layout = graph.layout if len(shape) == 3 else layout_for_rank(len(shape), graph.layout == "NCHW")
    from edgeopt.interop.input_range import range_from_graph
    from edgeopt.interop.labels import class_names_from_file

    stated = range_from_graph(graph.ir, graph.weights)
    num_classes = int(out.shape[-1])
    meta = ModelMeta(
        input=InputSpec(shape=tuple(shape), layout=rank_layout, value_range=stated or DEFAULT_RANGE),
        num_classes=num_classes,
        arch={"kind": "graph", "ir": graph.ir},
        class_names=class_names_from_file(path, num_classes),
        lineage=[{"pass": "import", "source": str(path), "format": fmt,
                  "input_range": "graph" if stated else "assumed"}],  # fmt: skip
    )
    return EdgeModel(module, meta)
