"""Shared benchmark plumbing: locating ../shared data, interleaved latency rounds, result files."""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from edgeopt.fileio import write_json_atomic
from edgeopt.report.environment import machine_info, versions
from edgeopt.runtimes import Runner, measure_latency, open_runner

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"


def shared_path(name: str) -> Path:
    path = SHARED / name
    if not path.exists():
        sys.exit(f"error: {path} not found — benchmarks need ../shared/data beside the checkout")
    return path


def interleaved_p50(runners: dict[str, Runner], inputs: dict[str, Any], rounds: int = 5, runs: int = 200) -> dict:
    """Median over ``rounds`` of each runner's p50, the runners taking turns so drift hits all alike.

    Every round after the first times fresh sessions of the same artifacts (torch runners excepted),
    so that no single session's allocation decides a figure; each round's p50 is kept
    (``p50_ms_per_round``) so that a run disturbed by other load on the machine shows.
    """
    p50s: dict[str, list[float]] = {k: [] for k in runners}
    p90s: dict[str, list[float]] = {k: [] for k in runners}
    for i in range(rounds):
        live = runners if i == 0 else {k: _fresh_session(r) for k, r in runners.items()}
        try:
            for name, runner in live.items():
                s = measure_latency(runner, inputs[name], threads=runner.threads, warmup=20, runs=runs)
                p50s[name].append(s.p50_ms)
                p90s[name].append(s.p90_ms)
        finally:
            for k, r in live.items():
                if r is not runners[k]:
                    r.close()
    return {
        k: {"p50_ms": statistics.median(p50s[k]), "p90_ms": statistics.median(p90s[k]), "rounds": rounds, "runs": runs,
            "p50_ms_per_round": p50s[k]}  # fmt: skip
        for k in runners
    }


def models_in_turns(runtime: str, models: dict[str, Any], threads: int = 1) -> dict:
    """``models`` (name -> EdgeModel) exported to ``runtime`` and timed by :func:`interleaved_p50` on their
    batch-1 example inputs; every runner is closed afterwards."""
    from contextlib import ExitStack

    with ExitStack() as stack:
        runners = {k: stack.enter_context(open_runner(runtime, m, threads=threads)) for k, m in models.items()}
        return interleaved_p50(runners, {k: m.example_input(1).numpy() for k, m in models.items()})


def _fresh_session(runner: Runner) -> Runner:
    return runner if runner.name == "torch" else open_runner(runner.name, runner.path, threads=runner.threads)


def previous_figures(name: str, run_now: list[str]) -> dict[str, Any]:
    """The figures of ``results/<name>.json`` except the sections run now (a partial run updates the file)."""
    path = RESULTS / f"{name}.json"
    if not path.exists():
        return {}
    old = json.loads(path.read_text()).get("figures", {})
    return {k: v for k, v in old.items() if k not in run_now}


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
