"""PyTorch eager runner: a module (from an EdgeModel, ``.edgeopt``, ``.pt2``, or an imported file).

Cost: no load beyond the model itself; each call runs the module under ``torch.inference_mode``.
torch's intra-op thread count is process-wide: the runner sets it to its own ``threads`` for the
duration of a ``run`` (or of a latency measurement) and puts the previous count back afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgeopt.errors import EdgeoptError
from edgeopt.model import EdgeModel, InputSet, ModelMeta, model_args
from edgeopt.runtimes.base import Runner


class TorchRunner(Runner):
    """Runs an ``nn.Module`` in eval mode; any batch size unless it came from a static ``.pt2``."""

    name = "torch"

    def __init__(
        self,
        module: nn.Module,
        input_shape: tuple[int, ...],
        threads: int = 1,
        meta: ModelMeta | None = None,
        fixed_batch: int | None = None,
        path: Path | None = None,
    ) -> None:
        try:
            module.eval()
        except NotImplementedError:  # torch.export's unlifted module: train/eval was fixed at export
            pass
        self.module = module
        self.input_shape = tuple(int(s) for s in input_shape)
        self.threads = int(threads)
        self.meta = meta
        self.fixed_batch = fixed_batch
        self.path = path

    @classmethod
    def from_model(cls, model: EdgeModel, threads: int = 1) -> TorchRunner:
        spec = model.meta.input
        if isinstance(spec, InputSet):  # several inputs: a structured batch, one field each
            runner = cls(model.module, spec.shapes[0], threads=threads, meta=model.meta)
            runner.input_shapes = spec.shapes
            return runner
        return cls(model.module, tuple(spec.shape), threads=threads, meta=model.meta)

    @classmethod
    def from_path(cls, path: str | Path, threads: int = 1) -> TorchRunner:
        """Open ``.pt2`` (torch.export program) directly; other model files through ``load_model``."""
        path = Path(path)
        if path.suffix.lower() != ".pt2":
            from edgeopt.model import load_model

            runner = cls.from_model(load_model(path), threads=threads)
            runner.path = path
            return runner
        if not path.is_file():
            raise EdgeoptError(f"model file not found: {path}", "check the path")
        try:
            ep = torch.export.load(str(path))
        except Exception as e:  # torch raises several types for a bad archive
            raise EdgeoptError(f"{path} is not a valid torch.export program ({e})", "re-export it") from e
        user_inputs = set(ep.graph_signature.user_inputs)
        shapes = [
            tuple(n.meta["val"].shape)
            for n in ep.graph.nodes
            if n.op == "placeholder" and n.name in user_inputs and "val" in n.meta
        ]
        if len(shapes) != 1:
            raise EdgeoptError(f"{path} takes {len(shapes)} inputs", "edgeopt runs single-input models")
        shape = shapes[0]
        fixed = int(shape[0]) if isinstance(shape[0], int) else None
        per_sample = tuple(int(s) if isinstance(s, int) else -1 for s in shape[1:])
        from edgeopt.interop.export import read_sidecar

        return cls(ep.module(), per_sample, threads=threads, meta=read_sidecar(path), fixed_batch=fixed, path=path)

    @contextlib.contextmanager
    def _active(self, batch: int) -> Iterator[None]:
        before = torch.get_num_threads()
        if before != self.threads:
            torch.set_num_threads(self.threads)
        try:
            yield
        finally:
            if torch.get_num_threads() != before:
                torch.set_num_threads(before)

    def _to_runtime(self, x: np.ndarray) -> tuple[torch.Tensor, ...]:
        return model_args(x)

    def _execute(self, xr: tuple[torch.Tensor, ...]) -> torch.Tensor:
        with torch.inference_mode():
            y = self.module(*xr)
        return tuple(y) if isinstance(y, tuple | list) else y  # a multi-output model: one tensor per output

    def _from_runtime(self, y: torch.Tensor) -> np.ndarray:
        return y.detach().float().numpy()
