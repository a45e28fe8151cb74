"""Bring models from other formats into edgeopt as trainable PyTorch modules.

``import_model`` reads a ``.tflite`` or ``.onnx`` file into a graph IR plus weights
(``tflite_import`` / ``onnx_import``) and wraps the resulting ``GraphModule`` in an
``EdgeModel`` whose metadata keeps the source's input interface (layout and shape).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from edgeopt.errors import EdgeoptError
from edgeopt.model import EdgeModel, InputSet, InputSpec, ModelMeta, OutputSpec, layout_for_rank

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


def import_model(
    path: str | Path, dequantize: bool = False, input_shape: tuple[int, ...] | None = None
) -> EdgeModel:
    """Import a ``.tflite`` or ``.onnx`` model; the module takes input in the file's own layout.

    Inputs may be flat vectors, sequences or images with a dynamic batch; ``input_shape`` (no batch)
    fills free dimensions (:func:`fill_input_shape`).

    A quantized .tflite (full-integer int8, or hybrid int8-weight ops) keeps its quantization as
    LiteRT runs it (:mod:`edgeopt.interop.tflite_int8`) unless ``dequantize`` (a plain float model);
    the lineage's ``quantization`` says what was kept or dropped. The module always takes and returns
    real values. The input interface (layout, range, classes) is the one edgeopt embedded in its own
    artifacts (:mod:`edgeopt.interop.embedded`) when the file has it; else the range comes from an
    int8 input's quantization parameters or from normalisation ops at the graph's start (the
    lineage's ``input_range`` says ``graph``), else 0..1 is assumed (``assumed``); class names from
    the file where it carries them (:mod:`edgeopt.interop.labels`).
    """
    from edgeopt.interop.graph import GraphModule

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".tflite":
        from edgeopt.interop.tflite_import import read_tflite

        graph, fmt = read_tflite(path, dequantize=dequantize), "tflite"
    elif suffix == ".onnx":
        from edgeopt.interop.onnx_import import read_onnx

        graph, fmt = read_onnx(path), "onnx"
    else:
        raise EdgeoptError(f"cannot import '{path.suffix or path.name}' files", "give a .tflite or .onnx file")

    inputs = graph.ir["inputs"]
    if len(inputs) > 1 and input_shape is not None:
        raise EdgeoptError(
            f"{path} has {len(inputs)} inputs; --input-shape fills a single-input model's shape",
            "export the graph with fixed sizes besides the batch",
        )
    if len(inputs) > 1 and graph.quant.kind != "float":
        raise EdgeoptError(
            f"{path} is a quantized model with {len(inputs)} inputs; edgeopt imports multi-input float graphs",
            "import the float model, or one with a single input",
        )
    shapes = [fill_input_shape(path, i["shape"], input_shape) for i in inputs]
    shape = shapes[0]
    module = GraphModule(graph.ir)
    module.load_state_dict(graph.weights, strict=True)
    module.eval()
    try:  # one dry run: proves the graph executes and gives the output width
        with torch.no_grad():
            out = module(*(torch.zeros(1, *s) for s in shapes))
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise EdgeoptError(
            f"{path}: the imported graph does not run ({first})",
            "the model uses a construct edgeopt mis-translates; please report it",
        ) from e
    widths = [int(math.prod(o.shape[1:])) for o in out] if isinstance(out, tuple) else None
    rank_layout = graph.layout if len(shape) == 3 else layout_for_rank(len(shape), graph.layout == "NCHW")
    from edgeopt.interop.input_range import range_from_graph, range_from_quantization
    from edgeopt.interop.labels import class_names_from_file

    q = graph.quant
    if q.input_quant is not None:
        stated = range_from_quantization(*q.input_quant, "int8")
    elif len(inputs) == 1:
        stated = range_from_graph(graph.ir, graph.weights)
    else:  # a graph's normalisation prefix is read for a single input only
        stated = None
    num_classes = sum(widths) if widths is not None else int(out.shape[-1])
    layout = rank_layout
    class_names = class_names_from_file(path, num_classes) if widths is None else None
    embedded = _embedded_input(path, [tuple(s) for s in shapes], num_classes)
    outputs = None
    if widths is not None:  # a multi-output graph: one record per output (its own, when edgeopt embedded it)
        outputs = graph_outputs(path, widths, embedded)
        embedded = embedded if embedded is not None and embedded.outputs == outputs else None
    # named as the file names them (TFLite's signature prefix dropped: litert-torch's "args_0", "args_1", ...)
    names = [str(i.get("source") or i["name"]).removeprefix("serving_default_") for i in inputs]
    if len(inputs) > 1:  # a multi-input graph: one spec per input, named as the file names its inputs
        spec: InputSpec | InputSet = InputSet(names, [InputSpec(tuple(s), graph.layout if len(s) == 3 else
                                                                layout_for_rank(len(s), graph.layout == "NCHW"),
                                                                DEFAULT_RANGE) for s in shapes])  # fmt: skip
    if embedded is not None:  # edgeopt's own artifact: its record says how it is fed
        if len(inputs) > 1:
            spec = embedded.input
        else:
            layout, stated = embedded.input.layout, embedded.input.value_range
        class_names = embedded.class_names or class_names
    step = {"pass": "import", "source": str(path), "format": fmt,
            "input_range": "embedded" if embedded else "graph" if stated else "assumed"}  # fmt: skip
    if q.kind != "float":
        from edgeopt.interop.tflite_int8 import describe

        step["quantization"] = {**q.to_json(), "note": describe(q)}
    if len(inputs) == 1:
        spec = InputSpec(shape=tuple(shape), layout=layout, value_range=stated or DEFAULT_RANGE)
    meta = ModelMeta(
        input=spec,
        num_classes=num_classes,
        arch={"kind": "graph", "ir": graph.ir},
        class_names=class_names,
        lineage=[step],
        task="multi" if outputs is not None else embedded.task if embedded is not None else "classification",
        outputs=outputs,  # an autoencoder stays one, a multi-output model keeps each output's task
    )
    if embedded is not None and len(inputs) == 1 and embedded.input.mean is not None:
        meta.input.mean, meta.input.std = embedded.input.mean, embedded.input.std
    return EdgeModel(module, meta)


def graph_outputs(path: Path, widths: list[int], embedded: ModelMeta | None) -> list[OutputSpec]:
    """The records of a multi-output graph's outputs (``widths`` values per sample each, in the graph's order).

    An edgeopt artifact's embedded record gives each output's name, task and weight when its widths are
    these; a graph from elsewhere gets one classification record per output, named as the ``.onnx`` file
    names its outputs (``output_<i>`` for a ``.tflite``): ``eval`` then scores each by accuracy unless
    the record is edited (an output's task is not in the graph).
    """
    if embedded is not None and embedded.outputs is not None and [o.width for o in embedded.outputs] == widths:
        return embedded.outputs
    names = [f"output_{i}" for i in range(len(widths))]
    if path.suffix.lower() == ".onnx":
        import onnx

        graph_names = [o.name for o in onnx.load(str(path), load_external_data=False).graph.output]
        if len(graph_names) == len(widths) and len(set(graph_names)) == len(widths):
            names = graph_names
    return [OutputSpec(n, "classification", w) for n, w in zip(names, widths, strict=True)]


def input_shapes(meta: ModelMeta) -> list[tuple[int, ...]]:
    """Each input's sample shape (one for a single-input model). Pure."""
    if isinstance(meta.input, InputSet):
        return list(meta.input.shapes)
    return [tuple(meta.input.shape)]


def _embedded_input(path: Path, shapes: list[tuple[int, ...]], num_classes: int) -> ModelMeta | None:
    """The metadata edgeopt embedded in its own artifact, when it describes this graph's input; else None.

    Why: litert-torch keeps PyTorch's NCHW input, and for one channel it feeds the input through a
    RESHAPE rather than a TRANSPOSE, so the graph alone cannot tell a 1x8x8 image from an 8x8x1 one.
    """
    from edgeopt.interop.embedded import read_embedded

    try:
        record = read_embedded(path)
        meta = ModelMeta.from_json(record) if record else None
    except EdgeoptError:
        return None  # a foreign or damaged record: the graph's own facts still hold
    if meta is None or input_shapes(meta) != shapes or meta.num_classes != num_classes:
        return None
    return meta
