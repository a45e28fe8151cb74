"""How the half-MAC recovery recipe of benchmarks/pruning.py was chosen: a sweep scored on validation.

Every job prunes the cached fine-tuned MLPerf ResNet-8 (benchmarks/pruning.py's base) to fixed
channel widths (L2 importance, least-squares reconstruction on 512 training images), optionally
in two steps with recovery in between, and recovers it with KD from the base for 5 epochs in all.
Training uses cifar10-jpg train minus a held-out validation split of 5,000 images; jobs are
ranked on that split, never on the test set (test accuracy is recorded beside it only so that the
chosen job can be checked against the full benchmark later).

Run: .venv/bin/python benchmarks/pruning_sweep.py [--jobs a,b] [--workers N] [--device auto]
Jobs run in parallel worker processes (a GPU, when present, is shared by all of them).
Writes benchmarks/results/pruning_sweep.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

BASE = "mlperf_resnet8_ft_adam_e4_lr0.0005"  # benchmarks/pruning.py's cached base (4 Adam epochs)
VALIDATION = 5000


@dataclass
class Job:
    """One recovery run: final widths per channel group, optional intermediate widths, the recipe."""

    name: str
    widths: tuple[int, ...]
    steps: list[tuple[tuple[int, ...], int]] = field(default_factory=list)  # (widths, epochs) before the last
    epochs: int = 5  # total, all steps included
    lr: float = 0.06
    optimizer: str = "sgd"
    batch_size: int = 128
    temperature: float = 4.0
    alpha: float = 0.9
    hint_weight: float = 0.0
    augment: bool = True
    seed: int = 0


GLOBAL_L2 = (8, 8, 32, 16, 64, 64)  # what --allocation global picks at half the MACs
ORT_FAST = (16, 16, 8, 8, 24, 32)  # half the MACs at ~0.59x the base's ONNX Runtime latency (x86 AVX-512)
ET_FAST = (8, 16, 16, 32, 32, 48)  # 0.455 of the MACs at ~0.6x in both runtimes

JOBS = [
    Job("global_l2", GLOBAL_L2),
    Job("global_l2_lr0.1", GLOBAL_L2, lr=0.1),
    Job("global_l2_lr0.03", GLOBAL_L2, lr=0.03),
    Job("global_l2_alpha1", GLOBAL_L2, alpha=1.0),
    Job("global_l2_T2", GLOBAL_L2, temperature=2.0),
    Job("global_l2_hint1", GLOBAL_L2, hint_weight=1.0),
    Job("global_l2_bs64", GLOBAL_L2, batch_size=64, lr=0.04),
    Job("global_l2_iter", GLOBAL_L2, steps=[((16, 8, 32, 24, 64, 64), 1)]),
    Job("global_l2_iter2", GLOBAL_L2, steps=[((16, 12, 32, 24, 64, 64), 1), ((8, 8, 32, 24, 64, 64), 1)]),
    Job("global_l2_seed1", GLOBAL_L2, seed=1),
    Job("global_l2_noaug", GLOBAL_L2, augment=False),
    Job("global_l2_bs256", GLOBAL_L2, batch_size=256, lr=0.12),
    Job("global_l2_lr0.1_T2", GLOBAL_L2, lr=0.1, temperature=2.0),
    Job("global_l2_adam", GLOBAL_L2, optimizer="adam", lr=2e-3),
    Job("ort_fast", ORT_FAST),
    Job("ort_fast_iter", ORT_FAST, steps=[((16, 16, 16, 16, 48, 48), 1)]),
    Job("et_fast", ET_FAST),
    Job("et_fast_iter", ET_FAST, steps=[((16, 16, 24, 32, 48, 64), 1)]),
]

FULL = (16, 16, 32, 32, 64, 64)


def midway(widths: tuple[int, ...]) -> tuple[int, ...]:
    """Widths halfway between the base's and ``widths`` (multiples of 4): the first step of two."""
    return tuple(4 * -(-(f + w) // 8) for f, w in zip(FULL, widths, strict=True))


# allocations near half the MACs that the latency survey found cheap in ORT or ExecuTorch, all in two steps
ALLOCATIONS = [GLOBAL_L2, ET_FAST, (16, 8, 16, 16, 64, 32), (16, 8, 16, 16, 48, 48), (16, 8, 16, 32, 48, 16),
               (8, 16, 32, 16, 48, 32), (8, 16, 16, 16, 48, 64), (8, 8, 32, 32, 32, 32), (8, 16, 32, 16, 32, 64),
               (16, 8, 8, 32, 32, 64), (8, 16, 16, 32, 64, 16), (8, 8, 24, 24, 64, 48)]  # fmt: skip
JOBS += [Job("alloc_" + "-".join(map(str, w)), w, steps=[(midway(w), 1)]) for w in ALLOCATIONS]
# allocations near half the MACs that ran at about 0.6x the base or less in both ORT and ExecuTorch
# (benchmarks/pruning_widths.py); (16, 8, 32, 32, 16, 32) is over half the MACs, a check on the trend
FAST_BOTH = [(16, 16, 8, 16, 16, 16), (16, 16, 8, 8, 16, 48), (16, 16, 8, 8, 32, 16), (16, 8, 32, 16, 16, 32),
             (16, 8, 32, 16, 16, 48), (16, 8, 32, 16, 16, 64), (16, 8, 32, 32, 16, 32), (16, 8, 24, 24, 16, 64),
             (16, 16, 8, 16, 24, 24), (16, 8, 16, 32, 32, 32), (16, 8, 16, 32, 16, 64)]  # fmt: skip
JOBS += [Job("fast_" + "-".join(map(str, w)), w, steps=[(midway(w), 1)]) for w in FAST_BOTH]
JOBS += [Job("fast_" + "-".join(map(str, w)) + "_seed1", w, steps=[(midway(w), 1)], seed=1) for w in FAST_BOTH[-2:]]
JOBS += [
    Job("alloc_8-8-24-24-64-48_seed1", (8, 8, 24, 24, 64, 48), steps=[(midway((8, 8, 24, 24, 64, 48)), 1)], seed=1),
    Job("iter_lr0.1_T2", GLOBAL_L2, steps=[(midway(GLOBAL_L2), 1)], lr=0.1, temperature=2.0),
    Job("iter_seed1", GLOBAL_L2, steps=[(midway(GLOBAL_L2), 1)], seed=1),
    Job("unpruned_5", FULL),  # the base itself through the same 5-epoch KD: how much is just more fine-tuning
    Job("iter_20_epochs", GLOBAL_L2, steps=[(midway(GLOBAL_L2), 2)], epochs=20),
    Job("iter_10_epochs", GLOBAL_L2, steps=[(midway(GLOBAL_L2), 1)], epochs=10),
    Job("iter_40_epochs", GLOBAL_L2, steps=[(midway(GLOBAL_L2), 4)], epochs=40),
]


def split(train: Any) -> tuple[Any, Any]:
    from edgeopt.data import ImageDataset

    order = np.random.default_rng(1234).permutation(len(train))
    val, fit = np.sort(order[:VALIDATION]), np.sort(order[VALIDATION:])
    return (ImageDataset(train.images[fit], train.labels[fit], train.class_names, train.name + "-fit"),
            ImageDataset(train.images[val], train.labels[val], train.class_names, train.name + "-val"))  # fmt: skip


def run_job(args: tuple[Job, str, str]) -> dict[str, Any]:
    import torch

    from edgeopt.compress.prune import calibration_inputs, prune_channels
    from edgeopt.compress.workflows import TuneSettings, tune
    from edgeopt.data import load_dataset
    from edgeopt.model import EdgeModel, load_model
    from edgeopt.profile import count_macs, export_for_profile
    from edgeopt.train import evaluate

    job, data, device = args
    torch.set_num_threads(2)
    t = time.perf_counter()
    fit_set, val = split(load_dataset(data, "train"))
    test = load_dataset(data, "test")
    base = load_model(Path(__file__).resolve().parent / ".cache" / f"{BASE}.edgeopt")
    teacher = EdgeModel(base.module, base.meta)
    cal = calibration_inputs(base, fit_set, 512)
    model, history = base, []
    schedule = [*job.steps, (job.widths, job.epochs - sum(e for _, e in job.steps))]
    for widths, epochs in schedule:
        model = prune_channels(model, widths=list(widths), calibration=cal)[0]  # weakest L2 channels go
        settings = TuneSettings(epochs, job.lr, job.optimizer, job.batch_size, job.seed, job.temperature, job.alpha,
                                job.hint_weight, device, job.augment)  # fmt: skip
        model, hist = tune(model, fit_set, settings, teacher)
        history += hist
    return {**asdict(job), "macs": count_macs(export_for_profile(model).graph),
            "val_accuracy": evaluate(model, val).accuracy, "test_accuracy": evaluate(model, test).accuracy,
            "history": history, "seconds": round(time.perf_counter() - t, 1)}  # fmt: skip


def main() -> None:
    from common import RESULTS, shared_path, write_result

    from edgeopt.data import load_dataset

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", default="", help="comma list of job names or name prefixes (default: all)")
    ap.add_argument("--workers", type=int, default=max(1, min(8, (os.cpu_count() or 2) // 2)))
    ap.add_argument("--device", default="auto", help="training device: cpu, cuda or auto")
    ap.add_argument("--data", default=None, help="dataset spec (default: imagefolder:../shared cifar10-jpg.zip)")
    ap.add_argument("--out", default=None, help="result file (default: benchmarks/results/pruning_sweep.json)")
    args = ap.parse_args()
    data = args.data or f"imagefolder:{shared_path('cifar10-jpg.zip')}"
    load_dataset(data, "train"), load_dataset(data, "test")  # decode once, into the cache the workers read
    wanted = tuple(filter(None, args.jobs.split(",")))
    jobs = sorted((j for j in JOBS if not wanted or j.name.startswith(wanted)), key=lambda j: -j.epochs)
    results = []
    with mp.get_context("spawn").Pool(args.workers) as pool:
        for r in pool.imap_unordered(run_job, [(j, data, args.device) for j in jobs]):
            print(f"{r['name']:<24} val {r['val_accuracy']:.4f} test {r['test_accuracy']:.4f} "
                  f"MACs {r['macs']:,} {r['seconds']} s", flush=True)  # fmt: skip
            results.append(r)
    results.sort(key=lambda r: -r["val_accuracy"])
    figures = {"validation_images": VALIDATION, "base": BASE, "jobs": results}
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=1))
    else:
        write_result("pruning_sweep", figures, vars(args))
    print(f"wrote {args.out or RESULTS / 'pruning_sweep.json'}")


if __name__ == "__main__":
    main()
