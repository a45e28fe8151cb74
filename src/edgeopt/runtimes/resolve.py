"""Resolve what a user names (zoo:NAME, a model file or a runtime artifact) to a runner and metadata.

A model (zoo, .edgeopt, .pt2, or .onnx/.tflite run outside their own runtime) is loaded and,
for a non-torch runtime, exported with a parity check. An artifact in its own runtime is
opened as it is, alone: its input interface is what edgeopt embedded in it, an old sidecar, or
what the file itself states (``runtimes.interface``); ``--input-range``, ``--layout`` and
``--classes`` override it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeopt.errors import EdgeoptError
from edgeopt.fileio import atomic_path
from edgeopt.model import EdgeModel, InputSet, InputSpec, ModelMeta, load_model
from edgeopt.runtimes import Runner, check_runtime, open_runner, runtime_for_path
from edgeopt.runtimes.interface import InterfaceFlags, apply_flags, artifact_interface


@dataclass
class OpenedModel:
    meta: ModelMeta
    runner: Runner
    runtime: str
    meta_source: str = "model"  # or where an artifact's interface came from (runtimes.interface)


def resolve_source(source: str, runtime: str | None = None) -> tuple[str, EdgeModel | Path]:
    """(runtime, what to open): the artifact itself in its own runtime, else the loaded model."""
    native = "torch" if source.startswith("zoo:") else runtime_for_path(source)
    runtime = check_runtime(runtime or native)
    if native == "executorch" and runtime != native:  # a .pte is a lowered program: nothing converts it back
        raise EdgeoptError(
            f"{Path(source).name} is an ExecuTorch program: only --runtime executorch runs it, not {runtime}",
            f"drop --runtime, or give the model it was exported from to run it in {runtime}",
        )
    if runtime == native and native != "torch":
        path = Path(source)
        if not path.is_file():
            raise EdgeoptError(f"model file not found: {path}", "check the path")
        return runtime, path
    if native == "torch" or not Path(source).is_file():
        return runtime, load_model(source)
    try:  # a .tflite/.onnx in another runtime: imported, then exported to that runtime
        return runtime, load_model(source)
    except EdgeoptError as e:
        raise EdgeoptError(
            f"{Path(source).name} runs in {native}; to run it in {runtime} edgeopt must import it, and: {e.problem}",
            f"drop --runtime to run it in {native}, or give the model it was exported from",
        ) from e


def open_model(
    source: str,
    runtime: str | None = None,
    threads: int = 1,
    input_range: tuple[float, float] | None = None,
    layout: str | None = None,
    classes: int | list[str] | None = None,
) -> OpenedModel:
    """Open ``source`` in ``runtime`` (default: the artifact's own runtime, torch for models).

    ``input_range``, ``layout`` and ``classes`` (a count or names) override what the model or
    artifact states; ``layout`` only for an artifact (a model's module fixes its own).
    """
    flags = InterfaceFlags(input_range, layout, classes)
    runtime, target = resolve_source(source, runtime)
    if isinstance(target, Path):
        runner = open_runner(runtime, target, threads=threads)
        try:
            meta, where = artifact_interface(target, runner)
            meta = apply_flags(meta, flags)
        except BaseException:
            runner.close()
            raise
        runner.meta = meta
        return OpenedModel(meta, runner, runtime, where)
    if layout is not None:
        raise EdgeoptError("--layout describes a bare artifact; a model's own module fixes its layout", "drop --layout")
    model = target
    model.meta = apply_flags(model.meta, flags)  # before a non-torch runtime's export: the artifact carries it
    return OpenedModel(model.meta, open_runner(runtime, model, threads=threads), runtime)


def artifact_example(
    path: Path,
    runtime: str,
    threads: int = 1,
    input_range: tuple[float, float] | None = None,
    layout: str | None = None,
) -> np.ndarray:
    """One image through a bare artifact's input interface (what ``bench`` times it on)."""
    opened = open_model(str(path), runtime, threads, input_range, layout)
    try:
        return opened.runner.example_input(1)
    finally:
        opened.runner.close()


def load_inputs(inputs: Path) -> np.ndarray:
    """A ``.npy`` array of raw inputs, read without unpickling; one clear error if missing or unreadable."""
    if not inputs.is_file():
        raise EdgeoptError(f"inputs file not found: {inputs}", "give a .npy array")
    try:
        return np.load(inputs, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise EdgeoptError(f"{inputs} is not a readable .npy array ({e})", "save it with numpy.save") from e


def run_raw(opened: OpenedModel, inputs: Path, out: Path) -> np.ndarray | tuple[np.ndarray, ...]:
    """Run the model on a raw ``.npy`` batch and write its raw outputs to ``out`` (atomically): a ``.npy``
    array, or for a multi-output model a ``.npz`` with one array per output, named as its record names them."""
    spec = opened.meta.input
    x = load_named_inputs(inputs, spec) if isinstance(spec, InputSet) else load_inputs(inputs)
    heads = opened.meta.outputs
    if heads is not None and out.suffix.lower() != ".npz":
        raise EdgeoptError(
            f"the model has outputs {', '.join(h.name for h in heads)}: one .npz holds them, not {out.name}",
            f"give --out {out.with_suffix('.npz').name}",
        )
    y = opened.runner.run(x if isinstance(spec, InputSet) else check_raw(x, spec))
    with atomic_path(out) as tmp, open(tmp, "wb") as f:
        if heads is not None:
            from edgeopt.train.multi import as_outputs

            np.savez(f, **{h.name: a for h, a in zip(heads, as_outputs(heads, y), strict=True)})
        else:
            np.save(f, y)
    return y


def load_named_inputs(inputs: Path, spec: InputSet) -> np.ndarray:
    """A multi-input model's raw inputs: a ``.npz`` with one array per input, named as the inputs, each
    (N, *shape) or one sample; one structured batch (:class:`edgeopt.model.InputSet`). One line on a mismatch."""
    if inputs.suffix.lower() != ".npz":
        raise EdgeoptError(f"the model has inputs {', '.join(spec.names)}: give them in one .npz, not {inputs.name}",
                           f"np.savez('x.npz', {', '.join(f'{n}=...' for n in spec.names)})")  # fmt: skip
    if not inputs.is_file():
        raise EdgeoptError(f"inputs file not found: {inputs}", "give a .npz file")
    from edgeopt.data.arrays import read_arrays

    arrays = read_arrays(inputs, mmap=False)
    if sorted(arrays) != sorted(spec.names):
        raise EdgeoptError(f"{inputs.name} has arrays {sorted(arrays)} but the model takes inputs {spec.names}",
                           "name one array after each input")  # fmt: skip
    xs = [check_raw(np.asarray(arrays[n]), s, n) for n, s in zip(spec.names, spec.specs, strict=True)]
    if len({len(a) for a in xs}) != 1:
        raise EdgeoptError(f"{inputs.name}: the inputs' batches differ ({', '.join(str(len(a)) for a in xs)} rows)")
    return spec.pack(xs)


def check_raw(x: np.ndarray, spec: InputSpec, name: str = "") -> np.ndarray:
    """A raw batch (or one sample) of ``spec``'s shape as float32 (N, *shape); one line if it does not fit."""
    want = tuple(spec.shape)
    if x.ndim == len(want):
        x = x[None]
    if tuple(x.shape[1:]) != want:
        raise EdgeoptError(
            f"{'input ' + name + ' has' if name else 'inputs have'} shape {tuple(x.shape)} but the model takes N x"
            f" {'x'.join(map(str, want))}",
            f"give inputs in the model's {spec.layout} layout",
        )
    return x.astype(np.float32)
