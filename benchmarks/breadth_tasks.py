"""Issue 14 acceptance beyond image classification: anomaly detection and 1-D classification.

Anomaly detection: ``zoo:fc_autoencoder`` (the MLPerf Tiny AD topology, 640 features) trained on the
synthetic ``anomaly:`` set's normal windows, int8-quantized (PTQ), exported to ONNX Runtime,
ExecuTorch and LiteRT; ROC AUC of the reconstruction error measured inside each runtime on the
labelled test windows (target: within 0.01 of the float model), 1-thread batch-1 latency of each
float and int8 artifact, interleaved.

1-D classification: ``zoo:cnn1d`` on MNIST-1D (``mnist1d:``, built offline): trained, channel-pruned
to half its MACs and fine-tuned (latency before/after measured in each runtime), then int8 in all
three runtimes (target: within 1 pt of the pruned float model's accuracy); the unpruned and pruned float
models are timed side by side with the int8 one.

Every float ``.onnx`` and every ``.tflite`` artifact (int8 too) is imported back (``import_model``) and
scored in PyTorch: the round trip of item 4's importers (ONNX Conv1d and dense chains, LiteRT's int8) and of
the embedded record (the task).

Runs offline (no ../shared data needed); torch on one thread (two fight on a shared 2-core machine). Writes
``benchmarks/results/breadth_tasks.json``. ``--quick`` shrinks data and epochs for a smoke run
(figures not comparable).
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
from common import interleaved_p50, write_result  # noqa: E402

from edgeopt.compress.quantize.api import quantize  # noqa: E402
from edgeopt.compress.workflows import TuneSettings, prune_model  # noqa: E402
from edgeopt.data import load_dataset  # noqa: E402
from edgeopt.interop import import_model  # noqa: E402
from edgeopt.interop.export import export_model  # noqa: E402
from edgeopt.model import EdgeModel  # noqa: E402
from edgeopt.models import create_model  # noqa: E402
from edgeopt.profile import profile_model  # noqa: E402
from edgeopt.runtimes import open_runner  # noqa: E402
from edgeopt.train import FitConfig, evaluate, fit  # noqa: E402

RUNTIMES = {"onnxruntime": "onnx", "executorch": "pte", "litert": "tflite"}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def in_runtimes(models: dict[str, EdgeModel], test: Any, tmp: Path, rounds: int) -> dict[str, Any]:
    """Export each model to every runtime (parity checked), score it there on ``test``, time it at batch 1."""
    out: dict[str, Any] = {}
    runners, inputs = {}, {}
    for name, m in models.items():
        for rt, fmt in RUNTIMES.items():
            t0 = time.perf_counter()
            res = export_model(m, fmt, tmp / f"{name}.{fmt}")
            runner = open_runner(rt, res.path, threads=1)
            r = evaluate(m.meta, test, predict=runner.run)
            out.setdefault(name, {})[rt] = {
                "metrics": r.metrics, "score": r.score, "size_bytes": res.size_bytes,
                "parity_max_abs_diff": res.parity.max_abs_diff, "parity_rel_diff": res.parity.rel_diff,
                "export_and_eval_s": round(time.perf_counter() - t0, 1),
            }  # fmt: skip
            log(f"  {name:12s} {rt:12s} score {r.score:.4f}  ({res.size_bytes} B)")
            if fmt in ("tflite", "onnx"):  # edgeopt imports these back (a .pte it does not)
                out[name][rt]["reimported"] = reimport(res.path, test)
            runners[f"{name}|{rt}"] = runner
            inputs[f"{name}|{rt}"] = m.meta.input.example_batch(1)  # a structured batch for a multi-input model
    try:
        lat = interleaved_p50(runners, inputs, rounds=rounds, runs=200)
    finally:
        for r in runners.values():
            r.close()
    for key, v in lat.items():
        name, rt = key.split("|")
        out[name][rt]["latency_p50_ms"] = v["p50_ms"]
        out[name][rt]["latency_p90_ms"] = v["p90_ms"]
    return out


def reimport(path: Path, test: Any) -> dict[str, Any]:
    """``path`` imported back into edgeopt and scored in PyTorch (an int8 .onnx as a QDQ graph)."""
    try:
        back = import_model(path)
    except Exception as e:  # a figure, not a crash: the benchmark records what did not import
        log(f"  {path.name} does not import: {e}")
        return {"error": f"{type(e).__name__}: {e}"}
    again = evaluate(back, test).score
    log(f"  {path.name} re-imported: {back.meta.task}, PyTorch score {again:.4f}")
    return {"task": back.meta.task, "torch_score": again, "quantized": bool(getattr(back.module, "quantized", False))}


def reimport_summary(rt: dict[str, Any]) -> dict[str, Any]:
    """Per artifact (``model.format``): its score in its runtime beside the re-imported model's in PyTorch."""
    return {f"{k}.{RUNTIMES[r]}": {"runtime_score": rt[k][r]["score"], **rt[k][r]["reimported"]}
            for k in rt for r in RUNTIMES if "reimported" in rt[k][r]}  # fmt: skip


def anomaly_section(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    spec = f"anomaly:{args.ad_train}"
    train, test = load_dataset(spec, "train"), load_dataset(spec, "test")
    log(f"anomaly detection: {spec} ({len(train)} normal train windows, {len(test)} test windows)")
    m = create_model("fc_autoencoder", input_shape=train.sample_shape, seed=0)
    t0 = time.perf_counter()
    m, hist = fit(m, train, FitConfig(epochs=args.ad_epochs, optimizer="adam", lr=1e-3, batch_size=128, threads=1))
    train_s = time.perf_counter() - t0
    float_eval = evaluate(m, test)
    log(f"  float torch AUC {float_eval.score:.4f} (trained {train_s:.0f} s)")
    t0 = time.perf_counter()
    q, report = quantize(m, train, calib_samples=500)
    quant_s = time.perf_counter() - t0
    int8_eval = evaluate(q, test)
    log(f"  int8 torch AUC {int8_eval.score:.4f} (quantized {quant_s:.0f} s)")
    rt = in_runtimes({"float": m, "int8": q}, test, tmp, args.rounds)
    auc_float = float_eval.score
    gaps = {r: abs(rt["int8"][r]["score"] - auc_float) for r in RUNTIMES}
    prof = profile_model(m)
    return {
        "data": spec, "train_windows": len(train), "test_windows": len(test),
        "params": prof.params, "macs": prof.macs, "epochs": args.ad_epochs, "train_seconds": round(train_s, 1),
        "final_train_loss": hist.epochs[-1]["loss"],
        "float_torch": float_eval.metrics, "int8_torch": int8_eval.metrics, "quantize_seconds": round(quant_s, 1),
        "runtimes": rt,
        "auc_gap_int8_vs_float": gaps,
        "reimport": reimport_summary(rt),
        "acceptance": {"target": "int8 ROC AUC within 0.01 of float in each runtime",
                       "met": all(g <= 0.01 for g in gaps.values())},
    }  # fmt: skip


def conv1d_section(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    spec = f"mnist1d:{args.m1_samples}"
    train, test = load_dataset(spec, "train"), load_dataset(spec, "test")
    log(f"1-D classification: {spec} ({len(train)} train, {len(test)} test sequences)")
    m = create_model("cnn1d", input_shape=train.sample_shape, num_classes=train.num_classes, seed=0)
    t0 = time.perf_counter()
    m, _ = fit(m, train, FitConfig(epochs=args.m1_epochs, optimizer="adam", lr=3e-3, batch_size=128,
                                   label_smoothing=0.0, threads=1))  # fmt: skip
    train_s = time.perf_counter() - t0
    base = evaluate(m, test)
    log(f"  float accuracy {base.score:.4f} (trained {train_s:.0f} s)")
    t0 = time.perf_counter()
    settings = TuneSettings(epochs=args.m1_tune, lr=1e-3, optimizer="adam", threads=1)
    pruned = prune_model(m, train, "channel", ratio=0.5, settings=settings, teacher=m, test=test)
    p = pruned.model
    prune_s = time.perf_counter() - t0
    macs_before, macs_after = profile_model(m).macs, profile_model(p).macs
    p_eval = evaluate(p, test)
    log(f"  pruned {macs_before} -> {macs_after} MACs, accuracy {p_eval.score:.4f} ({prune_s:.0f} s)")
    q, _ = quantize(p, train, calib_samples=500)
    q_eval = evaluate(q, test)
    log(f"  int8 torch accuracy {q_eval.score:.4f}")
    rt = in_runtimes({"float": m, "pruned_float": p, "pruned_int8": q}, test, tmp, args.rounds)
    drops = {r: (p_eval.score - rt["pruned_int8"][r]["score"]) * 100 for r in RUNTIMES}
    # the whole pipeline's loss: the pruned int8 artifact against the unpruned float model in the same runtime
    drops_from_float = {r: (rt["float"][r]["score"] - rt["pruned_int8"][r]["score"]) * 100 for r in RUNTIMES}
    speedup = {r: rt["float"][r]["latency_p50_ms"] / rt["pruned_float"][r]["latency_p50_ms"] for r in RUNTIMES}
    return {
        "data": spec, "train": len(train), "test": len(test), "epochs": args.m1_epochs,
        "train_seconds": round(train_s, 1), "float_accuracy": base.score,
        "params_before": profile_model(m).params, "params_after": profile_model(p).params,
        "macs_before": macs_before, "macs_after": macs_after, "mac_ratio": macs_after / macs_before,
        "widths_after": {k: v.get("out_channels", v.get("out_features", v.get("num_features")))
                         for k, v in p.meta.arch.get("layers", {}).items()},
        "prune_fine_tune_epochs": args.m1_tune, "prune_seconds": round(prune_s, 1),
        "pruned_accuracy": p_eval.score, "prune_latency_speedup_float": speedup,
        "int8_torch_accuracy": q_eval.score,
        "runtimes": rt,
        "int8_drop_points_vs_pruned_float": drops,
        "pruned_int8_drop_points_vs_float": drops_from_float,
        "reimport": reimport_summary(rt),
        "acceptance": {"target": "MACs halved (ratio <= 0.5); the pruned int8 model within 1 pt of the unpruned "
                                 "float one in each runtime (so within 1 pt of the pruned float one too)",
                       "met": macs_after <= 0.5 * macs_before
                       and all(d <= 1.0 for d in (*drops.values(), *drops_from_float.values()))},
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny data and epochs (smoke run)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved latency rounds")
    args = ap.parse_args()
    torch.set_num_threads(1)  # training and calibration on one thread: two fight on a shared 2-core machine
    args.ad_train, args.ad_epochs = (400, 2) if args.quick else (4000, 20)
    args.m1_samples, args.m1_epochs, args.m1_tune = (500, 2, 1) if args.quick else (5000, 20, 12)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgeopt-breadth-") as d:
        tmp = Path(d)
        figures = {"anomaly_detection": anomaly_section(args, tmp), "conv1d_classification": conv1d_section(args, tmp)}
    figures["seconds"] = round(time.perf_counter() - start, 1)
    settings = {k: v for k, v in vars(args).items()}
    path = write_result("breadth_tasks", figures, settings) if not args.quick else "(--quick: no result file)"
    ad, c1 = figures["anomaly_detection"], figures["conv1d_classification"]
    print(f"\n{'':28s} {'onnxruntime':>12s} {'executorch':>12s} {'litert':>12s}")
    rows = (("AD float AUC", ad, "float"), ("AD int8 AUC", ad, "int8"), ("1-D float acc", c1, "float"),
            ("1-D pruned float acc", c1, "pruned_float"), ("1-D pruned int8 acc", c1, "pruned_int8"))  # fmt: skip
    for label, sec, key in rows:
        row = [sec["runtimes"][key][r]["score"] for r in RUNTIMES]
        lat = [sec["runtimes"][key][r]["latency_p50_ms"] * 1000 for r in RUNTIMES]
        print(f"{label:28s} " + " ".join(f"{v:12.4f}" for v in row))
        print(f"{'  p50 latency (µs, 1 thread)':28s} " + " ".join(f"{v:12.1f}" for v in lat))
    print(f"AD acceptance met: {ad['acceptance']['met']}; 1-D acceptance met: {c1['acceptance']['met']}")
    print(f"wrote {path} ({figures['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
