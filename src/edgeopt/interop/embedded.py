"""edgeopt's metadata inside the artifact itself, so that an exported file stands alone.

A copied ``.onnx``, ``.tflite`` or ``.pte`` keeps the model's input interface (shape, layout, value
range, normalisation), its classes and lineage, stored where each format keeps extra data:

* ``.onnx``: a ``metadata_props`` entry ``edgeopt`` (ONNX's key/value model metadata; ONNX Runtime
  shows it as ``custom_metadata_map``).
* ``.tflite``: a ``Model.metadata`` entry named ``edgeopt`` pointing at a buffer (how TFLite's own
  metadata is stored). The model is re-packed with the ``ai_edge_litert`` flatbuffer schema, every
  buffer aligned to 16 bytes as the schema asks (``force_align: 16``), which the Python object API
  would not do by itself.
* ``.pte``: a constant method ``edgeopt_meta`` returning the JSON string, exactly what ExecuTorch's
  ``to_edge_transform_and_lower(..., constant_methods=...)`` emits (an execution plan with one
  value and no instructions); the program is re-serialized with ExecuTorch's own serializer,
  segments aligned to ``PTE_SEGMENT_ALIGNMENT``. ``Runtime.load_program(p).load_method("edgeopt_meta").execute([])``
  returns it on a device.

``embed_metadata`` works on the artifact's bytes (float and integer programs alike, whoever built
them); ``read_embedded`` parses a file without running it, and never executes anything in it: the
record is JSON. Cost: milliseconds for edge models (re-packing copies the model once); reading a
``.pte`` imports ExecuTorch's serializer (~3 s once per process).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgeopt.errors import EdgeoptError

KEY = "edgeopt"  # ONNX metadata_props key and TFLite metadata name
PTE_METHOD = "edgeopt_meta"  # ExecuTorch constant method
_TFLITE_ALIGN = 16  # schema: Buffer.data (force_align: 16)
# .pte segments start at multiples of this many bytes (ExecuTorch's default is 128). Every constant XNNPACK
# stores (each weight, bias and scale array) is a segment of its own, and padding them to 128 was 2.5 of an
# int8 ResNet-8's 33.6 KB. XNNPACK copies (packs) the weights when the program loads, so the file only has
# to suit the reads of that copy: 16 keeps SIMD-width alignment for the float scales and int32 biases.
PTE_SEGMENT_ALIGNMENT = 16


def encode_record(record: dict[str, Any]) -> str:
    """The record as compact JSON text (sorted keys: the same record gives the same bytes). Pure."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"))


def decode_record(text: str | bytes, where: str) -> dict[str, Any]:
    """JSON text back to the record; a clear error when it is not an edgeopt record. Pure."""
    try:
        d = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EdgeoptError(f"{where}: the embedded edgeopt metadata is not valid JSON ({e})", "re-export it") from e
    if not isinstance(d, dict):
        raise EdgeoptError(f"{where}: the embedded edgeopt metadata is not a record", "re-export it")
    return d


def embed_metadata(fmt: str, data: bytes, record: dict[str, Any]) -> bytes:
    """The artifact ``data`` (format ``onnx``, ``tflite`` or ``pte``) with ``record`` embedded.

    An earlier edgeopt record in the artifact is replaced; everything else is kept as it was.
    """
    text = encode_record(record)
    if fmt == "onnx":
        return _embed_onnx(data, text)
    if fmt == "tflite":
        return _embed_tflite(data, text)
    if fmt == "pte":
        return _embed_pte(data, text)
    raise EdgeoptError(f"cannot embed metadata in '{fmt}' artifacts", "use onnx, tflite or pte")


def read_embedded(path: str | Path) -> dict[str, Any] | None:
    """The edgeopt record inside an ``.onnx``, ``.tflite`` or ``.pte`` file, or None when it has none."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise EdgeoptError(f"model file not found: {path}", "check the path")
    if suffix == ".onnx":
        text = _read_onnx(path)
    elif suffix == ".tflite":
        text = _read_tflite(path.read_bytes(), path)
    elif suffix == ".pte":
        text = _read_pte(path.read_bytes(), path)
    else:
        return None
    return None if text is None else decode_record(text, str(path))


# --- ONNX ----------------------------------------------------------------------------------------


def _embed_onnx(data: bytes, text: str) -> bytes:
    import onnx

    proto = onnx.load_model_from_string(data)
    props = [p for p in proto.metadata_props if p.key != KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(props)
    proto.metadata_props.add(key=KEY, value=text)
    return proto.SerializeToString()


def _read_onnx(path: Path) -> str | None:
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf raises DecodeError and friends for corrupt files
        raise EdgeoptError(f"{path} is not a readable ONNX model ({type(e).__name__})", "re-export it") from e
    for p in proto.metadata_props:
        if p.key == KEY:
            return p.value
    return None


# --- TFLite --------------------------------------------------------------------------------------


def _aligned_buffer_type() -> type:
    """``BufferT`` whose data vector starts on a 16-byte boundary (the schema's ``force_align``)."""
    from ai_edge_litert import schema_py_generated as fb

    class AlignedBufferT(fb.BufferT):  # type: ignore[misc, name-defined]
        def Pack(self, builder: Any) -> int:  # noqa: N802 (flatbuffers' name)
            data = None
            if self.data is not None:
                payload = bytes(self.data)
                builder.StartVector(1, len(payload), _TFLITE_ALIGN)
                builder.head -= len(payload)
                builder.Bytes[builder.head : builder.head + len(payload)] = payload
                builder.vectorNumElems = len(payload)
                data = builder.EndVector()
            fb.BufferStart(builder)
            if data is not None:
                fb.BufferAddData(builder, data)
            fb.BufferAddOffset(builder, self.offset)
            fb.BufferAddSize(builder, self.size)
            return fb.BufferEnd(builder)

    return AlignedBufferT


def _embed_tflite(data: bytes, text: str) -> bytes:
    import numpy as np
    from ai_edge_litert import schema_py_generated as fb
    from ai_edge_litert.tools import flatbuffer_utils as fbu

    model = fbu.read_model_from_bytearray(bytearray(data))
    aligned = _aligned_buffer_type()
    buffers = []
    for b in model.buffers or []:
        a = aligned()
        a.data = None if b.data is None else np.asarray(b.data, dtype=np.uint8).tobytes()
        a.offset, a.size = b.offset, b.size
        buffers.append(a)
    keep = [m for m in (model.metadata or []) if _name(m.name) != KEY]
    payload = aligned()
    payload.data = text.encode()
    buffers.append(payload)
    entry = fb.MetadataT()
    entry.name, entry.buffer = KEY, len(buffers) - 1
    model.buffers, model.metadata = buffers, [*keep, entry]
    return bytes(fbu.convert_object_to_bytearray(model))


def _name(name: str | bytes | None) -> str:
    return name.decode() if isinstance(name, bytes) else str(name or "")


def _read_tflite(data: bytes, where: Path) -> str | None:
    from ai_edge_litert import schema_py_generated as fb

    try:
        model = fb.Model.GetRootAs(data, 0)
        for i in range(model.MetadataLength()):
            entry = model.Metadata(i)
            if _name(entry.Name()) != KEY:
                continue
            buf = model.Buffers(entry.Buffer())
            if buf.Offset() > 1:  # data stored after the flatbuffer (large models)
                return data[buf.Offset() : buf.Offset() + buf.Size()].decode()
            return buf.DataAsNumpy().tobytes().decode()
    except (IndexError, ValueError, TypeError, AttributeError, UnicodeDecodeError) as e:
        raise EdgeoptError(f"{where} is not a readable .tflite model ({type(e).__name__})", "re-export it") from e
    return None


# --- ExecuTorch ----------------------------------------------------------------------------------


def _embed_pte(data: bytes, text: str) -> bytes:
    import executorch.extension.pytree as ex_pytree
    from executorch.exir._serialize._program import deserialize_pte_binary, serialize_pte_binary
    from executorch.exir.schema import Chain, ContainerMetadata, EValue, ExecutionPlan, String

    pte = deserialize_pte_binary(data)
    plans = [p for p in pte.program.execution_plan if p.name != PTE_METHOD]
    _, spec = ex_pytree.tree_flatten(text)
    plans.append(
        ExecutionPlan(  # what exir's emitter writes for a constant method returning a string
            name=PTE_METHOD,
            values=[EValue(String(text))],
            inputs=[],
            outputs=[0],
            chains=[Chain(inputs=[], outputs=[], instructions=[], stacktrace=None)],
            operators=[],
            delegates=[],
            non_const_buffer_sizes=[0],
            container_meta_type=ContainerMetadata("", spec.to_str()),
        )
    )
    pte.program.execution_plan = plans
    # as export.lower_to_pte serialized the program
    return bytes(serialize_pte_binary(pte, extract_delegate_segments=True, segment_alignment=PTE_SEGMENT_ALIGNMENT))


def _read_pte(data: bytes, where: Path) -> str | None:
    from executorch.exir._serialize._program import deserialize_pte_binary
    from executorch.exir.schema import String

    try:
        pte = deserialize_pte_binary(data)
    except Exception as e:  # the flatbuffer reader raises several types for a corrupt file
        raise EdgeoptError(f"{where} is not a readable ExecuTorch program ({type(e).__name__})", "re-export it") from e
    for plan in pte.program.execution_plan:
        if plan.name == PTE_METHOD and plan.values and isinstance(plan.values[0].val, String):
            return plan.values[0].val.string_val
    return None
