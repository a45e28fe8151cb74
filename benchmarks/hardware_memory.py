"""Memory per model and artifact: ExecuTorch's planned arena beside edgeopt's liveness estimates.

For each zoo model at its default input shape (lenet5, resnet8, dscnn, mobilenetv2, mlp) and the MLPerf
Tiny ResNet-8 imported from ../shared/data/mlperf-tiny/resnet8_float32.tflite (input 0..255), float
and int8 (edgeopt PTQ, calibrated on random images: the memory figures do not depend on the
calibration values), the model is exported to .pte (ExecuTorch, XNNPACK), .tflite (LiteRT) and
.onnx (ONNX Runtime) and ``edgeopt.runtimes.memory_plan`` reads each artifact:

- ExecuTorch's planned arena (the program's non-constant buffers) and, beside it, edgeopt's liveness
  over the XNNPACK delegate graph (the delegate's own workspace, which ExecuTorch does not plan);
- edgeopt's liveness estimate on the torch.export graph, on the .tflite graph and on the .onnx graph;
- weight bytes per artifact.

Gaps over 10% between ExecuTorch's plan and the torch liveness estimate are flagged with the reason.
The shipped MLPerf .tflite files (float and TFLite's own int8) are added as reference rows.
``memory_table()`` returns the figures (for ``benchmarks/hardware.py``); run as a script it prints the
table and writes ``benchmarks/results/hardware_memory.json``.

Run: .venv/bin/python benchmarks/hardware_memory.py [--full]   (--full adds mobilenetv2 int8)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import shared_path, write_result

from edgeopt.data.dataset import ImageDataset
from edgeopt.interop.export import export_model
from edgeopt.model import EdgeModel, load_model
from edgeopt.runtimes.memory_plan import memory_plan, model_memory_plan

ZOO = ("lenet5", "resnet8", "dscnn", "mobilenetv2", "mlp")
MLPERF = "mlperf-tiny/resnet8_float32.tflite"
REFERENCES = ("mlperf-tiny/resnet8_float32.tflite", "mlperf-tiny/resnet8_int8.tflite")
FORMATS = ("pte", "tflite", "onnx")
GAP = 0.10  # relative difference flagged between ExecuTorch's plan and the liveness estimate
SLOW_INT8 = ("mobilenetv2",)  # int8 only with --full (the slowest exports)


def _models(full: bool) -> list[tuple[str, str, EdgeModel]]:
    """(name, precision, model) for every row; int8 via edgeopt's PTQ on random calibration images."""
    from edgeopt.compress.quantize.api import quantize

    floats = [(name, load_model(f"zoo:{name}")) for name in ZOO]
    floats.append(("mlperf_resnet8", load_model(shared_path(MLPERF), input_range=(0.0, 255.0))))
    rows: list[tuple[str, str, EdgeModel]] = []
    for name, model in floats:
        rows.append((name, "float", model))
        if name in SLOW_INT8 and not full:
            continue
        h, w, c = model.meta.input.image_shape
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, size=(64, h, w, c), dtype=np.uint8)
        calib = ImageDataset(images, np.zeros(64, np.int64), [str(i) for i in range(model.meta.num_classes)], "random")
        q, _ = quantize(model, calib, calib="minmax", calib_samples=64, bias_correction=False)
        rows.append((name, "int8", q))
    return rows


def _relative_gap(a: int, b: int) -> float:
    return abs(a - b) / max(a, b, 1)


def gap_flags(row: dict[str, Any]) -> list[str]:
    """Why ExecuTorch's memory differs from the liveness estimate on the torch graph by more than 10%. Pure.

    Three comparisons: ExecuTorch's plan alone; the XNNPACK delegate's workspace (edgeopt's liveness on
    the delegate graph) against the torch liveness; plan + workspace (the two arenas a device holds).
    """
    plan, live = row["executorch_plan_bytes"], row["liveness_torch_bytes"]
    fused = row["liveness_torch_fused_bytes"]
    workspace = row.get("xnnpack_workspace_estimate_bytes")
    converts = row.get("xnnpack_node_kinds", {}).get("XNNConvert", 0)
    flags = []
    if _relative_gap(plan, live) > GAP:
        if plan < live and workspace is not None:
            flags.append(
                f"plan {plan:,} B vs liveness {live:,} B: the XNNPACK delegate keeps the intermediate tensors in "
                f"its own workspace, outside ExecuTorch's plan, which holds only the "
                f"{row['executorch_planned_tensors']} tensors outside the delegate (graph input and output, "
                f"{row['executorch_planned_tensor_bytes']:,} B before alignment)"
            )
        elif plan > live:
            flags.append(
                f"plan {plan:,} B above liveness {live:,} B: ExecuTorch's greedy offsets and alignment over "
                "the liveness lower bound"
            )
        else:
            flags.append(f"plan {plan:,} B below liveness {live:,} B without a delegate workspace to explain it")
    if workspace is not None and _relative_gap(workspace, live) > GAP:
        if workspace < live and _relative_gap(workspace, fused) <= GAP:
            why = (
                "XNNPACK fuses each activation into the op before it, which the torch graph keeps as separate "
                f"tensors; with element-wise ops fused the torch liveness is {fused:,} B"
            )
        elif workspace < live and workspace + row["executorch_planned_tensor_bytes"] >= (1 - GAP) * live:
            why = (
                "the workspace leaves out the delegate's input and output, which ExecuTorch plans "
                f"({row['executorch_planned_tensor_bytes']:,} B); the torch liveness counts them"
            )
        elif workspace > live and converts > 2:
            why = (
                f"{converts} XNNConvert nodes inside the delegate (2 expected: quantize the float input, "
                "dequantize the output): the ops between the extra ones run on float tensors, 4x their int8 size"
            )
        else:
            why = "no single cause found"
        flags.append(f"XNNPACK workspace {workspace:,} B vs liveness {live:,} B: {why}")
    if workspace is not None and _relative_gap(plan + workspace, live) > GAP and plan + workspace > live:
        flags.append(
            f"plan + workspace {plan + workspace:,} B vs liveness {live:,} B: the delegate's input and output sit in "
            "ExecuTorch's plan for the whole run, beside the workspace (two arenas), where liveness frees the "
            "input after its last reader"
        )
    return flags


def model_row(name: str, precision: str, model: EdgeModel, workdir: Path) -> dict[str, Any]:
    """Every memory figure of one model: the torch estimate and each exported artifact's plan."""
    start = time.perf_counter()
    torch_plan = model_memory_plan(model)
    row: dict[str, Any] = {
        "model": name,
        "precision": precision,
        "input_shape": [int(s) for s in model.meta.input.shape],
        "liveness_torch_bytes": torch_plan.arena_bytes,
        "liveness_torch_fused_bytes": torch_plan.detail["fused_elementwise_arena_bytes"],
        "weights_torch_bytes": torch_plan.weights_bytes,
    }
    for fmt in FORMATS:
        result = export_model(model, fmt, workdir / f"{name}_{precision}.{fmt}", samples=1)
        plan = memory_plan(result.path)
        row[f"weights_{fmt}_bytes"] = plan.weights_bytes
        row[f"artifact_{fmt}_bytes"] = result.path.stat().st_size
        if fmt == "pte":
            d = plan.detail
            xnn = [x for x in d.get("delegates", []) if x["id"] == "XnnpackBackend"]
            row.update(
                executorch_plan_bytes=plan.arena_bytes,
                executorch_planned_tensors=d["planned_tensors"],
                executorch_planned_tensor_bytes=d["planned_tensor_bytes"],
                executorch_kernel_calls=d["kernel_calls"],
                executorch_delegate_calls=d["delegate_calls"],
                xnnpack_workspace_estimate_bytes=d.get("xnnpack_workspace_bytes_estimate"),
                xnnpack_node_kinds=_merge_counts(x.get("node_kinds", {}) for x in xnn),
            )
        else:
            row[f"liveness_{fmt}_bytes"] = plan.arena_bytes
    row["gaps"] = gap_flags(row)
    row["seconds"] = round(time.perf_counter() - start, 1)
    return row


def _merge_counts(counts: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in counts:
        for k, v in c.items():
            out[k] = out.get(k, 0) + int(v)
    return dict(sorted(out.items()))


def reference_rows() -> list[dict[str, Any]]:
    """The shipped MLPerf Tiny .tflite files: edgeopt's liveness on their graphs and their weight bytes."""
    rows = []
    for rel in REFERENCES:
        plan = memory_plan(shared_path(rel))
        rows.append(
            {"file": rel, "liveness_tflite_bytes": plan.arena_bytes, "weights_tflite_bytes": plan.weights_bytes}
        )
    return rows


def memory_table(full: bool = False, verbose: bool = False) -> dict[str, Any]:
    """All rows (zoo + imported MLPerf ResNet-8, float and int8) and the reference .tflite rows.

    Cost: three exports per row (about 5-110 s per model on 2 cores, MobileNetV2 the slowest) and PTQ per int8 row.
    """
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgeopt-memory-") as tmp:
        for name, precision, model in _models(full):
            rows.append(model_row(name, precision, model, Path(tmp)))
            if verbose:
                print(f"  {name} {precision}: {rows[-1]['seconds']} s", flush=True)
    return {"rows": rows, "references": reference_rows(), "gap_threshold": GAP}


def _kib(n: int | None) -> str:
    return "—" if n is None else f"{n / 1024:,.1f}"


def markdown(table: dict[str, Any]) -> str:
    """The table as Markdown (KiB), one line per row, flagged gaps marked with a dagger. Pure."""
    head = (
        "| model | prec. | ExecuTorch plan | XNNPACK workspace (est.) | plan + workspace | liveness torch "
        "| liveness .tflite | liveness .onnx | weights .pte | weights .tflite | weights .onnx | weights torch |\n"
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n"
    )
    lines = []
    for r in table["rows"]:
        ws = r["xnnpack_workspace_estimate_bytes"]
        total = None if ws is None else r["executorch_plan_bytes"] + ws
        mark = " †" if r["gaps"] else ""
        cells = [
            r["model"], r["precision"], _kib(r["executorch_plan_bytes"]) + mark, _kib(ws), _kib(total),
            _kib(r["liveness_torch_bytes"]), _kib(r["liveness_tflite_bytes"]), _kib(r["liveness_onnx_bytes"]),
            _kib(r["weights_pte_bytes"]), _kib(r["weights_tflite_bytes"]), _kib(r["weights_onnx_bytes"]),
            _kib(r["weights_torch_bytes"]),
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    for ref in table["references"]:
        cells = [f"`{Path(ref['file']).name}` (shipped)", "", "", "", "", "", _kib(ref["liveness_tflite_bytes"]),
                 "", "", _kib(ref["weights_tflite_bytes"]), "", ""]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="also mobilenetv2 int8 (its exports are the slowest)")
    args = parser.parse_args()
    start = time.perf_counter()
    table = memory_table(full=args.full, verbose=True)
    seconds = round(time.perf_counter() - start, 1)
    print(markdown(table))
    for r in table["rows"]:
        for flag in r["gaps"]:
            print(f"† {r['model']} {r['precision']}: {flag}")
    settings = {
        "full": args.full,
        "int8": "edgeopt PTQ (minmax, 64 random calibration images, no bias correction)",
        "export_parity_samples": 1,
        "seconds": seconds,
        "units": "bytes",
    }
    path = write_result("hardware_memory", {**table, "markdown": markdown(table)}, settings)
    print(f"wrote {path} in {seconds} s")


if __name__ == "__main__":
    main()
