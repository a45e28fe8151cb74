"""Clients that train a compressed model: ``float`` (default), ``qat-int8`` or ``pruned:R``.

The choice (``FederatedConfig.client_model``, ``--client-model``) changes the model the federation
trains, once, before round 1; every engine then runs its usual rounds on it (the flat weight vector
just has other entries), so the algorithms, compression, DP and secure aggregation are untouched.

- ``qat-int8``: every conv/linear is wrapped with edgeopt's LSQ fake quantizer
  (:class:`edgeopt.compress.quantize.qat.LSQWrapper`: per-channel symmetric int8 weights and a
  per-tensor affine int8 input, every step learnable with a straight-through estimator). Clients
  train the fake-quantized model and the server averages its weights *and* its quantization steps,
  so the global model stays int8-deployable. The input ranges the steps start from come from a
  federated calibration: each client reports, per layer, the min and max of that layer's input over
  its own data (2 floats per layer: no data leaves it); the server takes the overall min and max
  (:func:`federated_input_ranges`). After the last round :func:`to_int8` removes the wrappers and
  runs edgeopt's PTQ path with the learned weight steps pinned (as ``quantize_qat`` does); its
  activation ranges are calibrated on ``calib_samples`` images of a server-side proxy set (here the
  training split: a fleet would use a small public set). Models with batch norm are refused (their
  statistics would need folding before training; the zoo's mlp and lenet5 have none).
- ``pruned:R``: the server removes the fraction ``R`` of the MACs by channel pruning with the
  data-free L2-norm criterion (:func:`edgeopt.compress.prune.prune_channels`, uniform allocation,
  no reconstruction: the server holds no data). The physically smaller model is what clients
  download, train and upload: upload bytes shrink with the parameter count.

Cost: ``qat-int8`` one forward pass over every client's data (calibration) before round 1, ~1.5x
client compute per step (fake quantization), one PTQ conversion at the end (seconds for small
models); ``pruned:R`` one dependency-graph trace and module rebuild before round 1.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeopt.errors import EdgeoptError
from edgeopt.model import EdgeModel, ModelMeta, build_module

CLIENT_MODELS = ("float", "qat-int8", "pruned:R")


def parse_client_model(spec: str | None) -> tuple[str, float]:
    """``float`` | ``qat-int8`` | ``pruned:R`` (0 < R < 1, the fraction of MACs removed) -> (kind, R)."""
    if spec in (None, "", "float"):
        return "float", 0.0
    if spec == "qat-int8":
        return "qat-int8", 0.0
    name, _, arg = str(spec).partition(":")
    if name == "pruned":
        try:
            ratio = float(arg)
        except ValueError:
            ratio = -1.0
        if 0.0 < ratio < 1.0:
            return "pruned", ratio
    raise ValueError(f"unknown client model '{spec}' (use float, qat-int8 or pruned:R with 0 < R < 1)")


def quant_layers(module: nn.Module) -> list[str]:
    """Paths of the conv/linear layers that QAT wraps, in module order."""
    return [n for n, m in module.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def _check_no_batchnorm(module: nn.Module) -> None:
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules()):
        raise EdgeoptError(
            "--client-model qat-int8 supports models without batch norm",
            "use a model without BatchNorm (e.g. zoo:mlp, zoo:lenet5) or --client-model pruned:R",
        )


def wrap_qat(module: nn.Module, ranges: dict[str, tuple[float, float]] | None = None) -> nn.Module:
    """Wrap every conv/linear of ``module`` (in place) with an int8 LSQ fake quantizer; returns it.

    ``ranges`` gives each layer's initial input range; without it the wrappers get a placeholder
    range (for rebuilding the structure before loading trained weights). Weight steps start at
    each channel's max |w| / 127.
    """
    from edgeopt.compress.quantize.qat import LSQWrapper, _set

    _check_no_batchnorm(module)
    for name in quant_layers(module):
        layer = module.get_submodule(name)
        rng = (ranges or {}).get(name, (0.0, 1.0))
        _set(module, name, LSQWrapper(layer, 8, rng, "minmax"))
    return module


def is_qat(module: nn.Module) -> bool:
    """Whether ``module`` carries LSQ fake quantizers."""
    from edgeopt.compress.quantize.qat import LSQWrapper

    return any(isinstance(m, LSQWrapper) for m in module.modules())


def input_ranges(module: nn.Module, x: torch.Tensor, names: Sequence[str], batch: int = 512) -> np.ndarray:
    """(len(names), 2) array of each layer's input [min, max] over ``x`` — what one client reports."""
    mods = dict(module.named_modules())
    out = np.tile(np.array([np.inf, -np.inf]), (len(names), 1))

    def hook(i: int):
        def f(_m: nn.Module, inp: tuple[torch.Tensor, ...]) -> None:
            t = inp[0].detach()
            out[i, 0] = min(out[i, 0], float(t.min()))
            out[i, 1] = max(out[i, 1], float(t.max()))

        return f

    hs = [mods[n].register_forward_pre_hook(hook(i)) for i, n in enumerate(names)]
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            for s in range(0, len(x), batch):
                module(x[s : s + batch])
    finally:
        for h in hs:
            h.remove()
        module.train(was_training)
    return out


def federated_input_ranges(module: nn.Module, client_inputs: Sequence[torch.Tensor]) -> dict[str, tuple[float, float]]:
    """Per-layer input range: every client's local [min, max] (:func:`input_ranges`), merged by the server."""
    names = quant_layers(module)
    reports = [input_ranges(module, x, names) for x in client_inputs if len(x)]
    if not reports:
        raise EdgeoptError("no client has data to calibrate the quantizers", "use fewer clients or more data")
    lo = np.min([r[:, 0] for r in reports], axis=0)
    hi = np.max([r[:, 1] for r in reports], axis=0)
    return {n: (float(a), float(b)) for n, a, b in zip(names, lo, hi, strict=True)}


def prepare_client_model(
    model: EdgeModel, spec: str, client_inputs: Sequence[torch.Tensor] | None = None
) -> tuple[EdgeModel, dict[str, Any]]:
    """The model the clients will train for ``spec``, and a record of what was done.

    ``client_inputs`` (each client's inputs in the model's layout) are needed for ``qat-int8``
    (federated calibration of the input ranges). The input model is not modified.
    """
    kind, ratio = parse_client_model(spec)
    params_before = sum(p.numel() for p in model.module.parameters())
    info: dict[str, Any] = {"client_model": kind, "params_before": params_before}
    if kind == "float":
        info["params_after"] = params_before
        return model, info
    if kind == "pruned":
        from edgeopt.compress.prune import prune_channels

        pruned, rep = prune_channels(model, ratio=ratio, criterion="l2", allocation="uniform")
        info.update(ratio=ratio, macs_before=rep.macs_before, macs_after=rep.macs_after,
                    params_after=rep.params_after)  # fmt: skip
        return pruned, info
    if not client_inputs:
        raise EdgeoptError("qat-int8 client models need the clients' data for calibration")
    module = copy.deepcopy(model.module).eval()
    _check_no_batchnorm(module)
    ranges = federated_input_ranges(module, client_inputs)
    wrap_qat(module, ranges)
    info.update(layers=len(ranges), input_ranges={k: list(v) for k, v in ranges.items()},
                params_after=sum(p.numel() for p in module.parameters()),
                calibration_upload_bytes_per_client=8 * len(ranges))  # fmt: skip
    return model.with_lineage({"pass": "federate-qat-prepare", "layers": len(ranges)}, module), info


def build_client_module(meta: ModelMeta, spec: str) -> nn.Module:
    """An untrained module with the structure the federation trains (for engines that rebuild from ``meta``).

    Pruned models record their widths in ``meta.arch``; QAT models are the float arch wrapped again.
    """
    module = build_module(meta.arch)
    if parse_client_model(spec)[0] == "qat-int8":
        wrap_qat(module)
    return module


def unwrap_qat(module: nn.Module) -> tuple[nn.Module, dict[str, list[float]]]:
    """A float copy without the fake quantizers, and each layer's learned per-channel weight steps."""
    from edgeopt.compress.quantize.qat import LSQWrapper, _set

    out = copy.deepcopy(module)
    steps: dict[str, list[float]] = {}
    for name, m in list(out.named_modules()):
        if isinstance(m, LSQWrapper):
            steps[name] = [float(s) for s in m.w_step.detach().abs()]
            _set(out, name, m.layer)
    return out.eval(), steps


def to_int8(model: EdgeModel, calib: Any, calib_samples: int = 256, seed: int = 0) -> EdgeModel:
    """The integer model of a federated QAT model: learned weight steps pinned, activations calibrated.

    ``calib`` is an ImageDataset (the server's proxy set); ``calib_samples`` images of it set the
    activation ranges. Returns a quantized EdgeModel (saves, exports to pte/tflite/onnx).
    Cost: one PT2E export + calibration + bias correction (seconds for small models).
    """
    from edgeopt.compress.quantize.ptq import QuantRecipe, quantize_ptq

    float_module, steps = unwrap_qat(model.module)
    float_model = EdgeModel(float_module, ModelMeta.from_json(model.meta.to_json()))
    float_model.meta.lineage = [s for s in float_model.meta.lineage if s.get("pass") != "federate-qat-prepare"]
    recipe = QuantRecipe(calib="minmax", calib_samples=calib_samples, seed=seed, fold_bn=False, method="qat")
    return quantize_ptq(float_model, calib, recipe, weight_steps=steps)


def runtime_accuracy(model: EdgeModel, test: Any, out_dir: str | Path, fmt: str = "onnx") -> dict[str, Any]:
    """Export ``model`` to ``fmt`` (parity-checked) in ``out_dir`` and measure top-1 on ``test`` inside its runtime.

    Returns ``{"runtime", "artifact", "artifact_bytes", "accuracy"}``. Cost: one export + one test pass.
    """
    from edgeopt.interop.export import FORMATS, export_model
    from edgeopt.runtimes import open_runner
    from edgeopt.train import evaluate

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    res = export_model(model, fmt, out / f"model_int8{FORMATS[fmt]}")
    with open_runner(res.runtime, res.path, threads=1) as runner:
        acc = evaluate(model.meta, test, predict=runner.run).accuracy
    return {"runtime": res.runtime, "artifact": str(res.path), "artifact_bytes": res.size_bytes, "accuracy": acc}
