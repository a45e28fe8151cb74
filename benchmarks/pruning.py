"""Pruning, distillation and Deep Compression on the MLPerf Tiny ResNet-8, measured in the runtimes.

Base: the MLPerf ResNet-8 .tflite imported (softmax dropped: logits, same argmax) and fine-tuned
on cifar10-jpg train (cached under benchmarks/.cache/, so reruns skip it).

1. Channel pruning to half the MACs (edgeopt: dependency graph, L2 importance, global
   allocation on SIMD-friendly widths; and a second edgeopt model whose allocation spends the MAC
   budget where --allocation-runtimes measurably save time, residual branches removed whole
   where that pays) and, side by side, Torch-Pruning (DepGraph, its default
   GroupMagnitudeImportance, uniform ratio searched to the same MAC budget). Both pruned in the same
   --steps (one KD recovery epoch after each but the last) and recovered with the same KD
   fine-tuning from the base (SGD; batch norm unfolded for training and folded back, see
   edgeopt.compress.batchnorm); training runs on a GPU when there is one (--device). Accuracy
   on the test set; latency p50 at 1 thread in ONNX Runtime and ExecuTorch, interleaved in one run.
2. Latency-targeted pruning (NetAdapt-style, measured in --latency-runtime) to a target of
   --latency-target x the base's measured p50; the result is timed again beside the base.
3. KD vs no KD: a half-width zoo ResNet-8 trained from scratch, same epochs, --seeds seeds.
4. Deep Compression: the base, gradually magnitude-pruned, 4-bit k-means clustered with centroid
   fine-tuning (KD from the base), written as an entropy-coded .eoz file; the file is loaded
   back and that restored model is what is evaluated.

Run: .venv/bin/python benchmarks/pruning.py [--recover-epochs N ...]   (see --help; trained models
are cached in benchmarks/.cache/ keyed by their settings; --skip reruns part and keeps the other
sections' last figures). Writes benchmarks/results/pruning.json. Over 10 minutes on 2 cores:
the recovery epochs dominate. On a GPU machine without the runtimes, --train-only trains and
caches section 1's models; copy benchmarks/.cache back and run again here to measure them.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from common import RESULTS, ROOT, interleaved_p50, shared_path, write_result
from torch import nn

from edgeopt.compress.common import strip_output_softmax
from edgeopt.compress.distill import DistillConfig, Distiller
from edgeopt.compress.prune import calibration_inputs, prune_to_latency
from edgeopt.compress.workflows import TuneSettings, deep_compress, prune_model, tune
from edgeopt.data import load_dataset
from edgeopt.errors import EdgeoptError
from edgeopt.interop.export import export_model
from edgeopt.interop.graph import GraphModule
from edgeopt.model import EdgeModel, load_model, save_model
from edgeopt.models import create_model
from edgeopt.profile import count_macs, count_params, export_for_profile
from edgeopt.runtimes import open_runner
from edgeopt.train import FitConfig, evaluate, fit

CACHE = ROOT / "benchmarks" / ".cache"
SECTIONS = {"half": "channel_half_macs", "latency": "latency_target", "kd": "distillation", "dc": "deep_compression"}
BASE_ACCURACY_TFLITE = 0.7548  # the .tflite as shipped, on cifar10-jpg test (GUIDE.md, foundation.json)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def cached(name: str, build: Callable[[], EdgeModel]) -> tuple[EdgeModel, bool]:
    """Load ``CACHE/name.edgeopt`` or build and save it; returns (model, was_cached)."""
    path = CACHE / f"{name}.edgeopt"
    if path.is_file():
        return load_model(path), True
    model = build()
    save_model(model, path)
    return model, False


def base_model(data: str, epochs: int, lr: float, optimizer: str = "adam") -> tuple[EdgeModel, dict[str, Any]]:
    """The MLPerf ResNet-8 (logits) fine-tuned on cifar10-jpg train; cached in a file."""
    t = time.perf_counter()

    def build() -> EdgeModel:
        m = strip_output_softmax(load_model(shared_path("mlperf-tiny/resnet8_float32.tflite"), input_range=(0, 255)))
        cfg = FitConfig(epochs=epochs, lr=lr, optimizer=optimizer, seed=0)
        m, _ = fit(m, load_dataset(data, "train"), cfg, on_epoch=lambda r: log(f"  base fine-tune {r}"))
        return m.with_lineage({"pass": "train", "epochs": epochs, "lr": lr, "optimizer": optimizer})

    model, hit = cached(f"mlperf_resnet8_ft_{optimizer}_e{epochs}_lr{lr:g}", build)
    return model, {"cached": hit, "seconds": round(time.perf_counter() - t, 1)}


def macs_of(model: EdgeModel) -> int:
    return count_macs(export_for_profile(model).graph)


def conv_widths(model: EdgeModel) -> list[int]:
    return [c.out_channels for c in model.module.modules() if isinstance(c, nn.Conv2d)]


# ----------------------------------------------------------------------------- Torch-Pruning peer


def resync_graph(module: GraphModule) -> GraphModule:
    """After Torch-Pruning edits the layers of an imported graph in place, write their new sizes into
    the IR (and the flatten reshape before the classifier) so the model can be saved and exported."""
    ir = copy.deepcopy(module.ir)
    consumers = {v: n for n in ir["nodes"] for v in n["inputs"]}
    for node in ir["nodes"]:
        a = node["attrs"]
        if node["op"] == "conv2d":
            c = module.mods[node["name"]]
            a.update(in_channels=c.in_channels, out_channels=c.out_channels, groups=c.groups)
        elif node["op"] == "linear":
            c = module.mods[node["name"]]
            a.update(in_features=c.in_features, out_features=c.out_features)
        elif node["op"] == "reshape":
            nxt = consumers.get(node["outputs"][0])
            if nxt is not None and nxt["op"] == "linear" and a["shape"][-1] != -1:
                a["shape"][-1] = module.mods[nxt["name"]].in_features
    gm = GraphModule(ir)
    gm.load_state_dict(module.state_dict())
    return gm.eval()


def tp_prune(model: EdgeModel, target_macs: int) -> EdgeModel:
    """Torch-Pruning with its defaults (GroupMagnitudeImportance p=2, uniform ratio), the ratio
    searched so that MACs <= target_macs."""
    import torch_pruning as tp

    ex = model.example_input(1)

    def trial(ratio: float) -> EdgeModel:
        m = copy.deepcopy(model.module)
        fc = [mod for mod in m.modules() if isinstance(mod, nn.Linear)][-1]
        pruner = tp.pruner.MetaPruner(m, ex, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                      pruning_ratio=ratio, ignored_layers=[fc])  # fmt: skip
        pruner.step()
        gm = resync_graph(m)
        out = model.with_lineage({"pass": "prune", "method": "torch-pruning", "pruning_ratio": ratio}, gm)
        out.meta.arch = {"kind": "graph", "ir": gm.ir}
        return out

    lo, hi = 0.0, 0.9
    for _ in range(12):
        mid = (lo + hi) / 2
        if macs_of(trial(mid)) <= target_macs:
            hi = mid
        else:
            lo = mid
    return trial(hi)


def tp_prune_and_recover(
    model: EdgeModel, target_macs: int, steps: int, train: Any, rec: TuneSettings, teacher: EdgeModel
) -> EdgeModel:
    """Torch-Pruning on the same schedule as edgeopt's ``prune_model(steps=...)``: the MAC target in
    equal steps, one recovery epoch after each but the last, the remaining epochs after it."""
    before = macs_of(model)
    for k in range(1, steps + 1):
        model = tp_prune(model, before - (before - target_macs) * k // steps)
        epochs = 1 if k < steps else rec.epochs - (steps - 1)
        model, _ = tune(model, train, dataclasses.replace(rec, epochs=epochs), teacher,
                        log=lambda r: log(f"  TP KD {r}"))  # fmt: skip
    return model


# ----------------------------------------------------------------------------- measurement


def latency_table(models: dict[str, EdgeModel], runtimes: list[str], rounds: int) -> dict[str, dict[str, Any]]:
    """p50 (1 thread, batch 1) of every model in every runtime, all interleaved, fresh sessions each round."""
    fmt = {"onnxruntime": "onnx", "executorch": "pte", "litert": "tflite"}
    runners, inputs = {}, {}
    with tempfile.TemporaryDirectory(prefix="edgeopt-prune-bench-") as tmp:
        for name, m in models.items():
            for rt in runtimes:
                res = export_model(m, fmt[rt], Path(tmp) / f"{name}.{fmt[rt]}")
                key = f"{name}|{rt}"
                runners[key] = open_runner(rt, res.path, threads=1)
                inputs[key] = m.example_input(1).numpy()
        try:
            lat = interleaved_p50(runners, inputs, rounds=rounds, runs=200)
        finally:
            for r in runners.values():
                r.close()
    out: dict[str, dict[str, Any]] = {}
    for key, v in lat.items():
        name, rt = key.split("|")
        out.setdefault(name, {})[rt] = v
    return out


def main() -> None:  # noqa: C901 (one linear script)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=None, help="test images (default: all 10,000)")
    ap.add_argument("--rounds", type=int, default=9, help="latency rounds (fresh sessions each)")
    ap.add_argument("--base-epochs", type=int, default=4)
    ap.add_argument("--base-lr", type=float, default=5e-4)
    ap.add_argument("--ratio", type=float, default=0.5, help="fraction of MACs removed by channel pruning")
    ap.add_argument("--criterion", default="l2")
    ap.add_argument("--allocation", default="global", help="uniform, global, or latency (in --latency-runtime)")
    ap.add_argument("--round-to", type=int, default=16)
    ap.add_argument("--min-keep", type=int, default=8)
    ap.add_argument("--steps", type=int, default=2, help="channel pruning steps (one recovery epoch between)")
    ap.add_argument("--allocation-runtimes", default="onnxruntime,executorch",
                    help="a second half-MAC model with --allocation latency measured in these runtimes; '' to skip")
    ap.add_argument("--recover-epochs", type=int, default=5, help="KD recovery epochs (edgeopt and Torch-Pruning)")
    ap.add_argument("--recover-lr", type=float, default=0.1)
    ap.add_argument("--recover-optimizer", default="sgd")
    ap.add_argument("--recover-alpha", type=float, default=0.5,
                    help="weight of the teacher's soft targets in recovery (the rest: the labels)")
    ap.add_argument("--recover-augment", action=argparse.BooleanOptionalAction, default=False,
                    help="random crops and flips during recovery (off: 5 epochs fit the teacher better)")
    ap.add_argument("--latency-runtime", default="onnxruntime")
    ap.add_argument("--latency-target", type=float, default=0.6, help="target as a fraction of the base's p50")
    ap.add_argument("--netadapt-step", type=float, default=0.5, help="fraction of a group cut per NetAdapt step")
    ap.add_argument("--student-epochs", type=int, default=3)
    ap.add_argument("--student-width", type=int, default=8)
    ap.add_argument("--seeds", default="0,1", help="training seeds of sections 1 and 3 (accuracy: their mean)")
    ap.add_argument("--dc-sparsity", type=float, default=0.75)
    ap.add_argument("--dc-bits", type=int, default=4)
    ap.add_argument("--dc-prune-epochs", type=int, default=12)
    ap.add_argument("--dc-cluster-epochs", type=int, default=3)
    ap.add_argument("--dc-lr", type=float, default=1e-3)
    ap.add_argument("--dc-optimizer", default="adam", help="adam: centroid gradients are sums over many weights")
    ap.add_argument("--device", default="auto", help="training device: cpu, cuda or auto (cuda when present)")
    ap.add_argument("--train-only", action="store_true",
                    help="train and cache section 1's models, then stop (a GPU machine without the runtimes); "
                    "a later run without it measures them")
    ap.add_argument("--data", default=None, help="dataset spec (default: imagefolder: ../shared cifar10-jpg.zip)")
    ap.add_argument("--skip", default="", help="comma list of sections to skip (their previous figures are kept): "
                    "half,tp,latency,kd,dc")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    torch.set_num_threads(2)
    data = args.data or f"imagefolder:{shared_path('cifar10-jpg.zip')}"
    train = load_dataset(data, "train")
    test = load_dataset(data, "test").take(args.limit, seed=0)
    figures: dict[str, Any] = {"load_average_start": os.getloadavg()}
    t_start = time.perf_counter()

    # 0. base -----------------------------------------------------------------------------------
    base, info = base_model(data, args.base_epochs, args.base_lr)
    base_acc = evaluate(base, test).accuracy
    figures["base"] = {**info, "accuracy": base_acc, "tflite_accuracy": BASE_ACCURACY_TFLITE,
                       "gain_points": 100 * (base_acc - BASE_ACCURACY_TFLITE), "macs": macs_of(base),
                       "params": count_params(base.module)}  # fmt: skip
    log(f"base: accuracy {base_acc:.4f} ({figures['base']['gain_points']:+.2f} pt over the .tflite)")
    tag = f"b{args.base_epochs}"
    teacher = EdgeModel(copy.deepcopy(base.module).eval(), base.meta)
    rec = TuneSettings(args.recover_epochs, args.recover_lr, args.recover_optimizer, temperature=4.0,
                       alpha=args.recover_alpha, device=args.device, augment=args.recover_augment)  # fmt: skip
    # trained where: cached GPU-trained models are measured on a machine without one (--device cuda)
    train_on = "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    gpu = "_gpu" if train_on == "cuda" else ""
    # bnu: BN unfolded for training; s: pruning steps
    aug = "" if args.recover_augment else "_noaug"
    rec_tag = (f"kd{args.recover_epochs}a{args.recover_alpha:g}_{args.recover_optimizer}{args.recover_lr:g}{aug}_bnu"
               f"_s{args.steps}{gpu}")  # fmt: skip

    # 1. channel pruning to half the MACs, edgeopt vs Torch-Pruning, same KD recovery ------------
    if "half" in skip:
        skip.add("tp")
    if "half" not in skip:
        t = time.perf_counter()
        target_macs = int(round(figures["base"]["macs"] * (1 - args.ratio)))
        ours_name = (f"edgeopt_{tag}_r{args.ratio:g}_{args.criterion}_{args.allocation}_rt{args.round_to}"
                     f"_mk{args.min_keep}_{rec_tag}")  # fmt: skip
        seeds = [int(v) for v in args.seeds.split(",")]

        def per_seed(name: str, build: Callable[[TuneSettings], EdgeModel]) -> tuple[EdgeModel, dict[str, Any]]:
            """The model trained with each of --seeds (cached apart); the first seed's is returned."""
            runs = [cached(name + (f"_seed{seed}" if seed else ""),
                           lambda seed=seed: build(dataclasses.replace(rec, seed=seed))) for seed in seeds]  # fmt: skip
            accs = [evaluate(m, test).accuracy for m, _ in runs]
            return runs[0][0], {"accuracy": statistics.mean(accs), "cached": all(hit for _, hit in runs),
                                "accuracy_per_seed": dict(zip(seeds, accs, strict=True)),
                                "conv_widths_per_seed": [conv_widths(m) for m, _ in runs]}  # fmt: skip

        ours, ours_acc = per_seed(ours_name, lambda rs: prune_model(
            base, train, "channel", args.ratio, runtime=args.latency_runtime, criterion=args.criterion,
            allocation=args.allocation, round_to=args.round_to, min_keep=args.min_keep, settings=rs,
            teacher=teacher, steps=args.steps, log=log).model)  # fmt: skip
        section: dict[str, Any] = {
            "target_macs": target_macs,
            "seeds": seeds,
            "edgeopt": {"macs": macs_of(ours), "params": count_params(ours.module), "conv_widths": conv_widths(ours),
                        **ours_acc},
        }  # fmt: skip
        log(f"edgeopt pruned: {section['edgeopt']}")
        models = {"base": base, "edgeopt": ours}
        if args.allocation_runtimes:
            runtimes = args.allocation_runtimes.replace(",", "+")
            lat_name = (f"edgeopt_{tag}_r{args.ratio:g}_{args.criterion}_latency-{runtimes}_rt{args.round_to}"
                        f"_mk{args.min_keep}_{rec_tag}")  # fmt: skip
            fast, fast_acc = per_seed(lat_name, lambda rs: prune_model(
                base, train, "channel", args.ratio, runtime=args.allocation_runtimes, criterion=args.criterion,
                allocation="latency", round_to=args.round_to, min_keep=args.min_keep, settings=rs, teacher=teacher,
                steps=args.steps, log=log).model)  # fmt: skip
            section["edgeopt_latency"] = {"allocation_runtimes": args.allocation_runtimes, "macs": macs_of(fast),
                                          "conv_widths": conv_widths(fast), "params": count_params(fast.module),
                                          **fast_acc}  # fmt: skip
            log(f"edgeopt latency allocation: {section['edgeopt_latency']}")
            models["edgeopt_latency"] = fast
        if "tp" not in skip:
            tp_name = f"tp_{tag}_r{args.ratio:g}_{rec_tag}"
            tpm, tp_acc = per_seed(tp_name, lambda rs: tp_prune_and_recover(base, target_macs, args.steps, train, rs,
                                                                             teacher))  # fmt: skip
            ratios = [s["pruning_ratio"] for s in tpm.meta.lineage if s.get("method") == "torch-pruning"]
            section["torch_pruning"] = {"pruning_ratios": ratios, "conv_widths": conv_widths(tpm),
                                        "macs": macs_of(tpm), "params": count_params(tpm.module), **tp_acc}  # fmt: skip
            log(f"torch-pruning: {section['torch_pruning']}")
            models["torch_pruning"] = tpm
        section["recovery"] = {"epochs": args.recover_epochs, "steps": args.steps, "optimizer": args.recover_optimizer,
                               "lr": args.recover_lr, "kd_temperature": 4.0, "kd_alpha": args.recover_alpha,
                               "augment": args.recover_augment,
                               "batchnorm": "unfolded for training, folded after",
                               "device": train_on, "latency_of": f"seed {seeds[0]}'s models"}  # fmt: skip
        if args.train_only:
            log(f"trained and cached: {sorted(models)}; measure on the target machine without --train-only")
            return
        lat = latency_table(models, ["onnxruntime", "executorch"], args.rounds)
        for per in lat.values():
            for rt, v in per.items():
                v["ratio_to_base"] = v["p50_ms"] / lat["base"][rt]["p50_ms"]
        section["latency_1thread"] = lat
        section["seconds"] = round(time.perf_counter() - t, 1)
        figures["channel_half_macs"] = section
        log(f"latency: { {k: {r: round(v['ratio_to_base'], 3) for r, v in p.items()} for k, p in lat.items()} }")

    # 2. latency-targeted pruning ----------------------------------------------------------------
    if "latency" not in skip:
        t = time.perf_counter()
        rt = args.latency_runtime
        base_ms = latency_table({"base": base}, [rt], args.rounds)["base"][rt]["p50_ms"]
        target_ms = args.latency_target * base_ms
        holdout = train.take(1000, seed=1)
        try:
            lat_model, lrep = prune_to_latency(base, target_ms, holdout, rt, criterion=args.criterion, round_to=8,
                                               step_fraction=args.netadapt_step, log=log,
                                               calibration=calibration_inputs(base, train, 128))  # fmt: skip
        except EdgeoptError as e:
            figures["latency_target"] = {"runtime": rt, "target_ms": target_ms, "error": str(e)}
            lat_model = None
            log(f"latency target failed: {e}")
    if "latency" not in skip and lat_model is not None:
        check = latency_table({"base": base, "netadapt": lat_model}, [rt], args.rounds)
        final = check["netadapt"][rt]["p50_ms"]
        ratio = final / check["base"][rt]["p50_ms"]
        figures["latency_target"] = {
            "runtime": rt, "target_ms": target_ms, "base_ms_at_search": base_ms, "search": lrep.to_json(),
            "verified_ms": final, "verified_base_ms": check["base"][rt]["p50_ms"],
            "relative_error_ms": (final - target_ms) / target_ms,
            "verified_ratio_to_base": ratio, "target_ratio": args.latency_target,
            "relative_error_ratio": (ratio - args.latency_target) / args.latency_target,
            "macs": macs_of(lat_model), "accuracy_no_finetune": evaluate(lat_model, test).accuracy,
            "seconds": round(time.perf_counter() - t, 1),
        }  # fmt: skip
        log(f"latency target: {figures['latency_target']['relative_error_ms']:+.3f} (ms), ratio {ratio:.3f}")

    # 3. KD vs no KD for a half-width student ----------------------------------------------------
    if "kd" not in skip:
        t = time.perf_counter()
        runs: dict[str, list[float]] = {"kd": [], "no_kd": []}
        h, w, c = train.image_shape
        for seed in [int(s) for s in args.seeds.split(",")]:
            for mode in ("no_kd", "kd"):
                def build(seed: int = seed, mode: str = mode) -> EdgeModel:
                    torch.manual_seed(seed)
                    s = create_model("resnet8", input_shape=(c, h, w), num_classes=10, width=args.student_width)
                    cfg = FitConfig(epochs=args.student_epochs, seed=seed)
                    say = lambda r: log(f"  student {mode} seed {seed} {r}")  # noqa: E731
                    if mode == "kd":
                        with Distiller(s, teacher, DistillConfig(4.0, 0.9)) as loss_fn:
                            return fit(s, train, cfg, loss_fn=loss_fn, on_epoch=say)[0]
                    return fit(s, train, cfg, on_epoch=say)[0]

                name = f"student_w{args.student_width}_{mode}_{tag}_e{args.student_epochs}_s{seed}"
                m, _ = cached(name, build)
                runs[mode].append(evaluate(m, test).accuracy)
                log(f"student {mode} seed {seed}: {runs[mode][-1]:.4f}")
        figures["distillation"] = {
            "student": f"zoo resnet8 width {args.student_width}", "epochs": args.student_epochs,
            "optimizer": "sgd lr 0.05 (fit default)", "kd": {"temperature": 4.0, "alpha": 0.9},
            "accuracy": runs, "mean": {k: statistics.mean(v) for k, v in runs.items()},
            "kd_gain_points": 100 * (statistics.mean(runs["kd"]) - statistics.mean(runs["no_kd"])),
            "seconds": round(time.perf_counter() - t, 1),
        }  # fmt: skip

    # 4. Deep Compression --------------------------------------------------------------------------
    if "dc" not in skip:
        t = time.perf_counter()
        out = ROOT / "benchmarks" / "results" / "resnet8_deep_compression.eoz"
        dc_settings = TuneSettings(0, args.dc_lr, args.dc_optimizer)  # KD as in recovery: alpha 0.5, no augmentation
        res = deep_compress(EdgeModel(copy.deepcopy(base.module), base.meta), train, out, args.dc_sparsity,
                            args.dc_bits, args.dc_prune_epochs, args.dc_cluster_epochs, dc_settings, teacher,
                            log=lambda r: log(f"  deep compression {r}"))  # fmt: skip
        restored = load_model(out)  # through the public loader, from the file on disk
        acc = evaluate(restored, test).accuracy
        int8 = shared_path("mlperf-tiny/resnet8_int8.tflite").stat().st_size
        figures["deep_compression"] = {
            **{k: v for k, v in res.metrics.items() if not k.endswith("history")},
            "file": str(out.relative_to(ROOT)), "restored_accuracy": acc,
            "accuracy_drop_points": 100 * (base_acc - acc), "tflite_int8_bytes": int8,
            "size_ratio_vs_tflite_int8": int8 / res.metrics["file_bytes"],
            "settings": {"sparsity": args.dc_sparsity, "bits": args.dc_bits, "prune_epochs": args.dc_prune_epochs,
                         "cluster_epochs": args.dc_cluster_epochs, "lr": args.dc_lr, "optimizer": args.dc_optimizer,
                         "kd": True, "kd_alpha": dc_settings.alpha, "augment": dc_settings.augment},
            "seconds": round(time.perf_counter() - t, 1),
        }  # fmt: skip
        log(f"deep compression: {res.metrics['file_bytes']} bytes, restored accuracy {acc:.4f}")

    previous = RESULTS / "pruning.json"
    if skip and previous.is_file():  # a partial rerun keeps the other sections' last measured figures
        old = json.loads(previous.read_text())["figures"]
        for section, key in SECTIONS.items():
            if section in skip and key in old:
                figures[key] = {**old[key], "from_previous_run": old[key].get("from_previous_run", True)}
    figures["load_average_end"] = os.getloadavg()
    figures["total_seconds"] = round(time.perf_counter() - t_start, 1)
    figures["acceptance"] = acceptance(figures)
    path = write_result("pruning", figures, vars(args) | {"threads": 1, "test_images": len(test)})
    for k, v in figures["acceptance"].items():
        print(f"{k:<48} {v}")
    print(f"wrote {path}")


def acceptance(f: dict[str, Any]) -> dict[str, Any]:
    """The issue's acceptance checks, evaluated on the measured figures."""
    out: dict[str, Any] = {}
    ch = f.get("channel_half_macs", {})
    base_acc = f["base"]["accuracy"]
    if ch:
        lat = ch["latency_1thread"]
        out["half_macs_latency_ratio_ort_le_0.6"] = round(lat["edgeopt"]["onnxruntime"]["ratio_to_base"], 3)
        out["half_macs_latency_ratio_et_le_0.6"] = round(lat["edgeopt"]["executorch"]["ratio_to_base"], 3)
        out["half_macs_acc_drop_points_le_1"] = round(100 * (base_acc - ch["edgeopt"]["accuracy"]), 2)
        if "edgeopt_latency" in ch:
            fast = {rt: round(lat["edgeopt_latency"][rt]["ratio_to_base"], 3) for rt in ("onnxruntime", "executorch")}
            out["latency_alloc_latency_ratio_ort_le_0.6"] = fast["onnxruntime"]
            out["latency_alloc_latency_ratio_et_le_0.6"] = fast["executorch"]
            out["latency_alloc_acc_drop_points_le_1"] = round(100 * (base_acc - ch["edgeopt_latency"]["accuracy"]), 2)
            out["latency_alloc_mac_ratio_le_0.5"] = round(ch["edgeopt_latency"]["macs"] / f["base"]["macs"], 3)
        for ours in [k for k in ("edgeopt", "edgeopt_latency") if k in ch and "torch_pruning" in ch]:
            tp = ch["torch_pruning"]
            out[f"{ours}_minus_tp_accuracy_points_ge_0"] = round(100 * (ch[ours]["accuracy"] - tp["accuracy"]), 2)
            for rt, short in (("onnxruntime", "ort"), ("executorch", "et")):
                out[f"{ours}_over_tp_latency_{short}_le_1"] = round(
                    lat[ours][rt]["p50_ms"] / lat["torch_pruning"][rt]["p50_ms"], 3
                )
    if "latency_target" in f:
        out["latency_target_rel_error_le_0.1"] = round(f["latency_target"]["relative_error_ms"], 3)
    if "distillation" in f:
        out["kd_gain_points_gt_0"] = round(f["distillation"]["kd_gain_points"], 2)
    if "deep_compression" in f:
        out["dc_bytes_le_20480"] = f["deep_compression"]["file_bytes"]
        out["dc_acc_drop_points_le_2"] = round(f["deep_compression"]["accuracy_drop_points"], 2)
    return out


if __name__ == "__main__":
    main()
