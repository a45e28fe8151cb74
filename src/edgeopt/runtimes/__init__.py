"""One runner per runtime, all with the same interface (``Runner``): open, run, measure.

``open_runner("executorch", model_or_path, threads=1)`` gives a runner; ``measure_latency`` times it;
``benchmark`` does both and adds memory figures: the artifact's ``memory_plan`` (arena and weight bytes
from the runtime's own plan or edgeopt's liveness estimate, source named) and, apart from it, the rise
of this process's resident memory while loading and running (runtime libraries included).
Runtime libraries are imported only when a runner for them is opened.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from edgeopt.errors import EdgeoptError
from edgeopt.model import MODEL_SUFFIX, EdgeModel
from edgeopt.runtimes.base import (
    LatencyStats,
    PeakMemory,
    Runner,
    latency_stats,
    measure_latency,
    quiet_output,
    track_peak_memory,
)
from edgeopt.runtimes.memory_plan import MemoryPlan

__all__ = [
    "RUNTIMES",
    "LatencyStats",
    "MemoryPlan",
    "PeakMemory",
    "Runner",
    "benchmark",
    "latency_stats",
    "measure_latency",
    "open_runner",
    "quiet_output",
    "runtime_for_path",
    "track_peak_memory",
]

RUNTIMES = ("torch", "onnxruntime", "executorch", "litert")

_SUFFIX_RUNTIME = {
    ".onnx": "onnxruntime",
    ".pte": "executorch",
    ".tflite": "litert",
    ".pt2": "torch",
    MODEL_SUFFIX: "torch",
    ".eoz": "torch",  # entropy-coded weights (edgeopt.compress.storage); load_model restores the model
}
# export format that each non-torch runtime runs
RUNTIME_FORMAT = {"onnxruntime": "onnx", "executorch": "pte", "litert": "tflite"}


def runtime_for_path(path: str | Path) -> str:
    """The runtime that runs a model file, from its suffix (.onnx, .pte, .tflite, .pt2, .edgeopt, .eoz)."""
    suffix = Path(path).suffix.lower()
    if suffix not in _SUFFIX_RUNTIME:
        raise EdgeoptError(
            f"cannot tell which runtime runs '{Path(path).name}'",
            f"give a {', '.join(_SUFFIX_RUNTIME)} file",
        )
    return _SUFFIX_RUNTIME[suffix]


def check_runtime(runtime: str) -> str:
    """The canonical runtime name, or an error naming the choices."""
    name = str(runtime).strip().lower()
    if name not in RUNTIMES:
        raise EdgeoptError(f"unknown runtime '{runtime}'", f"choose one of: {', '.join(RUNTIMES)}")
    return name


def _open_artifact(runtime: str, path: Path, threads: int) -> Runner:
    """A runner for an artifact; ``runner.meta`` is what edgeopt stored in it (or in an old sidecar)."""
    from edgeopt.runtimes.interface import stored_meta

    runner: Runner
    if runtime == "onnxruntime":
        from edgeopt.runtimes.onnxruntime_runner import OnnxRuntimeRunner

        runner = OnnxRuntimeRunner(path, threads=threads)
    elif runtime == "executorch":
        from edgeopt.runtimes.executorch_runner import ExecuTorchRunner

        runner = ExecuTorchRunner(path, threads=threads)
    else:
        from edgeopt.runtimes.litert_runner import LiteRTRunner

        runner = LiteRTRunner(path, threads=threads)
    try:  # read after the runtime accepted the file: a corrupt one gets the runtime's own error
        runner.meta, runner.meta_source = stored_meta(path)
    except BaseException:
        runner.close()
        raise
    return runner


def _prepare_source(
    runtime: str, source: EdgeModel | str | Path, workdir: str | Path | None
) -> tuple[EdgeModel | Path, tempfile.TemporaryDirectory[str] | None]:
    """Resolve ``source`` to what the runtime opens: a model (torch) or an artifact path.

    An ``EdgeModel`` (or a ``.edgeopt``/``.pt2`` file) meant for a non-torch runtime is exported
    first, with the parity check, into ``workdir`` or a temporary directory (returned so that the
    caller keeps it alive as long as the runner).
    """
    if runtime == "torch":
        return (source if isinstance(source, EdgeModel) else Path(source)), None
    model: EdgeModel
    if isinstance(source, EdgeModel):
        model = source
    else:
        path = Path(source)
        have = runtime_for_path(path)
        if have == runtime:
            if not path.is_file():
                raise EdgeoptError(f"model file not found: {path}", "check the path")
            return path, None
        if have != "torch":
            raise EdgeoptError(
                f"{path.name} is a {have} artifact, not one for {runtime}",
                f"open it with runtime '{have}', or export the source model to .{RUNTIME_FORMAT[runtime]}",
            )
        from edgeopt.model import load_model

        model = load_model(path)
    from edgeopt.interop.export import FORMATS, export_model

    fmt = RUNTIME_FORMAT[runtime]
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="edgeopt-")
        workdir = tmp.name
    name = str(model.meta.arch.get("name", "model"))
    try:
        result = export_model(model, fmt, Path(workdir) / f"{name}{FORMATS[fmt]}")
    except BaseException:
        if tmp is not None:
            tmp.cleanup()
        raise
    return result.path, tmp


def open_runner(
    runtime: str, source: EdgeModel | str | Path, threads: int = 1, workdir: str | Path | None = None
) -> Runner:
    """A runner for ``source`` in ``runtime`` (one of ``RUNTIMES``) with ``threads`` threads.

    ``source`` is an ``EdgeModel`` or a model file. A model for a non-torch runtime is exported
    (batch 1, parity-checked) to a temporary artifact first — in ``workdir`` when given, else in a
    temporary directory removed by ``runner.close()``. A path opens the artifact directly; the
    metadata edgeopt embedded in it (or an old sidecar ``<artifact>.json``) gives ``runner.meta``,
    None for an artifact that carries none (``runtimes.interface`` describes those).
    """
    runtime = check_runtime(runtime)
    if int(threads) < 1:
        raise EdgeoptError(f"threads must be at least 1, not {threads}")
    resolved, tmp = _prepare_source(runtime, source, workdir)
    try:
        runner = _open_resolved(runtime, resolved, int(threads))
    except BaseException:
        if tmp is not None:
            tmp.cleanup()
        raise
    runner._tmpdir = tmp  # removed by runner.close()
    return runner


def _open_resolved(runtime: str, resolved: EdgeModel | Path, threads: int) -> Runner:
    if runtime == "torch":
        from edgeopt.runtimes.torch_runner import TorchRunner

        if isinstance(resolved, EdgeModel):
            return TorchRunner.from_model(resolved, threads=threads)
        return TorchRunner.from_path(resolved, threads=threads)
    assert isinstance(resolved, Path)
    return _open_artifact(runtime, resolved, threads)


def benchmark(
    runtime: str,
    source: EdgeModel | str | Path,
    threads: int = 1,
    x: np.ndarray | None = None,
    warmup: int = 10,
    runs: int = 100,
    workdir: str | Path | None = None,
    min_seconds: float = 0.0,
) -> LatencyStats:
    """Open ``source`` in ``runtime``, time ``runs`` batch-1 calls (and more until ``min_seconds`` passed:
    ``measure_latency``), and add the memory figures.

    ``process_rss_rise_bytes`` covers loading the artifact and running it (not the export that
    precedes it for an ``EdgeModel``): see ``track_peak_memory``; it includes the runtime library's
    allocations. ``memory_plan`` is that of the artifact that was run (``runtimes.memory_plan``; for
    torch, edgeopt's liveness on the ``torch.export`` graph), computed after the timing. ``x``
    defaults to the runner's example input. Cost: the export (models for a non-torch runtime),
    ``warmup + runs`` calls, and reading the artifact's plan (one ``torch.export`` for torch).
    """
    from edgeopt.runtimes.memory_plan import memory_plan, model_memory_plan

    runtime = check_runtime(runtime)
    resolved, tmp = _prepare_source(runtime, source, workdir)
    try:
        with track_peak_memory() as mem:
            runner = _open_resolved(runtime, resolved, int(threads))
            try:
                sample = runner.example_input(1) if x is None else x
                stats = measure_latency(runner, sample, threads, warmup=warmup, runs=runs, min_seconds=min_seconds)
            finally:
                runner.close()
        plan = model_memory_plan(resolved) if isinstance(resolved, EdgeModel) else memory_plan(resolved)
    finally:
        if tmp is not None:
            tmp.cleanup()
    return replace(stats, process_rss_rise_bytes=mem.bytes, memory_plan=plan)
