"""ExecuTorch runner: loads a ``.pte`` program and runs its ``forward`` method.

Threads: ExecuTorch's XNNPACK delegate runs on one process-wide threadpool. The pybindings expose
``_unsafe_reset_threadpool(n)`` (experimental in executorch 1.5), which *replaces* the pool: a
method loaded before the reset keeps a pointer to the destroyed pool and crashes on its next call.
So the runner sizes the pool to ``threads`` *before* loading its method, and every runner notes
the pool generation it loaded under: when another runner has resized the pool since, the runner
reloads its method (milliseconds) before its next call. Runners with different thread counts can
thus be open side by side, taking turns. Not safe across Python threads running ExecuTorch at once.
If a future executorch drops these functions, the runner uses the runtime's default pool (one
thread per processor) and ``threads_applied`` is False.

Cost: the first use imports executorch's pybindings (~4 s, it pulls in torch extensions);
loading a program and method takes milliseconds. Programs have static shapes: edgeopt exports
batch 1, so a batch of N runs as N calls.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgeopt.errors import EdgeoptError
from edgeopt.model import ModelMeta, split_inputs
from edgeopt.runtimes.base import Runner, quiet_output

_FLOAT32 = 6  # executorch ScalarType::Float
_POOL = {"generation": 0}  # bumped on every threadpool resize done here


def size_threadpool(threads: int) -> bool:
    """Size ExecuTorch's process-wide threadpool to ``threads`` (see module notes); False where this
    executorch has no pool functions (the runtime's default pool stays). Every program or training
    module must be loaded *after* this call: a reset destroys the pool that earlier loads point to."""
    from executorch.extension.pybindings import portable_lib

    reset = getattr(portable_lib, "_unsafe_reset_threadpool", None)
    count = getattr(portable_lib, "_threadpool_get_thread_count", None)
    if reset is None or count is None:
        return False
    if count() != threads:
        with quiet_output():  # the runtime logs every reset
            reset(threads)
        _POOL["generation"] += 1
    return True


class ExecuTorchRunner(Runner):
    """Runs the ``forward`` method of a float ``.pte`` program: every input (a structured batch when there
    are several, in the program's argument order) and every output."""

    name = "executorch"

    def __init__(self, path: str | Path, threads: int = 1, meta: ModelMeta | None = None) -> None:
        self._set_artifact(path, threads, meta)
        with quiet_output() as log:
            try:
                from executorch.extension.pybindings import portable_lib
                from executorch.runtime import Runtime

                self._count = getattr(portable_lib, "_threadpool_get_thread_count", None)
                self.threads_applied = size_threadpool(self.threads)
                self._runtime = Runtime.get()
                self._load_method()
            except EdgeoptError:
                raise
            except Exception as e:  # pybindings raise RuntimeError/ValueError for bad programs
                raise EdgeoptError(
                    f"ExecuTorch cannot load {self.path}: {str(e).strip() or log.tail(1)}", "re-export the model"
                ) from e
        md = self.method.metadata
        metas = [md.input_tensor_meta(i) for i in range(md.num_inputs())]
        if not metas or any(int(tm.dtype()) != _FLOAT32 for tm in metas):
            raise EdgeoptError(f"{self.path} does not take float32 inputs", "export with a float input interface")
        sizes = [tuple(int(s) for s in tm.sizes()) for tm in metas]
        self.fixed_batch = sizes[0][0]
        self.input_shape = sizes[0][1:]
        self.input_shapes = tuple(s[1:] for s in sizes) if len(sizes) > 1 else ()
        self.output_names = tuple(f"output_{i}" for i in range(md.num_outputs()))

    def _load_method(self) -> None:
        """(Re)load the program and ``forward`` on a pool of ``threads`` threads (see module notes).

        The program is loaded afresh too: ``Program`` caches its methods, and a cached method
        would keep the old pool.
        """
        self.method = self._program = None  # drop the old method before its pool goes away
        if self.threads_applied:
            size_threadpool(self.threads)
        program = self._runtime.load_program(self.path)
        if "forward" not in program.method_names:
            raise EdgeoptError(f"{self.path} has no 'forward' method", "export the model's forward")
        self.method = program.load_method("forward")
        self._program = program
        self._generation = _POOL["generation"]

    @contextlib.contextmanager
    def _active(self, batch: int) -> Iterator[None]:
        if self.threads_applied and (self._generation != _POOL["generation"] or self._count() != self.threads):
            with quiet_output():
                self._load_method()
        yield

    def _to_runtime(self, x: np.ndarray) -> list[torch.Tensor]:
        return [torch.from_numpy(a) for a in split_inputs(x)]

    def _execute(self, xr: list[torch.Tensor]) -> Any:
        outs = self.method.execute(xr)
        return outs[0] if len(outs) == 1 else tuple(outs)

    def _from_runtime(self, y: torch.Tensor) -> np.ndarray:
        return y.detach().float().numpy().copy()  # the output buffer is reused by the next call

    def close(self) -> None:
        self.method = None
        self._program = None
        super().close()
