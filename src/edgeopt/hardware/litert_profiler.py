"""LiteRT's own per-operator profiler, reached through its C API.

LiteRT's Python API (``Interpreter``, ``CompiledModel``) exposes no profiler, but ``libLiteRt.so``,
shipped in the same wheel, does: a compiled model created with the runtime option
``enable_profiling`` attaches a profiler before the XNNPACK delegate is applied, and XNNPACK then
reports one event per operator it runs (``Convolution (NHWC, F32) IGEMM``, ``Add (ND)``…: the names
ExecuTorch's XNNPACK delegate reports), with its time in whole microseconds.

Why by hand (ctypes): no Python binding of these functions exists. What is fragile, and checked:

* the option identifiers (``runtime_options_string``, ``xnnpack``) and their TOML keys are LiteRT's
  own conventions, and the event record's layout is the library's (ai-edge-litert 2.3.0: 104 bytes;
  the public header's is shorter). ``SUPPORTED_VERSIONS`` lists the versions whose layout was read;
  with any other installed, ``profiled_calls`` returns None rather than misread memory;
* a call's operator names must repeat from call to call, or it returns None.

Cost: one compiled model and ``seconds`` of profiled calls (profiling adds ~15% to a call).
"""

from __future__ import annotations

import ctypes as C
import functools
from importlib import metadata
from pathlib import Path

from edgeopt.runtimes import quiet_output
from edgeopt.runtimes.base import repeat_for

SUPPORTED_VERSIONS = ("2.3.0",)
_CPU = 1  # kLiteRtHwAcceleratorCpu
_WRITE = 1  # kLiteRtTensorBufferLockModeWrite
_DELEGATE_PROFILED_OPERATOR = 8  # tflite::Profiler::EventType: an operator a delegate timed itself


class _MemoryUsage(C.Structure):
    _fields_ = [("footprint_kb", C.c_int64), ("allocated", C.c_size_t), ("in_use", C.c_size_t)]


class _Event(C.Structure):  # ProfiledEventData as ai-edge-litert 2.3.0 copies it out (104 bytes)
    _fields_ = [
        ("tag", C.c_char_p), ("event_type", C.c_int32), ("start_us", C.c_uint64), ("elapsed_us", C.c_uint64),
        ("begin", _MemoryUsage), ("end", _MemoryUsage), ("metadata1", C.c_uint64), ("metadata2", C.c_uint64),
        ("source", C.c_int32),
    ]  # fmt: skip


_P = C.c_void_p
_PP = C.POINTER(C.c_void_p)
_SIGNATURES = {
    "LiteRtCreateEnvironment": (C.c_int, _P, _PP), "LiteRtDestroyEnvironment": (_P,),
    "LiteRtCreateModelFromFile": (_P, C.c_char_p, _PP), "LiteRtDestroyModel": (_P,),
    "LiteRtCreateOptions": (_PP,), "LiteRtDestroyOptions": (_P,),
    "LiteRtSetOptionsHardwareAccelerators": (_P, C.c_int),
    "LiteRtCreateOpaqueOptions": (C.c_char_p, _P, _P, _PP), "LiteRtAddOpaqueOptions": (_P, _P),
    "LiteRtCreateCompiledModel": (_P, _P, _P, _PP), "LiteRtDestroyCompiledModel": (_P,),
    "LiteRtGetModelSignature": (_P, C.c_size_t, _PP),
    "LiteRtGetNumSignatureInputs": (_P, C.POINTER(C.c_size_t)),
    "LiteRtGetNumSignatureOutputs": (_P, C.POINTER(C.c_size_t)),
    "LiteRtGetSignatureInputTensorByIndex": (_P, C.c_size_t, _PP),
    "LiteRtGetSignatureOutputTensorByIndex": (_P, C.c_size_t, _PP),
    "LiteRtGetRankedTensorType": (_P, _P),
    "LiteRtGetCompiledModelInputBufferRequirements": (_P, C.c_size_t, C.c_size_t, _PP),
    "LiteRtGetCompiledModelOutputBufferRequirements": (_P, C.c_size_t, C.c_size_t, _PP),
    "LiteRtCreateManagedTensorBufferFromRequirements": (_P, _P, _P, _PP), "LiteRtDestroyTensorBuffer": (_P,),
    "LiteRtGetTensorBufferPackedSize": (_P, C.POINTER(C.c_size_t)),
    "LiteRtLockTensorBuffer": (_P, _PP, C.c_int), "LiteRtUnlockTensorBuffer": (_P,),
    "LiteRtRunCompiledModel": (_P, C.c_size_t, C.c_size_t, _PP, C.c_size_t, _PP),
    "LiteRtCompiledModelGetProfiler": (_P, _PP), "LiteRtStartProfiler": (_P,), "LiteRtStopProfiler": (_P,),
    "LiteRtResetProfiler": (_P,), "LiteRtGetNumProfilerEvents": (_P, C.POINTER(C.c_int)),
    "LiteRtGetProfilerEvents": (_P, C.c_int, C.POINTER(_Event)),
}  # fmt: skip


@functools.cache
def _library() -> C.CDLL:
    import ai_edge_litert

    lib = C.CDLL(str(Path(ai_edge_litert.__file__).with_name("libLiteRt.so")))
    for name, args in _SIGNATURES.items():
        f = getattr(lib, name)
        f.argtypes = list(args)
        f.restype = None if name.startswith("LiteRtDestroy") else C.c_int
    return lib


class _ProfiledModel:
    """A compiled model on the CPU (XNNPACK) with profiling enabled, its buffers and its profiler."""

    def __init__(self, lib: C.CDLL, path: Path, threads: int) -> None:
        self.lib, self.buffers = lib, []
        self.env, self.model, self.compiled, self.profiler = _P(), _P(), _P(), _P()
        try:
            self._open(path, threads)
        except RuntimeError:
            self.close()  # what was created so far
            raise

    def _open(self, path: Path, threads: int) -> None:
        lib = self.lib
        self._check(lib.LiteRtCreateEnvironment(0, None, C.byref(self.env)))
        self._check(lib.LiteRtCreateModelFromFile(self.env, str(path).encode(), C.byref(self.model)))
        options = _P()
        self._check(lib.LiteRtCreateOptions(C.byref(options)))
        try:
            self._check(lib.LiteRtSetOptionsHardwareAccelerators(options, _CPU))
            self._add(options, "xnnpack", f"num_threads = {int(threads)}\n")
            self._add(options, "runtime_options_string", "enable_profiling = true\n")
            self._check(lib.LiteRtCreateCompiledModel(self.env, self.model, options, C.byref(self.compiled)))
        finally:
            lib.LiteRtDestroyOptions(options)
        self._check(lib.LiteRtCompiledModelGetProfiler(self.compiled, C.byref(self.profiler)))
        if not self.profiler.value:
            raise RuntimeError("the compiled model has no profiler")
        self.inputs, self.outputs = self._make_buffers()

    @staticmethod
    def _check(status: int) -> None:
        if status != 0:
            raise RuntimeError(f"LiteRT C API status {status}")

    def _add(self, options: C.c_void_p, identifier: str, toml: str) -> None:
        libc = C.CDLL(None)
        libc.strdup.restype, libc.strdup.argtypes = C.c_void_p, [C.c_char_p]
        opaque = _P()
        payload = libc.strdup(toml.encode())  # LiteRT owns it and frees it with free()
        self._check(self.lib.LiteRtCreateOpaqueOptions(identifier.encode(), payload, C.cast(libc.free, _P),
                                                       C.byref(opaque)))  # fmt: skip
        self._check(self.lib.LiteRtAddOpaqueOptions(options, opaque))  # the options own it now

    def _make_buffers(self) -> tuple[C.Array, C.Array]:
        lib, signature = self.lib, _P()
        self._check(lib.LiteRtGetModelSignature(self.model, 0, C.byref(signature)))
        counts = C.c_size_t(), C.c_size_t()
        self._check(lib.LiteRtGetNumSignatureInputs(signature, C.byref(counts[0])))
        self._check(lib.LiteRtGetNumSignatureOutputs(signature, C.byref(counts[1])))
        made = []
        for tensor_of, requirements_of, n in (
            (lib.LiteRtGetSignatureInputTensorByIndex, lib.LiteRtGetCompiledModelInputBufferRequirements, counts[0]),
            (lib.LiteRtGetSignatureOutputTensorByIndex, lib.LiteRtGetCompiledModelOutputBufferRequirements, counts[1]),
        ):  # fmt: skip
            buffers = []
            for i in range(n.value):
                tensor, requirements, buffer = _P(), _P(), _P()
                tensor_type = (C.c_uint8 * 256)()  # LiteRtRankedTensorType, passed through unread
                self._check(tensor_of(signature, i, C.byref(tensor)))
                self._check(lib.LiteRtGetRankedTensorType(tensor, tensor_type))
                self._check(requirements_of(self.compiled, 0, i, C.byref(requirements)))
                self._check(lib.LiteRtCreateManagedTensorBufferFromRequirements(self.env, tensor_type, requirements,
                                                                                C.byref(buffer)))  # fmt: skip
                self.buffers.append(buffer)
                buffers.append(buffer)
            made.append((_P * len(buffers))(*buffers))
        for buffer in made[0]:  # inputs: a fixed ramp in -0.5..0.5 (no NaN or denormal from unwritten memory)
            size, address = C.c_size_t(), _P()
            self._check(lib.LiteRtGetTensorBufferPackedSize(buffer, C.byref(size)))
            self._check(lib.LiteRtLockTensorBuffer(buffer, C.byref(address), _WRITE))
            values = (C.c_float * (size.value // 4)).from_address(address.value)
            for k in range(len(values)):
                values[k] = (k % 1000) / 1000.0 - 0.5
            self._check(lib.LiteRtUnlockTensorBuffer(buffer))
        return made[0], made[1]

    def profiled_call(self) -> list[tuple[str, float]]:
        """One call with the profiler on: each operator XNNPACK timed, in order, with its µs."""
        lib = self.lib
        self._check(lib.LiteRtResetProfiler(self.profiler))
        self._check(lib.LiteRtStartProfiler(self.profiler))
        self._check(lib.LiteRtRunCompiledModel(self.compiled, 0, len(self.inputs), self.inputs, len(self.outputs),
                                               self.outputs))  # fmt: skip
        self._check(lib.LiteRtStopProfiler(self.profiler))
        n = C.c_int()
        self._check(lib.LiteRtGetNumProfilerEvents(self.profiler, C.byref(n)))
        events = (_Event * max(n.value, 1))()
        self._check(lib.LiteRtGetProfilerEvents(self.profiler, n.value, events))
        return [((e.tag or b"").decode(errors="replace"), float(e.elapsed_us)) for e in events[: n.value]
                if e.event_type == _DELEGATE_PROFILED_OPERATOR]  # fmt: skip

    def close(self) -> None:
        for buffer in self.buffers:
            self.lib.LiteRtDestroyTensorBuffer(buffer)
        lib = self.lib
        owned = ((lib.LiteRtDestroyCompiledModel, self.compiled), (lib.LiteRtDestroyModel, self.model),
                 (lib.LiteRtDestroyEnvironment, self.env))  # fmt: skip
        for destroy, handle in owned:  # the compiled model owns the profiler
            if handle.value:
                destroy(handle)


def profiled_calls(path: str | Path, threads: int = 1, seconds: float = 0.2, warmup: int = 10,
                   least: int = 20, most: int = 200) -> list[list[tuple[str, float]]] | None:  # fmt: skip
    """Each XNNPACK operator's name and time (µs) in every profiled call of a ``.tflite`` (about
    ``seconds`` of calls, at least ``least`` and at most ``most`` of them, after ``warmup``), or None
    where this LiteRT is not a version whose profiler this module can read, its C API refuses a
    step, or the calls disagree on their operators."""
    try:
        if metadata.version("ai-edge-litert") not in SUPPORTED_VERSIONS:
            return None
        lib = _library()
    except (metadata.PackageNotFoundError, ImportError, OSError, AttributeError):
        return None
    with quiet_output():  # LiteRT logs every environment and accelerator it creates
        try:
            model = _ProfiledModel(lib, Path(path), threads)
        except RuntimeError:  # a status the C API refused with: no kernel times, not no sample
            return None
        try:
            for _ in range(warmup):
                model.profiled_call()
            calls: list[list[tuple[str, float]]] = []
            repeat_for(lambda: calls.append(model.profiled_call()), seconds, least, most)
        except RuntimeError:
            return None
        finally:
            model.close()
    names = [n for n, _ in calls[0]]
    if not names or any([n for n, _ in c] != names for c in calls):
        return None
    return calls
