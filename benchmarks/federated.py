"""Federated learning acceptance: NIID-Bench-like curves, FedAvg vs FedSGD, engine throughput,
upload compression, and DP accuracy vs ε — side by side in one run.

(a) cifar10-jpg, 10 clients, Dirichlet(0.5) label skew, LeNet-5-style small CNN (NIID-Bench's
    "simple-cnn" shape): FedAvg vs FedProx (mu 0.01) vs SCAFFOLD, every client every round,
    SGD lr 0.01 momentum 0.9 batch 64 as NIID-Bench. Far fewer rounds and local epochs than
    NIID-Bench's 50 x 10 and a stratified training subset (flags below), so the accuracies are
    lower than its 63.4 / 65.6 / 68.0 %; the final model is evaluated on all 10,000 test images.
(b) Pathological non-IID (sort by label, 2 shards per client, 100 clients, 10 per round) on
    digits: rounds to a target test accuracy for FedSGD (E=1, full batch) and FedAvg (E=5,
    B=full and B=10), each at its best client learning rate from a small grid (as the FedAvg
    paper does); the speed-up is FedSGD rounds / FedAvg rounds.
(c) Throughput: client updates per second, in-process engine vs Flower's simulation runtime
    (Ray), same workload, same process, one after the other.
(d) Compression: dense vs int8 deltas vs top-k 1 % with error feedback on digits (Dirichlet 0.5,
    20 clients); upload bytes measured from the encoded payloads; accuracy as the mean of the
    last 10 rounds (single-round accuracy on 360 test images moves by ~1 point round to round).
(e) DP-FedAvg on digits (100 clients, 20 per round, clip 1.0): accuracy vs ε at δ=1e-5 from
    Opacus' RDP accountant, for several noise multipliers, next to the non-private run.
(f) Clients training a compressed model on (d)'s workload: float vs QAT int8 (fake quantization;
    the final model converted to int8 and run in ONNX Runtime) vs pruned width (50 % and 75 % of
    the MACs removed before round 1): accuracy and upload bytes.
(g) Flower deployment with SecAgg+: a real SuperLink and 3 SuperNodes on 127.0.0.1 (separate
    processes), MLP on digits, 2 rounds, client 1 drops out of round 1 after SecAgg+'s key exchange
    (its masks are recovered from the survivors' Shamir shares): final weights and accuracies
    against the in-process engine's own secure aggregation with the same dropout. (Moved here from
    the test suite for its ~3.5 minutes; tests/test_federated_flower.py runs the same ServerApp and
    SecAgg+ workflow in Flower's simulation.)
(h) Federated personalization (issue 12 item 5), Dirichlet(0.3), 10 clients, all every round,
    20 % of each client's data held out for its own accuracy: plain FedAvg's global model vs
    --personalize head (FedPer) vs bn (FedBN, ResNet-8 only: the MLP and LeNet-5 have no batch norm)
    vs finetune (FedAvg, then each client fine-tunes the head); per-client accuracy before (the FedAvg
    global model) and after, the mean per-client gain and the worst client. digits: MLP and a small
    ResNet-8 (width 8); cifar10-jpg (a stratified subset, few rounds): LeNet-5 and ResNet-8 (width 8).

Run: .venv/bin/python benchmarks/federated.py   (about 10 minutes on 2 shared cores)
     --cifar-train N / --cifar-rounds R / --cifar-epochs E for longer (a); --only a,b,... to pick parts
     (--only h: personalization alone, ~8 minutes).
Writes benchmarks/results/federated.json.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from typing import Any

import numpy as np
import torch
from common import previous_figures, shared_path, write_result

from edgeopt.data import ImageDataset, load_dataset
from edgeopt.federated import run_federated
from edgeopt.federated.config import FederatedConfig
from edgeopt.models import create_model
from edgeopt.train import evaluate


def _model(name: str, data: ImageDataset, seed: int = 0, **kw: Any):
    torch.manual_seed(seed)
    h, w, c = data.image_shape
    return create_model(name, input_shape=(c, h, w), num_classes=data.num_classes, **kw)


def _stratified(data: ImageDataset, n: int, seed: int) -> ImageDataset:
    if n >= len(data):
        return data
    rng = np.random.default_rng(seed)
    per = n // data.num_classes
    idx = np.sort(
        np.concatenate([rng.permutation(np.flatnonzero(data.labels == c))[:per] for c in range(data.num_classes)])
    )
    return ImageDataset(data.images[idx], data.labels[idx], data.class_names, data.name + f"[{len(idx)}]")


def _curve(res) -> list[float]:
    return [round(h["test_accuracy"], 4) for h in res.history]


def part_a(args: argparse.Namespace) -> dict:
    spec = f"imagefolder:{shared_path('cifar10-jpg.zip')}"
    train = _stratified(load_dataset(spec, "train"), args.cifar_train, 0)
    test = load_dataset(spec, "test")
    out: dict = {"settings": {
        "data": "cifar10-jpg", "train_images": len(train), "test_images_per_round": args.cifar_eval,
        "final_test_images": len(test), "clients": 10, "per_round": 10, "partition": "dirichlet:0.5",
        "rounds": args.cifar_rounds, "local_epochs": args.cifar_epochs, "batch_size": 64, "lr": args.cifar_lr,
        "momentum": 0.9, "fedprox_mu": 0.01, "model": "lenet5 (conv 6, conv 16, fc 120-84-10; 'same' padding)",
        "niid_bench": "50 rounds x 10 local epochs on all 50,000 images; FedAvg 63.4 / FedProx 65.6 / SCAFFOLD 68.0 %",
    }}  # fmt: skip
    for algo in ("fedavg", "fedprox", "scaffold"):
        cfg = FederatedConfig(clients=10, per_round=10, rounds=args.cifar_rounds, partition="dirichlet:0.5", algo=algo,
                              local_epochs=args.cifar_epochs, batch_size=64, lr=args.cifar_lr, momentum=0.9, mu=0.01,
                              eval_limit=args.cifar_eval, seed=0)  # fmt: skip
        t0 = time.perf_counter()
        res = run_federated(_model("lenet5", train), train, test.take(args.cifar_eval, seed=1), cfg, threads=1)
        final = evaluate(res.model, test).accuracy
        out[algo] = {"curve": _curve(res), "final_test_accuracy": final, "seconds": time.perf_counter() - t0}
        print(f"(a) {algo:9s} final {100 * final:.2f} %  curve {_curve(res)}", flush=True)
    out["histogram"] = np.asarray(res.histogram).tolist()
    return out


def _rounds_to(history: list[dict], target: float) -> int | None:
    return next((h["round"] for h in history if h["test_accuracy"] >= target), None)


def part_b(args: argparse.Namespace) -> dict:
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    variants = {
        "fedsgd (E=1, B=full)": (1, 0, (0.1, 0.3, 0.5, 1.0)),
        "fedavg (E=5, B=full)": (5, 0, (0.1, 0.3, 0.5, 1.0)),
        "fedavg (E=5, B=10)": (5, 10, (0.03, 0.1, 0.3, 0.5)),
    }
    out: dict = {"settings": {"data": "digits (1,437 train / 360 test)", "model": "mlp 64-128-64-10", "clients": 100,
                              "per_round": 10, "partition": "shards:2", "target_accuracy": args.target,
                              "max_rounds": args.b_rounds, "seeds": args.seeds}}  # fmt: skip
    for name, (epochs, bs, lrs) in variants.items():
        per_lr = {}
        for lr in lrs:
            rounds = []
            for seed in range(args.seeds):
                cfg = FederatedConfig(clients=100, per_round=10, rounds=args.b_rounds, partition="shards:2",
                                      local_epochs=epochs, batch_size=bs, lr=lr, seed=seed)  # fmt: skip
                res = run_federated(_model("mlp", train, seed), train, test, cfg, threads=1)
                rounds.append(_rounds_to(res.history, args.target))
            per_lr[str(lr)] = rounds
        ok = {lr: float(np.mean(r)) for lr, r in per_lr.items() if all(x is not None for x in r)}
        best = min(ok, key=ok.get) if ok else None
        out[name] = {"rounds_to_target_by_lr": per_lr, "best_lr": best, "rounds_to_target": ok.get(best)}
        print(f"(b) {name:22s} rounds to {100 * args.target:.0f} %: {per_lr}  best lr {best}", flush=True)
    base = out["fedsgd (E=1, B=full)"]["rounds_to_target"]
    for name in list(variants)[1:]:
        r = out[name]["rounds_to_target"]
        out[name]["speedup_vs_fedsgd"] = base / r if base and r else None
    return out


THROUGHPUT_WORKLOADS = {
    # a phone fleet: many clients, a few samples each (the case federated simulators exist for)
    "cross-device (100 clients x ~14 samples, 20 per round)": dict(clients=100, per_round=20, partition="iid"),
    # few clients with more data each: per-update work dominates, messaging matters less
    "cross-silo (10 clients x ~144 samples, 10 per round)": dict(clients=10, per_round=10, partition="iid"),
}


def _throughput(cfg: FederatedConfig, model: Any, train: ImageDataset, test: ImageDataset, engine: str) -> dict:
    stamps: list[float] = []
    t0 = time.perf_counter()
    res = run_federated(copy.deepcopy(model), train, test, cfg, engine=engine, data_spec="digits", threads=1,
                        on_round=lambda r: stamps.append(time.perf_counter()))  # fmt: skip
    total = time.perf_counter() - t0
    updates = cfg.rounds * cfg.per_round
    steady = (stamps[-1] - stamps[0]) if len(stamps) > 1 else total
    return {
        "seconds_total": total,
        "updates_per_s_total": updates / total,
        "updates_per_s_after_round_1": (updates - cfg.per_round) / steady,
        "final_accuracy": res.history[-1]["test_accuracy"],
    }


def part_c(args: argparse.Namespace) -> dict:
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    out: dict = {
        "settings": {
            "data": "digits",
            "model": "mlp",
            "rounds": args.c_rounds,
            "local_epochs": 1,
            "batch_size": 16,
            "torch_threads_per_client": 1,
            "flower": "flwr.simulation.run_simulation, Ray backend, min(clients, 10) virtual "
            "SuperNodes, 1 CPU per ClientApp actor (2 actors on 2 cores); in-process: "
            "one process, one thread",
            "updates_per_s_total": "includes start-up (Ray for Flower)",
            "updates_per_s_after_round_1": "from the end of round 1 to the end of the last round",
        }
    }
    model = _model("mlp", train)
    for name, kw in THROUGHPUT_WORKLOADS.items():
        cfg = FederatedConfig(rounds=args.c_rounds, batch_size=16, lr=0.1, **kw)
        row = {engine: _throughput(cfg, model, train, test, engine) for engine in ("inprocess", "flower-sim")}
        a, b = row["inprocess"], row["flower-sim"]
        row["speedup_total"] = a["updates_per_s_total"] / b["updates_per_s_total"]
        row["speedup_after_round_1"] = a["updates_per_s_after_round_1"] / b["updates_per_s_after_round_1"]
        row["same_final_accuracy"] = a["final_accuracy"] == b["final_accuracy"]
        out[name] = row
        print(f"(c) {name}: in-process {a['updates_per_s_after_round_1']:.1f} vs Flower sim "
              f"{b['updates_per_s_after_round_1']:.1f} updates/s after round 1 ({row['speedup_after_round_1']:.1f}x); "
              f"overall {row['speedup_total']:.1f}x", flush=True)  # fmt: skip
    return out


def part_d(args: argparse.Namespace) -> dict:
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    out: dict = {"settings": {"data": "digits", "model": "mlp", "clients": 20, "per_round": 10,
                              "partition": "dirichlet:0.5", "rounds": args.d_rounds, "batch_size": 16, "lr": 0.1,
                              "accuracy": "mean test accuracy over the last 10 rounds"}}  # fmt: skip
    for comp in ("none", "int8", "topk:0.01"):
        cfg = FederatedConfig(clients=20, per_round=10, rounds=args.d_rounds, partition="dirichlet:0.5",
                              batch_size=16, lr=0.1, compress=comp)  # fmt: skip
        res = run_federated(_model("mlp", train), train, test, cfg, threads=1)
        up = sum(h["upload_bytes"] for h in res.history)
        dense = sum(h["upload_bytes_dense"] for h in res.history)
        acc = [h["test_accuracy"] for h in res.history]
        out[comp] = {"upload_bytes": up, "upload_bytes_per_round": up / len(acc), "compression": dense / up,
                     "accuracy_last10": float(np.mean(acc[-10:])), "accuracy_final_round": acc[-1]}  # fmt: skip
    for comp in ("int8", "topk:0.01"):
        out[comp]["accuracy_change_points"] = 100 * (out[comp]["accuracy_last10"] - out["none"]["accuracy_last10"])
        print(f"(d) {comp:9s} {out[comp]['compression']:6.1f}x smaller, accuracy change "
              f"{out[comp]['accuracy_change_points']:+.2f} pt", flush=True)  # fmt: skip
    return out


def part_e(args: argparse.Namespace) -> dict:
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    out: dict = {"settings": {"data": "digits", "model": "mlp", "clients": 100, "per_round": 20, "sample_rate": 0.2,
                              "rounds": args.e_rounds, "local_epochs": 2, "batch_size": 16, "lr": 0.2, "clip": 1.0,
                              "delta": 1e-5, "accountant": "opacus.accountants.analysis.rdp (sampled Gaussian)",
                              "accuracy": "mean test accuracy over the last 5 rounds"}, "rows": []}  # fmt: skip
    for sigma in (0.0, 0.5, 1.0, 2.0):
        cfg = FederatedConfig(clients=100, per_round=20, rounds=args.e_rounds, partition="iid", local_epochs=2,
                              batch_size=16, lr=0.2, dp_clip=1.0 if sigma else None, dp_noise=sigma)  # fmt: skip
        res = run_federated(_model("mlp", train), train, test, cfg, threads=1)
        acc = [h["test_accuracy"] for h in res.history]
        eps = res.history[-1]["epsilon"]
        out["rows"].append({"noise_multiplier": sigma, "epsilon": eps, "accuracy_last5": float(np.mean(acc[-5:]))})
        print(f"(e) sigma {sigma:.1f}  epsilon {eps if eps is not None else 'inf (no DP)'}  "
              f"accuracy {100 * np.mean(acc[-5:]):.2f} %", flush=True)  # fmt: skip
    return out


CLIENT_MODELS = ("float", "qat-int8", "pruned:0.5", "pruned:0.75")


def part_f(args: argparse.Namespace) -> dict:
    from edgeopt.federated.client_model import runtime_accuracy

    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    out: dict = {
        "settings": {
            "data": "digits",
            "model": "mlp 64-128-64-10",
            "clients": 20,
            "per_round": 10,
            "partition": "dirichlet:0.5",
            "rounds": args.f_rounds,
            "batch_size": 16,
            "lr": 0.1,
            "local_epochs": 1,
            "compress": "none",
            "accuracy": "test accuracy (360 images): mean of the last 10 rounds and final model",
            "qat-int8": "clients train LSQ fake-quant int8; final model converted to int8 "
            "(learned weight steps pinned, activations calibrated on 256 train images) "
            "and run in ONNX Runtime",
            "pruned:R": "R of the MACs removed by L2 channel pruning on the server before round 1",
        }
    }
    for spec in CLIENT_MODELS:
        cfg = FederatedConfig(clients=20, per_round=10, rounds=args.f_rounds, partition="dirichlet:0.5",
                              batch_size=16, lr=0.1, client_model=spec)  # fmt: skip
        t0 = time.perf_counter()
        res = run_federated(_model("mlp", train), train, test, cfg, threads=1)
        up = sum(h["upload_bytes"] for h in res.history)
        acc = [h["test_accuracy"] for h in res.history]
        row = {"upload_bytes": up, "upload_bytes_per_round": up / len(acc),
               "accuracy_last10": float(np.mean(acc[-10:])), "accuracy_final_round": acc[-1],
               "seconds": time.perf_counter() - t0}  # fmt: skip
        info = res.extra.get("client_model", {})
        row["params"] = info.get("params_after", sum(p.numel() for p in res.model.module.parameters()))
        for k in ("macs_before", "macs_after", "fake_quant_accuracy", "int8_accuracy", "layers"):
            if k in info:
                row[k] = info[k]
        if spec == "qat-int8":
            with tempfile.TemporaryDirectory() as tmp:
                row["int8_onnxruntime"] = runtime_accuracy(res.model, test, tmp)
                row["int8_onnxruntime"].pop("artifact")
        out[spec] = row
    base = out["float"]
    for spec in CLIENT_MODELS:
        r = out[spec]
        r["upload_vs_float"] = r["upload_bytes"] / base["upload_bytes"]
        r["accuracy_change_points"] = 100 * (r["accuracy_last10"] - base["accuracy_last10"])
        extra = ""
        if "int8_onnxruntime" in r:
            extra = f"  int8 in ONNX Runtime {100 * r['int8_onnxruntime']['accuracy']:.2f} %"
        print(f"(f) {spec:11s} params {r['params']:6d}  upload {r['upload_bytes'] / 2**20:7.2f} MiB "
              f"({r['upload_vs_float']:.3f}x float)  accuracy last10 {100 * r['accuracy_last10']:.2f} % "
              f"({r['accuracy_change_points']:+.2f} pt){extra}", flush=True)  # fmt: skip
    return out


def part_g(args: argparse.Namespace) -> dict:
    from edgeopt.federated.algorithms import get_flat

    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    cfg = FederatedConfig(clients=3, per_round=3, rounds=2, partition="iid", lr=0.1, batch_size=16,
                          min_completion=0.5, secagg=True, dropout=0.25, seed=23)  # fmt: skip

    def model() -> Any:
        torch.manual_seed(0)
        return create_model("mlp", input_shape=(1, 8, 8), num_classes=10, hidden=(32,))

    ref = run_federated(model(), train, test, cfg, engine="inprocess", threads=1)
    with tempfile.TemporaryDirectory(prefix="edgeopt-bench-secagg-") as tmp:
        t0 = time.perf_counter()
        dep = run_federated(model(), train, test, cfg, engine="flower", data_spec="digits", out_dir=tmp, threads=1,
                            nodes=3, round_timeout=90.0, timeout=600.0)  # fmt: skip
        seconds = time.perf_counter() - t0
    w, w_ref = get_flat(dep.model.module), get_flat(ref.model.module)
    n = w.size
    rounds = {h["round"]: h for h in dep.history}
    out = {
        "settings": {
            "data": "digits",
            "model": "mlp 32",
            "supernodes": 3,
            "rounds": 2,
            "secagg": "Flower SecAggPlusWorkflow, 22-bit quantization",
            "dropout": "client 1 in round 1 (seed 23)",
        },
        "round1_dropouts": rounds[1]["dropouts"],
        "round1_completed": rounds[1]["completed"],
        "round2_completed": rounds[2]["completed"],
        "round1_upload_bytes_per_weight": rounds[1]["upload_bytes"] / n,
        "max_abs_weight_difference_vs_inprocess": float(np.abs(w - w_ref).max()),
        "max_abs_weight_change_from_init": float(np.abs(w - get_flat(model().module)).max()),
        "accuracy_by_round": [h["test_accuracy"] for h in dep.history],
        "accuracy_by_round_inprocess": [h["test_accuracy"] for h in ref.history],
        "seconds_deployment": seconds,
    }
    out["matches_inprocess"] = bool(out["max_abs_weight_difference_vs_inprocess"] <= 1e-4 and rounds[1]["dropouts"]
                                    == [1] and rounds[1]["completed"] == 2 and rounds[2]["completed"] == 3)  # fmt: skip
    print(f"(g) SecAgg+ deployment, dropout recovered: max |w - w_inprocess| "
          f"{out['max_abs_weight_difference_vs_inprocess']:.2e} (weights moved "
          f"{out['max_abs_weight_change_from_init']:.3f}); {seconds:.0f} s", flush=True)  # fmt: skip
    return out


def _personalize_runs(
    data: str, train: ImageDataset, test: ImageDataset, model: str, kw: dict, modes: tuple[str, ...], base: dict
) -> dict[str, Any]:
    """One model on one dataset: each personalization mode next to the plain FedAvg global model."""
    rows: dict[str, Any] = {}
    for mode in modes:
        cfg = FederatedConfig(**base, personalize=mode)
        t0 = time.perf_counter()
        res = run_federated(_model(model, train, **kw), train, test, cfg, threads=1)
        p = dict(res.extra["personalization"])
        p["seconds"] = time.perf_counter() - t0
        p["final_personal_accuracy"] = res.history[-1].get("personal_accuracy")
        rows[mode] = p
        w = p["worst_client"]
        print(f"(h) {data:11s} {model:8s} {mode:8s} per-client mean {100 * p['mean_before']:.1f} -> "
              f"{100 * p['mean_after']:.1f} % (gain {100 * p['mean_gain']:+.1f} pt), worst client {w['client']} "
              f"({w['holdout']} held out) {100 * w['before']:.1f} -> {100 * w['after']:.1f} %, min gain "
              f"{100 * p['min_gain']:+.1f} pt; {p['seconds']:.0f} s", flush=True)  # fmt: skip
    first = rows[modes[0]]
    glob = [{k: r[k] for k in ("client", "before", "holdout")} for r in first["per_client"]]
    rows["fedavg_global"] = {
        "per_client": glob,
        "mean_accuracy": first["mean_before"],
        "worst_client": min(glob, key=lambda r: r["before"]),
        "test_accuracy": first["global_test_accuracy"],
    }
    # every mode's "before" is the same plain FedAvg model (finetune's own, head/bn's reference run)
    rows["same_reference"] = all(
        [r["before"] for r in rows[m]["per_client"]] == [r["before"] for r in first["per_client"]] for m in modes
    )
    return rows


def part_h(args: argparse.Namespace) -> dict:
    common = {"clients": 10, "per_round": 10, "partition": "dirichlet:0.3", "local_epochs": 1, "holdout": 0.2,
              "finetune_epochs": 5, "seed": 0}  # fmt: skip
    digits = {**common, "rounds": args.h_rounds, "batch_size": 16, "lr": args.h_lr}
    out: dict[str, Any] = {"settings": {
        "common": common, "digits": digits,
        "before": "plain FedAvg global model (same settings and splits) on each client's held-out split",
        "worst_client": "the client with the lowest accuracy after personalization",
        "bn": "ResNet-8 only (the MLP and LeNet-5 have no batch norm)",
    }}  # fmt: skip
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    out["digits"] = {
        "mlp": _personalize_runs("digits", train, test, "mlp", {"hidden": (64,)}, ("finetune", "head"), digits),
        "resnet8": _personalize_runs(
            "digits", train, test, "resnet8", {"width": 8}, ("finetune", "head", "bn"), digits
        ),  # fmt: skip
    }
    if args.h_cifar_train > 0:
        spec = f"imagefolder:{shared_path('cifar10-jpg.zip')}"
        train = _stratified(load_dataset(spec, "train"), args.h_cifar_train, 0)
        test = load_dataset(spec, "test")
        cifar = {**common, "rounds": args.h_cifar_rounds, "batch_size": 64, "lr": 0.01, "momentum": 0.9,
                 "eval_limit": 1000}  # fmt: skip
        out["settings"]["cifar10-jpg"] = {**cifar, "train_images": len(train), "global_test_images_per_round": 1000}
        out["cifar10-jpg"] = {
            "lenet5": _personalize_runs("cifar10-jpg", train, test, "lenet5", {}, ("finetune", "head"), cifar),
            "resnet8": _personalize_runs(
                "cifar10-jpg", train, test, "resnet8", {"width": 8}, ("finetune", "bn"), cifar
            ),  # fmt: skip
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--only",
        default="a,b,c,d,e,f,g,h",
        help="comma-separated parts to run (the others' figures already in the results file are kept)",
    )
    ap.add_argument("--cifar-train", type=int, default=10_000, help="(a) training images (stratified subset)")
    ap.add_argument("--cifar-rounds", type=int, default=15, help="(a) rounds")
    ap.add_argument("--cifar-epochs", type=int, default=2, help="(a) local epochs")
    ap.add_argument("--cifar-lr", type=float, default=0.01, help="(a) client learning rate (NIID-Bench: 0.01)")
    ap.add_argument("--cifar-eval", type=int, default=2_000, help="(a) test images evaluated every round")
    ap.add_argument("--target", type=float, default=0.9, help="(b) target test accuracy")
    ap.add_argument("--b-rounds", type=int, default=200, help="(b) round cap")
    ap.add_argument("--seeds", type=int, default=1, help="(b) seeds per learning rate")
    ap.add_argument("--c-rounds", type=int, default=6, help="(c) rounds")
    ap.add_argument("--d-rounds", type=int, default=150, help="(d) rounds")
    ap.add_argument("--e-rounds", type=int, default=60, help="(e) rounds")
    ap.add_argument("--f-rounds", type=int, default=150, help="(f) rounds")
    ap.add_argument("--h-rounds", type=int, default=40, help="(h) rounds")
    ap.add_argument("--h-lr", type=float, default=0.05, help="(h) client learning rate (digits)")
    ap.add_argument("--h-cifar-train", type=int, default=10_000, help="(h) cifar10-jpg training images (0: skip)")
    ap.add_argument("--h-cifar-rounds", type=int, default=15, help="(h) cifar10-jpg rounds")
    args = ap.parse_args()
    torch.set_num_threads(1)
    parts = {"a": part_a, "b": part_b, "c": part_c, "d": part_d, "e": part_e, "f": part_f, "g": part_g, "h": part_h}
    run_now = args.only.split(",")
    figures: dict = previous_figures("federated", run_now) if set(parts) - set(run_now) else {}
    start = time.perf_counter()
    for key in args.only.split(","):
        t0 = time.perf_counter()
        figures[key] = parts[key](args)
        figures[key]["seconds"] = time.perf_counter() - t0
    figures["seconds_total_this_run"] = time.perf_counter() - start
    path = write_result("federated", figures, vars(args))
    print(f"wrote {path} in {figures['seconds_total_this_run']:.0f} s")


if __name__ == "__main__":
    main()
