"""Bring models from other formats into edgeopt as trainable PyTorch modules.

``import_model`` reads a ``.tflite`` or ``.onnx`` file into a graph IR plus weights
(``tflite_import`` / ``onnx_import``) and wraps the resulting ``GraphModule`` in an
``EdgeModel`` whose metadata keeps the source's input interface (layout and shape).
"""

from __future__ import annotations

from pathlib import Path

import torch

from edgeopt.errors import EdgeoptError
from edgeopt.model import EdgeModel, InputSpec, ModelMeta

__all__ = ["DEFAULT_RANGE", "import_model"]

DEFAULT_RANGE = (0.0, 1.0)  # assumed when the file does not state its input range


def import_model(path: str | Path) -> EdgeModel:
    """Import a ``.tflite`` or ``.onnx`` image model; the module takes input in the file's own layout.

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
    shape = inputs[0]["shape"][1:]
    if len(shape) != 3 or any(s is None for s in shape):
        raise EdgeoptError(
            f"{path} input shape {inputs[0]['shape']} is not a fixed image shape",
            "edgeopt imports image models only for now (one input, N x H x W x C or N x C x H x W, fixed sizes)",
        )
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
    from edgeopt.interop.input_range import range_from_graph
    from edgeopt.interop.labels import class_names_from_file

    stated = range_from_graph(graph.ir, graph.weights)
    num_classes = int(out.shape[-1])
    meta = ModelMeta(
        input=InputSpec(shape=tuple(shape), layout=graph.layout, value_range=stated or DEFAULT_RANGE),
        num_classes=num_classes,
        arch={"kind": "graph", "ir": graph.ir},
        class_names=class_names_from_file(path, num_classes),
        lineage=[{"pass": "import", "source": str(path), "format": fmt,
                  "input_range": "graph" if stated else "assumed"}],  # fmt: skip
    )
    return EdgeModel(module, meta)
