"""Where and with what a run was measured: machine description and package versions.

``machine_info`` reads ``/proc/cpuinfo``, ``/proc/meminfo`` and the cgroup CPU limit where
they exist (Linux) and falls back to ``platform``/``os`` elsewhere; ``versions`` asks
``importlib.metadata`` and never imports the packages themselves. Both take about a
millisecond, so benchmarks can call them freely. ``parse_cpuinfo`` is the pure part.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

# Distributions whose versions every report names (the runtimes edgeopt measures in).
CORE_PACKAGES = (
    "edgeopt",
    "torch",
    "executorch",
    "onnxruntime",
    "onnx",
    "ai-edge-litert",
    "litert-torch",
    "numpy",
)
# A package can ship under other distribution names (GPU or vendor builds).
_ALIASES = {"onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml")}
# CPU features that decide which kernels the runtimes pick (int8 dot products above all).
_FLAGS_OF_INTEREST = frozenset(
    {
        "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16",
        "avx_vnni", "amx_tile", "amx_int8", "amx_bf16",  # x86
        "asimd", "asimddp", "asimdhp", "fphp", "i8mm", "bf16", "sve", "sve2", "sme",  # arm64
    }
)  # fmt: skip


def parse_cpuinfo(text: str) -> dict[str, Any]:
    """CPU model name and the relevant feature flags from ``/proc/cpuinfo`` text."""
    model: str | None = None
    flags: set[str] = set()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip().lower(), value.strip()
        if model is None and key in ("model name", "hardware", "cpu model", "processor") and value:
            if not value.isdigit():  # on arm 'processor' is just the core index
                model = value
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    return {"cpu": model, "cpu_flags": sorted(flags & _FLAGS_OF_INTEREST)}


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return None


def _ram_bytes() -> int | None:
    text = _read("/proc/meminfo")
    if text:
        for line in text.splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def _cgroup_cpu_limit() -> float | None:
    """CPUs allowed by a cgroup v2 quota (containers), ``None`` when unlimited or unknown."""
    text = _read("/sys/fs/cgroup/cpu.max")
    if not text:
        return None
    quota, _, period = text.strip().partition(" ")
    if quota == "max" or not period:
        return None
    try:
        return round(int(quota) / int(period), 2)
    except ValueError:
        return None


def usable_cores() -> int | None:
    """The CPU cores this process may run on: its affinity where the OS tells it, else the count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def machine_info() -> dict[str, Any]:
    """CPU model, cores (all, usable by this process, cgroup limit), RAM, OS and CPU features."""
    cpu = parse_cpuinfo(_read("/proc/cpuinfo") or "")
    usable = usable_cores()
    ram = _ram_bytes()
    return {
        "cpu": cpu["cpu"] or platform.processor() or platform.machine() or "unknown",
        "arch": platform.machine(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "cgroup_cpu_limit": _cgroup_cpu_limit(),
        "ram_bytes": ram,
        "ram_gib": round(ram / 2**30, 1) if ram else None,
        "os": platform.platform(),
        "cpu_flags": cpu["cpu_flags"],
    }


def _version(name: str) -> str | None:
    for dist in _ALIASES.get(name, (name,)):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def versions(extra: Iterable[str] = ()) -> dict[str, str | None]:
    """Python and package versions (``None`` when not installed), without importing them."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in (*CORE_PACKAGES, *extra):
        out[name] = _version(name)
    return out


def now_iso() -> str:
    """Current UTC time, ISO 8601 to the second."""
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()


def collect_run_info(
    *, model: str, dataset: Any, recipe: list[Any], extra_packages: Iterable[str] = (), **extra: Any
) -> dict[str, Any]:
    """The ``run_info`` a report header needs: model, dataset, recipe, machine, versions, date."""
    return {
        "model": model,
        "dataset": dataset,
        "recipe": recipe,
        "machine": machine_info(),
        "versions": versions(extra_packages),
        "date": now_iso(),
        **extra,
    }
