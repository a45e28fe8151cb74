"""Where a bare artifact's input interface comes from: the file itself, an old sidecar, or flags.

An ``.onnx``, ``.tflite`` or ``.pte`` runs in its own runtime without anything beside it. Its
``ModelMeta`` (input shape, layout, value range, classes) is taken, in this order, from:

1. ``embedded``: the edgeopt record inside the artifact (``interop.embedded``);
2. ``sidecar``: ``<artifact>.json`` written by edgeopt before the record was embedded (still read);
3. ``graph``: a float ``.onnx``/``.tflite`` from elsewhere, parsed as ``edgeopt import`` parses it
   (its layout, unless its shape reads one way only; the range its normalisation ops state, class
   names it carries);
4. ``inferred``: the interface the runtime reports, for what the importer cannot read (integer
   inputs, ExecuTorch programs, ops it does not know). The shape is the runtime's input shape; the
   layout NHWC when the last dimension looks like channels (1, 3 or 4) and the first does not, NCHW
   in the opposite case, else the format's habit (TFLite NHWC, ONNX/ExecuTorch NCHW); the value
   range of an integer input is what its quantization represents (``interop.input_range``: TFLite's
   int8 ResNet-8 takes 0..255), of a float input 0..1 (assumed: say ``--input-range``); the classes
   are the output's width.

``InterfaceFlags`` (``--input-range``, ``--layout``, ``--classes``) override any of these.
Pure functions decide; ``stored_meta`` reads files, ``artifact_interface`` may parse the graph and
``inferred_meta`` runs the model once on zeros (for the output width).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgeopt.errors import EdgeoptError
from edgeopt.model import InputSpec, ModelMeta, refuse_multi_input

if TYPE_CHECKING:
    from edgeopt.runtimes.base import Runner

SOURCE_EMBEDDED = "embedded"
SOURCE_SIDECAR = "sidecar"
SOURCE_GRAPH = "graph"
SOURCE_INFERRED = "inferred"
DEFAULT_RANGE = (0.0, 1.0)  # a float input's range when nothing states it
_CHANNELS = (1, 3, 4)
_FORMAT_LAYOUT = {".tflite": "NHWC", ".onnx": "NCHW", ".pte": "NCHW"}


@dataclass(frozen=True)
class InterfaceFlags:
    """What the user states about the input: each field overrides the artifact's own (None keeps it)."""

    input_range: tuple[float, float] | None = None
    layout: str | None = None
    classes: int | list[str] | None = None


def shape_layout(shape: tuple[int, ...]) -> str | None:
    """The layout a one-sample image ``shape`` can only be read in, or None when both readings fit. Pure.

    NHWC when the last dimension looks like channels (1, 3 or 4) and the first does not, NCHW in
    the opposite case.
    """
    first, last = shape[0] in _CHANNELS, shape[-1] in _CHANNELS
    if last and not first:
        return "NHWC"
    if first and not last:
        return "NCHW"
    return None


def guess_layout(shape: tuple[int, ...], suffix: str) -> str:
    """NCHW or NHWC for a one-sample image ``shape`` of an artifact with ``suffix`` (NC / NCL for a
    flat or sequence input: PyTorch's layouts, which every converter edgeopt uses keeps). Pure."""
    if len(shape) != 3:
        from edgeopt.model import layout_for_rank

        return layout_for_rank(len(shape))
    return shape_layout(shape) or _FORMAT_LAYOUT.get(suffix.lower(), "NCHW")


def parse_classes(text: str | None) -> int | list[str] | None:
    """``--classes``: a count (``10``) or comma-separated names (``cat,dog``). Pure."""
    if text is None:
        return None
    text = text.strip()
    if text.isdigit():
        if int(text) < 1:
            raise EdgeoptError(f"--classes {text}: a model has at least one class")
        return int(text)
    names = [t.strip() for t in text.split(",")]
    if not text or any(not n for n in names):
        raise EdgeoptError(f"--classes '{text}' is neither a count nor comma-separated names", "e.g. --classes 10")
    return names


def apply_flags(meta: ModelMeta, flags: InterfaceFlags) -> ModelMeta:
    """``meta`` with the user's statements applied (a new record). Pure.

    ``--classes`` must agree with the model's output width (``meta.num_classes``); names replace
    the model's own class names (labels are then matched to them by name).
    """
    spec = meta.input
    if flags.layout is not None or flags.input_range is not None:
        refuse_multi_input(meta, "--layout/--input-range (one input's interface)")
    if flags.layout is not None:
        layout = flags.layout.strip().upper()
        if layout not in ("NCHW", "NHWC"):
            raise EdgeoptError(f"--layout '{flags.layout}' is not NCHW or NHWC")
        spec = replace(spec, layout=layout)  # the tensor's shape stays; only how images map onto it changes
    if flags.input_range is not None:
        spec = replace(spec, value_range=flags.input_range)
    num, names = meta.num_classes, meta.class_names
    if flags.classes is not None:
        num, names = (flags.classes, names) if isinstance(flags.classes, int) else (len(flags.classes), flags.classes)
        if num != meta.num_classes:
            raise EdgeoptError(
                f"--classes gives {num} classes but the model has {meta.num_classes} outputs",
                f"give {meta.num_classes} classes",
            )
    return replace(meta, input=spec, num_classes=num, class_names=names)


def stored_meta(path: str | Path) -> tuple[ModelMeta | None, str | None]:
    """The metadata edgeopt stored for an artifact (inside it, else in an old sidecar) and where from."""
    from edgeopt.interop.embedded import read_embedded
    from edgeopt.interop.export import read_sidecar

    record = read_embedded(path)
    if record is not None:
        return ModelMeta.from_json(record), SOURCE_EMBEDDED
    meta = read_sidecar(path)
    return (meta, SOURCE_SIDECAR) if meta is not None else (None, None)


def artifact_interface(path: str | Path, runner: Runner) -> tuple[ModelMeta, str]:
    """The metadata of an artifact opened in ``runner`` and where it came from (see the module notes).

    What edgeopt stored (``runner.meta``) comes first. Otherwise a float ``.onnx``/``.tflite`` is
    parsed as ``edgeopt import`` would (``graph``: the range its normalisation ops state, class names
    the file carries); what that cannot read, and every integer-input or ``.pte`` artifact, is
    described from the runtime (``inferred``).
    """
    if runner.meta is not None:
        return runner.meta, runner.meta_source or SOURCE_EMBEDDED
    path = Path(path)
    if path.suffix.lower() in (".onnx", ".tflite") and getattr(runner, "input_quant", None) is None:
        from edgeopt.model import load_model

        try:
            meta = load_model(path).meta
        except EdgeoptError:
            pass  # an op or construct the importer does not translate: the runtime still runs it
        else:
            if meta.is_multi_input:  # each input's spec as the importer read it
                return meta, SOURCE_GRAPH
            # the importer reads TFLite's layout from TRANSPOSE ops at the input; a one-channel NCHW
            # input has a RESHAPE there instead, so a shape that reads one way only has the last word
            shape = tuple(meta.input.shape)
            layout = (shape_layout(shape) if len(shape) == 3 else None) or meta.input.layout
            return replace(meta, input=replace(meta.input, layout=layout)), SOURCE_GRAPH
    return inferred_meta(runner), SOURCE_INFERRED


def inferred_meta(runner: Runner) -> ModelMeta:
    """The interface an opened artifact states by itself (see the module notes); runs it once on zeros."""
    from edgeopt.interop.input_range import range_from_quantization

    shape = tuple(int(s) for s in runner.input_shape)
    where = runner.path.name if runner.path is not None else runner.name
    if runner.input_shapes:
        raise EdgeoptError(
            f"{where} takes {len(runner.input_shapes)} inputs and carries no edgeopt record of them",
            "import the .onnx/.tflite it came from (edgeopt import), or export it with edgeopt",
        )
    if not 1 <= len(shape) <= 3 or any(s < 1 for s in shape):
        shown = "x".join("?" if s < 1 else str(s) for s in shape)
        raise EdgeoptError(
            f"{where} takes N x {shown} inputs: not a fixed vector, sequence or image shape",
            "export it with static sizes besides the batch (F; C,L; or C,H,W / H,W,C)",
        )
    quant = getattr(runner, "input_quant", None)
    dtype = getattr(runner, "input_dtype", None)
    value_range = DEFAULT_RANGE if quant is None or dtype is None else range_from_quantization(*quant, dtype)
    suffix = runner.path.suffix if runner.path is not None else ""
    spec = InputSpec(shape=shape, layout=guess_layout(shape, suffix), value_range=value_range)
    y = runner.run(np.zeros((1, *shape), dtype=np.float32))
    stated = "assumed" if quant is None else "quantization"
    outputs = None
    if isinstance(y, tuple):  # several outputs: one (classification) record each, named as the runtime names them
        from edgeopt.model import OutputSpec

        names = list(runner.output_names) if len(set(runner.output_names)) == len(y) else []
        names = names or [f"output_{i}" for i in range(len(y))]
        widths = [int(t.reshape(1, -1).shape[1]) for t in y]
        outputs = [OutputSpec(n, "classification", w) for n, w in zip(names, widths, strict=True)]
    return ModelMeta(
        input=spec,
        num_classes=sum(o.width for o in outputs) if outputs else int(y.reshape(1, -1).shape[1]),
        arch={"kind": "artifact", "file": where},
        lineage=[{"pass": "interface", "source": SOURCE_INFERRED, "input_range": stated}],
        task="multi" if outputs else "classification",
        outputs=outputs,
    )
