"""What an exported artifact costs in its runtime: latency, flash, arena and an energy estimate.

``artifact_figures`` times the artifact (batch 1, ``threads``) in a fresh session of its runtime through
``edgeopt.runtimes.benchmark`` — the same call ``edgeopt bench`` makes — for at least ``min_seconds``, and
takes as its latency the median of the quietest window of calls (``LatencyStats.quiet_p50_ms``: other
tenants of a shared machine only add time, in phases that doubled a small model's median). It reads its memory
plan: flash is the file's size in bytes, arena the runtime's planned activation bytes (ExecuTorch:
plus XNNPACK's workspace estimate, as ``hw predict`` counts it). Energy is an *estimate* (Horowitz's
45 nm per-operation energies, ``hardware.energy``) from the MACs, arena and flash bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeopt.model import EdgeModel


def arena_bytes(plan: Any) -> tuple[int, str]:
    """The arena a runtime needs from its memory plan, and the plan's source (workspace estimate added). Pure."""
    arena = int(plan.detail.get("arena_plus_workspace_bytes_estimate", plan.arena_bytes))
    return arena, plan.source + ("+xnnpack_workspace_estimate" if arena != plan.arena_bytes else "")


def artifact_figures(
    artifact: str | Path, runtime: str, model: EdgeModel, threads: int = 1, runs: int = 200, min_seconds: float = 2.0
) -> dict[str, Any]:
    """Latency (ms, the quietest window's median; ``latency_p50_all_ms``: the median of every call), flash and
    arena bytes, energy estimate (mJ) of ``artifact`` run in ``runtime``. Cost: about ``min_seconds``."""
    from edgeopt.hardware.energy import energy_estimate
    from edgeopt.profile import profile_model
    from edgeopt.runtimes import benchmark

    artifact = Path(artifact)
    stats = benchmark(runtime, artifact, threads=threads, warmup=20, runs=runs, min_seconds=min_seconds)
    arena, source = arena_bytes(stats.memory_plan)
    flash = artifact.stat().st_size
    quantized = bool(getattr(model.module, "quantized", False))
    macs = profile_model(model).macs
    energy = energy_estimate(macs, arena, flash, "int8" if quantized else "float32")
    return {
        "latency_ms": float(stats.quiet_p50_ms),
        "latency_p50_all_ms": float(stats.p50_ms),
        "latency_p90_ms": float(stats.p90_ms),
        "flash_bytes": int(flash),
        "arena_bytes": arena,
        "arena_source": source,
        "energy_mj": float(energy["energy_mj_estimate"]),
        "energy_source": "estimate: Horowitz 45 nm per-operation energies (hardware.energy)",
        "macs": int(macs),
    }


TIMING_KEYS = ("latency_ms", "latency_p50_all_ms", "latency_p90_ms")


def keep_faster_timing(measured: dict[str, Any], again: dict[str, Any]) -> dict[str, Any]:
    """``measured`` with the timing of ``again`` (a second ``artifact_figures`` of the same artifact) when that
    one is faster, and both latencies listed in ``latency_timings``. Pure. Other work on a shared machine only
    adds time, so the faster of two timings is the closer to the model's own cost."""
    out = {**measured, "latency_timings": [measured["latency_ms"], again["latency_ms"]]}
    if again["latency_ms"] < measured["latency_ms"]:
        out.update({k: again[k] for k in TIMING_KEYS if k in again})
    return out
