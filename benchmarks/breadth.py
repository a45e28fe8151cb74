"""Issue 14 acceptance, import and debugger parts: int8 and hybrid .tflite import, the per-layer debugger.

Sections are functions (``int8_import``, ``hybrid_import``, ``debugger``) returning their figures;
others (anomaly detection, 1-D classification) can be added beside them.

- int8: the MLPerf Tiny int8 ResNet-8 imported (``interop.tflite_int8``) and scored on cifar10-jpg test
  in PyTorch against LiteRT's own run (target 75.42% +-0.05 pt, >= 99.9% top-1 agreement); its
  re-exports to .tflite, .pte and .onnx each scored in their runtime.
- hybrid: the MLPerf float ResNet-8 with dynamic-range (int8-weight, float-activation) ops made by
  ai-edge-quantizer; imported outputs against LiteRT's (XNNPACK delegate on, its default), relative
  error per image (target <= 1e-3), and the same for the ``--dequantize`` import.
- debugger: the int8 file with one activation's scale divided by 4 (a wrong activation range);
  ``debug_artifact`` must name the op producing it.

Run: ``flock /tmp/edgeopt-bench.lock .venv/bin/python benchmarks/breadth.py [--limit N]`` (~5 min on 2 cores).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import previous_figures, shared_path, write_result  # noqa: E402

from edgeopt.interop import import_model  # noqa: E402
from edgeopt.interop.export import FORMAT_RUNTIME, compare_outputs, export_model  # noqa: E402
from edgeopt.runtimes import open_runner  # noqa: E402
from edgeopt.runtimes.litert_runner import LiteRTRunner  # noqa: E402

INT8 = "mlperf-tiny/resnet8_int8.tflite"
FLOAT = "mlperf-tiny/resnet8_float32.tflite"
LITERT_REFERENCE = 0.7542  # LiteRT's own figure for the int8 model on cifar10-jpg test (GUIDE)


def _torch(module: torch.nn.Module, x: np.ndarray, batch: int = 500) -> np.ndarray:
    with torch.no_grad():
        return torch.cat([module(torch.from_numpy(x[i : i + batch])) for i in range(0, len(x), batch)]).numpy()


def int8_import(x: np.ndarray, y: np.ndarray, work: Path) -> dict[str, Any]:
    """Accuracy and LiteRT agreement of the imported int8 ResNet-8, and of its three re-exports."""
    path = shared_path(INT8)
    model = import_model(path)
    t = time.perf_counter()
    ours = _torch(model.module, x)
    torch_s = time.perf_counter() - t
    lite = LiteRTRunner(path, threads=2).run(x)
    codes_ours, codes_lite = np.round(ours * 256), np.round(lite * 256)
    acc = float((ours.argmax(1) == y).mean())
    out: dict[str, Any] = {
        "images": len(y),
        "accuracy_imported_torch": acc,
        "accuracy_litert": float((lite.argmax(1) == y).mean()),
        "litert_reference_accuracy": LITERT_REFERENCE,
        "top1_agreement_with_litert": float((ours.argmax(1) == lite.argmax(1)).mean()),
        "output_codes_exact_rows": float((codes_ours == codes_lite).all(1).mean()),
        "output_codes_exact_elements": float((codes_ours == codes_lite).mean()),
        "output_codes_max_diff": float(np.abs(codes_ours - codes_lite).max()),
        "torch_seconds": round(torch_s, 1),
        "target_met": bool(abs(acc - LITERT_REFERENCE) <= 0.0005 + 1e-9
                           and (ours.argmax(1) == lite.argmax(1)).mean() >= 0.999),  # fmt: skip
        "reexports": {},
    }
    for fmt in ("tflite", "pte", "onnx"):
        t = time.perf_counter()
        try:
            result = export_model(model, fmt, work / f"resnet8_int8_reexport.{fmt}")
            got = open_runner(FORMAT_RUNTIME[fmt], result.path, threads=1).run(x)
            out["reexports"][fmt] = {
                "size_bytes": result.size_bytes,
                "accuracy": float((got.argmax(1) == y).mean()),
                "top1_agreement_with_imported": float((got.argmax(1) == ours.argmax(1)).mean()),
                "seconds": round(time.perf_counter() - t, 1),
            }
        except Exception as e:  # a failed export is a figure too: say what failed
            out["reexports"][fmt] = {"error": str(e).splitlines()[0][:300]}
        print(f"  re-export {fmt}: {out['reexports'][fmt]}", flush=True)
    return out


def hybrid_model(work: Path) -> Path:
    """The MLPerf float ResNet-8 with ai-edge-quantizer's dynamic-range recipe (int8 weights, float activations)."""
    from ai_edge_quantizer import quantizer, recipe

    q = quantizer.Quantizer(str(shared_path(FLOAT)))
    q.load_quantization_recipe(recipe.dynamic_wi8_afp32())
    path = work / "resnet8_dynamic_range.tflite"
    path.write_bytes(bytes(q.quantize().quantized_model))
    return path


def hybrid_import(x: np.ndarray, work: Path) -> dict[str, Any]:
    """Relative error of the hybrid import (and of --dequantize) against LiteRT, per image."""
    path = hybrid_model(work)
    lite = LiteRTRunner(path, threads=2).run(x)
    out: dict[str, Any] = {"images": len(x), "converter": "ai-edge-quantizer dynamic_wi8_afp32"}
    for name, dequantize in (("emulated", False), ("dequantized", True)):
        model = import_model(path, dequantize=dequantize)
        got = _torch(model.module, x)
        per = np.abs(got - lite).max(1) / np.abs(lite).max()
        out[name] = {
            "rel_diff_max": float(compare_outputs(lite, got).rel_diff),
            "rel_diff_median_image": float(np.median(per)),
            "images_within_1e-3": float((per <= 1e-3).mean()),
            "top1_agreement": float((got.argmax(1) == lite.argmax(1)).mean()),
            "note": model.meta.lineage[0].get("quantization", {}).get("note"),
        }
    out["target_met"] = out["emulated"]["rel_diff_max"] <= 1e-3
    return out


def debugger(work: Path) -> dict[str, Any]:
    """The debugger on the int8 file with one activation range made 4x too narrow."""
    from ai_edge_litert.tools import flatbuffer_utils as fbu

    from edgeopt.interop.debug import debug_artifact

    path = shared_path(INT8)
    model = import_model(path)
    broken_model = fbu.read_model(str(path))
    tensor = next(t for t in broken_model.subgraphs[0].tensors if b"conv2d_3/Conv2D" in t.name
                  and t.quantization is not None and len(t.quantization.scale) == 1)  # fmt: skip
    tensor.quantization.scale = [float(tensor.quantization.scale[0]) * 0.25]
    broken = work / "resnet8_int8_broken_range.tflite"
    fbu.write_model(broken_model, str(broken))
    clean, report = debug_artifact(model, path), debug_artifact(model, broken)
    name = tensor.name.decode().split(";")[0]
    return {
        "broken_tensor": name,
        "first_divergent_clean": clean.first_divergent,
        "first_divergent_broken": report.first_divergent,
        "named_correctly": bool(report.first_divergent and name in report.first_divergent),
        "rows": len(report.rows),
        "rel_diff_at_first": next((r.rel_diff for r in report.rows if r.diverged), None),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="test images (default: all 10,000)")
    parser.add_argument("--only", default="int8_import,hybrid_import,debugger", help="comma list of sections")
    args = parser.parse_args()
    torch.set_num_threads(2)
    from edgeopt.data import load_dataset

    data = load_dataset(f"imagefolder:{shared_path('cifar10-jpg.zip')}", "test")
    images, labels = data.images[: args.limit], np.asarray(data.labels[: args.limit])
    model = import_model(shared_path(INT8))
    x = model.meta.input.to_model_input(images)
    run_now = args.only.split(",")
    figures: dict[str, Any] = previous_figures("breadth", run_now)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, run in (("int8_import", lambda: int8_import(x, labels, work)),
                          ("hybrid_import", lambda: hybrid_import(x, work)),
                          ("debugger", lambda: debugger(work))):  # fmt: skip
            if name not in run_now:
                continue
            t = time.perf_counter()
            figures[name] = run()
            figures[name]["section_seconds"] = round(time.perf_counter() - t, 1)
            print(name, figures[name], flush=True)
    path = write_result("breadth", figures, {"limit": args.limit, "threads": 2, "only": args.only})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
