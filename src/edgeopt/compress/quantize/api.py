"""One entry point for every quantization mode: ``quantize(model, train_data, ...)``.

``method``: ``ptq`` (post-training) or ``qat`` (quantization-aware fine-tuning, then the same integer
program). ``weights``: ``int8`` everywhere; ``int4`` everywhere (MSE-clipped 4-bit weights rounded
by GPTQ, int8 activations); ``mixed`` (per-layer sensitivity, then int4 for the layers that mind it least until the
weights fit ``budget`` × the int8 bytes). ``max_drop`` (points): accuracy-aware mode — measured on
held-out *training* images (never the test split), the most sensitive layers are moved up to int8 or
float until the drop is within ``max_drop``; the layers kept are reported. ``target``: the hardware
preset (``targets``: ``xnnpack``, ``npu-int8``, ``mcu-int8``). ``mix_runtime`` (``onnxruntime`` or
``executorch``): the float/int8 choice per layer from latency measured in that runtime and per-layer
sensitivity (``float_mix``), under ``max_drop`` or within ``latency_budget_ms``.

Cost: PTQ ~5-10 s for ResNet-8 on 2 cores (GPTQ adds ~1-2 s per 4-bit layer); mixed adds one
validation pass per layer; ``max_drop`` adds one PTQ per layer it has to keep; QAT adds ``qat_epochs`` training epochs;
``mix_runtime`` adds one PTQ and one export per conv/linear layer.
"""

from __future__ import annotations

from typing import Any

from edgeopt.compress.quantize.ptq import WEIGHT_CHOICES, QuantRecipe, calibration_indices, quantize_ptq
from edgeopt.compress.quantize.targets import check_target_options
from edgeopt.data import ImageDataset
from edgeopt.errors import EdgeoptError
from edgeopt.model import EdgeModel, refuse_multi_input, refuse_multi_output

METHODS = ("ptq", "qat")


def quantize(
    model: EdgeModel,
    data: ImageDataset,
    method: str = "ptq",
    calib: str = "entropy",
    weights: str = "int8",
    max_drop: float | None = None,
    calib_samples: int = 500,
    budget: float = 0.6,
    val_samples: int = 1000,
    cle: bool = False,
    bias_correction: bool = True,
    seed: int = 0,
    qat_epochs: int = 2,
    distill: bool = True,
    rounding: str | None = None,
    rounding_seconds: float = 45.0,
    target: str = "xnnpack",
    mix_runtime: str | None = None,
    latency_budget_ms: float | None = None,
    batch_size: int = 128,
    align: str = "none",
    float_ops: list[str] | None = None,
    bias_method: str = "empirical",
) -> tuple[EdgeModel, dict[str, Any]]:
    """Quantize ``model`` with training split ``data``; returns the quantized model and a report dict.

    ``rounding``: ``gptq`` (default for int4/mixed: error-compensating, see ``gptq``), ``nearest``
    (default for int8), ``adaround`` (learned rounding per layer, ``adaround``) or ``brecq`` (block
    reconstruction with QDrop, ``blockrecon``); the learned ones round every layer of an all-int8 model and
    only the 4-bit layers of a mix, within ``rounding_seconds`` in all (at 4 bits BRECQ needs ~2,000 steps
    a block to beat GPTQ: 46-48 s of PTQ on ResNet-8's mix at its minibatch of 16, docs/quantization.md).
    ``align``: ``adabn`` re-estimates the batch norms on the calibration data first (``align``;
    domain adaptation, which the float model gets too). ``float_ops``: ``add`` / ``logits`` / ``pool`` /
    ``softmax`` / ``stem`` (the layer reading the input) left float (runtimes that mix: ONNX Runtime,
    ExecuTorch; integer-only targets refuse them); the report's ``lineage.metrics.float_ops`` lists every op
    left float. ``batch_size``: QAT's.
    ``bias_method``: ``empirical`` (default), ``fast`` (NNCF's fast bias correction, ``fastbias``: it
    changes the float model too — see docs/quantization.md) or ``fast+empirical``.
    """
    refuse_multi_input(model, "quantize")  # calibration and the PT2E graph take one input
    if method not in METHODS:
        raise EdgeoptError(f"unknown quantization method '{method}'", "use ptq or qat")
    if weights not in WEIGHT_CHOICES:
        raise EdgeoptError(f"unknown weight precision '{weights}'", f"use {', '.join(WEIGHT_CHOICES)}")
    if max_drop is not None and max_drop < 0:
        raise EdgeoptError(f"--max-drop must be >= 0 points, not {max_drop}")
    if not 0.0 < budget <= 1.0:
        raise EdgeoptError(f"budget must be in (0, 1] of the int8 weight bytes, not {budget}")
    if len(data) < 2:
        raise EdgeoptError("the training split has fewer than 2 images", "give a dataset with training images")
    plain_ptq = (method, weights, max_drop, mix_runtime, align) == ("ptq", "int8", None, None, "none")
    if model.meta.outputs is not None and not plain_ptq:  # the rest scores or trains through one output's task
        refuse_multi_output(model, "quantization other than int8 PTQ (QAT, int4/mixed, --max-drop, --mix-runtime)")
    check_target_options(target, weights, method, float_layers=max_drop is not None or mix_runtime is not None)
    if latency_budget_ms is not None and mix_runtime is None:
        raise EdgeoptError("--latency-budget-ms needs --mix-runtime (the runtime whose latency it bounds)")
    if rounding is None:
        rounding = "nearest" if weights == "int8" else "gptq"
    recipe = QuantRecipe(
        calib=calib, calib_samples=calib_samples, seed=seed, cle=cle, bias_correction=bias_correction, method=method,
        weight_rounding=rounding, rounding_seconds=rounding_seconds, target=target, align=align,
        float_ops=list(float_ops or []), bias_method=bias_method,
    ).validate()  # fmt: skip
    report: dict[str, Any] = {"method": method, "calib": calib, "weights": weights, "target": target}
    if mix_runtime is not None:
        if weights != "int8" or method != "ptq":
            raise EdgeoptError("--mix-runtime chooses float or int8 per layer", "use --weights int8 --method ptq")
        from edgeopt.compress.quantize.float_mix import float_int8_mix

        q, report["float_mix"] = float_int8_mix(
            model, data, recipe, mix_runtime, max_drop=max_drop, budget_ms=latency_budget_ms, val_samples=val_samples
        )
        report["lineage"] = q.meta.lineage[-1]
        return q, report
    needs_val = weights == "mixed" or max_drop is not None
    x_val = y_val = None
    sens = None
    if needs_val:
        from edgeopt.compress.quantize.mixed import layer_sensitivity, validation_split

        if model.meta.task == "anomaly" and len(set(data.labels.tolist())) < 2:
            raise EdgeoptError(
                "accuracy-aware and mixed quantization of an anomaly model score ROC AUC on held-out training"
                " windows, but the training data holds normal windows only",
                "give training data with labelled anomalies, or quantize without --max-drop / mixed",
            )

        x_val, y_val = validation_split(model, data, val_samples, calibration_indices(len(data), calib_samples, seed))
        sens = layer_sensitivity(model, x_val, y_val, 4)
        report["sensitivity_int4"] = sens
    if weights == "int4":
        recipe.weight_bits, recipe.weight_method = 4, "mse"
    elif weights == "mixed":
        from edgeopt.compress.quantize.mixed import allocate_bits, quant_layers, sensitivity_score, weight_bytes

        assert sens is not None
        numels = quant_layers(model.module)
        bits = allocate_bits(numels, {n: sensitivity_score(e) for n, e in sens["layers"].items()}, budget)
        recipe.layer_bits = {n: b for n, b in bits.items() if b != 8}
        report["bits"] = bits
        report["packed_weight_bytes"] = {"int8": weight_bytes(numels), "mixed": weight_bytes(numels, bits)}

    fn = quantize_ptq
    if method == "qat":
        from edgeopt.compress.quantize.qat import QATConfig, quantize_qat

        cfg = QATConfig(epochs=qat_epochs, distill=distill, seed=seed, batch_size=batch_size)

        def fn(m: EdgeModel, d: ImageDataset, r: QuantRecipe) -> EdgeModel:
            return quantize_qat(m, d, r, cfg)

    if max_drop is None:
        q = fn(model, data, recipe)
    else:
        from edgeopt.compress.quantize.mixed import accuracy_aware, sensitivity_score

        assert sens is not None and x_val is not None and y_val is not None
        order = sorted(sens["layers"], key=lambda n: -sensitivity_score(sens["layers"][n]))
        q, info = accuracy_aware(model, data, recipe, max_drop, x_val, y_val, order, fn)
        report["accuracy_aware"] = info
        if not info["met"]:
            report["warning"] = (
                f"drop {info['drop_points']:.2f} pt still exceeds --max-drop {max_drop} with every layer raised"
            )
    report["lineage"] = q.meta.lineage[-1]
    return q, report
