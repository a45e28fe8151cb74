"""A model as edgeopt carries it: a PyTorch module plus a small metadata record.

The record says how to feed the model (input shape, layout, value range, normalisation),
what comes out (classes), how to rebuild the module without pickled code (``arch``),
and which passes produced it (``lineage``).

edgeopt's own file format (``.edgeopt``) is a zip holding ``meta.json`` and
``weights.pt`` (a state dict read back with ``torch.load(weights_only=True)``), so a
saved model never executes code when it is loaded.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeopt.errors import EdgeoptError
from edgeopt.fileio import atomic_path

FORMAT_VERSION = 1
MODEL_SUFFIX = ".edgeopt"


IMAGE_LAYOUTS = ("NCHW", "NHWC")
# layout -> rank of one sample (batch excluded); "NCL"/"NLC" are sequences (channels, length),
# "NC" a flat feature vector; "NCHW"/"NHWC" also describe spectrograms (channels, freq, time)
LAYOUT_RANKS = {"NCHW": 3, "NHWC": 3, "NCL": 2, "NLC": 2, "NC": 1}
TASKS = ("classification", "regression", "anomaly", "multi")
HEAD_TASKS = ("classification", "regression")  # what one output of a multi-output model may be
# what a multi-output model goes through; every other command refuses it (``refuse_multi_output``)
MULTI_OUTPUT_COMMANDS = ("train", "eval", "export", "run", "bench", "import", "quantize (int8 PTQ)")
# what a multi-input model goes through; every other command refuses it (``refuse_multi_output`` too)
MULTI_INPUT_COMMANDS = ("train", "eval", "export", "run", "bench", "import")


def layout_for_rank(rank: int, channels_first: bool = True) -> str:
    """The default layout of a sample of ``rank`` dimensions (3: NCHW/NHWC, 2: NCL/NLC, 1: NC). Pure."""
    if rank == 3:
        return "NCHW" if channels_first else "NHWC"
    if rank == 2:
        return "NCL" if channels_first else "NLC"
    if rank == 1:
        return "NC"
    raise EdgeoptError(
        f"an input of {rank} dimensions per sample is not supported",
        "give a flat vector (F), a sequence (C,L) or an image/spectrogram (C,H,W)",
    )


@dataclass
class InputSpec:
    """How data becomes the model's input tensor: shape, layout and value range of one sample.

    ``shape`` excludes the (dynamic) batch dimension and is in the model's own ``layout``:
    ``(3, 32, 32)`` for NCHW, ``(32, 32, 3)`` for NHWC, ``(C, L)`` for NCL sequences, ``(F,)``
    for NC feature vectors. Two kinds of data feed it:

    - uint8 images (N, H, W, C), for image layouts: raw pixel values 0..255 are mapped linearly
      onto ``value_range``, then ``(x - mean) / std`` per channel when given, then transposed;
    - float arrays (N, *shape) already in the model's layout (sequences, spectrograms, tabular
      rows, sensor windows): ``value_range`` states the range the model was trained on (it is
      not applied), ``mean``/``std`` are applied when given.
    """

    shape: tuple[int, ...]
    layout: str = "NCHW"
    value_range: tuple[float, float] = (0.0, 1.0)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        self.shape = tuple(int(s) for s in self.shape)
        self.value_range = (float(self.value_range[0]), float(self.value_range[1]))
        if self.layout not in LAYOUT_RANKS:
            raise EdgeoptError(f"unknown input layout '{self.layout}'", f"use one of {', '.join(LAYOUT_RANKS)}")
        if len(self.shape) != LAYOUT_RANKS[self.layout]:
            raise EdgeoptError(
                f"input shape {self.shape} does not fit layout {self.layout}",
                "give C,H,W or H,W,C for images, C,L for sequences, F for feature vectors",
            )
        if any(s < 1 for s in self.shape):
            raise EdgeoptError(f"input shape {self.shape} has a free dimension", "fix it with --input-shape")

    @property
    def is_image(self) -> bool:
        """True for the image layouts (NCHW, NHWC), which also take uint8 images."""
        return self.layout in IMAGE_LAYOUTS

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(height, width, channels) of the images this model takes (image layouts only)."""
        if not self.is_image:
            raise EdgeoptError(
                f"the model takes {self.layout} input of shape {self.describe()}, not images",
                "feed it arrays of that shape (npz:, csv:, mnist1d:, anomaly: data)",
            )
        if self.layout == "NCHW":
            c, h, w = self.shape
        else:
            h, w, c = self.shape
        return h, w, c

    def describe(self) -> str:
        """The sample shape as text, e.g. ``640`` or ``1x40``."""
        return "x".join(str(s) for s in self.shape)

    def to_model_input(self, images: np.ndarray) -> np.ndarray:
        """A batch of data -> float32 batch in the model's layout (see the class notes).

        uint8 (N, H, W, C) images go through the image mapping; float arrays must have the model's
        sample shape (a shape that differs only by size-1 dimensions, like (N, 40) for a (1, 40)
        model, is reshaped). Cost: one pass over the batch.
        """
        if images.dtype == np.uint8 and images.ndim == 4 and self.is_image:
            return self._images_to_input(images)
        x = np.asarray(images)
        if x.dtype.names:
            raise EdgeoptError(
                f"the data has inputs {list(x.dtype.names)} but the model takes one input ({self.describe()})",
                "give the model one array (x_train/x_test, or x)",
            )
        got = tuple(int(s) for s in x.shape[1:])
        if got != self.shape:
            squeeze = tuple(s for s in got if s != 1) == tuple(s for s in self.shape if s != 1)
            if not squeeze or x.ndim < 2:
                raise EdgeoptError(
                    f"model expects input of shape {self.describe()} ({self.layout}) but the data has"
                    f" {'x'.join(map(str, got)) or 'scalars'}",
                    "use data of that shape, or start from a zoo: model (it is sized to the data)",
                )
            x = x.reshape(len(x), *self.shape)
        x = x.astype(np.float32, copy=False)
        if self.mean is not None:
            bshape = (1, -1) + (1,) * (x.ndim - 2) if self.layout != "NLC" else (1, 1, -1)
            mean = np.asarray(self.mean, np.float32).reshape(bshape if len(self.mean) > 1 else (1,))
            std = np.asarray(self.std or 1.0, np.float32)
            std = std.reshape(bshape) if std.size > 1 else std
            x = (x - mean) / std
        return np.array(x, dtype=np.float32, order="C", copy=True)

    def _images_to_input(self, images: np.ndarray) -> np.ndarray:
        if images.shape[1:] != self.image_shape:
            h, w, c = self.image_shape
            got = "x".join(str(s) for s in images.shape[1:])
            raise EdgeoptError(
                f"model expects {h}x{w}x{c} images but the data has {got}",
                "use data of that image size, or start from a zoo: model (it is sized to the data)",
            )
        lo, hi = self.value_range
        x = images.astype(np.float32) * np.float32((hi - lo) / 255.0) + np.float32(lo)
        if self.mean is not None:
            x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std or 1.0, np.float32)
        if self.layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        # a fresh C-order copy: for one channel the transposed view already counts as contiguous
        # but keeps odd strides, which eager convs turn into channels-last outputs
        return np.array(x, dtype=np.float32, order="C", copy=True)

    def example_batch(self, batch: int = 1, seed: int = 0) -> np.ndarray:
        """A deterministic input batch: random images through the mapping, or uniform values in
        ``value_range`` (normalised by ``mean``/``std``) for arrays. Cost: one batch."""
        rng = np.random.default_rng(seed)
        if self.is_image:
            h, w, c = self.image_shape
            g = torch.Generator().manual_seed(seed)
            images = torch.randint(0, 256, (batch, h, w, c), generator=g, dtype=torch.uint8)
            return self.to_model_input(images.numpy())
        lo, hi = self.value_range
        return self.to_model_input(rng.uniform(lo, hi, size=(batch, *self.shape)).astype(np.float32))


@dataclass
class InputSet:
    """The inputs of a multi-input model: one named :class:`InputSpec` each, in the module's argument order.

    A batch for such a model is one numpy *structured* array of N records with a field per input (the
    field holds that input's (N, *shape) values), so batches slice, concatenate and split like a plain
    array; :func:`model_args` turns one into the module's positional arguments. It stands where a
    single-input model's :class:`InputSpec` stands (``ModelMeta.input``) for what every input shares
    (``to_model_input``, ``example_batch``, ``describe``); asking it for *the* shape, layout or value
    range (what single-input commands read) is one line naming the commands that take several inputs.
    """

    names: list[str]
    specs: list[InputSpec]
    is_image = False  # never takes uint8 images as one batch (each field goes through its own spec)

    def __post_init__(self) -> None:
        self.names = [str(n) for n in self.names]
        if len(self.names) < 2 or len(set(self.names)) != len(self.names) or len(self.specs) != len(self.names):
            raise EdgeoptError(f"a multi-input model needs two or more distinctly named inputs, got {self.names}")

    def _single(self, what: str) -> EdgeoptError:
        return EdgeoptError(
            f"this model has {len(self.names)} inputs ({', '.join(self.names)}); {what} is a single-input model's",
            f"multi-input models go through {', '.join(MULTI_INPUT_COMMANDS)}",
        )

    @property
    def layout(self) -> str:
        return "multi"

    @property
    def shape(self) -> tuple[int, ...]:
        raise self._single("the input shape")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        raise self._single("an image shape")

    @property
    def value_range(self) -> tuple[float, float]:
        raise self._single("one value range")

    @property
    def shapes(self) -> tuple[tuple[int, ...], ...]:
        """Each input's sample shape (no batch), in order."""
        return tuple(tuple(s.shape) for s in self.specs)

    def describe(self) -> str:
        """Each input's name and shape, e.g. ``a: 16, b: 1x8x8``."""
        return ", ".join(f"{n}: {s.describe()}" for n, s in zip(self.names, self.specs, strict=True))

    def dtype(self) -> np.dtype:
        """The structured dtype of a model-input batch: one float32 field per input."""
        return np.dtype([(n, np.float32, s.shape) for n, s in zip(self.names, self.specs, strict=True)])

    def pack(self, arrays: list[np.ndarray]) -> np.ndarray:
        """Per-input (N, *shape) arrays -> one structured batch. Pure."""
        out = np.empty(len(arrays[0]), self.dtype())
        for name, a in zip(self.names, arrays, strict=True):
            out[name] = a
        return out

    def to_model_input(self, samples: np.ndarray) -> np.ndarray:
        """Structured samples (a field per input, named as the inputs) -> a structured float32 batch, each
        field through its input's :meth:`InputSpec.to_model_input`. Other data is one line."""
        samples = np.asarray(samples)
        got = list(samples.dtype.names or ())
        if got != self.names:
            has = f"inputs {got}" if got else f"one input array of shape {'x'.join(map(str, samples.shape[1:]))}"
            raise EdgeoptError(
                f"the model takes inputs {self.names} but the data has {has}",
                "give one array per input (npz: x_train_<input>/x_test_<input>, or x_<input>)",
            )
        return self.pack([s.to_model_input(samples[n]) for n, s in zip(self.names, self.specs, strict=True)])

    def example_batch(self, batch: int = 1, seed: int = 0) -> np.ndarray:
        """Deterministic inputs: input ``i`` is its spec's example batch of seed ``seed * 1009 + i``. Pure."""
        return self.pack([s.example_batch(batch, seed * 1009 + i) for i, s in enumerate(self.specs)])

    def to_json(self) -> list[dict[str, Any]]:
        return [{"name": n, **asdict(s)} for n, s in zip(self.names, self.specs, strict=True)]


def split_inputs(x: np.ndarray) -> list[np.ndarray]:
    """A batch -> one C-contiguous array per input (a structured batch's fields; else ``[x]``). Pure."""
    names = x.dtype.names
    if not names:
        return [x]
    return [np.array(x[n], dtype=np.float32, order="C", copy=True) for n in names]


def model_args(x: np.ndarray | torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """The module's positional arguments for a batch: one tensor, or one per input of a structured batch."""
    if isinstance(x, torch.Tensor):
        return (x,)
    if isinstance(x, tuple):
        return x
    return tuple(torch.from_numpy(a) for a in split_inputs(np.asarray(x)))


@dataclass
class OutputSpec:
    """One output (head) of a multi-output model: its name, task, width and weight in the training loss.

    ``task`` is ``classification`` (``width`` class scores; ``class_names`` optional) or ``regression``
    (``width`` real targets). ``weight`` multiplies the head's task loss in the training loss and its
    score in the model's combined score (``edgeopt.train.multi``).
    """

    name: str
    task: str
    width: int
    weight: float = 1.0
    class_names: list[str] | None = None

    def __post_init__(self) -> None:
        self.width, self.weight = int(self.width), float(self.weight)
        if self.task not in HEAD_TASKS:
            raise EdgeoptError(
                f"output '{self.name}' has task '{self.task}'", f"an output is one of {', '.join(HEAD_TASKS)}"
            )
        if self.width < 1 or not self.weight > 0:
            raise EdgeoptError(f"output '{self.name}' needs width >= 1 and weight > 0, not {self.width}, {self.weight}")

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> OutputSpec:
        names = d.get("class_names")
        return cls(str(d["name"]), str(d["task"]), int(d["width"]), float(d.get("weight", 1.0)),
                   list(names) if names is not None else None)  # fmt: skip


def check_outputs(outputs: list[OutputSpec]) -> list[OutputSpec]:
    """A multi-output record's heads: at least two, distinct names. Pure."""
    names = [o.name for o in outputs]
    if len(outputs) < 2 or len(set(names)) != len(names):
        raise EdgeoptError(f"a multi-output model needs two or more distinctly named outputs, got {names}")
    return outputs


@dataclass
class ModelMeta:
    """Everything about a model except its weights."""

    input: InputSpec | InputSet  # InputSet: a multi-input model (one named spec per input)
    num_classes: int  # classification: classes; regression: targets; anomaly: reconstructed features
    arch: dict[str, Any]
    class_names: list[str] | None = None
    lineage: list[dict[str, Any]] = field(default_factory=list)
    task: str = "classification"  # classification | regression | anomaly | multi (see edgeopt.train.tasks)
    outputs: list[OutputSpec] | None = None  # task "multi": one record per output, in the module's order

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise EdgeoptError(f"unknown task '{self.task}'", f"use one of {', '.join(TASKS)}")
        if (self.task == "multi") != (self.outputs is not None):
            raise EdgeoptError("a multi-output model's record needs task 'multi' and its outputs, both or neither")
        if self.outputs is not None:
            check_outputs(self.outputs)
        if self.task == "anomaly" and isinstance(self.input, InputSet):
            raise EdgeoptError("an anomaly model reconstructs one input; this record has several",
                               "give the model task classification or regression")  # fmt: skip

    @property
    def is_multi_input(self) -> bool:
        """True for a model with several inputs (``input`` is an :class:`InputSet`)."""
        return isinstance(self.input, InputSet)

    @property
    def is_multi_output(self) -> bool:
        """True for a model with several outputs (``outputs`` describes each)."""
        return self.outputs is not None

    def to_json(self) -> dict[str, Any]:
        d = {"format_version": FORMAT_VERSION, **asdict(self)}
        if self.outputs is None:
            del d["outputs"]  # single-output records stay as they were
        if isinstance(self.input, InputSet):  # no "input": an edgeopt that reads one input refuses the record
            d = {k: v for k, v in d.items() if k != "input"}
            d = {"format_version": d.pop("format_version"), "inputs": self.input.to_json(), **d}
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ModelMeta:
        def spec(inp: dict[str, Any]) -> InputSpec:
            return InputSpec(
                shape=tuple(inp["shape"]),
                layout=inp.get("layout", "NCHW"),
                value_range=tuple(inp.get("value_range", (0.0, 1.0))),
                mean=tuple(inp["mean"]) if inp.get("mean") is not None else None,
                std=tuple(inp["std"]) if inp.get("std") is not None else None,
            )

        try:
            many = d.get("inputs")
            inp = InputSet([str(i["name"]) for i in many], [spec(i) for i in many]) if many else spec(d["input"])
            return cls(
                input=inp,
                num_classes=int(d["num_classes"]),
                arch=dict(d["arch"]),
                class_names=d.get("class_names"),
                lineage=list(d.get("lineage", [])),
                task=str(d.get("task", "classification")),
                outputs=[OutputSpec.from_json(o) for o in d["outputs"]] if d.get("outputs") is not None else None,
            )
        except (KeyError, TypeError, ValueError) as e:
            raise EdgeoptError(f"model metadata is malformed ({e})", "re-save the model with edgeopt") from e


@dataclass
class EdgeModel:
    """A PyTorch module and its metadata; what every pass takes and returns."""

    module: nn.Module
    meta: ModelMeta

    def example_input(self, batch: int = 1, seed: int = 0) -> torch.Tensor:
        """A deterministic input batch in the model's own interface (for tracing and parity); a multi-input
        model's is :meth:`example_args` (this is one line naming the commands that take it)."""
        if isinstance(self.meta.input, InputSet):
            raise self.meta.input._single("one example input tensor")
        return torch.from_numpy(self.meta.input.example_batch(batch, seed))

    def example_args(self, batch: int = 1, seed: int = 0) -> tuple[torch.Tensor, ...]:
        """The module's positional arguments for a deterministic batch: one tensor per input."""
        return model_args(self.meta.input.example_batch(batch, seed))

    def with_lineage(self, step: dict[str, Any], module: nn.Module | None = None) -> EdgeModel:
        """A copy that records one more applied pass (and optionally a new module)."""
        meta = ModelMeta.from_json(self.meta.to_json())
        meta.lineage.append(step)
        return EdgeModel(module if module is not None else self.module, meta)


def refuse_multi_input(model: EdgeModel | ModelMeta, command: str) -> None:
    """One clear line when ``command`` is given a multi-input model."""
    meta = model.meta if isinstance(model, EdgeModel) else model
    if isinstance(meta.input, InputSet):
        raise EdgeoptError(
            f"{command} does not support multi-input models (this one has inputs {', '.join(meta.input.names)})",
            f"multi-input models go through {', '.join(MULTI_INPUT_COMMANDS)}",
        )


def refuse_multi_output(model: EdgeModel | ModelMeta, command: str) -> None:
    """One clear line when ``command`` (prune, distill, ...) is given a multi-output or a multi-input model
    (every command that refuses several outputs also refuses several inputs)."""
    meta = model.meta if isinstance(model, EdgeModel) else model
    refuse_multi_input(meta, command)
    if meta.outputs is not None:
        heads = ", ".join(o.name for o in meta.outputs)
        raise EdgeoptError(
            f"{command} does not support multi-output models (this one has outputs {heads})",
            f"multi-output models go through {', '.join(MULTI_OUTPUT_COMMANDS)}",
        )


def check_finite(module: nn.Module) -> None:
    """Raise if any parameter or buffer holds NaN or Inf."""
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise EdgeoptError(f"model weights contain NaN or Inf (in '{name}')", "retrain or re-export the model")


def save_model(model: EdgeModel, path: str | Path) -> Path:
    """Write ``model`` in edgeopt's format (atomic: a crash leaves no half-written file)."""
    path = Path(path)
    if path.suffix != MODEL_SUFFIX:
        path = path.with_name(path.name + MODEL_SUFFIX)
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.module.state_dict().items()}, buf)
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("meta.json", json.dumps(model.meta.to_json(), indent=1))
        zf.writestr("weights.pt", buf.getvalue())
    return path


# --- architecture kinds ---------------------------------------------------------------------
# Each kind of ``arch`` record (zoo, graph, quantized, ...) registers how it rebuilds its module,
# the way passes register themselves (``edgeopt.pipeline.passes.register_pass``): this module
# imports no technique. The modules below register kinds and file loaders when imported; they
# are named here, not imported, and imported the first time an unknown kind or suffix is asked for.
RebuildFn = Callable[[dict[str, Any]], nn.Module]
LoadFn = Callable[[Path], "EdgeModel"]
_KINDS: dict[str, RebuildFn] = {}
_LOADERS: dict[str, LoadFn] = {}
KIND_MODULES: list[str] = [
    "edgeopt.models",  # zoo
    "edgeopt.interop.graph",  # graph (imported .onnx / .tflite)
    "edgeopt.compress.quantize.ptq",  # quantized
    "edgeopt.compress.storage",  # .eoz files (packed: pruned + clustered, entropy-coded)
]


def register_kind(name: str, rebuild_fn: RebuildFn) -> RebuildFn:
    """Register how an ``arch`` record of kind ``name`` rebuilds its (untrained) module.

    ``rebuild_fn(arch) -> nn.Module`` gets the whole record and must execute no code from files.
    A module that defines a kind calls this at import and adds its name to ``KIND_MODULES``.
    """
    _KINDS[name] = rebuild_fn
    return rebuild_fn


def register_loader(suffix: str, load_fn: LoadFn) -> LoadFn:
    """Register a reader for model files ending in ``suffix`` (e.g. ``.eoz``) used by :func:`load_model`."""
    _LOADERS[suffix.lower()] = load_fn
    return load_fn


def _import_kind_modules() -> None:
    import importlib

    for name in KIND_MODULES:
        importlib.import_module(name)


def registered_kinds() -> list[str]:
    """Every architecture kind known once the ``KIND_MODULES`` are imported."""
    _import_kind_modules()
    return sorted(_KINDS)


def build_module(arch: dict[str, Any]) -> nn.Module:
    """Rebuild a module (untrained) from its ``arch`` record through its kind's registered rebuild."""
    kind = arch.get("kind")
    if kind not in _KINDS:
        _import_kind_modules()
    if kind not in _KINDS:
        raise EdgeoptError(f"unknown architecture kind '{kind}' in model metadata", "re-save the model with edgeopt")
    return _KINDS[kind](arch)


def _load_edgeopt(path: Path) -> EdgeModel:
    try:
        with zipfile.ZipFile(path) as zf:
            meta = ModelMeta.from_json(json.loads(zf.read("meta.json")))
            state = torch.load(io.BytesIO(zf.read("weights.pt")), weights_only=True, map_location="cpu")
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, RuntimeError, EOFError) as e:
        raise EdgeoptError(f"{path} is not a valid edgeopt model ({e})", "re-save it with edgeopt") from e
    module = build_module(meta.arch)
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise EdgeoptError(f"{path}: weights do not fit the architecture ({first})", "re-save the model") from e
    return EdgeModel(module.eval(), meta)


def load_model(
    source: str | Path,
    input_shape: tuple[int, ...] | None = None,
    num_classes: int | None = None,
    input_range: tuple[float, float] | None = None,
    seed: int | None = None,
    task: str | None = None,
) -> EdgeModel:
    """Load a model from ``zoo:NAME``, ``.edgeopt``, ``.pt2``, ``.onnx`` or ``.tflite``.

    ``input_shape`` ((C, H, W), (C, L) or (F,)), ``num_classes`` and ``task`` make a zoo model,
    ``seed`` fixes its initial weights; ``input_range`` states the value range an imported model
    expects (e.g. ``(0, 255)``); ``input_shape`` fills an imported file's free input dimensions.
    NaN weights are rejected.
    """
    source = str(source)
    if source.startswith("zoo:"):
        from edgeopt.models import create_model

        model = create_model(source[4:], input_shape=input_shape, num_classes=num_classes, seed=seed, task=task)
    else:
        path = Path(source)
        suffix = path.suffix.lower()
        if suffix not in (MODEL_SUFFIX, ".pt2", ".onnx", ".tflite", ".eoz"):
            from edgeopt.models import list_models

            zoo = not suffix and not path.exists() and source in {e.name for e in list_models()}
            hint = "give a .edgeopt, .eoz, .pt2, .onnx or .tflite file, or zoo:NAME"
            raise EdgeoptError(f"unknown model file type '{path.suffix or path.name}'",
                               f"did you mean zoo:{source}?" if zoo else hint)  # fmt: skip
        if not path.is_file():
            raise EdgeoptError(f"model file not found: {path}", "check the path")
        if suffix == MODEL_SUFFIX:
            model = _load_edgeopt(path)
        elif suffix not in (".pt2", ".onnx", ".tflite"):  # a registered file type, e.g. .eoz (packed)
            if suffix not in _LOADERS:
                _import_kind_modules()
            model = _LOADERS[suffix](path)
        else:
            from edgeopt.interop import import_model

            model = import_model(path, input_shape=input_shape)
    if input_range is not None:
        refuse_multi_input(model, "--input-range (one value range)")
        model.meta.input.value_range = (float(input_range[0]), float(input_range[1]))
    check_finite(model.module)
    return model
