"""Resolve what a user names (zoo:NAME, a model file or a runtime artifact) to a runner and metadata.

A model (zoo, .edgeopt, .pt2, or .onnx/.tflite run outside their own runtime) is loaded and,
for a non-torch runtime, exported with a parity check. An artifact in its own runtime is
opened as it is; its input interface comes from the sidecar edgeopt wrote beside it, or, for
.onnx and .tflite, from parsing the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeopt.errors import EdgeoptError
from edgeopt.fileio import atomic_path
from edgeopt.model import EdgeModel, ModelMeta, load_model
from edgeopt.runtimes import Runner, check_runtime, open_runner, runtime_for_path


@dataclass
class OpenedModel:
    meta: ModelMeta
    runner: Runner
    runtime: str


def resolve_source(source: str, runtime: str | None = None) -> tuple[str, EdgeModel | Path]:
    """(runtime, what to open): the artifact itself in its own runtime, else the loaded model."""
    native = "torch" if source.startswith("zoo:") else runtime_for_path(source)
    runtime = check_runtime(runtime or native)
    if runtime == native and native != "torch":
        path = Path(source)
        if not path.is_file():
            raise EdgeoptError(f"model file not found: {path}", "check the path")
        return runtime, path
    return runtime, load_model(source)


def open_model(
    source: str, runtime: str | None = None, threads: int = 1, input_range: tuple[float, float] | None = None
) -> OpenedModel:
    """Open ``source`` in ``runtime`` (default: the artifact's own runtime, torch for models)."""
    runtime, target = resolve_source(source, runtime)
    if isinstance(target, Path):
        path = target
        runner = open_runner(runtime, path, threads=threads)
        meta = runner.meta
        if meta is None:
            if path.suffix.lower() == ".pte":
                raise EdgeoptError(
                    f"{path} has no edgeopt sidecar ({path.name}.json) describing its input",
                    "export it with edgeopt, or pass the source model instead",
                )
            meta = load_model(path).meta  # parses the .onnx/.tflite for its input interface
        if input_range is not None:
            meta.input.value_range = input_range
        return OpenedModel(meta, runner, runtime)
    model = target
    if input_range is not None:
        model.meta.input.value_range = input_range
    return OpenedModel(model.meta, open_runner(runtime, model, threads=threads), runtime)


def run_raw(opened: OpenedModel, inputs: Path, out: Path) -> np.ndarray:
    """Run the model on a raw ``.npy`` batch and write its raw outputs to ``out`` (atomically)."""
    if not inputs.is_file():
        raise EdgeoptError(f"inputs file not found: {inputs}", "give a .npy array")
    try:
        x = np.load(inputs, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise EdgeoptError(f"{inputs} is not a readable .npy array ({e})", "save it with numpy.save") from e
    want = tuple(opened.meta.input.shape)
    if x.ndim == len(want):
        x = x[None]
    if tuple(x.shape[1:]) != want:
        raise EdgeoptError(
            f"inputs have shape {tuple(x.shape)} but the model takes N x {'x'.join(map(str, want))}",
            f"give inputs in the model's {opened.meta.input.layout} layout",
        )
    y = opened.runner.run(x.astype(np.float32))
    with atomic_path(out) as tmp, open(tmp, "wb") as f:
        np.save(f, y)
    return y
