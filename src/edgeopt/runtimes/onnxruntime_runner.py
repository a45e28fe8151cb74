"""ONNX Runtime runner (CPU execution provider, sequential, ``threads`` intra-op threads).

Cost: creating the session optimises the graph (milliseconds for edge models); importing
onnxruntime takes ~0.2 s and happens on first use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.errors import EdgeoptError
from edgeopt.model import ModelMeta
from edgeopt.runtimes.base import Runner


class OnnxRuntimeRunner(Runner):
    """Runs a single-input ``.onnx`` model; returns every output (a tuple when there are several).
    Batch fixed when the graph says so."""

    name = "onnxruntime"

    def __init__(self, path: str | Path, threads: int = 1, meta: ModelMeta | None = None) -> None:
        import onnxruntime as ort

        self._set_artifact(path, threads, meta)
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), so, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for bad files
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise EdgeoptError(f"ONNX Runtime cannot load {self.path}: {first}", "re-export the model") from e
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise EdgeoptError(f"{self.path} takes {len(inputs)} inputs", "edgeopt runs single-input models")
        if inputs[0].type != "tensor(float)":
            raise EdgeoptError(
                f"{self.path} takes {inputs[0].type} input, not float", "export with a float input interface"
            )
        self.input_name = inputs[0].name
        self.output_names = tuple(o.name for o in self.session.get_outputs())
        dims = list(inputs[0].shape)
        self.fixed_batch = dims[0] if isinstance(dims[0], int) and dims[0] > 0 else None
        self.input_shape = tuple(d if isinstance(d, int) and d > 0 else -1 for d in dims[1:])

    def _to_runtime(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return {self.input_name: x}

    def _execute(self, xr: dict[str, np.ndarray]) -> Any:
        outs = self.session.run(self.output_names, xr)
        return outs[0] if len(outs) == 1 else tuple(outs)

    def close(self) -> None:
        self.session = None
        super().close()
