"""Export an EdgeModel to ONNX, ExecuTorch (.pte) or LiteRT (.tflite), then prove parity in that runtime.

``export_model(model, "pte", "out/model.pte")`` traces the module in eval mode at batch 1 (static
shape), converts it in memory, writes the artifact to a temporary sibling, runs it in its runtime on
``samples`` deterministic inputs and compares with PyTorch. Only if ``max|Δ| <= rtol * max|ref|``
is the artifact renamed into place. The model's metadata (input interface, classes, lineage) and
the export facts are embedded in the artifact itself (``interop.embedded``: ONNX ``metadata_props``,
a TFLite metadata buffer, an ExecuTorch constant method), before the parity check runs on those very
bytes, so a copied artifact stands alone. A sidecar ``<artifact>.json`` (the same plus the parity
figures and the full architecture record) is still written beside it; nothing requires it. On any
failure, Ctrl-C included, nothing is left behind.

Cost (2 cores, small CNNs): ONNX ~2-3 s (dynamo exporter), ExecuTorch ~5 s (XNNPACK lowering, plus
~4 s to import executorch once), LiteRT ~4 s (litert-torch; ~4 s import once). The exporters'
console chatter is captured (``quiet_output``) and shown only when they fail.
"""

from __future__ import annotations

import contextlib
import itertools
import platform
import types
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeopt.errors import EdgeoptError
from edgeopt.fileio import atomic_path, write_json_atomic
from edgeopt.interop.embedded import embed_metadata
from edgeopt.model import EdgeModel, InputSet, ModelMeta, check_finite, model_args
from edgeopt.runtimes.base import Runner, quiet_output

FORMATS = {"onnx": ".onnx", "pte": ".pte", "tflite": ".tflite"}
FORMAT_RUNTIME = {"onnx": "onnxruntime", "pte": "executorch", "tflite": "litert"}
ONNX_OPSET = 18
SIDECAR_SUFFIX = ".json"
EMBEDDED_ENTRY_BYTES = 256  # larger architecture entries and lineage fields stay out of the artifact (embedded_record)
# parity gate for integer artifacts vs PyTorch's quantize/dequantize simulation
QUANTIZED_RTOL = 0.25
QUANTIZED_MIN_TOP1 = 0.75
_RUNTIME_PACKAGE = {"onnxruntime": "onnxruntime", "executorch": "executorch", "litert": "ai-edge-litert"}
_EXPORTER_PACKAGE = {"onnx": "onnxscript", "pte": "executorch", "tflite": "litert-torch"}


@dataclass
class Parity:
    """How closely a runtime's outputs match PyTorch's over ``samples`` inputs.

    A multi-output model's parity holds each output's own in ``outputs`` (in the model's order); its
    top-level figures are the worst output's (largest ``rel_diff``, lowest top-1 agreement), so it is
    ``ok`` exactly when every output is (:func:`compare_output_sets`).
    """

    max_abs_diff: float
    max_abs_ref: float
    rel_diff: float
    top1_agreement: float
    samples: int
    outputs: list[Parity] | None = None

    def ok(self, rtol: float, min_top1: float = 0.0) -> bool:
        """True when ``max|Δ| <= rtol * max|ref|`` and top-1 agreement >= ``min_top1`` (NaN fails)."""
        return bool(self.max_abs_diff <= rtol * self.max_abs_ref and self.top1_agreement >= min_top1)


@dataclass
class ExportResult:
    path: Path
    format: str
    runtime: str
    size_bytes: int
    parity: Parity
    sidecar: Path

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"], d["sidecar"] = str(self.path), str(self.sidecar)
        return d


def compare_output_sets(ref: Any, got: Any) -> Parity:
    """:func:`compare_outputs` for one output, or output by output for a multi-output model's tuples. Pure.

    The result's ``outputs`` holds each output's parity; its own figures are the worst output's
    (``max_abs_diff``/``max_abs_ref`` of the largest ``rel_diff``, the lowest top-1 agreement), so that
    ``ok`` holds exactly when it holds for every output.
    """
    if not isinstance(ref, tuple) and not isinstance(got, tuple):
        return compare_outputs(ref, got)
    refs, gots = (ref if isinstance(ref, tuple) else (ref,)), (got if isinstance(got, tuple) else (got,))
    if len(refs) != len(gots):
        raise EdgeoptError(f"the runtime returns {len(gots)} output(s) but PyTorch {len(refs)}")
    each = [compare_outputs(r, g) for r, g in zip(refs, gots, strict=True)]
    worst = max(each, key=lambda p: p.rel_diff)
    top1 = min(p.top1_agreement for p in each)
    return Parity(worst.max_abs_diff, worst.max_abs_ref, worst.rel_diff, top1, worst.samples, each)


def compare_outputs(ref: np.ndarray, got: np.ndarray) -> Parity:
    """Parity of ``got`` against reference ``ref`` (same shape, first axis = samples). Pure.

    ``rel_diff`` is ``max|got - ref| / max|ref|``; ``top1_agreement`` is the share of samples
    whose argmax over the last axis agrees. NaN in ``got`` gives an infinite difference.
    """
    ref = np.asarray(ref, dtype=np.float64)
    got = np.asarray(got, dtype=np.float64)
    if ref.shape != got.shape:
        raise EdgeoptError(f"runtime output shape {got.shape} differs from PyTorch's {ref.shape}")
    n = ref.shape[0] if ref.ndim else 1
    if ref.size == 0:
        return Parity(0.0, 0.0, 0.0, 1.0, n)
    diff = np.abs(got - ref)
    max_diff = float(np.inf) if not np.isfinite(diff).all() else float(diff.max())
    max_ref = float(np.abs(ref).max())
    rel = max_diff / max_ref if max_ref > 0 else (0.0 if max_diff == 0 else float("inf"))
    r2, g2 = ref.reshape(n, -1), got.reshape(n, -1)
    top1 = float(np.mean(np.argmax(r2, axis=1) == np.argmax(np.nan_to_num(g2, nan=-np.inf), axis=1)))
    return Parity(max_diff, max_ref, float(rel), top1, int(n))


def sidecar_path(artifact: str | Path) -> Path:
    """``model.tflite`` -> ``model.tflite.json``."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + SIDECAR_SUFFIX)


def read_sidecar(artifact: str | Path) -> ModelMeta | None:
    """The metadata saved beside an exported artifact, or None when there is no sidecar."""
    import json

    p = sidecar_path(artifact)
    if not p.is_file():
        return None
    try:
        d = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EdgeoptError(f"{p} is not valid JSON ({e})", "delete it, or re-export the model") from e
    if not isinstance(d, dict):
        raise EdgeoptError(f"{p} does not hold model metadata", "delete it, or re-export the model")
    return ModelMeta.from_json(d)


def embedded_record(meta: ModelMeta, export_info: dict[str, Any]) -> dict[str, Any]:
    """What an artifact carries inside: the metadata, its bulky entries left out. Pure.

    An architecture entry or a lineage step's field over ``EMBEDDED_ENTRY_BYTES`` of JSON (a graph IR,
    quantization parameters and recipe, a pass's per-layer metrics) stays in the ``.edgeopt`` model (and the sidecar):
    the artifact is the module already, and the flash budget of a small model has no room for them (the
    per-layer metrics of a QAT pass were 0.6 of a 40 KB budget's kilobytes). The rest is kept as it is.
    """
    import json

    def small(entries: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in entries.items() if len(json.dumps(v, default=str)) <= EMBEDDED_ENTRY_BYTES}

    d = meta.to_json()
    return {**d, "arch": small(d["arch"]), "lineage": [small(step) for step in d["lineage"]], "export": export_info}


def check_format(fmt: str) -> str:
    """The canonical format name, or an error naming the choices."""
    name = str(fmt).strip().lower().lstrip(".")
    if name not in FORMATS:
        raise EdgeoptError(f"unknown export format '{fmt}'", f"choose one of: {', '.join(FORMATS)}")
    return name


# --- exporters: module + example input -> artifact bytes -----------------------------------------


def compact_onnx(proto: Any) -> Any:
    """Drop from ``proto``, in place, what nothing reads at run time; returns ``proto``. Against an MCU-sized
    flash budget every kilobyte counts: an int8 ResNet-8 went 161 -> 71 KB (about 62 KB of it weights).

    - the dynamo exporter's per-node debug records (stack traces, FX node names, module paths): 51 KB. The
      model's own ``metadata_props`` (edgeopt's record, labels) are kept;
    - the intermediate tensors' shape records (``graph.value_info``): 9 KB. The runtimes infer shapes when
      they load a graph (ONNX Runtime does; edgeopt's memory plan runs ``onnx.shape_inference``);
    - initializers no node reads (float biases the int32 ones replaced, folded constants): 1.5 KB;
    - long tensor names (``mods.conv2d_3.bias_int32_zero_point``, each written where it is made and where it
      is read): renamed to short ids, 6 KB. The graph's inputs and outputs keep their names, the nodes keep
      theirs (``edgeopt debug`` labels with them). A graph with subgraphs (If, Loop) keeps its names: its
      subgraphs may read outer names.
    """
    import onnx

    graph = proto.graph
    for node in graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    del graph.value_info[:]
    read = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    kept = [t for t in graph.initializer if t.name in read]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    subgraphs = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
    if not any(a.type in subgraphs for node in graph.node for a in node.attribute):
        _shorten_tensor_names(graph)
    return proto


def _shorten_tensor_names(graph: Any) -> None:
    """Rename every tensor but the graph's inputs and outputs to a base-36 id, in place."""
    fixed = {v.name for v in [*graph.input, *graph.output]}
    short: dict[str, str] = {}

    def rename(name: str) -> str:
        if not name or name in fixed:
            return name
        if name not in short:
            short[name] = np.base_repr(len(short), 36).lower()
            while short[name] in fixed:  # never collide with a kept name
                short[name] += "_"
        return short[name]

    for t in graph.initializer:
        t.name = rename(t.name)
    for node in graph.node:
        node.input[:] = [rename(n) for n in node.input]
        node.output[:] = [rename(n) for n in node.output]


def finished_onnx(proto: Any, outputs: int = 1) -> bytes:
    """``proto`` as the bytes edgeopt ships: debug records stripped, ``outputs`` outputs (the model's), checked by
    ONNX's checker."""
    import onnx

    compact_onnx(proto)
    if len(proto.graph.output) != outputs:
        raise EdgeoptError(
            f"the ONNX graph has {len(proto.graph.output)} outputs but the model {outputs}",
            "export a model whose record describes each of its outputs",
        )
    onnx.checker.check_model(proto, full_check=True)
    return proto.SerializeToString()


def _args(x: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return x if isinstance(x, tuple) else (x,)


def _input_names(x: torch.Tensor | tuple[torch.Tensor, ...], input_names: list[str] | None) -> list[str]:
    return input_names or (["input"] if not isinstance(x, tuple) else [f"input_{i}" for i in range(len(x))])


def _export_onnx(
    module: nn.Module, x: torch.Tensor | tuple[torch.Tensor, ...], output_names: list[str] | None = None,
    input_names: list[str] | None = None,
) -> bytes:
    names = output_names or ["output"]
    with _torchlib_registry_reused():
        program = torch.onnx.export(
            module,
            _args(x),
            dynamo=True,
            opset_version=ONNX_OPSET,
            input_names=_input_names(x, input_names),
            output_names=names,
            external_data=False,
            verbose=False,
        )
    return finished_onnx(program.model_proto, len(names))


_TORCHLIB_REGISTRIES: dict[Any, Any] = {}  # by from_torchlib's arguments (the opset)


@contextlib.contextmanager
def _torchlib_registry_reused() -> Iterator[None]:
    """Inside edgeopt's ONNX exports, ``ONNXRegistry.from_torchlib`` returns the registry it built first in this
    process for the same opset.

    Why by hand: PyTorch's dynamo exporter rebuilds its table of ATen → ONNX functions from torchlib on every
    export, 0.65 s of a 1.2 s export of a small CNN (torch 2.13, 2-core Xeon, 2026-12-05), and
    ``torch.onnx.export`` takes no registry. A calibration exports hundreds of models, so reusing it doubles
    how many it measures. edgeopt registers no custom translations, so nothing writes to the shared
    registry; the ONNX graphs came out node for node the same on 8 calibration architectures. Outside
    this block, and on a PyTorch without that class method, the exporter is untouched."""
    try:
        from torch.onnx._internal.exporter import _registration
    except ImportError:
        yield
        return
    registry_class = _registration.ONNXRegistry
    built = registry_class.__dict__.get("from_torchlib")
    if not isinstance(built, classmethod):
        yield
        return

    def reused(cls: type, *args: Any, **kwargs: Any) -> Any:
        key = (args, tuple(sorted(kwargs.items())))
        if key not in _TORCHLIB_REGISTRIES:
            _TORCHLIB_REGISTRIES[key] = built.__func__(cls, *args, **kwargs)
        return _TORCHLIB_REGISTRIES[key]

    registry_class.from_torchlib = classmethod(reused)
    try:
        yield
    finally:
        registry_class.from_torchlib = built


def _export_onnx_for_timing(
    module: nn.Module, x: torch.Tensor | tuple[torch.Tensor, ...], output_names: list[str] | None = None,
    input_names: list[str] | None = None,
) -> bytes:
    """A float ONNX file that is only timed, through PyTorch's TorchScript exporter: 0.1-0.3 s where the
    dynamo exporter takes 3-10 s, at the same ONNX Runtime latency (2026-12-02, 1 thread, interleaved p50:
    ResNet-8 0.669 vs 0.683 ms, MobileNetV2 6.57 vs 7.22, DS-CNN 0.498 vs 0.488, the imported MLPerf
    ResNet-8 1.21 vs 1.24). Dynamo without its optimizer is no shortcut: MobileNetV2 ran 2.8x slower.
    The TorchScript exporter is deprecated; on any failure of it the dynamo export is used.
    """
    import io
    import warnings

    import onnx

    try:
        buf = io.BytesIO()
        names = output_names or ["output"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, _args(x), buf, dynamo=False, opset_version=ONNX_OPSET,
                              input_names=_input_names(x, input_names), output_names=names)  # fmt: skip
        return finished_onnx(onnx.load_from_string(buf.getvalue()), len(names))
    except Exception:  # the TorchScript exporter rejects some graphs that dynamo exports
        return _export_onnx(module, x, output_names, input_names)


def _export_pte(
    module: nn.Module, x: torch.Tensor | tuple[torch.Tensor, ...], output_names: list[str] | None = None,
    input_names: list[str] | None = None,
) -> bytes:
    return lower_to_pte(module, _args(x))


def lower_to_pte(module: nn.Module, args: tuple[torch.Tensor, ...]) -> bytes:
    """``module`` exported, delegated to XNNPACK and serialized as a ``.pte`` program, its segments aligned
    to ``embedded.PTE_SEGMENT_ALIGNMENT`` bytes (why: there)."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import ExecutorchBackendConfig, to_edge_transform_and_lower

    from edgeopt.interop.embedded import PTE_SEGMENT_ALIGNMENT

    program = torch.export.export(module, args)
    with _short_xnnpack_data_keys():
        lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
        config = ExecutorchBackendConfig(segment_alignment=PTE_SEGMENT_ALIGNMENT)
        return bytes(lowered.to_executorch(config).buffer)


XNNPACK_KEY_HEX_CHARS = 16  # 64 bits of SHA-256: a collision among a model's constants has odds ~1e-15


@contextlib.contextmanager
def _short_xnnpack_data_keys() -> Iterator[None]:
    """ExecuTorch's XNNPACK backend keys each constant it stores (weights, biases, scales) by the SHA-256 of its
    bytes as 64 hex characters, written twice (in the delegate and in the program's data table): 5 of a 40 KB
    int8 ResNet-8's kilobytes. ExecuTorch has no option for the key, so for the lowering only its
    ``node_visitor`` module sees a ``sha256`` whose hex digest is cut to ``XNNPACK_KEY_HEX_CHARS``: equal bytes
    still share a key (the deduplication the hash is for), and the program runs unchanged."""
    try:
        from executorch.backends.xnnpack.operators import node_visitor
    except ImportError:  # another ExecuTorch layout: keep its keys
        yield
        return
    real = node_visitor.hashlib

    class ShortDigest:
        def __init__(self, data: bytes = b"") -> None:
            self.full = real.sha256(data)

        def hexdigest(self) -> str:
            return self.full.hexdigest()[:XNNPACK_KEY_HEX_CHARS]

    node_visitor.hashlib = types.SimpleNamespace(sha256=ShortDigest)
    try:
        yield
    finally:
        node_visitor.hashlib = real


def _export_tflite(
    module: nn.Module, x: torch.Tensor | tuple[torch.Tensor, ...], output_names: list[str] | None = None,
    input_names: list[str] | None = None,
) -> bytes:
    import litert_torch

    return bytes(litert_torch.convert(module, _args(x)).model_content())


_EXPORTERS = {"onnx": _export_onnx, "pte": _export_pte, "tflite": _export_tflite}


def _open_for_parity(fmt: str, path: Path) -> Runner:
    if fmt == "onnx":
        from edgeopt.runtimes.onnxruntime_runner import OnnxRuntimeRunner

        return OnnxRuntimeRunner(path, threads=1)
    if fmt == "pte":
        from edgeopt.runtimes.executorch_runner import ExecuTorchRunner

        return ExecuTorchRunner(path, threads=1)
    from edgeopt.runtimes.litert_runner import LiteRTRunner

    return LiteRTRunner(path, threads=1)


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


MAX_COMBINATIONS = 64  # a multi-input model's parity inputs: at most this many combinations


def parity_inputs(model: EdgeModel, samples: int) -> np.ndarray:
    """``samples`` deterministic batch-1 inputs (seeds 0..samples-1) stacked into one batch.

    A multi-input model gets every combination of its inputs' deterministic examples (a structured
    batch): ``k`` examples per input, ``k`` the largest with ``k ** inputs <= max(samples, 64)`` and at
    most ``samples`` (8 samples, two inputs: 64 combinations; three: 4 ** 3 = 64).
    """
    spec = model.meta.input
    if not isinstance(spec, InputSet):
        return np.concatenate([model.example_input(1, seed=i).numpy() for i in range(samples)])
    n = len(spec.specs)
    k = max(1, min(samples, int(round(max(samples, MAX_COMBINATIONS) ** (1 / n)))))
    while k > 1 and k**n > max(samples, MAX_COMBINATIONS):
        k -= 1
    examples = [[s.example_batch(1, seed=j * 1009 + i) for j in range(k)] for i, s in enumerate(spec.specs)]
    combos = list(itertools.product(*examples))
    return spec.pack([np.concatenate([c[i] for c in combos]) for i in range(n)])


def reference_outputs(module: nn.Module, x: np.ndarray) -> Any:
    """PyTorch's outputs for ``x``, one sample at a time (as the artifact sees them); a tuple of arrays for a
    module that returns several outputs. ``x`` is structured for a multi-input module (a field per input)."""
    outs = []
    with torch.inference_mode():
        for i in range(x.shape[0]):
            y = module(*model_args(x[i : i + 1]))
            outs.append(tuple(t.float().numpy() for t in y) if isinstance(y, tuple | list) else y.float().numpy())
    if isinstance(outs[0], tuple):
        return tuple(np.concatenate(parts) for parts in zip(*outs, strict=True))
    return np.concatenate(outs)


def _resolve_out(out: str | Path, fmt: str) -> Path:
    out = Path(out)
    want = FORMATS[fmt]
    if out.suffix == "":
        return out.with_name(out.name + want)
    if out.suffix.lower() != want:
        raise EdgeoptError(
            f"output file '{out.name}' does not end in {want}, the suffix of the {fmt} format",
            f"name it {out.stem}{want}",
        )
    return out


def export_model(
    model: EdgeModel,
    fmt: str,
    out: str | Path,
    samples: int = 8,
    rtol: float | None = None,
    min_top1: float = 0.0,
    for_timing: bool = False,
) -> ExportResult:
    """Export ``model`` to ``fmt`` (onnx, pte, tflite) at ``out`` and check parity in the runtime.

    ``for_timing=True`` marks an artifact that is only timed (a latency table's variant): a float ONNX
    export then goes through the fast TorchScript exporter (``_export_onnx_for_timing``).

    Raises ``EdgeoptError`` if the exporter fails, ``max|Δ| > rtol * max|ref|`` or top-1 agreement
    < ``min_top1`` over ``samples`` inputs; then neither the artifact nor its sidecar is written.
    ``rtol`` defaults to 1e-4 for float models and ``QUANTIZED_RTOL`` for quantized ones (integer
    kernels round differently from PyTorch's simulation by a quantization step here and there).
    """
    fmt = check_format(fmt)
    quantized = bool(getattr(model.module, "quantized", False))
    if rtol is None:
        rtol = QUANTIZED_RTOL if quantized else 1e-4
        min_top1 = max(min_top1, QUANTIZED_MIN_TOP1 if quantized else 0.0)
    if samples < 1:
        raise EdgeoptError(f"samples must be at least 1, not {samples}")
    out = _resolve_out(out, fmt)
    runtime = FORMAT_RUNTIME[fmt]
    name = str(model.meta.arch.get("name", "model"))
    module = model.module
    check_finite(module)
    was_training = module.training
    module.eval()
    try:
        # canonical strides: a size-1 channel with stride 1 would be traced as channels-last
        in_names = model.meta.input.names if isinstance(model.meta.input, InputSet) else None
        x: torch.Tensor | tuple[torch.Tensor, ...]
        if in_names is not None:  # several inputs: one tensor each, traced as the module's arguments
            x = model.example_args(1, seed=0)
        else:
            x = model.example_input(1, seed=0).clone(memory_format=torch.contiguous_format)
        with quiet_output() as log:
            try:
                # a module that knows its own artifact (a quantized model: integer programs) exports itself
                custom = getattr(module, "export_artifact", None)
                heads = [o.name for o in model.meta.outputs] if model.meta.outputs is not None else None
                if callable(custom):
                    data = custom(fmt, x)
                elif fmt == "onnx" and for_timing:
                    data = _export_onnx_for_timing(module, x, heads, in_names)
                elif heads is not None or in_names is not None:  # the outputs' and inputs' names (ONNX graph)
                    data = _EXPORTERS[fmt](module, x, heads, in_names)
                else:
                    data = _EXPORTERS[fmt](module, x)
            except EdgeoptError:
                raise
            except Exception as e:  # exporters raise many types; each is a failed export
                first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                tail = log.tail(3)
                raise EdgeoptError(
                    f"exporting {name} to {fmt} failed: {first}" + (f" (exporter said: {tail})" if tail else ""),
                    "simplify the model (unsupported ops?) or try another format",
                ) from e
        inputs = parity_inputs(model, samples)
        ref = reference_outputs(module, inputs)
    finally:
        module.train(was_training)
    info = {
        "format": fmt,
        "runtime": runtime,
        "input_shape": [list(t.shape) for t in x] if isinstance(x, tuple) else list(x.shape),
        "quantized": quantized,
        "opset": ONNX_OPSET if fmt == "onnx" else None,
        "versions": {
            "edgeopt": _version("edgeopt"),
            "torch": torch.__version__,
            "exporter": _version(_EXPORTER_PACKAGE[fmt]),
            "runtime": _version(_RUNTIME_PACKAGE[runtime]),
            "python": platform.python_version(),
        },
    }
    try:
        data = embed_metadata(fmt, data, embedded_record(model.meta, info))
    except EdgeoptError:
        raise
    except Exception as e:  # the format libraries raise their own types for a program they cannot re-pack
        raise EdgeoptError(
            f"embedding edgeopt's metadata in {name}'s {fmt} artifact failed: {str(e).strip() or type(e).__name__}",
            "try another format",
        ) from e

    with atomic_path(out) as tmp:
        tmp.write_bytes(data)
        runner = _open_for_parity(fmt, tmp)
        try:
            got = runner.run(inputs)
            shape: Any = (runner.fixed_batch or 1, *runner.input_shape)
            if runner.input_shapes:
                shape = [[runner.fixed_batch or 1, *s] for s in runner.input_shapes]
        finally:
            runner.close()
        parity = compare_output_sets(ref, got)
        if not parity.ok(rtol, min_top1):
            from edgeopt.interop.debug import divergence_hint

            hint = divergence_hint(model, tmp, inputs, fmt)  # the op-by-op table's first divergent op
            if quantized and runtime == "onnxruntime":
                from edgeopt.runtimes.onnxruntime_runner import int8_kernels_saturate

                if int8_kernels_saturate():
                    hint += (
                        "; on this x86 CPU without VNNI, ONNX Runtime's int8 kernels saturate (its quantization "
                        "docs), so they differ from the exact int8 result that ARM and VNNI CPUs compute"
                    )
            raise EdgeoptError(
                f"parity check failed for {name} exported to {fmt} ({runtime}): max |Δ| {parity.max_abs_diff:.3g}"
                f" > {rtol:g} × max |ref| {parity.max_abs_ref:.3g} (top-1 agreement {parity.top1_agreement:.0%}"
                f" over {parity.samples} inputs){hint}",
                "the runtime computes something different from PyTorch; try another format, or raise rtol "
                "for a quantized model",
            )
    side = sidecar_path(out)
    try:
        info.update(input_shape=list(shape), size_bytes=len(data), parity=asdict(parity), rtol=rtol, min_top1=min_top1)
        write_json_atomic(side, {**model.meta.to_json(), "export": info})
    except BaseException:
        out.unlink(missing_ok=True)  # no artifact without its sidecar
        raise
    return ExportResult(out, fmt, runtime, len(data), parity, side)
