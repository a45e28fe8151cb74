"""PT2E observers backed by edgeopt's calibration math, and the quantizer that places them.

``CalibrationObserver`` is a torchao ``UniformQuantizationObserverBase``: PT2E inserts it where the
XNNPACK quantizer asks for an observer, feeds it every calibration batch, and turns it into a
quantize/dequantize pair with what ``calculate_qparams`` returns. Per-tensor (activations) it keeps
a histogram and picks the range with ``calibration.choose_range``; per-channel (weights) it keeps
the latest weight and picks symmetric scales with ``calibration.weight_scales``. ``fix_qparams``
pins the parameters (loading a saved model, or QAT's learned steps), so re-running prepare/convert
rebuilds exactly the same integer program.

``EdgeQuantizer`` is the ExecuTorch ``XNNPACKQuantizer`` plus rules that make the integer graph as
lean as TFLite's own converter makes it: a zero ``pad``, an ``avg_pool2d`` and shape-only ops
(permute, reshape, view, flatten, squeeze) share their input's quantization parameters, and a
softmax that follows a quantized op gets int8 output with TFLite's fixed parameters (scale 1/256,
zero point -128). ``EdgeQuantizer(lean=False)`` applies the pad/pool rule only (the graphs of
models quantized before the other rules existed, so that they reload bit for bit). Without these rules each gets
parameters of its own and the runtimes add requantize / dequantize steps (on the MLPerf ResNet-8:
QUANTIZE before the classifier, DEQUANTIZE + float SOFTMAX after it).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer
from executorch.backends.xnnpack.quantizer.xnnpack_quantizer_utils import QuantizationConfig
from torchao.quantization.pt2e.observer import UniformQuantizationObserverBase
from torchao.quantization.pt2e.quantizer import (
    FixedQParamsQuantizationSpec,
    QuantizationAnnotation,
    QuantizationSpec,
    SharedQuantizationSpec,
)

from edgeopt.compress.quantize import calibration as cal

_Q_KEY = "quantization_annotation"
_PAD_OPS = (torch.ops.aten.pad.default, torch.ops.aten.constant_pad_nd.default)
_POOL_OPS = (torch.ops.aten.avg_pool2d.default,)
_WEIGHTED_OPS = (torch.ops.aten.conv1d.default, torch.ops.aten.conv2d.default, torch.ops.aten.linear.default)
# ops that only move values around: their output shares their input's quantization parameters
SHAPE_OPS = (
    torch.ops.aten.permute.default, torch.ops.aten.reshape.default, torch.ops.aten.view.default,
    torch.ops.aten.flatten.using_ints, torch.ops.aten.squeeze.dim, torch.ops.aten.squeeze.dims,
    torch.ops.aten.unsqueeze.default, torch.ops.aten._unsafe_view.default,
)  # fmt: skip
_SOFTMAX_OPS = (torch.ops.aten.softmax.int, torch.ops.aten._softmax.default)
# TFLite's int8 softmax requires exactly these output parameters (probabilities in steps of 1/256)
SOFTMAX_SCALE, SOFTMAX_ZERO_POINT = 1.0 / 256.0, -128


class CalibrationObserver(UniformQuantizationObserverBase):
    """Observer using ``method`` (minmax, percentile, entropy, mse, meanmax) to choose its quantization range.

    Per-tensor affine for activations (histogram of ``bins`` bins; cost: one ``histc``-sized pass
    per batch); symmetric for weights (``weight_method`` minmax or mse), per channel or, with
    ``qscheme=torch.per_tensor_symmetric``, one scale for the whole tensor (NPU / TFLite Micro
    fully-connected layers; see ``targets``).
    """

    def __init__(
        self,
        dtype: torch.dtype = torch.int8,
        qscheme: torch.qscheme = torch.per_tensor_affine,
        quant_min: int = -128,
        quant_max: int = 127,
        method: str = "minmax",
        percentile: float = 99.99,
        bins: int = cal.DEFAULT_BINS,
        ch_axis: int = 0,
        eps: float = cal.ACT_EPS,
        is_dynamic: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            dtype=dtype, qscheme=qscheme, quant_min=quant_min, quant_max=quant_max, eps=eps, is_dynamic=is_dynamic
        )
        self.method = method
        self.percentile = float(percentile)
        self.bins = int(bins)
        self.ch_axis = int(ch_axis)
        self.hist: cal.Histogram | None = None
        self.extremes: cal.SampleExtremes | None = None  # meanmax: per-sample min/max sums
        self.weight: np.ndarray | None = None
        self.fixed: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def per_channel(self) -> bool:
        return self.qscheme in (torch.per_channel_symmetric, torch.per_channel_affine)

    @property
    def is_weight(self) -> bool:
        """Symmetric observers hold weights (activations are per-tensor affine)."""
        return self.qscheme in (torch.per_channel_symmetric, torch.per_tensor_symmetric)

    @property
    def bits(self) -> int:
        return int(np.log2(self.quant_max - self.quant_min + 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fixed is None:
            if self.is_weight:
                self.weight = x.detach().float().cpu().numpy()
            else:
                self.hist = _merge_torch(self.hist, x.detach().float(), self.bins)
                if self.method == "meanmax" and x.ndim > 0:
                    self.extremes = self.extremes or cal.SampleExtremes({})
                    self.extremes.add(x.detach().float().cpu().numpy())
        return x

    def fix_qparams(self, scale: torch.Tensor | list[float], zero_point: torch.Tensor | list[int]) -> None:
        """Pin this observer's output: calibration data no longer changes it."""
        self.fixed = (
            torch.as_tensor(scale, dtype=torch.float32).reshape(-1),
            torch.as_tensor(zero_point, dtype=torch.int64).reshape(-1),
        )

    def observed_range(self) -> tuple[float, float] | None:
        """The (lo, hi) this observer's method picked, per-tensor only (None before calibration)."""
        if self.hist is None:
            return None
        if self.method == "meanmax":  # per-sample extremes (a 0-d tensor has none: its min and max)
            return cal.meanmax_range(self.extremes) if self.extremes is not None else cal.minmax_range(self.hist)
        return cal.choose_range(self.hist, self.method, self.percentile, self.quant_min, self.quant_max)

    @torch.jit.export
    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.fixed is not None:
            return self.fixed
        if self.is_weight:
            if self.weight is None:
                raise RuntimeError("weight observer ran no forward pass before calculate_qparams")
            if self.per_channel:
                scales = cal.weight_scales(self.weight, self.bits, self.method, axis=self.ch_axis)
                return torch.from_numpy(scales), torch.zeros(len(scales), dtype=torch.int64)
            scale = cal.weight_scales(self.weight.reshape(1, -1), self.bits, self.method)
            return torch.from_numpy(scale.reshape(1)), torch.zeros(1, dtype=torch.int64)
        if self.hist is None:  # never reached by calibration data (e.g. a dead branch): a neutral scale
            return torch.tensor([1.0]), torch.tensor([0])
        lo, hi = self.observed_range()
        scale, zp = cal.qparams_from_range(lo, hi, self.quant_min, self.quant_max, eps=float(self.eps))
        return torch.tensor([scale], dtype=torch.float32), torch.tensor([zp], dtype=torch.int64)

    def extra_repr(self) -> str:
        return f"method={self.method}, qscheme={self.qscheme}, range=[{self.quant_min}, {self.quant_max}]"


def _merge_torch(h: cal.Histogram | None, x: torch.Tensor, bins: int) -> cal.Histogram:
    """``calibration.merge_into`` with the counting done by ``torch.histc`` (several times faster)."""
    if x.numel() == 0:
        return h if h is not None else cal.Histogram(np.zeros(bins), 0.0, 0.0)
    mn, mx = torch.aminmax(x)
    lo, hi = float(mn), float(mx)
    if not (np.isfinite(lo) and np.isfinite(hi)):  # rare: drop NaN/Inf, then count the rest
        x = x[torch.isfinite(x)]
        if x.numel() == 0:
            return h if h is not None else cal.Histogram(np.zeros(bins), 0.0, 0.0)
        lo, hi = float(x.min()), float(x.max())
    if h is not None and h.total > 0:
        lo, hi = min(lo, h.lo), max(hi, h.hi)
    if hi <= lo:
        return cal.merge_into(h, x.cpu().numpy(), bins)
    add = torch.histc(x, bins, lo, hi).double().cpu().numpy()
    if h is None or h.total == 0:
        return cal.Histogram(add, lo, hi)
    return cal.Histogram(cal.rebin(h, lo, hi).counts + add, lo, hi)


def weight_spec(bits: int = 8, method: str = "minmax", per_channel: bool = True) -> QuantizationSpec:
    """Symmetric weight spec (zero point 0, range ±(2^(bits-1) - 1)): one scale per output channel
    (``ch_axis`` 0) or, with ``per_channel=False``, one for the whole tensor."""
    qmax = 2 ** (bits - 1) - 1
    qscheme = torch.per_channel_symmetric if per_channel else torch.per_tensor_symmetric
    return QuantizationSpec(
        dtype=torch.int8,
        quant_min=-qmax,
        quant_max=qmax,
        qscheme=qscheme,
        ch_axis=0 if per_channel else None,
        is_dynamic=False,
        observer_or_fake_quant_ctr=CalibrationObserver.with_args(
            method=method, qscheme=qscheme, quant_min=-qmax, quant_max=qmax
        ),
    )


def quantization_config(
    calib: str = "entropy", weight_bits: int = 8, weight_method: str = "minmax", percentile: float = 99.99,
    per_channel: bool = True,
) -> QuantizationConfig:  # fmt: skip
    """XNNPACK-style config: int8 per-tensor affine activations observed with ``calib``, symmetric
    weights of ``weight_bits`` bits (4-bit values are carried in int8 storage), per channel unless
    ``per_channel=False``."""
    if calib not in cal.CALIBRATION_METHODS:
        raise ValueError(f"unknown calibration method '{calib}'")
    act = QuantizationSpec(
        dtype=torch.int8,
        quant_min=-128,
        quant_max=127,
        qscheme=torch.per_tensor_affine,
        is_dynamic=False,
        observer_or_fake_quant_ctr=CalibrationObserver.with_args(method=calib, percentile=percentile),
    )
    return QuantizationConfig(act, act, weight_spec(weight_bits, weight_method, per_channel), None, False)


class EdgeQuantizer(XNNPACKQuantizer):
    """``XNNPACKQuantizer`` whose zero pads and average pools share their input's quantization parameters.

    ``weight_specs`` (layer module path -> weight ``QuantizationSpec``) overrides the weight spec of
    those conv/linear layers after annotation (per-layer bits). XNNPACK's own ``set_module_name``
    cannot do it here: its filter must match the weight's ``get_attr`` node, which carries no module
    stack in an exported graph, so the layer would silently stay float.

    ``op_weight_specs`` (``aten.conv2d`` / ``aten.linear`` -> weight spec) does the same for every layer
    of that kind (a target whose fully-connected kernels take per-tensor weights only); a
    ``weight_specs`` entry for the layer itself takes precedence.
    """

    def __init__(self, lean: bool = True) -> None:
        super().__init__()
        self.weight_specs: dict[str, QuantizationSpec] = {}
        self.op_weight_specs: dict[Any, QuantizationSpec] = {}
        self.lean = lean  # False: pads and pools only (models quantized before the shape/softmax rules)
        # True (``QuantRecipe.float_ops`` "pool"): an avg_pool2d is not annotated, so the tensor after it gets an
        # observer of its own (NNCF's choice: a global pool's output spans a fraction of its input's range)
        self.float_pools = False
        # True (``float_ops`` "softmax"): the softmax is not annotated, so it reads the int8 logits dequantized
        # and runs in float (ONNX Runtime: one DequantizeLinear + Softmax instead of QLinearSoftmax + its output)
        self.float_softmax = False

    def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
        # skip the batch-norm and transposed-conv patterns when the graph has none (prepare_pt2e has
        # already folded PTQ batch norms): their subgraph matching is most of annotate's ~5 s
        targets = {str(n.target) for n in model.graph.nodes if n.op == "call_function"}
        has_bn = any("batch_norm" in t for t in targets)
        has_tconv = any("conv_transpose" in t for t in targets)
        self.SUPPORTED_PATTERNS = [
            p for p in XNNPACKQuantizer.SUPPORTED_PATTERNS
            if (has_bn or "_bn" not in p.name) and (has_tconv or "transpose" not in p.name)
        ]  # fmt: skip
        model = super().annotate(model)
        if self.weight_specs or self.op_weight_specs:
            for n in model.graph.nodes:
                if n.op != "call_function" or n.target not in _WEIGHTED_OPS or _Q_KEY not in n.meta:
                    continue
                stack = list((n.meta.get("nn_module_stack") or {}).values())
                path = stack[-1][0] if stack else None
                w = n.args[1] if len(n.args) > 1 else None
                spec = self.weight_specs.get(path, self.op_weight_specs.get(n.target))
                if spec is not None and w in n.meta[_Q_KEY].input_qspec_map:
                    n.meta[_Q_KEY].input_qspec_map[w] = spec
        for n in model.graph.nodes:
            if n.op != "call_function":
                continue
            if n.target in _SOFTMAX_OPS:
                if self.lean and not self.float_softmax:
                    _annotate_softmax(n)
                continue
            if n.target not in _PAD_OPS + _POOL_OPS + (SHAPE_OPS if self.lean else ()):
                continue
            if self.float_pools and n.target in _POOL_OPS:
                continue
            if n.target in _POOL_OPS + SHAPE_OPS:
                mode, value = "constant", 0.0
            elif n.target == torch.ops.aten.pad.default:
                mode = n.args[2] if len(n.args) > 2 else n.kwargs.get("mode", "constant")
                value = n.args[3] if len(n.args) > 3 else n.kwargs.get("value", 0.0)
            else:
                mode, value = "constant", n.args[2] if len(n.args) > 2 else n.kwargs.get("value", 0.0)
            if mode != "constant":
                continue
            prev = n.args[0]
            ann = prev.meta.get(_Q_KEY) if isinstance(prev, torch.fx.Node) else None
            if value not in (0, 0.0, None) or ann is None or ann.output_qspec is None:
                continue
            if _Q_KEY in n.meta and n.meta[_Q_KEY]._annotated:
                continue
            shared = SharedQuantizationSpec(prev)
            n.meta[_Q_KEY] = QuantizationAnnotation(
                input_qspec_map={prev: shared}, output_qspec=shared, _annotated=True
            )
        return model


def _annotate_softmax(n: torch.fx.Node) -> None:
    """int8 softmax over the last dim of a quantized tensor: input as its producer, output fixed 1/256."""
    prev = n.args[0]
    ann = prev.meta.get(_Q_KEY) if isinstance(prev, torch.fx.Node) else None
    dim = n.args[1] if len(n.args) > 1 else n.kwargs.get("dim", -1)
    rank = len(prev.meta["val"].shape) if isinstance(prev, torch.fx.Node) and "val" in prev.meta else None
    if ann is None or ann.output_qspec is None or rank is None or dim not in (-1, rank - 1):
        return
    if _Q_KEY in n.meta and n.meta[_Q_KEY]._annotated:
        return
    out = FixedQParamsQuantizationSpec(
        dtype=torch.int8, scale=SOFTMAX_SCALE, zero_point=SOFTMAX_ZERO_POINT, quant_min=-128, quant_max=127,
        qscheme=torch.per_tensor_affine,
    )  # fmt: skip
    n.meta[_Q_KEY] = QuantizationAnnotation(
        input_qspec_map={prev: SharedQuantizationSpec(prev)}, output_qspec=out, _annotated=True
    )
