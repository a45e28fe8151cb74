"""Post-training int8 quantization through PT2E, kept as an EdgeModel that saves without pickles.

``quantize_ptq(model, data, QuantRecipe(calib="entropy"))``:

1. copies the float module, folds batch norms into the convs and (``cle=True``) equalizes ranges
   across layers (``transforms``);
2. draws ``calib_samples`` training images with a seeded generator (same seed, same images);
3. exports the float module with ``torch.export`` (batch dimension dynamic), prepares it with
   ``EdgeQuantizer`` (ExecuTorch's XNNPACK quantizer: per-channel symmetric int8 weights, per-tensor
   affine int8 activations; ``recipe.target`` may ask for per-tensor weights and refuses ops that
   would stay float, see ``targets``) whose observers are edgeopt's ``CalibrationObserver`` (minmax,
   percentile, entropy or MSE), runs the calibration batches and converts (``convert_pt2e``);
   With ``weight_rounding="gptq"`` the 4-bit layers' weights are first rounded by GPTQ (``gptq``:
   each rounding error is compensated on the weights not yet rounded, through the Hessian of the
   layer's calibration inputs) and their scales pinned, so convert lands on those integers;
4. (``bias_correction=True``) corrects, layer by layer, the mean shift that quantization puts on
   each conv/linear output (empirical bias correction, Nagel et al. 2019): the float bias absorbs
   ``mean(float out) - mean(quantized out)`` over the calibration images. ``bias_method="fast"`` uses
   NNCF's fast bias correction instead (``fastbias``: a constant mean input through each layer alone;
   it changes the float model too), ``"fast+empirical"`` both in that order.

The result is an ``EdgeModel`` whose module is a ``QuantizedModule``: the (transformed) float module
plus every observer's scale and zero point. ``meta.arch`` is ``{"kind": "quantized", "float": <float
arch>, "recipe": {...}, "qparams": {observer: {scale, zero_point}}}``; the saved weights are the float
ones. Loading re-runs prepare/convert with the stored parameters pinned, which rebuilds the same
integer program bit for bit (checked by the tests). Cost (ResNet-8, 500 images, 2 cores): ~10-15 s.
"""

from __future__ import annotations

import copy
import inspect
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeopt.compress.quantize import calibration as cal
from edgeopt.compress.quantize.targets import check_target_options, float_op_names, require_integer, target_spec
from edgeopt.data import ImageDataset
from edgeopt.errors import EdgeoptError
from edgeopt.model import EdgeModel, build_module, check_finite, register_kind

ARCH_KIND = "quantized"
WEIGHT_CHOICES = ("int8", "int4", "mixed")
ROUNDINGS = ("nearest", "gptq", "adaround", "brecq")
BIAS_METHODS = ("empirical", "fast", "fast+empirical")  # ``QuantRecipe.bias_method``
# ops a runtime that mixes may keep float (``QuantRecipe.float_ops``); "stem" is the layer that reads the input: a
# 3-channel int8 convolution is slower than float on AVX-512 (ResNet-8 pruned to 0.8 of its MACs, float stem against
# all int8: ONNX Runtime 0.0561 / 0.0595 ms, ExecuTorch 0.0540 / 0.0556, LiteRT 0.0481 / 0.0759; docs/quantization.md)
FLOAT_OPS = ("add", "logits", "pool", "softmax", "stem")
_ADD_OPS = (torch.ops.aten.add.Tensor, torch.ops.aten.add_.Tensor)
_LAYER_OPS = (torch.ops.aten.linear.default, torch.ops.aten.conv1d.default, torch.ops.aten.conv2d.default,
              torch.ops.aten.matmul.default, torch.ops.aten.mm.default, torch.ops.aten.addmm.default)  # fmt: skip


@dataclass
class QuantRecipe:
    """What to quantize and how; JSON-serialisable (it is stored in the model's ``arch``).

    ``layer_bits`` maps a layer's module path to its weight bits (8 or 4) or 0 (kept float);
    layers not listed get ``weight_bits``. ``target`` is the hardware preset (``targets``):
    ``xnnpack`` (per-channel weights, float layers allowed), ``npu-int8`` or ``mcu-int8``.
    """

    calib: str = "entropy"
    calib_samples: int = 500
    seed: int = 0
    percentile: float = 99.99
    weight_bits: int = 8
    weight_method: str = "minmax"  # minmax | mse (per-channel clipping search; use mse for 4 bits)
    layer_bits: dict[str, int] = field(default_factory=dict)
    fold_bn: bool = True
    cle: bool = False
    cle_through_relu6: bool = False
    bias_correction: bool = True
    # empirical (``correct_biases``) | fast (NNCF's FastBiasCorrection, ``fastbias``) | fast+empirical (both, in order)
    bias_method: str = "empirical"
    method: str = "ptq"
    lean_graph: bool = True  # shape ops share qparams, int8 softmax (see observers.EdgeQuantizer)
    weight_rounding: str = "nearest"  # nearest | gptq | adaround | brecq (learned rounding; see each module)
    target: str = "xnnpack"  # xnnpack | npu-int8 | mcu-int8 (see targets; records without it are xnnpack)
    rounding_seconds: float = 45.0  # time budget of weight_rounding="adaround"/"brecq" (all layers together)
    align: str = "none"  # none | adabn: batch-norm statistics re-estimated on the calibration data (``align``)
    # add (residual adds) / logits (last linear and softmax) / pool (avg pools: the tensor after one gets its
    # own range, which ONNX Runtime runs as QLinearAveragePool, integer) / softmax (alone, on the int8 logits)
    # kept float
    float_ops: list[str] = field(default_factory=list)

    def validate(self) -> QuantRecipe:
        if self.calib not in cal.CALIBRATION_METHODS:
            choices = ", ".join(cal.CALIBRATION_METHODS)
            raise EdgeoptError(f"unknown calibration method '{self.calib}'", f"use {choices}")
        if self.calib_samples < 1:
            raise EdgeoptError(f"calibration needs at least 1 sample, not {self.calib_samples}")
        if self.weight_bits not in (4, 8):
            raise EdgeoptError(f"weight bits must be 8 or 4, not {self.weight_bits}")
        if self.weight_method not in ("minmax", "mse"):
            raise EdgeoptError(f"unknown weight method '{self.weight_method}'", "use minmax or mse")
        if self.weight_rounding not in ROUNDINGS:
            raise EdgeoptError(f"unknown weight rounding '{self.weight_rounding}'", f"use {', '.join(ROUNDINGS)}")
        if self.weight_rounding in ("adaround", "brecq") and not target_spec(self.target).all_per_channel:
            raise EdgeoptError(f"{self.weight_rounding} pins per-channel weight scales; "
                               f"target {self.target} has per-tensor weights",
                               "use --rounding nearest with this target")  # fmt: skip
        bad = {k: v for k, v in self.layer_bits.items() if v not in (0, 4, 8)}
        if bad:
            raise EdgeoptError(f"layer bits must be 0 (float), 4 or 8: {bad}")
        if not 50 < self.percentile <= 100:
            raise EdgeoptError(f"percentile must be in (50, 100], not {self.percentile}")
        from edgeopt.compress.quantize.align import ALIGN_CHOICES

        if self.align not in ALIGN_CHOICES:
            raise EdgeoptError(f"unknown alignment '{self.align}'", f"use {', '.join(ALIGN_CHOICES)}")
        if self.bias_method not in BIAS_METHODS:
            raise EdgeoptError(f"unknown bias correction '{self.bias_method}'", f"use {', '.join(BIAS_METHODS)}")
        bad_ops = sorted(set(self.float_ops) - set(FLOAT_OPS))
        if bad_ops:
            raise EdgeoptError(f"unknown float ops {bad_ops}", f"choose among {', '.join(FLOAT_OPS)}")
        bits = {self.weight_bits, *self.layer_bits.values()}
        weights = "int8" if bits - {0} <= {8} else "int4" if bits - {0} == {4} else "mixed"
        check_target_options(self.target, weights, self.method, float_layers=0 in bits or bool(self.float_ops))
        return self

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> QuantRecipe:
        known = {f for f in cls.__dataclass_fields__}
        args = {k: v for k, v in d.items() if k in known}
        args.setdefault("lean_graph", False)  # records written before the lean rules rebuild as they were
        return cls(**args)


# --- the quantized module -----------------------------------------------------------------------


def _batch_dims(module: nn.Module, x: torch.Tensor) -> Any:
    batch = torch.export.Dim("batch", min=1, max=65536)
    params = list(inspect.signature(module.forward).parameters.values())
    if params and params[0].kind is inspect.Parameter.VAR_POSITIONAL:
        return (({0: batch},),)
    return ({0: batch},)


def export_float(module: nn.Module, x: torch.Tensor) -> torch.fx.GraphModule:
    """``torch.export`` of ``module`` in eval mode with a dynamic batch (static when that fails)."""
    module.eval()
    x2 = torch.cat([x, x]) if x.shape[0] == 1 else x
    try:
        return torch.export.export(module, (x2,), dynamic_shapes=_batch_dims(module, x2)).module()
    except Exception:  # a model that specialises its batch: calibrate one sample at a time
        return torch.export.export(module, (x[:1],)).module()


def make_quantizer(recipe: QuantRecipe) -> Any:
    """``EdgeQuantizer`` for ``recipe``: a global config (weight granularity from the target) plus
    per-layer bits and float layers."""
    from edgeopt.compress.quantize.observers import EdgeQuantizer, quantization_config, weight_spec

    spec = target_spec(recipe.target)
    q = EdgeQuantizer(lean=recipe.lean_graph)
    q.float_pools = "pool" in recipe.float_ops
    q.float_softmax = "softmax" in recipe.float_ops
    q = q.set_global(
        quantization_config(
            recipe.calib, recipe.weight_bits, recipe.weight_method, recipe.percentile, per_channel=spec.conv_per_channel
        )
    )
    if spec.linear_per_channel != spec.conv_per_channel:
        q.op_weight_specs[torch.ops.aten.linear.default] = weight_spec(
            recipe.weight_bits, recipe.weight_method, spec.linear_per_channel
        )
    floats = {name for name, bits in recipe.layer_bits.items() if bits == 0}
    for name, bits in recipe.layer_bits.items():
        if bits in (4, 8) and bits != recipe.weight_bits:
            method = "mse" if bits == 4 else recipe.weight_method
            q.weight_specs[name] = quantization_config(recipe.calib, bits, method, recipe.percentile).weight
    float_adds = "add" in recipe.float_ops
    if floats or float_adds:

        def keep(n: torch.fx.Node) -> bool:
            if float_adds and n.target in _ADD_OPS:
                return False
            stack = n.meta.get("nn_module_stack") or {}
            return not any(path in floats for path, _ in stack.values())

        q.set_filter_function(keep)
    return q


def observers(gm: nn.Module) -> dict[str, Any]:
    """The ``CalibrationObserver``s of a prepared graph, by module name (deterministic order)."""
    from edgeopt.compress.quantize.observers import CalibrationObserver

    return {name: m for name, m in gm.named_modules() if isinstance(m, CalibrationObserver)}


def prepare(float_module: nn.Module, x: torch.Tensor, recipe: QuantRecipe) -> torch.fx.GraphModule:
    """Export ``float_module`` and insert the recipe's observers (PT2E ``prepare_pt2e``)."""
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    return prepare_pt2e(export_float(float_module, x), make_quantizer(recipe))


def convert(prepared: torch.fx.GraphModule, fold: bool = True) -> torch.fx.GraphModule:
    """Observers -> quantize/dequantize pairs (weights stored as int8 when ``fold``)."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    return convert_pt2e(copy.deepcopy(prepared), fold_quantize=fold)


def output_observers(prepared: torch.fx.GraphModule) -> dict[str, Any]:
    """Observers whose values reach the graph output without passing another observer or a layer (the
    logits). A float layer on the way (``float_ops=["logits"]``) makes its input no output: the features
    it reads keep their own range method."""
    obs = observers(prepared)
    found = {}
    for n in prepared.graph.nodes:
        if n.op != "call_module" or n.target not in obs:
            continue
        todo, seen = list(n.users), set()
        while todo:
            u = todo.pop()
            if u in seen:
                continue
            seen.add(u)
            if u.op == "output":
                found[n.target] = obs[n.target]
                break
            if (u.op == "call_module" and u.target in obs) or u.target in _LAYER_OPS:
                continue
            todo.extend(u.users)
    return found


def pin_qparams(prepared: nn.Module, qparams: dict[str, dict[str, list[float]]]) -> None:
    """Fix every observer of ``prepared`` to the stored ``qparams`` (raises if they do not match)."""
    obs = observers(prepared)
    if set(obs) != set(qparams):
        missing = sorted(set(obs) ^ set(qparams))[:3]
        raise EdgeoptError(
            f"the stored quantization parameters do not fit this model's graph (differ at {missing})",
            "re-quantize the float model with this version of edgeopt/torch",
        )
    for name, o in obs.items():
        o.fix_qparams(qparams[name]["scale"], qparams[name]["zero_point"])


def read_qparams(prepared: nn.Module) -> dict[str, dict[str, list[float]]]:
    """Every observer's scale and zero point after calibration, JSON-ready."""
    out = {}
    for name, o in observers(prepared).items():
        scale, zp = o.calculate_qparams()
        out[name] = {"scale": [float(s) for s in scale.reshape(-1)], "zero_point": [int(z) for z in zp.reshape(-1)]}
    return out


class QuantizedModule(nn.Module):
    """A float module plus the quantization parameters that make it an int8 program.

    ``forward`` runs the converted PT2E program (integer-valued simulation: every quantized tensor
    goes through quantize/dequantize). ``program(fold)`` builds that program on demand from the
    float weights with the stored parameters pinned; loading new weights drops the cached program.
    The state dict holds only the float weights (``float_module.*``).
    """

    quantized = True

    def __init__(self, float_module: nn.Module, spec: dict[str, Any]) -> None:
        super().__init__()
        self.float_module = float_module
        self.spec = spec
        self._programs: dict[bool, torch.fx.GraphModule] = {}
        self.register_load_state_dict_post_hook(lambda mod, _keys: mod._reload())

    @property
    def recipe(self) -> QuantRecipe:
        return QuantRecipe.from_json(self.spec["recipe"])

    def example_input(self) -> torch.Tensor:
        g = torch.Generator().manual_seed(0)
        return torch.rand(tuple(self.spec["input_shape"]), generator=g)

    def program(self, fold: bool = True) -> torch.fx.GraphModule:
        """The converted program (cached). ``fold=False`` keeps float weights + q/dq (LiteRT wants that)."""
        if fold not in self._programs:
            # built outside inference mode even when first called from it: tensors made under
            # inference_mode cannot be traced by torch.export later
            with torch.inference_mode(False), torch.no_grad():
                prepared = prepare(self.float_module, self.example_input(), self.recipe)
                pin_qparams(prepared, self.spec["qparams"])
                self._programs[fold] = convert(prepared, fold)
        return self._programs[fold]

    def _reload(self) -> None:
        """New weights: rebuild the program now (not lazily: a first call may come from inside a
        ``torch.export`` trace, e.g. profiling, where exporting the float module cannot nest)."""
        self._programs.clear()
        self.program(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.program(True)(x)

    def train(self, mode: bool = True) -> QuantizedModule:
        self.training = mode  # the converted program is inference-only
        self.float_module.train(mode)
        return self

    def export_artifact(self, fmt: str, x: torch.Tensor) -> bytes:
        """Integer artifact bytes for ``fmt`` (pte, tflite, onnx): see ``deploy``."""
        from edgeopt.compress.quantize.deploy import export_quantized

        return export_quantized(self, fmt, x)


def build_quantized_module(arch: dict[str, Any]) -> QuantizedModule:
    """Rebuild a ``QuantizedModule`` (weights not loaded yet) from its ``arch`` record."""
    try:
        spec = {k: arch[k] for k in ("recipe", "qparams", "input_shape")}
        float_module = build_module(arch["float"])
    except KeyError as e:
        raise EdgeoptError(f"quantized model metadata lacks '{e.args[0]}'", "re-quantize the model") from e
    return QuantizedModule(float_module, spec)


register_kind("quantized", build_quantized_module)  # float arch + quantization recipe and parameters


# --- PTQ ----------------------------------------------------------------------------------------


def calibration_indices(n_data: int, n: int, seed: int = 0) -> np.ndarray:
    """``n`` distinct indices out of ``n_data`` drawn with ``seed`` (sorted): reproducible. Pure."""
    if n_data < 1:
        raise EdgeoptError("the calibration split is empty", "give a dataset with training images")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_data, size=min(n, n_data), replace=False))


def calibration_batch(model: EdgeModel, data: ImageDataset, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` training images drawn reproducibly, in the model's input interface."""
    idx = calibration_indices(len(data), n, seed)
    return torch.from_numpy(model.meta.input.to_model_input(data.images[idx]))


def _chunks(x: torch.Tensor, size: int) -> Iterator[torch.Tensor]:
    for i in range(0, x.shape[0], size):
        yield x[i : i + size]


def run_batches(fn: nn.Module, x: torch.Tensor, size: int = 128) -> torch.Tensor:
    """``fn`` over ``x`` in chunks, no grad; a static-batch program is fed one sample at a time."""
    outs = []
    with torch.no_grad():
        try:
            for c in _chunks(x, size):
                outs.append(fn(c))
        except Exception:  # a batch-1 program (export could not keep the batch dynamic)
            outs = [fn(x[i : i + 1]) for i in range(x.shape[0])]
    if isinstance(outs[0], tuple | list):  # a multi-output model: the first output (calibration ignores them)
        return torch.cat([o[0] for o in outs])
    return torch.cat(outs)


class _BiasCorrector(torch.fx.Interpreter):
    """Runs a converted program once, correcting each layer's bias as its output is computed.

    At every conv/linear node in ``targets`` the per-channel mean of its output (over the whole
    batch) is compared with the float model's mean ``float_means[layer]``; the difference is
    subtracted from the layer's bias (via ``apply``) and from the output itself, so every later
    layer sees the corrected value, exactly as if the program were re-run with the new bias.
    """

    def __init__(self, gm: torch.fx.GraphModule, targets: dict[torch.fx.Node, str],
                 float_means: dict[str, torch.Tensor], apply: Any) -> None:  # fmt: skip
        super().__init__(gm)
        self.targets, self.float_means, self.apply = targets, float_means, apply

    def run_node(self, n: torch.fx.Node) -> Any:
        out = super().run_node(n)
        name = self.targets.get(n)
        if name is not None:
            shift = _channel_mean(out) - self.float_means[name]
            self.apply(name, shift)
            out = out - shift.to(out.dtype).reshape((1, -1) + (1,) * (out.ndim - 2))
        return out


def _channel_mean(t: torch.Tensor) -> torch.Tensor:
    """Per-channel (dim 1) mean over every other dim, in float64."""
    dims = [i for i in range(t.ndim) if i != 1]
    return t.double().mean(dim=dims)


def _layer_nodes(gm: torch.fx.GraphModule) -> dict[str, torch.fx.Node]:
    """conv/linear nodes of a converted program, keyed by the float layer owning their bias."""
    out = {}
    for n in gm.graph.nodes:
        if n.op == "call_function" and str(n.target) in ("aten.conv2d.default", "aten.linear.default"):
            if len(n.args) > 2 and isinstance(n.args[2], torch.fx.Node) and n.args[2].op == "get_attr":
                out[str(n.args[2].target).rsplit(".", 1)[0]] = n
    return out


def bias_shift(float_out: torch.Tensor, quant_out: torch.Tensor) -> torch.Tensor:
    """Per-channel (dim 1) mean of ``quant_out - float_out``: the bias a layer's quantization adds. Pure."""
    d = (quant_out - float_out).float()
    dims = [i for i in range(d.ndim) if i != 1]
    return d.mean(dim=dims)


def correct_biases(qm: QuantizedModule, x: torch.Tensor, max_samples: int = 1000) -> dict[str, float]:
    """Empirical bias correction in place, layer by layer in graph order. Returns |shift| per layer.

    The reference is the float model as it was before any correction: one float pass records the
    per-channel mean of every layer's output. Then one pass of the quantized program over the same
    images corrects the layers in graph order: at each layer the mean shift ``mean(quantized out) -
    mean(float out)`` is subtracted from its bias (in the float module and in the program alike) and
    from the output flowing on, so later layers see earlier layers already corrected. (The shift of
    a mean is the mean of the shift, so no float activations are kept.) Cost: one float pass plus
    one quantized pass over ``max_samples`` images (the activations of the whole batch are held
    once: ~70 MB for 500 CIFAR images through ResNet-8).
    """
    from edgeopt.compress.quantize.transforms import conv_links

    x = x[:max_samples]
    gm = qm.program(True)
    nodes = _layer_nodes(gm)
    layers = dict(qm.float_module.named_modules())
    # PT2E folds a batch norm into the conv before it: the program's conv output is the BN's output,
    # so that is the reference, and the BN's bias is the one to correct
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in layers.values())
    links = conv_links(qm.float_module, x[:1]) if has_bn else []  # (an export: skipped when there is no BN)
    after = {lk.first: layers[lk.bn] for lk in links if lk.bn in layers}
    carrier = {n: after.get(n, layers.get(n)) for n in nodes}
    names = [n for n in nodes if isinstance(layers.get(n), nn.Conv1d | nn.Conv2d | nn.Linear)
             and getattr(carrier[n], "bias", None) is not None]  # fmt: skip
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = dict.fromkeys(names, 0)

    def record(name: str):
        def hook(_m: nn.Module, _i: Any, out: torch.Tensor) -> None:
            dims = [i for i in range(out.ndim) if i != 1]
            s = out.detach().double().sum(dim=dims)
            sums[name] = sums[name] + s if name in sums else s
            counts[name] += out.numel() // max(out.shape[1], 1)

        return hook

    hooks = [carrier[n].register_forward_hook(record(n)) for n in names]
    try:
        run_batches(qm.float_module, x)
    finally:
        for h in hooks:
            h.remove()
    float_means = {n: sums[n] / max(counts[n], 1) for n in names if n in sums}
    names = [n for n in names if n in float_means]
    shifts: dict[str, float] = {}

    def apply(name: str, shift: torch.Tensor) -> None:
        bias = carrier[name].bias
        node = nodes[name]
        prog_bias = gm.get_parameter(str(node.args[2].target)) if _is_param(gm, node) else None
        with torch.no_grad():
            bias.sub_(shift.to(bias.dtype))
            if prog_bias is not None and prog_bias.data_ptr() != bias.data_ptr():
                prog_bias.sub_(shift.to(prog_bias.dtype))
        shifts[name] = float(shift.abs().max())

    with torch.no_grad():
        _BiasCorrector(gm, {nodes[n]: n for n in names}, float_means, apply).run(x)
    qm._programs.clear()  # rebuilt from the corrected float weights on next use
    return {n: shifts[n] for n in names if n in shifts}


def fast_correct_biases(qm: QuantizedModule, prepared: torch.fx.GraphModule, x: torch.Tensor,
                        max_samples: int = 1000) -> dict[str, float]:  # fmt: skip
    """NNCF's fast bias correction (``fastbias``) of ``qm``'s float module in place, with the weights as
    ``prepared``'s calibrated weight observers quantize them. Returns |shift| per corrected layer.
    Cost: one float pass over ``max_samples`` images plus one single-sample pass per layer."""
    from edgeopt.compress.quantize.fastbias import apply_fast_bias_correction
    from edgeopt.compress.quantize.transforms import conv_links

    x = x[:max_samples]
    obs = observers(prepared)
    layers = dict(qm.float_module.named_modules())
    wq = {}
    for layer, name in weight_observer_names(prepared).items():
        o, w = obs[name], layers[layer].weight.detach()
        scale = o.calculate_qparams()[0]
        scale = scale.reshape(-1, *([1] * (w.ndim - 1))) if o.per_channel else scale
        wq[layer] = torch.clamp(torch.round(w / scale), o.quant_min, o.quant_max) * scale
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in layers.values())
    links = conv_links(qm.float_module, x[:1]) if has_bn else []
    carriers = {lk.first: layers[lk.bn] for lk in links if lk.bn in layers}
    shifts = apply_fast_bias_correction(qm.float_module, x, wq, carriers)
    qm._programs.clear()  # rebuilt from the corrected float weights on next use
    return shifts


def _is_param(gm: torch.fx.GraphModule, node: torch.fx.Node) -> bool:
    try:
        gm.get_parameter(str(node.args[2].target))
        return True
    except AttributeError:
        return False


def weight_observer_names(prepared: torch.fx.GraphModule) -> dict[str, str]:
    """Layer path -> name of the observer on that layer's weight, in a prepared graph."""
    obs = observers(prepared)
    out = {}
    for n in prepared.graph.nodes:
        if n.op == "call_module" and n.target in obs and obs[n.target].per_channel:
            src = n.args[0]
            if isinstance(src, torch.fx.Node) and src.op == "get_attr" and str(src.target).endswith(".weight"):
                out[str(src.target).rsplit(".", 1)[0]] = n.target
    return out


def weight_grid(qm: QuantizedModule) -> dict[str, torch.Tensor]:
    """Layer path -> its float weights divided by its pinned per-channel scales (whole numbers when the
    program holds exactly those weights, as after GPTQ / AdaRound / BRECQ). Cost: one prepare."""
    prepared = prepare(qm.float_module, qm.example_input(), qm.recipe)
    pin_qparams(prepared, qm.spec["qparams"])
    obs = observers(prepared)
    mods = dict(qm.float_module.named_modules())
    out = {}
    for layer, name in weight_observer_names(prepared).items():
        s = obs[name].calculate_qparams()[0].reshape(-1, *([1] * (mods[layer].weight.ndim - 1)))
        out[layer] = mods[layer].weight.detach() / s
    return out


def layer_bits(module: nn.Module, recipe: QuantRecipe) -> dict[str, int]:
    """Weight bits of every conv/linear layer of ``module`` under ``recipe`` (0: kept float)."""
    return {n: recipe.layer_bits.get(n, recipe.weight_bits)
            for n, m in module.named_modules() if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Linear)}  # fmt: skip


def logits_layer(module: nn.Module) -> str | None:
    """Path of the last linear layer of ``module`` (module order): the classifier giving the logits."""
    last = [n for n, m in module.named_modules() if isinstance(m, nn.Linear)]
    return last[-1] if last else None


def stem_layer(module: nn.Module, example: torch.Tensor) -> str | None:
    """Path of the first conv/linear layer a forward pass of ``example`` runs: the one reading the input."""
    order: list[str] = []
    layers = [(n, m) for n, m in module.named_modules() if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Linear)]
    hooks = [m.register_forward_pre_hook(lambda *_, n=n: order.append(n)) for n, m in layers]
    was_training = module.training
    try:
        with torch.no_grad():
            module.eval()(example)
    finally:
        module.train(was_training)
        for h in hooks:
            h.remove()
    return order[0] if order else None


def with_float_layers(recipe: QuantRecipe, model: EdgeModel) -> QuantRecipe:
    """``recipe`` with the layers its ``float_ops`` name (``logits``, ``stem``) at 0 bits: they go through the
    float-layer machinery (``layer_bits``), in PTQ and in QAT alike."""
    found = {"logits": lambda: logits_layer(model.module),
             "stem": lambda: stem_layer(model.module, model.example_input(1))}  # fmt: skip
    floats = {name: 0 for op in recipe.float_ops if op in found and (name := found[op]()) is not None}
    if not floats:
        return recipe
    return QuantRecipe.from_json({**asdict(recipe), "layer_bits": {**recipe.layer_bits, **floats}})


def quantize_ptq(
    model: EdgeModel,
    data: ImageDataset,
    recipe: QuantRecipe | None = None,
    weight_steps: dict[str, list[float]] | None = None,
) -> EdgeModel:
    """Post-training quantization of ``model`` calibrated on ``data`` (a training split). See module doc.

    ``weight_steps`` (layer path -> per-channel scales) pins those layers' weight scales (QAT's
    learned steps). Returns a new ``EdgeModel`` (the input is untouched) with ``metrics`` in its
    last lineage step.
    """
    recipe = with_float_layers((recipe or QuantRecipe()).validate(), model)
    start = time.perf_counter()
    if getattr(model.module, "quantized", False):
        raise EdgeoptError("the model is already quantized", "quantize its float original instead")
    check_finite(model.module)
    float_module = copy.deepcopy(model.module).eval()
    x_calib = calibration_batch(model, data, recipe.calib_samples, recipe.seed)
    example = x_calib[:1]
    info: dict[str, Any] = {}
    if recipe.align != "none":
        from edgeopt.compress.quantize.align import adabn

        info["align"] = {recipe.align: adabn(float_module, x_calib)}  # before BN folding: AdaBN needs the BNs
    if recipe.fold_bn:
        from edgeopt.compress.quantize.transforms import fold_batchnorm

        info["bn_folded"] = fold_batchnorm(float_module, example)
    if recipe.cle:
        from edgeopt.compress.quantize.transforms import equalize

        info["cle_pairs"] = equalize(float_module, example, through_relu6=recipe.cle_through_relu6)
    if recipe.weight_rounding == "gptq":
        from edgeopt.compress.quantize.gptq import apply_gptq

        pinned = weight_steps or {}
        low = {n: b for n, b in layer_bits(float_module, recipe).items() if b == 4 and n not in pinned}
        steps = apply_gptq(float_module, low, x_calib, "mse")
        info["gptq_layers"] = sorted(steps)
        weight_steps = {**steps, **(weight_steps or {})}
    elif recipe.weight_rounding in ("adaround", "brecq"):
        pinned = weight_steps or {}
        bits = layer_bits(float_module, recipe)
        todo = {n: b for n, b in bits.items() if b in (4, 8) and n not in pinned}
        if any(b == 4 for b in todo.values()):  # a mix: learn the 4-bit layers' rounding, int8 stays nearest
            todo = {n: b for n, b in todo.items() if b == 4}
        if recipe.weight_rounding == "adaround":
            from edgeopt.compress.quantize.adaround import apply_adaround

            steps = apply_adaround(float_module, todo, x_calib, recipe.weight_method,
                                   time_budget_s=recipe.rounding_seconds, seed=recipe.seed)  # fmt: skip
        else:
            from edgeopt.compress.quantize.blockrecon import apply_brecq

            steps, info["brecq_blocks"] = apply_brecq(float_module, bits, sorted(todo), x_calib, recipe.weight_method,
                                                      recipe.calib, time_budget_s=recipe.rounding_seconds,
                                                      seed=recipe.seed)  # fmt: skip
        info[f"{recipe.weight_rounding}_layers"] = sorted(steps)
        weight_steps = {**steps, **pinned}
    prepared = prepare(float_module, example, recipe)
    require_integer(prepared, recipe.target)  # integer-only targets: refuse an op that would stay float
    info["float_ops"] = float_op_names(prepared)
    for o in output_observers(prepared).values():
        o.method = "minmax"  # clipping the logits would tie the top classes: the output keeps its full range
    if weight_steps:
        obs = observers(prepared)
        for layer, name in weight_observer_names(prepared).items():
            if layer in weight_steps:
                steps = weight_steps[layer]
                obs[name].fix_qparams(steps, [0] * len(steps))
    run_batches(prepared, x_calib)
    spec = {
        "recipe": asdict(recipe),
        "qparams": read_qparams(prepared),
        "input_shape": [1, *model.meta.input.shape],
    }
    qm = QuantizedModule(float_module, spec)
    qm._programs[True] = convert(prepared, True)
    if recipe.bias_correction and recipe.bias_method.startswith("fast"):
        info["fast_bias_shift_max"] = fast_correct_biases(qm, prepared, x_calib)
    if recipe.bias_correction and recipe.bias_method.endswith("empirical"):  # against the float model as it is now
        info["bias_shift_max"] = correct_biases(qm, x_calib)
    qm.eval()
    qm.program(True)
    info["seconds"] = round(time.perf_counter() - start, 2)
    return quantized_edge_model(model, qm, {"pass": "quantize", **_lineage(recipe), "metrics": info})


def _lineage(recipe: QuantRecipe) -> dict[str, Any]:
    d = {"method": recipe.method, "calib": recipe.calib, "calib_samples": recipe.calib_samples,
         "weight_bits": recipe.weight_bits}  # fmt: skip
    if recipe.layer_bits:
        d["layer_bits"] = dict(recipe.layer_bits)
    if recipe.target != "xnnpack":
        d["target"] = recipe.target
    return d


def quantized_edge_model(model: EdgeModel, qm: QuantizedModule, step: dict[str, Any]) -> EdgeModel:
    """An EdgeModel around ``qm`` whose ``arch`` records the float arch, recipe and parameters."""
    out = model.with_lineage(step, module=qm)
    out.meta.arch = {"kind": ARCH_KIND, "name": f"{model.meta.arch.get('name', 'model')}-int8",
                     "float": model.meta.arch, **qm.spec}  # fmt: skip
    return out


def float_model(model: EdgeModel) -> EdgeModel:
    """The float model inside a quantized one (BN-folded/equalized weights), or the model itself."""
    qm = model.module
    if not isinstance(qm, QuantizedModule):
        return model
    meta = copy.deepcopy(model.meta)
    meta.arch = dict(model.meta.arch.get("float", {}))
    return EdgeModel(qm.float_module, meta)
