"""Shared benchmark plumbing: locating ../shared data, interleaved latency rounds, result files."""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

from edgeopt.fileio import write_json_atomic
from edgeopt.report.environment import machine_info, versions
from edgeopt.runtimes import Runner, measure_latency

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"


def shared_path(name: str) -> Path:
    path = SHARED / name
    if not path.exists():
        sys.exit(f"error: {path} not found — benchmarks need ../shared/data beside the checkout")
    return path


def interleaved_p50(runners: dict[str, Runner], inputs: dict[str, Any], rounds: int = 5, runs: int = 200) -> dict:
    """Median over ``rounds`` of each runner's p50, the runners taking turns so drift hits all alike."""
    p50s: dict[str, list[float]] = {k: [] for k in runners}
    p90s: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(rounds):
        for name, runner in runners.items():
            s = measure_latency(runner, inputs[name], threads=runner.threads, warmup=20, runs=runs)
            p50s[name].append(s.p50_ms)
            p90s[name].append(s.p90_ms)
    return {
        k: {"p50_ms": statistics.median(p50s[k]), "p90_ms": statistics.median(p90s[k]), "rounds": rounds, "runs": runs}
        for k in runners
    }


def write_result(name: str, figures: dict[str, Any], settings: dict[str, Any]) -> Path:
    payload = {
        "benchmark": name,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine_info(),
        "versions": versions(),
        "settings": settings,
        "figures": figures,
    }
    return write_json_atomic(RESULTS / f"{name}.json", payload)
