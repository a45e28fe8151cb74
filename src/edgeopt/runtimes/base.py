"""What every runtime runner shares: the ``Runner`` interface, latency and process-memory measurement.

A runner holds one loaded artifact (or a PyTorch module) and runs float32 batches in the model's
own input interface. Runtimes whose artifact has a fixed batch (edgeopt exports batch 1) are fed
chunk by chunk, so ``run`` takes any batch size.

Cost: importing this module is cheap (numpy only). ``measure_latency`` costs ``warmup + runs``
single-sample invocations; ``track_peak_memory`` reads ``/proc/self/status`` twice.

``quiet_output`` silences the chatter exporters and runtimes print (Python and C++ alike, at the
file-descriptor level), so that a ``--json`` CLI prints exactly one JSON object on stdout.
"""

from __future__ import annotations

import contextlib
import gc
import io
import os
import sys
import tempfile
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeopt.errors import EdgeoptError
from edgeopt.model import ModelMeta

if TYPE_CHECKING:
    from edgeopt.runtimes.memory_plan import MemoryPlan


@dataclass
class LatencyStats:
    """Per-call latency of batch-1 inference (milliseconds); ``benchmark`` adds the memory figures.

    ``process_rss_rise_bytes``: rise of this process's resident high-water mark while loading and
    running the model (``track_peak_memory``); it includes the runtime library's own allocations
    (kernels, thread pools, packed weights), so it is not what the model needs on a device.
    ``memory_plan``: the artifact's arena and weight bytes from the runtime's own plan or edgeopt's
    liveness estimate, with the source named (``runtimes.memory_plan``).

    ``quiet_p50_ms``: the median of the fastest of ``LATENCY_WINDOWS`` consecutive windows of calls. On a
    shared machine other tenants' work only ever adds time, in phases: on this project's 2-vCPU VM a small
    int8 model ran 0.074 ms for most of a second, then 0.128 ms for up to 1.3 s (2026-12-03), so the median
    of all calls depends on when they ran. The quiet window is the estimate least touched by them; it is the
    model's cost on an uncontended core, which is what a device budget is about. ``p50_ms`` stays the median
    of every call.
    """

    p50_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    runs: int
    threads: int
    quiet_p50_ms: float
    runtime: str = ""
    process_rss_rise_bytes: int | None = None
    memory_plan: MemoryPlan | None = None


LATENCY_WINDOWS = 10  # consecutive windows the calls are split into for ``quiet_p50_ms``


def latency_stats(samples_ns: Sequence[int] | np.ndarray, threads: int, runtime: str = "") -> LatencyStats:
    """Summarise per-call timings (nanoseconds, in call order) as percentiles in milliseconds. Pure."""
    t = np.asarray(samples_ns, dtype=np.float64) / 1e6
    if t.size == 0:
        raise EdgeoptError("no latency samples to summarise", "measure with runs >= 1")
    p50, p90 = np.percentile(t, [50, 90])
    windows = np.array_split(t, min(LATENCY_WINDOWS, t.size))
    return LatencyStats(
        p50_ms=float(p50),
        p90_ms=float(p90),
        mean_ms=float(t.mean()),
        min_ms=float(t.min()),
        runs=int(t.size),
        threads=int(threads),
        runtime=runtime,
        quiet_p50_ms=float(min(np.median(w) for w in windows)),
    )


def canonical_array(x: np.ndarray) -> np.ndarray:
    """``x`` as float32 with row-major strides everywhere, size-1 dimensions included. Pure.

    numpy calls an array C-contiguous whatever the strides of its size-1 dimensions (a transposed
    ``(1, 8, 8, 1)`` image becomes ``(1, 1, 8, 8)`` with stride 1 on the channel). torch keeps those
    strides, and torch.export/ExecuTorch read them as a channels-last dim order: a program traced or
    fed with such a tensor fails in XNNPACK. Canonical strides avoid that.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    want, step = [], x.itemsize
    for n in reversed(x.shape):
        want.append(step)
        step *= n
    if tuple(reversed(want)) != x.strides:
        x = x.copy()
    return x


class Runner(ABC):
    """One model loaded in one runtime.

    Subclasses set ``name`` (the runtime), ``threads``, ``input_shape`` (one sample, no batch
    dimension, in the model's own layout; ``-1`` where the artifact does not say) and
    ``fixed_batch`` (the batch size the artifact was built for, or ``None`` when any batch works),
    and implement three small steps that ``run`` chains:

    - ``_to_runtime(x)``: float32 numpy batch -> what the runtime takes (tensor, quantized array…)
    - ``_execute(xr)``: hand it to the runtime, invoke, read the raw output back (this is timed)
    - ``_from_runtime(y)``: raw output -> float32 numpy (dequantized where needed)

    A multi-input artifact (``input_shapes``, one shape per input) takes a structured batch, a field per
    input in the model's order (:class:`edgeopt.model.InputSet`); ``_to_runtime`` gets it whole.
    A multi-output artifact's ``_execute`` returns a tuple of raw outputs, in the model's order;
    ``_outputs_from_runtime`` converts each, and ``run`` returns a tuple of arrays (one per output,
    ``output_names`` names them).

    ``_active(batch)`` (a context manager, optional) holds per-call settings around a run.
    """

    name: str = ""
    threads: int = 1
    input_shape: tuple[int, ...] = ()
    fixed_batch: int | None = None
    path: Path | None = None
    meta: ModelMeta | None = None
    meta_source: str | None = None  # where ``meta`` came from (``runtimes.interface``: embedded, sidecar, ...)
    output_names: tuple[str, ...] = ()  # the artifact's outputs, in the order ``run`` returns them
    input_shapes: tuple[tuple[int, ...], ...] = ()  # a multi-input artifact: each input's ``input_shape``

    def _set_artifact(self, path: str | Path, threads: int, meta: ModelMeta | None) -> None:
        """What every artifact runner does first: record its settings and check the file exists."""
        self.path = Path(path)
        self.threads = int(threads)
        self.meta = meta
        if not self.path.is_file():
            raise EdgeoptError(f"model file not found: {self.path}", "check the path")

    @abstractmethod
    def _to_runtime(self, x: np.ndarray) -> Any: ...

    @abstractmethod
    def _execute(self, xr: Any) -> Any: ...

    def _from_runtime(self, y: Any) -> np.ndarray:
        return np.asarray(y, dtype=np.float32)

    def _outputs_from_runtime(self, y: Any) -> np.ndarray | tuple[np.ndarray, ...]:
        """``_from_runtime`` of one raw output, or of each of a multi-output artifact's (a tuple)."""
        if isinstance(y, tuple):
            return tuple(self._from_runtime(t) for t in y)
        return self._from_runtime(y)

    @contextlib.contextmanager
    def _active(self, batch: int) -> Iterator[None]:
        """Hold the runtime ready for calls of ``batch`` rows: threads, resizing; restored on exit."""
        yield

    def run(self, x: np.ndarray) -> Any:
        """Run a float32 batch ``(N, *input_shape)``; returns the model's output ``(N, ...)`` as float32,
        or a tuple of them (one per output, in ``output_names`` order) for a multi-output artifact."""
        x = self.check_input(x)
        n = x.shape[0]
        b = self.fixed_batch
        if b is None or n == b:
            with self._active(n):
                return self._outputs_from_runtime(self._execute(self._to_runtime(x)))
        outs = []
        with self._active(b):
            for i in range(0, n, b):
                chunk = x[i : i + b]
                k = chunk.shape[0]
                if k < b:  # pad the last chunk to the artifact's batch; padded rows are dropped below
                    chunk = np.concatenate([chunk, np.zeros((b - k, *chunk.shape[1:]), chunk.dtype)])
                y = self._outputs_from_runtime(self._execute(self._to_runtime(chunk)))
                outs.append(tuple(t[:k] for t in y) if isinstance(y, tuple) else y[:k])
        if isinstance(outs[0], tuple):
            return tuple(np.concatenate(parts) for parts in zip(*outs, strict=True))
        return np.concatenate(outs)

    def check_input(self, x: np.ndarray) -> np.ndarray:
        """A C-contiguous float32 copy-or-view of ``x``; a clear error when its shape does not fit."""
        x = np.asarray(x)
        if self.input_shapes or x.dtype.names:
            return self._check_inputs(x)
        want = self.input_shape
        fits = x.ndim == len(want) + 1 and all(w in (-1, g) for w, g in zip(want, x.shape[1:], strict=True))
        if not fits or x.shape[0] < 1:
            shown = "x".join("?" if w == -1 else str(w) for w in want)
            raise EdgeoptError(
                f"{self.name} model expects input of shape N x {shown} but got {tuple(x.shape)}",
                "feed a batch in the model's own layout (see its input spec)",
            )
        return canonical_array(x)

    def _check_inputs(self, x: np.ndarray) -> np.ndarray:
        """``check_input`` of a multi-input batch: a field per input, each of its input's shape."""
        want = self.input_shapes
        names = x.dtype.names or ()
        got = [tuple(x.dtype[n].shape) for n in names]
        fits = len(got) == len(want) and all(
            len(w) == len(g) and all(a in (-1, b) for a, b in zip(w, g, strict=True))
            for w, g in zip(want, got, strict=True)
        )
        if not fits or x.ndim != 1 or x.shape[0] < 1:
            shown = ", ".join("x".join("?" if d == -1 else str(d) for d in w) for w in want) or "one array"
            has = ", ".join("x".join(map(str, g)) for g in got) if names else f"one array {tuple(x.shape)}"
            raise EdgeoptError(
                f"{self.name} model takes {len(want) or 1} input(s) ({shown}) but got {has}",
                "feed one array per input, in the model's order (see its input spec)",
            )
        return x

    def example_input(self, batch: int = 1, seed: int = 0) -> np.ndarray:
        """A deterministic input batch: through the model's input spec when known, else uniform 0..1."""
        rng = np.random.default_rng(seed)
        if self.input_shapes:
            if self.meta is None or not self.meta.is_multi_input or self.meta.input.shapes != self.input_shapes:
                raise EdgeoptError(f"{self.name} model takes {len(self.input_shapes)} inputs and states no spec",
                                   "give its inputs explicitly")  # fmt: skip
            return self.meta.input.example_batch(batch, seed)
        if self.meta is not None and tuple(self.meta.input.shape) == self.input_shape:
            if not self.meta.input.is_image:
                return self.meta.input.example_batch(batch, seed)
            h, w, c = self.meta.input.image_shape
            images = rng.integers(0, 256, size=(batch, h, w, c), dtype=np.uint8)
            return self.meta.input.to_model_input(images)
        if any(s < 0 for s in self.input_shape):
            raise EdgeoptError(f"{self.name} model does not state its input shape", "give an input explicitly")
        return rng.random((batch, *self.input_shape), dtype=np.float32)

    def close(self) -> None:
        """Release the runtime's resources (and any temporary artifact)."""
        tmp = getattr(self, "_tmpdir", None)
        if tmp is not None:
            tmp.cleanup()
            self._tmpdir = None

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = f" {self.path}" if self.path else ""
        return f"<{type(self).__name__}{where} threads={self.threads} input={self.input_shape}>"


def repeat_for(call: Callable[[], object], seconds: float, least: int = 20, most: int = 200) -> None:
    """``call()`` for about ``seconds``, at least ``least`` and at most ``most`` times: how the
    profilers' passes (``hardware.op_timings``) are sized. The cap is a profiler's cost: every profiled
    call leaves events to parse (ExecuTorch's ETDump, ONNX Runtime's JSON), and 0.2 s of a 20 µs
    model's calls took 3.5 s to read (2026-12-05); a trimmed mean over 200 calls already resolves a
    microsecond."""
    start, n = time.perf_counter(), 0
    while n < least or time.perf_counter() - start < seconds and n < most:
        call()
        n += 1


def measure_latency(
    runner: Runner,
    x: np.ndarray,
    threads: int | None = None,
    warmup: int = 10,
    runs: int = 100,
    min_seconds: float = 0.0,
) -> LatencyStats:
    """Per-call latency of ``runner`` on the first sample of ``x`` (batch 1), after ``warmup`` calls.

    At least ``runs`` calls are timed, and more until ``min_seconds`` have passed: spread over time, the
    calls' windows can find a quiet phase of a shared machine (``LatencyStats.quiet_p50_ms``).

    ``threads`` is the thread count the runner was opened with (runtimes fix it when they load),
    given here to state it; a mismatch is an error. Each call is timed with ``perf_counter_ns``
    around handing the input to the runtime, invoking it and reading the output back; the input
    conversion (numpy -> tensor, quantization) is done once beforehand. The garbage collector is
    paused while timing.
    """
    if threads is not None and threads != runner.threads:
        raise EdgeoptError(
            f"the {runner.name} runner was opened with {runner.threads} thread(s), not {threads}",
            f"open it with threads={threads}",
        )
    if runs < 1 or warmup < 0:
        raise EdgeoptError(f"bad latency settings (runs={runs}, warmup={warmup})", "use runs >= 1, warmup >= 0")
    x1 = runner.check_input(np.asarray(x)[:1])
    batch = runner.fixed_batch or 1
    if batch != 1:
        x1 = np.concatenate([x1] * batch)
    runner.run(x1)  # validates the whole path once, before timing
    times: list[int] = []
    clock = time.perf_counter_ns
    with runner._active(batch):
        xr = runner._to_runtime(x1)
        execute = runner._execute
        for _ in range(warmup):
            execute(xr)
        until = clock() + int(min_seconds * 1e9)
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            while len(times) < runs or clock() < until:
                t0 = clock()
                execute(xr)
                times.append(clock() - t0)
        finally:
            if gc_was_enabled:
                gc.enable()
    return latency_stats(times, threads=runner.threads, runtime=runner.name)


# --- peak memory ---------------------------------------------------------------------------------


@dataclass
class PeakMemory:
    """Result of ``track_peak_memory``: rise of the resident high-water mark, and how it was read."""

    bytes: int | None = None
    method: str | None = None  # "vmhwm" (exact, Linux), "ru_maxrss" (lower bound), or None


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _ru_maxrss_bytes() -> int | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r) if sys.platform == "darwin" else int(r) * 1024


@contextlib.contextmanager
def track_peak_memory() -> Iterator[PeakMemory]:
    """Measure how far the process's resident memory peaks above its level at entry.

    On Linux the high-water mark (VmHWM) is reset by writing ``5`` to ``/proc/self/clear_refs``
    and read back from ``/proc/self/status`` on exit: the rise is exact for the block. Elsewhere
    (or when clear_refs is not writable) the rise of ``ru_maxrss`` is reported, which is only a
    lower bound (zero unless the block beats the process's earlier peak); ``bytes`` stays ``None``
    where neither exists.
    """
    pm = PeakMemory()
    reset = _reset_hwm() and _status_kib("VmHWM") is not None
    base_kib = _status_kib("VmRSS") if reset else None
    base_ru = None if reset else _ru_maxrss_bytes()
    try:
        yield pm
    finally:
        if reset and base_kib is not None:
            hwm = _status_kib("VmHWM")
            if hwm is not None:
                pm.bytes, pm.method = max(0, hwm - base_kib) * 1024, "vmhwm"
        elif base_ru is not None:
            now = _ru_maxrss_bytes()
            if now is not None:
                pm.bytes, pm.method = max(0, now - base_ru), "ru_maxrss"


# --- silence exporters and runtimes --------------------------------------------------------------


@dataclass
class CapturedOutput:
    """What was printed inside ``quiet_output`` (available after the block ends)."""

    text: str = ""

    def tail(self, lines: int = 5) -> str:
        return "\n".join(ln for ln in self.text.strip().splitlines()[-lines:])


def _flush_c_stdio() -> None:
    try:
        import ctypes

        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError, TypeError):
        pass


@contextlib.contextmanager
def quiet_output() -> Iterator[CapturedOutput]:
    """Swallow everything written to stdout/stderr inside the block, from Python or native code.

    Python-level writes go to a buffer; file descriptors 1 and 2 are pointed at a temporary file
    (C/C++ logging from torch, TensorFlow Lite, XNNPACK, ExecuTorch). Warnings are ignored. The
    captured text is in the yielded object's ``text`` afterwards, for error messages. This changes
    process-wide file descriptors: do not print from other threads meanwhile.
    """
    captured = CapturedOutput()
    py_buf = io.StringIO()
    for s in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            s.flush()
    with tempfile.TemporaryFile() as sink:
        saved: list[int] = []
        try:
            saved = [os.dup(1), os.dup(2)]
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
        except OSError:  # no real stdio (embedded interpreters): Python-level capture only
            for fd in saved:
                os.close(fd)
            saved = []
        try:
            with (
                contextlib.redirect_stdout(py_buf),
                contextlib.redirect_stderr(py_buf),
                warnings.catch_warnings(),
            ):
                warnings.simplefilter("ignore")
                yield captured
        finally:
            if saved:
                _flush_c_stdio()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
                for fd in saved:
                    os.close(fd)
            sink.seek(0)
            captured.text = sink.read().decode("utf-8", errors="replace") + py_buf.getvalue()
