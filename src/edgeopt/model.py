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


@dataclass
class InputSpec:
    """How raw images become the model's input tensor.

    ``shape`` excludes the batch dimension and is in the model's own ``layout``
    (``(3, 32, 32)`` for NCHW, ``(32, 32, 3)`` for NHWC). Raw pixel values 0..255 are
    mapped linearly onto ``value_range``, then ``(x - mean) / std`` per channel when given.
    """

    shape: tuple[int, ...]
    layout: str = "NCHW"
    value_range: tuple[float, float] = (0.0, 1.0)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        self.shape = tuple(int(s) for s in self.shape)
        self.value_range = (float(self.value_range[0]), float(self.value_range[1]))
        if self.layout not in ("NCHW", "NHWC"):
            raise EdgeoptError(f"unknown input layout '{self.layout}'", "use NCHW or NHWC")
        if len(self.shape) != 3:
            raise EdgeoptError(f"input shape {self.shape} is not an image shape", "give C,H,W or H,W,C")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(height, width, channels) of the images this model takes."""
        if self.layout == "NCHW":
            c, h, w = self.shape
        else:
            h, w, c = self.shape
        return h, w, c

    def to_model_input(self, images: np.ndarray) -> np.ndarray:
        """uint8 images (N, H, W, C) -> float32 batch in the model's layout and range."""
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


@dataclass
class ModelMeta:
    """Everything about a model except its weights."""

    input: InputSpec
    num_classes: int
    arch: dict[str, Any]
    class_names: list[str] | None = None
    lineage: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, **asdict(self)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ModelMeta:
        try:
            inp = d["input"]
            return cls(
                input=InputSpec(
                    shape=tuple(inp["shape"]),
                    layout=inp.get("layout", "NCHW"),
                    value_range=tuple(inp.get("value_range", (0.0, 1.0))),
                    mean=tuple(inp["mean"]) if inp.get("mean") is not None else None,
                    std=tuple(inp["std"]) if inp.get("std") is not None else None,
                ),
                num_classes=int(d["num_classes"]),
                arch=dict(d["arch"]),
                class_names=d.get("class_names"),
                lineage=list(d.get("lineage", [])),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise EdgeoptError(f"model metadata is malformed ({e})", "re-save the model with edgeopt") from e


@dataclass
class EdgeModel:
    """A PyTorch module and its metadata; what every pass takes and returns."""

    module: nn.Module
    meta: ModelMeta

    def example_input(self, batch: int = 1, seed: int = 0) -> torch.Tensor:
        """A deterministic input batch in the model's own interface (for tracing and parity)."""
        g = torch.Generator().manual_seed(seed)
        images = torch.randint(0, 256, (batch, *self.meta.input.image_shape), generator=g, dtype=torch.uint8)
        return torch.from_numpy(self.meta.input.to_model_input(images.numpy()))

    def with_lineage(self, step: dict[str, Any], module: nn.Module | None = None) -> EdgeModel:
        """A copy that records one more applied pass (and optionally a new module)."""
        meta = ModelMeta.from_json(self.meta.to_json())
        meta.lineage.append(step)
        return EdgeModel(module if module is not None else self.module, meta)


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


def build_module(arch: dict[str, Any]) -> nn.Module:
    """Rebuild a module (untrained) from its ``arch`` record; no code is executed from files."""
    kind = arch.get("kind")
    if kind == "zoo":
        from edgeopt.models import create_module

        module = create_module(arch["name"], **arch.get("kwargs", {}))
        if arch.get("layers"):  # resized layers, e.g. after channel pruning
            from edgeopt.models.resize import resize_layers

            resize_layers(module, arch["layers"])
        return module
    if kind == "graph":
        from edgeopt.interop.graph import GraphModule

        return GraphModule(arch["ir"])
    if kind == "quantized":  # float arch + quantization recipe and parameters (compress/quantize)
        from edgeopt.compress.quantize.ptq import build_quantized_module

        return build_quantized_module(arch)
    raise EdgeoptError(f"unknown architecture kind '{kind}' in model metadata", "re-save the model with edgeopt")


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
) -> EdgeModel:
    """Load a model from ``zoo:NAME``, ``.edgeopt``, ``.pt2``, ``.onnx`` or ``.tflite``.

    ``input_shape`` (C, H, W) and ``num_classes`` size a zoo model, ``seed`` fixes its initial
    weights; ``input_range`` states the value range an imported model expects (e.g. ``(0, 255)``).
    NaN weights are rejected.
    """
    source = str(source)
    if source.startswith("zoo:"):
        from edgeopt.models import create_model

        model = create_model(source[4:], input_shape=input_shape, num_classes=num_classes, seed=seed)
    else:
        path = Path(source)
        suffix = path.suffix.lower()
        if suffix not in (MODEL_SUFFIX, ".pt2", ".onnx", ".tflite", ".eoz"):
            raise EdgeoptError(
                f"unknown model file type '{path.suffix or path.name}'",
                "give a .edgeopt, .eoz, .pt2, .onnx or .tflite file, or zoo:NAME",
            )
        if not path.is_file():
            raise EdgeoptError(f"model file not found: {path}", "check the path")
        if suffix == MODEL_SUFFIX:
            model = _load_edgeopt(path)
        elif suffix == ".eoz":  # packed (pruned + clustered, entropy-coded) weights
            from edgeopt.compress.storage import load_packed

            model = load_packed(path)
        else:
            from edgeopt.interop import import_model

            model = import_model(path)
    if input_range is not None:
        model.meta.input.value_range = (float(input_range[0]), float(input_range[1]))
    check_finite(model.module)
    return model
