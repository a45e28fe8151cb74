"""Which machine and runtime a latency profile was calibrated on, and whether that is this one.

A latency predictor holds only where it was measured: the CPU model, its vector ISA (AVX2,
AVX-512, VNNI, AMX on x86; NEON, dot-product, i8mm on ARM) and the runtime's version decide which
kernels run. ``machine_fingerprint`` records those; ``fingerprint_mismatch`` names what differs so
that ``edgeopt hw predict`` can warn and give the command that recalibrates. Reads /proc/cpuinfo
and package metadata (milliseconds).
"""

from __future__ import annotations

import platform
from importlib import metadata
from typing import Any

# ISA features that change which kernels XNNPACK / MLAS / LiteRT pick
ISA_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni",
    "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16", "neon", "asimd", "asimddp", "i8mm", "sve", "sve2",
)  # fmt: skip
RUNTIME_PACKAGES = {
    "onnxruntime": "onnxruntime",
    "executorch": "executorch",
    "litert": "ai-edge-litert",
    "torch": "torch",
}


def _cpuinfo() -> tuple[str, set[str]]:
    """(CPU model name, feature flags) from /proc/cpuinfo; the platform's words where it is absent."""
    model, flags = "", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "Model") and not model:  # x86 / ARM boards
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:  # x86 / ARM
                    flags = set(value.split())
    except OSError:
        pass
    return model or platform.processor() or platform.machine(), flags


def runtime_version(runtime: str) -> str | None:
    """The installed version of the package behind ``runtime`` (None when it is not installed)."""
    try:
        return metadata.version(RUNTIME_PACKAGES[runtime])
    except (KeyError, metadata.PackageNotFoundError):
        return None


def machine_fingerprint(runtime: str) -> dict[str, Any]:
    """CPU model, architecture, ISA features that matter for kernels, and the runtime's version."""
    model, flags = _cpuinfo()
    return {
        "cpu_model": model,
        "arch": platform.machine(),
        "isa": sorted(f for f in ISA_FLAGS if f in flags),
        "runtime": runtime,
        "runtime_version": runtime_version(runtime),
    }


def fingerprint_mismatch(calibrated: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What differs between two fingerprints, one phrase each (empty when they match). Pure."""
    out = []
    for key, label in (("cpu_model", "CPU"), ("arch", "architecture"), ("runtime", "runtime"),
                       ("runtime_version", "runtime version")):  # fmt: skip
        if calibrated.get(key) != current.get(key):
            out.append(f"{label} {calibrated.get(key)!s} vs {current.get(key)!s} here")
    a, b = set(calibrated.get("isa", [])), set(current.get("isa", []))
    if a != b:
        parts = [f"+{x}" for x in sorted(b - a)] + [f"-{x}" for x in sorted(a - b)]
        out.append("ISA " + " ".join(parts) + " here")
    return out
