"""Mutation testing of the core algorithm modules (issue 17): run mutmut, write benchmarks/results/mutation.json.

``make mutate`` (or ``python benchmarks/mutation.py``) runs ``mutmut run`` over the functions listed in
``SCOPE`` and summarises ``mutants/**/*.meta`` into ``benchmarks/results/mutation.json``: per module the
mutants, killed, survived, no-tests, timeout and score (killed + timeout over all mutants run), and every
survivor with its file, line, a one-line diff and the reason it lives (``REASONS``; new survivors are marked
"unclassified"). ``--summarise-only`` skips the run and re-reads the last results.

mutmut 3 copies ``src/`` into ``mutants/`` and never edits ``src/``; configuration (files, the fast test
selection each mutant draws its tests from) is ``[tool.mutmut]`` in pyproject.toml. Each mutant runs only the
selected tests that call its function (mutmut's stats pass), in a process forked from one that has already
imported torch, so a mutant costs its tests' time, not an interpreter start. Not part of ``make test``.
"""

from __future__ import annotations

import argparse
import datetime
import difflib
import json
import os
import platform
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "mutation.json"

# module -> mutant-name globs run (mutmut names a function ``module.x_func`` and a method ``module.xǁClassǁmeth``).
# Pure algorithm functions first; what is left out and why: NOT_RUN_REASON, and "not_run" in the result.
SCOPE: dict[str, list[str]] = {
    "edgeopt.federated.algorithms.server": ["edgeopt.federated.algorithms.server.*"],
    "edgeopt.federated.algorithms.privacy": ["edgeopt.federated.algorithms.privacy.*"],
    "edgeopt.federated.algorithms.compression": ["edgeopt.federated.algorithms.compression.*"],
    "edgeopt.federated.algorithms.secagg": ["edgeopt.federated.algorithms.secagg.*"],
    "edgeopt.federated.rounds": [
        "edgeopt.federated.rounds.x_client_config__*",
        "edgeopt.federated.rounds.x_client_speeds__*",
        "edgeopt.federated.rounds.x_plan_round__*",
        "edgeopt.federated.rounds.x_secure_weight__*",
    ],
    "edgeopt.compress.quantize.calibration": [
        "edgeopt.compress.quantize.calibration.x_qparams_from_range__*",
        "edgeopt.compress.quantize.calibration.x_fake_quantize__*",
        "edgeopt.compress.quantize.calibration.x__quantile__*",
        "edgeopt.compress.quantize.calibration.x_percentile_range__*",
        "edgeopt.compress.quantize.calibration.x_kl_divergence__*",
        "edgeopt.compress.quantize.calibration.x_expected_mse__*",
        "edgeopt.compress.quantize.calibration.x_weight_scales__*",
        "edgeopt.compress.quantize.calibration.x_quantize_weight__*",
        "edgeopt.compress.quantize.calibration.x_sqnr_db__*",
    ],
    "edgeopt.compress.quantize.transforms": [
        "edgeopt.compress.quantize.transforms.x_fold_bn_weights__*",
        "edgeopt.compress.quantize.transforms.x_equalization_scales__*",
    ],
    "edgeopt.compress.quantize.ptq": [
        "edgeopt.compress.quantize.ptq.x_calibration_indices__*",
        "edgeopt.compress.quantize.ptq.x__chunks__*",
        "edgeopt.compress.quantize.ptq.x__channel_mean__*",
        "edgeopt.compress.quantize.ptq.x_bias_shift__*",
    ],
    "edgeopt.compress.prune.channel": [
        "edgeopt.compress.prune.channel.x_normalised__*",
        "edgeopt.compress.prune.channel.x_saving_rates__*",
        "edgeopt.compress.prune.channel.x_weakest_beyond__*",
        "edgeopt.compress.prune.channel.x__give_back__*",
    ],
    "edgeopt.compress.prune.depgraph": [
        "edgeopt.compress.prune.depgraph.xǁ_UnionFindǁnew__*",
        "edgeopt.compress.prune.depgraph.xǁ_UnionFindǁfind__*",
        "edgeopt.compress.prune.depgraph.xǁ_UnionFindǁunion__*",
        "edgeopt.compress.prune.depgraph.x__make_groups__*",
    ],
    "edgeopt.compress.distill": [
        "edgeopt.compress.distill.x_kd_loss__*",
        "edgeopt.compress.distill.x_attention_map__*",
        "edgeopt.compress.distill.x_attention_loss__*",
        "edgeopt.compress.distill.x_feature_loss__*",
    ],
    "edgeopt.interop.export": ["edgeopt.interop.export.x_compare_outputs__*", "edgeopt.interop.export.xǁParityǁok__*"],
}

# Why the functions of the listed files outside SCOPE are left out (summarise() lists them with their mutant counts).
NOT_RUN_REASON = (
    "time budget: 2 shared cores; these functions need model-level tests (tracing, training, exporting: "
    "seconds per mutant) or are glue around the functions in SCOPE"
)

# mutant name -> why it survives (equivalent mutant, or not covered: the test that would kill it).
REASONS: dict[str, str] = {}

KILLED = {1, 3}
SURVIVED = {0}
NO_TESTS = {5, 33}
TIMEOUT = {36, -24, 24, 152, 255}


def run_mutmut(patterns: list[str], max_children: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    mutmut = Path(sys.executable).with_name("mutmut")
    start = time.monotonic()
    subprocess.run([str(mutmut), "run", "--max-children", str(max_children), *patterns], cwd=ROOT, env=env, check=False)
    return time.monotonic() - start


def _function_source(mutated: Path, spans: dict[str, list[int]], key: str) -> list[str]:
    lines = mutated.read_text().splitlines()
    a, b = spans[key]
    return lines[a - 1 : b]


def _survivor(src_file: Path, mutated: Path, spans: dict, name: str) -> dict:
    func, _, _ = name.rpartition(".")[2].partition("__mutmut_")
    orig = _function_source(mutated, spans, f"{func}__mutmut_orig")
    mut = _function_source(mutated, spans, name.rpartition(".")[2])
    removed = [ln for ln in difflib.ndiff(orig, mut) if ln.startswith("- ")]
    added = [ln for ln in difflib.ndiff(orig, mut) if ln.startswith("+ ")]
    first_removed = removed[0][2:] if removed else ""
    line = None
    source = src_file.read_text().splitlines()
    if first_removed.strip():
        # the original function body is verbatim in src (bar the def name): find the changed line there
        want = first_removed.strip()
        hits = [i + 1 for i, ln in enumerate(source) if ln.strip() == want]
        line = hits[0] if len(hits) == 1 else (hits or [None])[0]
    return {
        "mutant": name,
        "file": str(src_file.relative_to(ROOT)),
        "line": line,
        "diff": f"{first_removed.strip()}  ->  {added[0][2:].strip() if added else ''}".strip(),
    }


def summarise(patterns_by_module: dict[str, list[str]]) -> dict:
    import fnmatch

    modules: dict[str, dict] = {}
    survivors: list[dict] = []
    not_run: dict[str, Counter] = {}
    for meta in sorted((ROOT / "mutants" / "src").rglob("*.py.meta")):
        data = json.loads(meta.read_text())
        mutated = meta.with_suffix("")
        spans = json.loads(meta.with_suffix(".spans").read_text())["spans"]
        src_file = ROOT / mutated.relative_to(ROOT / "mutants")
        for name, code in sorted(data["exit_code_by_key"].items()):
            module = next(
                (m for m, pats in patterns_by_module.items() if any(fnmatch.fnmatchcase(name, p) for p in pats)), None
            )
            if module is None or code is None:
                mod = name.rpartition(".")[0]
                func = name.rpartition(".")[2].partition("__mutmut_")[0]
                not_run.setdefault(mod, Counter())[func.removeprefix("x_")] += 1
                continue
            c = modules.setdefault(module, Counter())
            c["mutants"] += 1
            if code in KILLED:
                c["killed"] += 1
            elif code in TIMEOUT:
                c["timeout"] += 1
            elif code in SURVIVED or code in NO_TESTS:
                c["survived" if code in SURVIVED else "no_tests"] += 1
                s = _survivor(src_file, mutated, spans, name)
                s["status"] = "survived" if code in SURVIVED else "no tests"
                s["reason"] = REASONS.get(name, "unclassified")
                survivors.append(s)
            else:
                c["other"] += 1
    out = {}
    for module, c in sorted(modules.items()):
        total = c["mutants"]
        out[module] = {
            "mutants": total,
            "killed": c["killed"],
            "survived": c["survived"],
            "no_tests": c["no_tests"],
            "timeout": c["timeout"],
            "other": c["other"],
            "score": round((c["killed"] + c["timeout"]) / total, 4) if total else None,
        }
    total = sum(m["mutants"] for m in out.values())
    dead = sum(m["killed"] + m["timeout"] for m in out.values())
    overall = {"mutants": total, "killed_or_timeout": dead, "score": round(dead / total, 4) if total else None}
    skipped = {m: dict(c) for m, c in sorted(not_run.items())}
    return {
        "modules": out,
        "overall": overall,
        "not_run": {"reason": NOT_RUN_REASON, "mutants_by_function": skipped},
        "survivors": survivors,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--summarise-only", action="store_true", help="re-read mutants/ without running mutmut")
    ap.add_argument("--max-children", type=int, default=2)
    ap.add_argument("--module", action="append", help="run only this module of SCOPE (repeatable)")
    args = ap.parse_args()
    scope = {m: p for m, p in SCOPE.items() if not args.module or m in args.module}
    wall = None
    if not args.summarise_only:
        wall = run_mutmut([p for pats in scope.values() for p in pats], args.max_children)
    summary = summarise(SCOPE)
    from importlib import metadata

    payload = {
        "benchmark": "mutation",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "versions": {
            "mutmut": metadata.version("mutmut"),
            "pytest": metadata.version("pytest"),
            "python": platform.python_version(),
        },  # fmt: skip
        "command": "make mutate  (= python benchmarks/mutation.py: mutmut run --max-children 2 <SCOPE globs>)",
        "wall_s_last_run": round(wall, 1) if wall is not None else None,
        "scope": SCOPE,
        **summary,
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULT.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    tmp.replace(RESULT)
    print(f"{'module':45s} {'mutants':>7s} {'killed':>6s} {'surv':>5s} {'notest':>6s} {'tmo':>4s} {'score':>6s}")
    for m, r in payload["modules"].items():
        print(f"{m:45s} {r['mutants']:7d} {r['killed']:6d} {r['survived']:5d} {r['no_tests']:6d} {r['timeout']:4d}"
              f" {r['score']:6.1%}")  # fmt: skip
    o = payload["overall"]
    print(f"overall: {o['killed_or_timeout']}/{o['mutants']} = {o['score']:.1%}  -> {RESULT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
