"""Mixed precision: per-layer sensitivity, bit allocation under a size budget, accuracy-aware fallback.

- ``layer_sensitivity``: for each conv/linear layer alone, its weights go to int4 (MSE-clipped
  per-channel scales) while everything else stays float; the drop in validation accuracy and the
  SQNR of the logits say how much that layer minds 4 bits. Cost: one validation pass per layer.
- ``allocate_bits`` (pure): greedy — the layers that lose least per byte saved go to int4 until the
  weight bytes fit ``budget`` × the all-int8 bytes.
- ``accuracy_aware``: quantize, measure the drop on held-out training images; while it exceeds
  ``max_drop`` points, move the most sensitive remaining layer up one step (int4 → int8, or
  int8 → float) and quantize again. Returns the layers it kept at higher precision.

Which runtimes execute int4: XNNPACK (ExecuTorch) has 4-bit weight kernels only for fully-connected
layers with dynamically quantized activations; LiteRT's int4 weights are likewise FULLY_CONNECTED
(and weight-only); ONNX Runtime's MatMulNBits is MatMul-only. None runs a static int8-activation
*convolution* with int4 weights, so a conv layer marked int4 here holds 4-bit *values* (-7..7) in
int8 storage in every artifact: the accuracy is int4's, the artifact bytes are int8's. ``weight_bytes``
reports the packed-int4 figure as what an int4-capable kernel would store, labelled as such.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeopt.compress.quantize import calibration as cal
from edgeopt.data import ImageDataset
from edgeopt.errors import EdgeoptError
from edgeopt.model import EdgeModel
from edgeopt.train.tasks import task_score


def quant_layers(module: nn.Module) -> dict[str, int]:
    """Conv and linear layers (module path -> weight element count), in module order."""
    return {n: int(m.weight.numel()) for n, m in module.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)}


def weight_bytes(numels: dict[str, int], bits: dict[str, int] | None = None, default: int = 8) -> int:
    """Bytes of packed weights: ``ceil(numel * bits / 8)`` per layer, float layers at 4 bytes. Pure."""
    total = 0
    for name, n in numels.items():
        b = (bits or {}).get(name, default)
        total += 4 * n if b == 0 else math.ceil(n * b / 8)
    return total


def allocate_bits(numels: dict[str, int], sensitivity: dict[str, float], budget: float) -> dict[str, int]:
    """Weight bits per layer (4 or 8) so that packed bytes <= ``budget`` × the all-int8 bytes. Pure.

    Greedy by sensitivity per byte saved (``sensitivity`` ≥ 0, higher = minds int4 more): the
    cheapest layers go to 4 bits first. Raises when even all-int4 cannot meet the budget.
    """
    limit = budget * weight_bytes(numels)
    bits = dict.fromkeys(numels, 8)
    if weight_bytes(numels, bits) <= limit:
        return bits
    order = sorted(numels, key=lambda n: max(sensitivity.get(n, 0.0), 0.0) / max(numels[n], 1))
    for name in order:
        bits[name] = 4
        if weight_bytes(numels, bits) <= limit:
            return bits
    raise EdgeoptError(
        f"a weight budget of {budget:.0%} of int8 cannot be met even with every layer at int4",
        "raise the budget (int4 everywhere is about 50%)",
    )


def _logits(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    from edgeopt.compress.quantize.ptq import run_batches

    return run_batches(module.eval(), x, 256)


def layer_sensitivity(model: EdgeModel, x_val: torch.Tensor, y_val: np.ndarray, bits: int = 4) -> dict[str, Any]:
    """Per layer: validation accuracy drop (points) and logit SQNR (dB) with only that layer at ``bits``.

    Returns ``{"float_accuracy": a, "layers": {name: {"numel", "accuracy", "drop_points", "sqnr_db"}}}``.
    """
    module = copy.deepcopy(model.module).eval()
    ref = _logits(module, x_val)
    task, xv = model.meta.task, x_val.numpy()
    base = task_score(task, ref.numpy(), xv, y_val)  # accuracy, R² or ROC AUC (edgeopt.train.tasks)
    out: dict[str, Any] = {}
    mods = dict(module.named_modules())
    for name, n in quant_layers(module).items():
        layer = mods[name]
        w = layer.weight.detach().clone()
        scales = cal.weight_scales(w.numpy(), bits, "mse")
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(cal.quantize_weight(w.numpy(), scales, bits)))
        y = _logits(module, x_val)
        with torch.no_grad():
            layer.weight.copy_(w)
        a = task_score(task, y.numpy(), xv, y_val)
        out[name] = {"numel": n, "accuracy": a, "drop_points": 100 * (base - a),
                     "sqnr_db": cal.sqnr_db(ref.numpy(), y.numpy())}  # fmt: skip
    return {"float_accuracy": base, "bits": bits, "layers": out}


def sensitivity_score(entry: dict[str, Any]) -> float:
    """One number per layer for ordering: accuracy drop, ties broken by low SQNR. Pure."""
    sq = entry.get("sqnr_db", 60.0)
    return max(entry.get("drop_points", 0.0), 0.0) + 0.01 * max(0.0, 60.0 - min(sq, 60.0))


def validation_split(model: EdgeModel, data: ImageDataset, n: int, exclude: np.ndarray, seed: int = 1):
    """``n`` training images not in ``exclude`` (the calibration draw), as (inputs, labels)."""
    rng = np.random.default_rng(seed)
    pool = np.setdiff1d(np.arange(len(data)), exclude)
    idx = np.sort(rng.choice(pool, size=min(n, len(pool)), replace=False))
    return torch.from_numpy(model.meta.input.to_model_input(data.images[idx])), data.labels[idx]


def accuracy_of(model: EdgeModel, x: torch.Tensor, y: np.ndarray) -> float:
    """The model's task's score on (x, y): top-1 accuracy, R² (regression) or ROC AUC (anomaly)."""
    return task_score(model.meta.task, _logits(model.module, x).numpy(), x.numpy(), y)


def accuracy_aware(
    model: EdgeModel,
    data: ImageDataset,
    recipe: Any,
    max_drop: float,
    x_val: torch.Tensor,
    y_val: np.ndarray,
    order: list[str],
    quantize_fn: Any = None,
) -> tuple[EdgeModel, dict[str, Any]]:
    """Quantize with ``recipe``; while the validation drop exceeds ``max_drop`` points, raise the
    precision of the next layer in ``order`` (most sensitive first). Cost: one PTQ per step."""
    from edgeopt.compress.quantize.ptq import quantize_ptq

    quantize_fn = quantize_fn or quantize_ptq
    base = accuracy_of(model, x_val, y_val)
    recipe = copy.deepcopy(recipe)
    kept: list[dict[str, Any]] = []
    steps = []
    todo = list(order)
    while True:
        q = quantize_fn(model, data, recipe)
        acc = accuracy_of(q, x_val, y_val)
        drop = 100 * (base - acc)
        steps.append({"layer_bits": dict(recipe.layer_bits), "val_accuracy": acc, "drop_points": drop})
        if drop <= max_drop or not todo:
            break
        name = todo.pop(0)
        now = recipe.layer_bits.get(name, recipe.weight_bits)
        new = 8 if now == 4 else 0
        recipe.layer_bits[name] = new
        kept.append({"layer": name, "from_bits": now, "to": "int8" if new == 8 else "float"})
        if now == 4:
            todo.append(name)  # it may need to go on to float later
    info = {"float_val_accuracy": base, "val_accuracy": acc, "drop_points": drop, "max_drop": max_drop,
            "met": drop <= max_drop, "kept_higher": kept, "steps": steps}  # fmt: skip
    return q, info


def mixed_precision_study(
    model: EdgeModel, train: ImageDataset, test: ImageDataset, workdir: Any, calib_samples: int = 500,
    budget: float = 0.6, val_samples: int = 2000,
) -> dict[str, Any]:  # fmt: skip
    """Benchmark helper: sensitivity table, allocation under ``budget``, PTQ of the mix, real artifact sizes.

    The mix's 4-bit layers are GPTQ-rounded (plain round-to-nearest is reported beside it as the
    control). Cost: one validation pass per layer, four PTQs, three exports and test evaluations.
    """
    from pathlib import Path

    from edgeopt.compress.quantize.ptq import QuantRecipe, calibration_indices, quantize_ptq
    from edgeopt.interop.export import export_model
    from edgeopt.runtimes import open_runner
    from edgeopt.train import evaluate

    calib_idx = calibration_indices(len(train), calib_samples, 0)
    x_val, y_val = validation_split(model, train, val_samples, calib_idx)
    sens = layer_sensitivity(model, x_val, y_val, 4)
    numels = quant_layers(model.module)
    scores = {n: sensitivity_score(e) for n, e in sens["layers"].items()}
    bits = allocate_bits(numels, scores, budget)
    low = {k: v for k, v in bits.items() if v != 8}
    recipe = QuantRecipe(calib="entropy", calib_samples=calib_samples, layer_bits=low, weight_rounding="gptq")
    rtn = QuantRecipe(calib="entropy", calib_samples=calib_samples, layer_bits=low, weight_rounding="nearest")
    float_acc = evaluate(model, test).accuracy
    q8 = quantize_ptq(model, train, QuantRecipe(calib="entropy", calib_samples=calib_samples))
    qm = quantize_ptq(model, train, recipe)
    res: dict[str, Any] = {
        "sensitivity_int4": sens,
        "budget_fraction_of_int8_weight_bytes": budget,
        "bits": bits,
        "packed_weight_bytes": {"int8": weight_bytes(numels), "mixed": weight_bytes(numels, bits)},
        "float_test_accuracy": float_acc,
        "int8_sim_test_accuracy": evaluate(q8, test).accuracy,
        "mixed_sim_test_accuracy": evaluate(qm, test).accuracy,
        "mixed_round_to_nearest_sim_test_accuracy": evaluate(quantize_ptq(model, train, rtn), test).accuracy,
        "weight_rounding": "gptq",
        "artifacts": {},
    }
    for fmt in ("pte", "tflite", "onnx"):
        r8 = export_model(q8, fmt, Path(workdir) / f"int8_for_mixed.{fmt}")
        rm = export_model(qm, fmt, Path(workdir) / f"mixed.{fmt}")
        with open_runner(rm.runtime, rm.path, threads=1) as run:
            acc = evaluate(model.meta, test, predict=run.run).accuracy
        res["artifacts"][rm.runtime] = {
            "int8_bytes": r8.size_bytes, "mixed_bytes": rm.size_bytes, "mixed_accuracy": acc,
            "int4_executed_as": "int8 storage (4-bit values)",
        }  # fmt: skip
    return res
