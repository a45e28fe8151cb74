"""Which channel widths of ResNet-8 run fast where: a latency survey of allocations near half the MACs.

Every allocation of the six channel groups of the MLPerf ResNet-8 (in order: stem/stage-1 chain,
block-1 inner, block-2 inner, stage-2 chain, block-3 inner, stage-3 chain) with widths from a coarse grid
and MACs in [--low, --high] of the base is cut from the cached fine-tuned base (weakest L2
channels first; weights do not matter for latency) and timed at batch 1, 1 thread, in ONNX
Runtime and ExecuTorch, interleaved with the base in groups of six, fresh sessions each round.
The --confirm fastest are timed again in three fresh groups and their median ratios decide.
(The committed pruning_widths.json predates fresh sessions per round: its ratios can be ~0.05-0.1
off; benchmarks/pruning.py re-times the chosen allocation properly.) The accuracy of promising
allocations is measured by benchmarks/pruning_sweep.py.

Run: .venv/bin/python benchmarks/pruning_widths.py   (about 25 minutes on one core; run it on a
quiet machine). Writes benchmarks/results/pruning_widths.json.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import interleaved_p50, write_result  # noqa: E402

from edgeopt.compress.prune.channel import apply_channel_plan, mac_model, norm_scores, weakest_beyond  # noqa: E402
from edgeopt.compress.prune.depgraph import build_dependency_graph  # noqa: E402
from edgeopt.interop.export import export_model  # noqa: E402
from edgeopt.model import EdgeModel, load_model  # noqa: E402
from edgeopt.runtimes import open_runner  # noqa: E402

BASE = Path(__file__).resolve().parent / ".cache" / "mlperf_resnet8_ft_adam_e4_lr0.0005.edgeopt"
GRID = ([8, 16], [8, 16], [8, 16, 24, 32], [8, 16, 24, 32], [16, 32, 48, 64], [16, 32, 48, 64])
RUNTIMES = {"onnxruntime": "onnx", "executorch": "pte"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--low", type=float, default=0.45, help="fewest MACs, as a fraction of the base's")
    ap.add_argument("--high", type=float, default=0.5, help="most MACs, as a fraction of the base's")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--confirm", type=int, default=12, help="fastest allocations re-timed in three fresh chunks")
    args = ap.parse_args()
    torch.set_num_threads(1)
    base = load_model(BASE)
    dep = build_dependency_graph(base.module, base.example_input(1))
    scores = norm_scores(base.module, dep, 2)
    macs = mac_model(base.module, dep)
    full = macs.macs(set())

    def removed_for(widths: tuple[int, ...]) -> set[int]:
        return weakest_beyond(dep, scores, list(widths))

    full_widths = tuple(g.size for g in dep.groups)
    ref = "-".join(map(str, full_widths))
    work = Path(tempfile.mkdtemp(prefix="edgeopt-widths-"))

    def time_chunk(chunk: list[tuple[int, ...]]) -> dict[str, dict[str, float]]:
        """Latency ratios to the base of ``chunk``, timed interleaved with the base in one loop."""
        runners, inputs = {}, {}
        for w in [full_widths, *chunk]:
            key = "-".join(map(str, w))
            m = base if w == full_widths else EdgeModel(apply_channel_plan(base.module, dep, removed_for(w))[0].eval(),
                                                        base.meta)  # fmt: skip
            for rt, fmt in RUNTIMES.items():
                runners[f"{key}|{rt}"] = open_runner(rt, export_model(m, fmt, work / f"{key}.{fmt}").path, threads=1)
                inputs[f"{key}|{rt}"] = m.example_input(1).numpy()
        try:
            lat = interleaved_p50(runners, inputs, rounds=args.rounds, runs=150)
        finally:
            for r in runners.values():
                r.close()
        out = {}
        for w in chunk:
            key = "-".join(map(str, w))
            out[key] = {rt: lat[f"{key}|{rt}"]["p50_ms"] / lat[f"{ref}|{rt}"]["p50_ms"] for rt in RUNTIMES}
        return out

    cands = [w for w in itertools.product(*GRID) if args.low <= macs.macs(removed_for(w)) / full <= args.high]
    print(f"{len(cands)} allocations", flush=True)
    rows: dict[str, dict[str, float]] = {}
    for i in range(0, len(cands), 6):
        for key, ratios in time_chunk(cands[i : i + 6]).items():
            w = tuple(int(v) for v in key.split("-"))
            rows[key] = {"mac_ratio": macs.macs(removed_for(w)) / full, **ratios}
            print(key, {k: round(v, 3) for k, v in rows[key].items()}, flush=True)
    # one chunk's base can run slow or fast (±0.05 in the ratios): re-time the fastest in fresh chunks
    worst = {k: max(v[rt] for rt in RUNTIMES) for k, v in rows.items()}
    top = sorted(worst, key=worst.get)[: args.confirm]
    confirmed: dict[str, dict[str, list[float]]] = {k: {rt: [] for rt in RUNTIMES} for k in top}
    for rep in range(3):
        order = top[rep % len(top) :] + top[: rep % len(top)]
        for i in range(0, len(order), 6):
            for key, ratios in time_chunk([tuple(int(v) for v in k.split("-")) for k in order[i : i + 6]]).items():
                for rt, r in ratios.items():
                    confirmed[key][rt].append(r)
    medians = {k: {rt: statistics.median(v) for rt, v in per.items()} for k, per in confirmed.items()}
    for k, v in medians.items():
        print("confirmed", k, {rt: round(r, 3) for rt, r in v.items()}, flush=True)
    both = [k for k in top if max(medians[k].values()) <= 0.6]
    figures = {"groups": [g.describe() for g in dep.groups], "screening_ratio_to_base": rows,
               "confirmed_median_of_3": {k: {"mac_ratio": rows[k]["mac_ratio"], **medians[k],
                                             "runs": confirmed[k]} for k in top},
               "at_most_0.6_in_both_runtimes": both}  # fmt: skip
    print(f"wrote {write_result('pruning_widths', figures, vars(args) | {'threads': 1})}")


if __name__ == "__main__":
    main()
