"""Multi-output models (issue 14, item 2): per-head figures in PyTorch and in each runtime, float and int8.

``digits-multi`` (scikit-learn's digits with two outputs: the ``digit`` class and ``ink``, the image's mean
intensity standardised over the set): ``zoo:mlp`` and ``zoo:lenet5``, each with its last layer split into a
classification head and a regression head, trained with the weighted sum of the heads' losses, then int8 PTQ.
Each float and int8 model is exported to ONNX Runtime, ExecuTorch and LiteRT (parity checked output by output),
scored there per head (digit accuracy; ink MSE / MAE / R²; the combined score, the mean of accuracy and R²),
and timed at batch 1 on one thread, interleaved. Every float ``.onnx`` and every ``.tflite`` is imported back
and scored in PyTorch (``breadth_tasks.reimport``).

Offline (no ../shared data needed); torch on one thread. Writes ``benchmarks/results/multi_output.json``.
``--quick`` shrinks the epochs and timing rounds for a smoke run (figures not comparable).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from breadth_tasks import RUNTIMES, in_runtimes, log, reimport_summary  # noqa: E402
from common import write_result  # noqa: E402

from edgeopt.compress.quantize.api import quantize  # noqa: E402
from edgeopt.data import load_dataset  # noqa: E402
from edgeopt.models import create_model  # noqa: E402
from edgeopt.profile import profile_model  # noqa: E402
from edgeopt.train import FitConfig, evaluate, fit  # noqa: E402

DATA = "digits-multi"


def heads_of(metrics: dict[str, float]) -> dict[str, float]:
    """The figures the table shows: digit accuracy, ink MAE and R², the combined score."""
    return {k: metrics[k] for k in ("digit_accuracy", "ink_mae", "ink_r2", "score")}


def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """``fn(*args, **kwargs)`` and the seconds it took."""
    t0 = time.perf_counter()
    return fn(*args, **kwargs), time.perf_counter() - t0


def model_section(name: str, args: argparse.Namespace, train: Any, test: Any, tmp: Path) -> dict[str, Any]:
    m = create_model(name, input_shape=train.sample_shape, outputs=train.outputs, seed=0)
    cfg = FitConfig(epochs=args.epochs, optimizer="adam", lr=args.lr, batch_size=32, threads=1)
    (m, hist), train_s = timed(fit, m, train, cfg)
    (q, _), quant_s = timed(quantize, m, train, calib_samples=500)
    models = {"float": m, "int8": q}
    in_torch = {k: evaluate(v, test) for k, v in models.items()}
    log(f"{name}: trained {train_s:.0f} s, quantized {quant_s:.0f} s; torch float {heads_of(in_torch['float'].metrics)}"
        f", int8 {heads_of(in_torch['int8'].metrics)}")  # fmt: skip
    rt = in_runtimes(models, test, tmp / name, args.rounds)
    prof = profile_model(m)
    return {
        "model": f"zoo:{name}",
        "outputs": [o.__dict__ for o in m.meta.outputs],
        "params": prof.params,
        "macs": prof.macs,
        "train": {"epochs": args.epochs, "lr": args.lr, "final_loss": hist.epochs[-1]["loss"], "s": round(train_s, 1)},
        "quantize_s": round(quant_s, 1),
        "torch": {k: v.to_json() for k, v in in_torch.items()},
        "runtimes": rt,
        "reimport": reimport_summary(rt),
        "int8_vs_float_in_runtime": {
            r: {k: rt["int8"][r]["metrics"][k] - rt["float"][r]["metrics"][k] for k in ("digit_accuracy", "ink_mae")}
            for r in RUNTIMES
        },
    }


def table(section: dict[str, Any]) -> str:
    rows = [f"{'':14s} {'digit acc':>9s} {'ink MAE':>8s} {'ink R2':>7s} {'score':>6s} {'p50 us':>7s}"]
    for variant in ("float", "int8"):
        t = section["torch"][variant]
        rows.append(f"{variant + ' torch':14s} {t['heads']['digit']['accuracy']:9.4f} {t['heads']['ink']['mae']:8.4f}"
                    f" {t['heads']['ink']['r2']:7.4f} {t['score']:6.4f}")  # fmt: skip
        for r in RUNTIMES:
            f = section["runtimes"][variant][r]
            mt, label = f["metrics"], f"{variant} {r}"
            rows.append(f"{label:14.14s} {mt['digit_accuracy']:9.4f} {mt['ink_mae']:8.4f} {mt['ink_r2']:7.4f}"
                        f" {mt['score']:6.4f} {f['latency_p50_ms'] * 1000:7.1f}")  # fmt: skip
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="mlp,lenet5", help="zoo models, comma-separated")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved latency rounds")
    ap.add_argument("--quick", action="store_true", help="3 epochs, 1 timing round (smoke run)")
    args = ap.parse_args()
    if args.quick:
        args.epochs, args.rounds = 3, 1
    torch.set_num_threads(1)
    start = time.perf_counter()
    train, test = load_dataset(DATA, "train"), load_dataset(DATA, "test")
    log(f"{DATA}: {len(train)} train, {len(test)} test; outputs {[(o.name, o.task, o.width) for o in train.outputs]}")
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="edgeopt-multi-") as d:
        for name in args.models.split(","):
            figures[name] = model_section(name, args, train, test, Path(d))
            print(f"\nzoo:{name} on {DATA} ({len(test)} test samples, 1 thread, batch 1)\n{table(figures[name])}")
    figures["seconds"] = round(time.perf_counter() - start, 1)
    settings = {"data": DATA, "models": args.models, "epochs": args.epochs, "optimizer": "adam", "lr": args.lr,
                "batch_size": 32, "int8": "PTQ, 500 calibration samples", "rounds": args.rounds, "quick": args.quick,
                "torch_threads": 1}  # fmt: skip
    path = write_result("multi_output", figures, settings)
    print(f"\nwrote {path} ({figures['seconds']} s)")


if __name__ == "__main__":
    main()
