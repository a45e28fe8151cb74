"""ONNX Runtime runner (CPU execution provider, sequential, ``threads`` intra-op threads).

Cost: creating the session optimises the graph (milliseconds for edge models); importing
onnxruntime takes ~0.2 s and happens on first use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.errors import EdgeoptError
from edgeopt.model import ModelMeta, split_inputs
from edgeopt.runtimes.base import Runner


def int8_kernels_saturate() -> bool:
    """Whether ONNX Runtime's int8 kernels saturate on this CPU, so an int8 model's outputs here may differ
    from an exact int8 computation (edgeopt's simulation, LiteRT, ExecuTorch, ONNX Runtime on ARM).

    On x86 without VNNI (AVX2, or AVX-512 without VNNI), ONNX Runtime's u8s8 convolutions and matmuls multiply
    pairs of codes with VPMADDUBSW, whose int16 sum saturates once two products exceed 32,767 (ONNX Runtime's
    quantization docs, "when and why do I need to try U8U8"): full-range int8 weights times activation codes
    above 128 reach that. VNNI and ARM's dot products do not saturate. Seen on an AVX2 VM (2026-12-02): a
    ResNet-style int8 export 2.3 pt less accurate in ONNX Runtime than in the other runtimes, which VNNI
    machines do not show.
    """
    import platform

    from edgeopt.report.environment import machine_info

    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    return not {"avx512_vnni", "avx_vnni", "amx_int8"} & set(machine_info()["cpu_flags"])


def session_options(threads: int) -> Any:
    """How edgeopt runs ONNX Runtime: ``threads`` intra-op threads, sequential, every graph optimisation, quiet.
    The runner and the per-operator profiler (``hardware.op_timings``) share it, so both time the same graph."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return so


class OnnxRuntimeRunner(Runner):
    """Runs an ``.onnx`` model; takes every input (a structured batch when there are several, fed by the
    graph's input order) and returns every output (a tuple when there are several). Batch fixed when the
    graph says so (by the first input's)."""

    name = "onnxruntime"

    def __init__(self, path: str | Path, threads: int = 1, meta: ModelMeta | None = None) -> None:
        import onnxruntime as ort

        self._set_artifact(path, threads, meta)
        try:
            self.session = ort.InferenceSession(str(self.path), session_options(self.threads),
                                                providers=["CPUExecutionProvider"])  # fmt: skip
        except Exception as e:  # onnxruntime raises its own exception types for bad files
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise EdgeoptError(f"ONNX Runtime cannot load {self.path}: {first}", "re-export the model") from e
        inputs = self.session.get_inputs()
        odd = [i for i in inputs if i.type != "tensor(float)"]
        if odd:
            raise EdgeoptError(
                f"{self.path} takes {odd[0].type} input, not float", "export with a float input interface"
            )
        self.input_names = tuple(i.name for i in inputs)
        self.input_name = inputs[0].name
        self.output_names = tuple(o.name for o in self.session.get_outputs())
        dims = list(inputs[0].shape)
        self.fixed_batch = dims[0] if isinstance(dims[0], int) and dims[0] > 0 else None
        shapes = tuple(tuple(d if isinstance(d, int) and d > 0 else -1 for d in i.shape[1:]) for i in inputs)
        self.input_shape = shapes[0]
        self.input_shapes = shapes if len(shapes) > 1 else ()

    def _to_runtime(self, x: np.ndarray) -> dict[str, np.ndarray]:
        if self.input_shapes:
            return dict(zip(self.input_names, split_inputs(x), strict=True))
        return {self.input_name: x}

    def _execute(self, xr: dict[str, np.ndarray]) -> Any:
        outs = self.session.run(self.output_names, xr)
        return outs[0] if len(outs) == 1 else tuple(outs)

    def close(self) -> None:
        self.session = None
        super().close()
