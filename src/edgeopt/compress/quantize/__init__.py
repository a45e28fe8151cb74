"""Quantization: post-training (PTQ) and quantization-aware (QAT) int8/int4, mixed precision, deployment.

``quantize_ptq(model, train_data, QuantRecipe(calib="entropy"))`` returns an ``EdgeModel`` whose
module is a ``QuantizedModule`` (PT2E program with the XNNPACK quantizer and edgeopt's observers);
``export_model(q, "pte" | "tflite" | "onnx", path)`` writes real integer artifacts. Submodules:

- ``calibration``: pure range/scale math (minmax, percentile, entropy, MSE; weight scales; SQNR)
- ``observers``: the PT2E observer and quantizer built on it
- ``transforms``: batch-norm folding and cross-layer equalization
- ``ptq``: the PTQ flow, ``QuantizedModule`` and its save/load record
- ``deploy``: integer export to ExecuTorch, LiteRT and ONNX Runtime
- ``mixed``: per-layer sensitivity, bit allocation under a size budget, accuracy-aware mode
- ``targets``: hardware presets (xnnpack, npu-int8, mcu-int8) and the .tflite op/dtype check
- ``float_mix``: float or int8 per layer from measured runtime latency and sensitivity (HAQ-style)
- ``qat``: fake quantization with LSQ steps and STE, BN freezing, distillation
- ``passes``: the ``quantize`` recipe pass

Importing this package is cheap; torch/torchao/executorch load when a function needs them.
"""

from __future__ import annotations

from typing import Any

__all__ = ["QuantRecipe", "QuantizedModule", "float_model", "quantize", "quantize_ptq"]


def __getattr__(name: str) -> Any:
    if name in ("QuantRecipe", "QuantizedModule", "quantize_ptq", "float_model"):
        from edgeopt.compress.quantize import ptq

        return getattr(ptq, name)
    if name == "quantize":
        from edgeopt.compress.quantize.api import quantize

        return quantize
    raise AttributeError(name)
