"""``edgeopt quantize``: PTQ/QAT int8, int4 or mixed-precision weights, accuracy-aware mode, hardware targets.

A thin call into ``edgeopt.compress.quantize.api.quantize``; the result is an ``.edgeopt`` model
that ``edgeopt export`` turns into integer artifacts (ExecuTorch int8, LiteRT int8, ONNX QDQ).
``--target npu-int8|mcu-int8`` also writes the ``.tflite`` (``--tflite``, default beside ``--out``)
and reports its ops and any float op (``targets.export_for_target``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgeopt.cli.app import (
    DataOpt,
    JsonOpt,
    ModelArg,
    OldThreadsOpt,
    RangeOpt,
    app,
    emit,
    model_for_data,
    parse_range,
    quiet,
    torch_threads,
    warn_at_chance,
)


@app.command()
def quantize(
    model: ModelArg,
    out: Annotated[Path, typer.Option("--out", help="where to write the quantized .edgeopt model")],
    data: DataOpt = "digits",
    method: Annotated[str, typer.Option(help="ptq or qat")] = "ptq",
    calib: Annotated[
        str, typer.Option(help="activation ranges: minmax, percentile, entropy, mse or meanmax")
    ] = "entropy",
    weights: Annotated[str, typer.Option(help="int8, int4 or mixed (int4 where layers tolerate it)")] = "int8",
    target: Annotated[
        str, typer.Option(help="xnnpack (default), npu-int8 (per-tensor, integer only) or mcu-int8 (CMSIS-NN)")
    ] = "xnnpack",
    max_drop: Annotated[
        float | None, typer.Option("--max-drop", help="accuracy-aware: max drop in points (held-out train images)")
    ] = None,
    mix_runtime: Annotated[
        str | None,
        typer.Option("--mix-runtime", help="float/int8 per layer from latency in onnxruntime or executorch"),
    ] = None,
    latency_budget_ms: Annotated[
        float | None, typer.Option("--latency-budget-ms", help="with --mix-runtime: most accurate mix within this p50")
    ] = None,
    tflite: Annotated[
        Path | None, typer.Option("--tflite", help="npu-int8/mcu-int8: where to write the .tflite (default: --out's)")
    ] = None,
    calib_samples: Annotated[int, typer.Option("--calib-samples", min=1, help="calibration images from train")] = 500,
    budget: Annotated[float, typer.Option(help="mixed: weight bytes as a fraction of int8")] = 0.6,
    cle: Annotated[bool, typer.Option("--cle/--no-cle", help="cross-layer equalization first")] = False,
    qat_epochs: Annotated[int, typer.Option("--qat-epochs", min=1, help="QAT fine-tuning epochs")] = 2,
    rounding: Annotated[
        str | None,
        typer.Option(
            help="weight rounding: gptq (default for int4/mixed), nearest (int8), adaround or brecq "
            "(block reconstruction, QDrop)"
        ),
    ] = None,
    rounding_seconds: Annotated[
        float, typer.Option("--rounding-seconds", min=0.0, help="time budget of adaround/brecq (all layers together)")
    ] = 45.0,
    align: Annotated[
        str, typer.Option(help="none, or adabn: batch norms re-estimated on the calibration data (domain adaptation)")
    ] = "none",
    bias: Annotated[
        str,
        typer.Option(
            "--bias", help="bias correction: empirical (default), fast (NNCF's FastBiasCorrection) or fast+empirical"
        ),
    ] = "empirical",
    float_ops: Annotated[
        str | None,
        typer.Option(
            "--float-ops", help="ops left float: add,logits,pool,softmax (ONNX Runtime/ExecuTorch), stem (also LiteRT)"
        ),
    ] = None,
    seed: int = 0,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="QAT fine-tuning batch size")] = 128,
    train_threads: Annotated[
        int | None,
        typer.Option("--train-threads", min=1, help="torch threads while calibrating and training (default: torch's)"),
    ] = None,
    threads: OldThreadsOpt = None,
    eval_test: Annotated[
        bool, typer.Option("--eval/--no-eval", help="measure float and quantized test accuracy")
    ] = True,
    input_range: RangeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Quantize MODEL with calibration (and fine-tuning, for qat) on the train split of DATA."""
    quiet(as_json)
    from edgeopt.compress.quantize.api import quantize as run_quantize
    from edgeopt.compress.quantize.targets import check_target_options
    from edgeopt.model import save_model

    check_target_options(target, weights, method, float_layers=max_drop is not None or mix_runtime is not None)
    from edgeopt.train.fit import deterministic_cpu

    m, train = model_for_data(model, data, parse_range(input_range))
    with deterministic_cpu(torch_threads(train_threads, threads), enabled=False):  # holds the thread count only
        q, report = run_quantize(
            m, train, method=method, calib=calib, weights=weights, max_drop=max_drop, calib_samples=calib_samples,
            budget=budget, cle=cle, qat_epochs=qat_epochs, seed=seed, rounding=rounding,
            rounding_seconds=rounding_seconds, target=target, mix_runtime=mix_runtime,
            latency_budget_ms=latency_budget_ms, batch_size=batch_size, align=align, bias_method=bias,
            float_ops=[o.strip() for o in float_ops.split(",") if o.strip()] if float_ops else None,
        )  # fmt: skip
    path = save_model(q, out)
    result = {"model": str(path), "method": method, "calib": calib, "weights": weights, "target": target,
              "seconds": report["lineage"].get("metrics", {}).get("seconds"),
              "float_ops": report["lineage"].get("metrics", {}).get("float_ops", [])}  # fmt: skip
    if "bits" in report:
        result["layer_bits"] = report["bits"]
        result["packed_weight_bytes"] = report["packed_weight_bytes"]
    if "accuracy_aware" in report:
        aa = report["accuracy_aware"]
        result["kept_higher_precision"] = [f"{k['layer']}->{k['to']}" for k in aa["kept_higher"]]
        result["val_drop_points"] = aa["drop_points"]
    if "float_mix" in report:
        fm = report["float_mix"]
        result["float_layers"] = fm["float_layers"]
        result["float_mix"] = {k: fm[k] for k in ("runtime", "mode", "val_accuracy", "drop_points",
                                                  "predicted_latency_ms", "measured_latency_ms")}  # fmt: skip
    if target != "xnnpack":
        from edgeopt.compress.quantize.targets import export_for_target

        result["tflite"] = export_for_target(q, tflite or path.with_suffix(".tflite"))
    if eval_test:
        from edgeopt.data import load_dataset
        from edgeopt.train import evaluate

        test = load_dataset(data, "test")
        result["float_test_accuracy"] = evaluate(m, test).accuracy
        result["quantized_test_accuracy"] = evaluate(q, test).accuracy
    if "warning" in report:
        result["warning"] = report["warning"]
    warn_at_chance(result, q.meta, float_test_accuracy=result.get("float_test_accuracy"),
                   quantized_test_accuracy=result.get("quantized_test_accuracy"))  # fmt: skip
    emit(result, as_json, "quantize")
