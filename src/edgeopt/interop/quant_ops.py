"""Quantized graph IR: the ``quant`` and ``dynamic_quant`` ops, quantized weights, integer export.

An imported full-integer ``.tflite`` (``tflite_import``) becomes an ordinary graph IR (float layers
holding the file's dequantized weights) in which:

- every int8 activation tensor of the file is a ``quant`` node carrying that tensor's scale and zero
  point (``{"scale", "zero_point", "qmin", "qmax", "rounding"}``): the value flowing on is the real
  value ``(q - z) * s`` of LiteRT's integer ``q``;
- every conv/linear with int8 weights carries ``attrs["weight_quant"]`` (per-output-channel scales,
  symmetric, ``[-127, 127]``): the layer computes with ``round(w / s) * s``, so the stored float
  weights may be fine-tuned (quantization-aware, straight-through gradients) and stay on the file's grid;
- a *hybrid* op (int8 weights, float activations: LiteRT's dynamic-range quantization) gets a
  ``dynamic_quant`` node on its input: the activations are quantized per batch element with
  parameters computed from that element's own range, as LiteRT's XNNPACK delegate does (asymmetric
  int8, zero point nudged to an integer: XNNPACK's ``qd8`` convert; depthwise convs, which XNNPACK
  leaves to TFLite's own kernel, by that kernel's rules: ``scheme="builtin_asymmetric"``), or
  symmetrically (``scheme="symmetric"``: TFLite's builtin hybrid kernels).

How ``quant`` runs depends on ``GraphModule.qdq_mode``: ``"sim"`` (default) computes
``clamp(round(x / s) + z) - z) * s`` in PyTorch with a straight-through gradient; ``"qdq"`` and
``"fold"`` emit PT2E's ``quantized_decomposed`` quantize/dequantize ops (``"fold"``: int8 weight
constants), i.e. the same program ``convert_pt2e`` produces, so ``compress.quantize.deploy`` turns it
into XNNPACK int8 (.pte), int8 LiteRT (.tflite) and QDQ ONNX artifacts (``QuantGraphModule.export_artifact``).

Cost: ``sim`` adds a few elementwise ops per quantized tensor (an imported int8 ResNet-8 runs at
roughly the float graph's speed); ``program`` is one ``torch.export`` (~1 s).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

Attrs = dict[str, Any]
QMIN, QMAX = -128, 127
WEIGHT_QMAX = 127  # TFLite int8 weights are symmetric in [-127, 127]


def _away(v: torch.Tensor) -> torch.Tensor:
    return torch.sign(v) * torch.floor(torch.abs(v) + 0.5)


def _codes(x: torch.Tensor, s: float, z: int, rounding: str) -> torch.Tensor:
    """Unclamped integer codes of ``x``: ``even`` rounds ``x/s`` half to even then adds ``z`` (XNNPACK's
    float requantization, lrintf); ``away`` rounds ``x/s`` half away from zero (TFLite's QUANTIZE,
    std::round); ``pool`` rounds the code ``x/s + z`` half away from zero (TFLite's integer average
    pool divides the sum of codes)."""
    v = x / s
    if rounding == "pool":
        return _away(v + z)
    return (_away(v) if rounding == "away" else torch.round(v)) + z


def _ste(x: torch.Tensor, y: torch.Tensor, lo: torch.Tensor | float, hi: torch.Tensor | float) -> torch.Tensor:
    """``y`` forward; gradient of ``x`` passed straight through inside [lo, hi] (clipped values get none)."""
    xc = torch.minimum(torch.maximum(x, torch.as_tensor(lo, dtype=x.dtype)), torch.as_tensor(hi, dtype=x.dtype))
    return xc + (y - xc).detach()


def fake_quant(x: torch.Tensor, a: Attrs, mode: str = "sim") -> torch.Tensor:
    """Per-tensor affine quantize-dequantize of ``x`` with ``a``'s scale/zero point (see module doc)."""
    s, z = float(a["scale"]), int(a["zero_point"])
    qmin, qmax = int(a["qmin"]), int(a["qmax"])
    if mode != "sim":
        qd = torch.ops.quantized_decomposed
        q = qd.quantize_per_tensor.default(x, s, z, qmin, qmax, torch.int8)
        return qd.dequantize_per_tensor.default(q, s, z, qmin, qmax, torch.int8)
    rounding = a.get("rounding", "even")
    if not (x.requires_grad and torch.is_grad_enabled()):  # inference: in place, few passes over memory
        v = torch.div(x, s)
        if rounding == "even":
            v.round_().add_(z)
        else:
            v = _codes(x, s, z, rounding)
        return v.clamp_(qmin, qmax).sub_(z).mul_(s)
    q = torch.clamp(_codes(x, s, z, rounding), qmin, qmax)
    return _ste(x, (q - z) * s, (qmin - z) * s, (qmax - z) * s)


def dynamic_codes(x: torch.Tensor, scheme: str = "asymmetric") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-batch-element int8 codes of ``x`` (shape ``[N, ...]``) with their dequantization scale and
    zero point, bit for bit as LiteRT computes them for a hybrid op. Pure.

    ``asymmetric``: XNNPACK's dynamic quantization (``qd8``: what LiteRT's default delegate runs for
    hybrid conv and fully-connected ops): range ``[min(0, lo), max(0, hi)]``, inverse scale
    ``255 / (hi - lo)`` in float32, zero point taken from the end with the smaller error and rounded
    half to even, codes ``rint(x * inv) + zp`` clamped to int8, dequantization scale ``1 / inv`` in
    float32. ``builtin_asymmetric``: TFLite's own hybrid depthwise kernel (``EvalHybridPerChannel``;
    LiteRT 2.3's XNNPACK delegate does not take hybrid depthwise convs): range as above, scale
    ``float32(float32(hi - lo) / 255.0)`` (the division in float64), zero point from that float64 scale
    rounded half away from zero, codes ``round_away(float32(x * float32(1 / scale))) + zp``.
    ``symmetric`` (TFLite's builtin hybrid kernels): scale ``max|x| / 127``, zero point 0, codes rounded
    half away from zero.
    """
    flat = x.detach().reshape(x.shape[0], -1)
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    if scheme == "builtin_asymmetric":
        rmin = torch.clamp(flat.float().amin(1), max=0.0)
        rmax = torch.clamp(flat.float().amax(1), min=0.0)
        same = rmax == rmin  # all zeros: TFLite writes zero codes, scale 1, offset 0
        scale64 = torch.where(same, torch.ones_like(rmax), rmax - rmin).double() / float(QMAX - QMIN)
        lo, hi = rmin.double() / scale64, rmax.double() / scale64
        zp = _away(torch.where(-QMIN + lo.abs() < QMAX + hi.abs(), QMIN - lo, QMAX - hi).clamp(QMIN, QMAX))
        zp = torch.where(same, torch.zeros_like(zp), zp).float().reshape(shape)
        scale = torch.where(same, torch.ones_like(rmax), scale64.float()).reshape(shape)
        codes = torch.clamp(_away(x * torch.reciprocal(scale).to(x.dtype)) + zp.to(x.dtype), QMIN, QMAX)
        return codes, scale, zp.to(x.dtype)
    if scheme == "symmetric":
        scale = (flat.double().abs().amax(1) / WEIGHT_QMAX).float()
        scale = torch.where(scale > 0, scale, torch.ones_like(scale)).reshape(shape)
        zp = torch.zeros(shape, dtype=x.dtype)
        return torch.clamp(_away(x * torch.reciprocal(scale)), QMIN, QMAX), scale, zp
    # float32 throughout, in XNNPACK's order (xnn_f32_qd8_asymmetric_quantization_params): a code
    # flipped by a different rounding would cascade through later layers' dynamic ranges
    rmin = torch.clamp(flat.float().amin(1), max=0.0)
    rmax = torch.clamp(flat.float().amax(1), min=0.0)
    same = rmax == rmin
    inv = torch.where(same, torch.ones_like(rmax), torch.tensor(float(QMAX - QMIN)) / (rmax - rmin))
    lo, hi = rmin * inv, rmax * inv
    zp = torch.where((QMIN + lo) + (QMAX + hi) > 0, QMIN - lo, QMAX - hi)
    zp = torch.round(zp.clamp(QMIN, QMAX)).reshape(shape)
    inv = inv.reshape(shape)
    codes = torch.clamp(torch.round(x * inv.to(x.dtype)) + zp.to(x.dtype), QMIN, QMAX)
    return codes, torch.reciprocal(inv), zp.to(x.dtype)


def _fake(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor, zp: torch.Tensor) -> torch.Tensor:
    return _ste(x, (q - zp) * scale, (QMIN - zp) * scale, (QMAX - zp) * scale)


def dynamic_fake_quant(x: torch.Tensor, a: Attrs) -> torch.Tensor:
    """Quantize-dequantize ``x`` with parameters from its own range, per batch element (hybrid ops):
    ``dynamic_codes``' values, with a straight-through gradient."""
    return _fake(x, *dynamic_codes(x, a.get("scheme", "asymmetric")))


def _per_row(layer: nn.Module) -> bool:
    """Whether XNNPACK runs the layer as a fully-connected op over rows (each quantized on its own): a
    linear layer's rows are all its leading dimensions, a 1x1 stride-1 unpadded conv's are its pixels."""
    if isinstance(layer, nn.Linear):
        return True
    pointwise = (layer.kernel_size, layer.stride, layer.groups) == ((1, 1), (1, 1), 1)
    return pointwise and layer.padding in ((0, 0), 0, "valid")


def _input_codes(layer: nn.Module, x: torch.Tensor, scheme: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``dynamic_codes`` of a hybrid layer's input at the granularity LiteRT's XNNPACK delegate uses:
    per row for fully-connected work (``_per_row``), per batch element (image) otherwise."""
    if not _per_row(layer):
        return dynamic_codes(x, scheme)
    rows = x.movedim(1, -1) if isinstance(layer, nn.Conv2d) else x
    q, scale, zp = dynamic_codes(rows.reshape(-1, rows.shape[-1]), scheme)

    def back(t: torch.Tensor) -> torch.Tensor:
        t = t.reshape(*rows.shape[:-1], -1)
        return t.movedim(-1, 1) if isinstance(layer, nn.Conv2d) else t

    return back(q), back(scale), back(zp)


def exact_inference(x: torch.Tensor) -> bool:
    """Whether an op should compute bit for bit as LiteRT does: in eager inference only.
    Training (gradients through ``x``) and export (``torch.export`` traces the module) take the plain
    float ops instead, which are differentiable and lower to every runtime's own kernels."""
    return not (x.requires_grad and torch.is_grad_enabled()) and not torch.compiler.is_compiling()


def xnnpack_window_sum(windows: torch.Tensor) -> torch.Tensor:
    """Sum of ``windows`` (``[..., K, L]``: K window elements per output) over K, in float32, in the order
    of XNNPACK's f32 average-pooling microkernel (``f32-avgpool-9p``, all its SIMD variants). Pure.

    The kernel takes the window 9 elements at a time and adds each group's sum to the running total
    (``prev + s``, ``prev`` 0 at first); a last, shorter group is padded with zeros. Inside a group of
    ``i0..i8`` the tree is ``((i2 + i3) + (i4 + i5)) + (((i0 + i1) + i8) + (i6 + i7))``. Hand-written
    because no PyTorch reduction fixes its association: ``sum``/``avg_pool2d`` round differently in about
    half of the outputs, by 1 ulp, which is enough to move a hybrid layer's dynamic quantization off a tie.
    """
    total: torch.Tensor | None = None
    for start in range(0, windows.shape[-2], 9):
        i = list(windows[..., start : start + 9, :].unbind(-2))
        i += [torch.zeros_like(i[0])] * (9 - len(i))
        s = ((i[2] + i[3]) + (i[4] + i[5])) + (((i[0] + i[1]) + i[8]) + (i[6] + i[7]))
        total = s if total is None else total + s
    assert total is not None
    return total


def xnnpack_avg_pool2d(
    x: torch.Tensor, kernel_size: tuple[int, int], stride: tuple[int, int], pads: tuple[int, int, int, int]
) -> torch.Tensor:
    """TFLite's AVERAGE_POOL_2D (padded cells not counted) on NCHW float32 ``x``, bit for bit as LiteRT's
    XNNPACK delegate computes it. ``pads``: (left, right, top, bottom). Pure.

    XNNPACK walks each window through an indirection buffer that is column-major (``kx`` outer, ``ky``
    inner), padded cells pointing at a zero row; the sum is ``xnnpack_window_sum``'s, then multiplied by
    ``1/count`` rounded to float32 (not divided by ``count``). Checked against LiteRT 2.3 on random
    heavy-tailed inputs (8x8 and 7x7 global, 2x2/3x3/4x4/5x5 strided and SAME-padded pools): every
    output equal. Cost: the window is materialized (``unfold``, K times the output's size) and summed in
    ~K/9 * 8 elementwise adds; for the global pool before a classifier that is the input's own size.
    """
    import torch.nn.functional as F

    kh, kw = kernel_size
    left, right, top, bottom = pads
    padded = F.pad(x, [left, right, top, bottom])
    n, c = x.shape[:2]
    cols = F.unfold(padded, (kh, kw), stride=stride)  # [N, C*kh*kw, L], window index ky*kw + kx
    windows = cols.reshape(n, c, kh, kw, -1).transpose(2, 3).reshape(n, c, kh * kw, -1)  # kx*kh + ky
    ones = F.pad(torch.ones((1, 1, *x.shape[2:]), dtype=torch.float64), [left, right, top, bottom])
    count = F.unfold(ones, (kh, kw), stride=stride).sum(1)  # real cells per output
    y = xnnpack_window_sum(windows) * (1.0 / count).to(x.dtype)
    out_h = (padded.shape[2] - kh) // stride[0] + 1
    return y.reshape(n, c, out_h, -1)


def xnnpack_mean(x: torch.Tensor, dims: list[int], keepdim: bool) -> torch.Tensor:
    """TFLite's MEAN over ``dims`` of float32 ``x`` as LiteRT computes it (XNNPACK delegate on) when the
    file's reduced axes are contiguous and exclude its innermost axis (a global average pool written
    as MEAN over H, W of NHWC). ``dims``: the reduced dims of ``x``, contiguous and in the file's axis order. Pure.

    Such a reduction is over rows of the innermost axis: added one row after another, in row-major order,
    then multiplied by ``1/n`` rounded to float32. Checked against LiteRT 2.3 (8x8, 7x7, 3x5, 16x16,
    64x64 spatial means, one-axis means of 3-D and 4-D tensors): every output equal; a reduction over the
    innermost axis uses another tree and is left to PyTorch. Hand-written for the reason
    ``xnnpack_window_sum`` is. Cost: one elementwise add per reduced row.
    """
    rows = x.flatten(dims[0], dims[-1])
    total = rows.select(dims[0], 0)
    for i in range(1, rows.shape[dims[0]]):
        total = total + rows.select(dims[0], i)
    y = total * torch.tensor(1.0 / rows.shape[dims[0]], dtype=x.dtype)
    if keepdim:
        for d in dims:
            y = y.unsqueeze(d)
    return y


def hybrid_layer(gm: nn.Module, name: str, layer: nn.Module, x: torch.Tensor, wq: Attrs) -> torch.Tensor:
    """A conv/linear with int8 weights on float input, computed as LiteRT's hybrid kernels compute it.

    The input is quantized on the fly (``_input_codes``: per image, or per row where XNNPACK runs the
    layer as a fully-connected op); the integer accumulator ``sum((q - z) * w_q)`` is exact (float64),
    then ``fma(float32(acc * s_x), s_w, bias)``, XNNPACK's ``qd8-f32-qc8w`` output stage, or for
    ``builtin_asymmetric`` layers (depthwise convs, which LiteRT runs in TFLite's own kernel)
    ``float32(acc * s_w) * s_x + bias`` rounded after each operation. Bit for bit, so that a code
    flipped by float noise does not cascade into later layers' dynamic quantization. While training
    (gradients on) or exporting, the same values through straight-through fake quantization in float32
    ops. Cost: the layer in float64 (~2-3x its float32 time).
    """
    import torch.nn.functional as F

    q, scale, zp = _input_codes(layer, x, wq["dynamic"])
    if not exact_inference(x) or getattr(gm, "qdq_mode", "sim") != "sim":
        w = quantized_weight(gm, name, layer.weight, wq)
        xq = _fake(x, q, scale, zp)
        if isinstance(layer, nn.Conv2d):
            return F.conv2d(xq, w, layer.bias, layer.stride, layer.padding, layer.dilation, layer.groups)
        return F.linear(xq, w, layer.bias)
    codes = (q - zp).double()
    w_int = int_weights(gm, name, layer.weight, wq).double()
    if isinstance(layer, nn.Conv2d):
        acc = F.conv2d(codes, w_int, None, layer.stride, layer.padding, layer.dilation, layer.groups)
        cshape: tuple[int, ...] = (1, -1, 1, 1)
    else:
        acc = F.linear(codes, w_int)
        cshape = (1,) * (acc.ndim - 1) + (-1,)
    w_scale = _scales(gm, name, wq, layer.weight).reshape(cshape)
    if wq["dynamic"] == "builtin_asymmetric":  # TFLite's DepthwiseConvHybridGeneral: acc * s_w * s_x + bias
        out32 = acc.float() * w_scale.float() * scale.float()
        return out32 if layer.bias is None else out32 + layer.bias.detach().reshape(cshape)
    dequantized = acc.float() * scale.float()
    # float32 operands multiplied and added in float64, then rounded to float32: the fused multiply-add
    # (up to a double-rounding tie, vanishingly rare)
    out = dequantized.double() * w_scale.double()
    if layer.bias is not None:
        out = out + layer.bias.detach().reshape(cshape).double()
    return out.float()


def _scales(gm: nn.Module, name: str, wq: Attrs, w: torch.Tensor) -> torch.Tensor:
    buf = getattr(getattr(gm, "wscales", None), name, None)
    if buf is not None:
        return buf
    return torch.as_tensor(wq["scale"], dtype=torch.float32).expand(w.shape[0]).contiguous()


def quantized_weight(gm: nn.Module, name: str, w: torch.Tensor, wq: Attrs) -> torch.Tensor:
    """The layer's weight on its int8 grid: ``round(w / s) * s`` per output channel (see module doc)."""
    scale = _scales(gm, name, wq, w)
    qmax = int(wq.get("qmax", WEIGHT_QMAX))
    mode = getattr(gm, "qdq_mode", "sim")
    qd = torch.ops.quantized_decomposed if mode != "sim" else None
    if mode in ("fold", "qdq"):
        zeros = getattr(gm.wzeros, name)
    if mode == "fold":
        return qd.dequantize_per_channel.default(getattr(gm.qweights, name), scale, zeros, 0, -qmax, qmax, torch.int8)
    if mode == "qdq":
        q = qd.quantize_per_channel.default(w, scale, zeros, 0, -qmax, qmax, torch.int8)
        return qd.dequantize_per_channel.default(q, scale, zeros, 0, -qmax, qmax, torch.int8)
    s = scale.reshape((-1,) + (1,) * (w.ndim - 1))
    q = torch.clamp(torch.round(w / s), -qmax, qmax)
    return _ste(w, q * s, -qmax * s, qmax * s)


def int_weights(gm: nn.Module, name: str, w: torch.Tensor, wq: Attrs) -> torch.Tensor:
    """The layer's int8 weight codes (what an integer artifact stores). Pure."""
    s = _scales(gm, name, wq, w).reshape((-1,) + (1,) * (w.ndim - 1))
    qmax = int(wq.get("qmax", WEIGHT_QMAX))
    return torch.clamp(torch.round(w.detach() / s), -qmax, qmax).to(torch.int8)


def duplicate_dequantize(gm: torch.fx.GraphModule) -> int:
    """Give each consumer of a per-tensor dequantize its own copy, in place, as ``convert_pt2e`` leaves
    its programs (XNNPACK's partitioner pairs each dequantize with one op). Returns the copies made."""
    target = torch.ops.quantized_decomposed.dequantize_per_tensor.default
    made = 0
    for n in list(gm.graph.nodes):
        if n.op != "call_function" or n.target != target or len(n.users) < 2:
            continue
        for user in list(n.users)[1:]:
            with gm.graph.inserting_before(user):
                copy_ = gm.graph.call_function(target, n.args, dict(n.kwargs))
            copy_.meta.update(n.meta)
            user.replace_input_with(n, copy_)
            made += 1
    return made


def dequantize_ir(ir: dict[str, Any]) -> tuple[dict[str, Any], dict[str, int]]:
    """A copy of ``ir`` with every quantization removed (float activations and weights), and counts. Pure.

    ``quant`` and ``dynamic_quant`` nodes become pass-through (their users read the input directly);
    ``weight_quant`` is dropped (the stored weights already hold the dequantized values).
    """
    ir = copy.deepcopy(ir)
    alias: dict[str, str] = {}
    kept = []
    counts = {"activation_quant": 0, "dynamic_quant": 0, "weight_quant": 0}
    for node in ir["nodes"]:
        node["inputs"] = [alias.get(v, v) for v in node["inputs"]]
        if node["op"] in ("quant", "dynamic_quant"):
            counts["activation_quant" if node["op"] == "quant" else "dynamic_quant"] += 1
            alias[node["outputs"][0]] = node["inputs"][0]
            continue
        if node.get("attrs", {}).pop("weight_quant", None) is not None:
            counts["weight_quant"] += 1
        kept.append(node)
    ir["nodes"] = kept
    ir["outputs"] = [alias.get(v, v) for v in ir["outputs"]]
    return ir, counts


def _graph_base() -> type:
    from edgeopt.interop.graph import GraphModule

    return GraphModule


class QuantGraphModule(_graph_base()):  # type: ignore[misc]
    """A graph IR with static int8 quantization: runs as PyTorch simulation, exports integer artifacts.

    ``quantized`` is True, so edgeopt's export uses ``export_artifact`` and the quantized parity gate.
    The per-channel weight scales are non-persistent buffers (``wscales``) rebuilt from the IR.
    """

    quantized = True

    def __init__(self, ir: dict[str, Any]) -> None:
        super().__init__(ir)
        self.wscales, self.wzeros = nn.Module(), nn.Module()
        for node in self.ir["nodes"]:
            wq = node.get("attrs", {}).get("weight_quant")
            if wq is not None:
                layer = self.mods[node["name"]]
                s = torch.as_tensor(wq["scale"], dtype=torch.float32).expand(layer.weight.shape[0]).contiguous()
                self.wscales.register_buffer(node["name"], s, persistent=False)
                self.wzeros.register_buffer(node["name"], torch.zeros(len(s), dtype=torch.int64), persistent=False)

    def qdq_module(self, fold: bool = True) -> QuantGraphModule:
        """A copy that runs PT2E's quantize/dequantize ops (``fold``: int8 weight constants), for export."""
        import torchao.quantization.pt2e.quantize_pt2e  # noqa: F401  (registers the quantized_decomposed ops)

        m = copy.deepcopy(self).eval()
        m.qdq_mode = "fold" if fold else "qdq"
        if fold:
            m.qweights = nn.Module()
            for node in m.ir["nodes"]:
                wq = node.get("attrs", {}).get("weight_quant")
                if wq is not None:
                    w = m.mods[node["name"]].weight
                    m.qweights.register_buffer(node["name"], int_weights(m, node["name"], w, wq))
        return m

    def program(self, fold: bool = True, x: torch.Tensor | None = None) -> torch.fx.GraphModule:
        """The integer program as PT2E writes it (``torch.export`` of quantize/dequantize ops).

        ``fold=True``: int8 weight constants + per-channel dequantize (ExecuTorch, ONNX);
        ``fold=False``: float weights + quantize/dequantize (what litert-torch wants).
        """
        if x is None:
            shape = [1 if s is None else int(s) for s in self.ir["inputs"][0]["shape"]]
            x = torch.zeros(shape)
        with torch.no_grad():
            gm = torch.export.export(self.qdq_module(fold), (x,)).module()
        gm.graph.eliminate_dead_code()
        duplicate_dequantize(gm)
        gm.recompile()
        return gm

    def export_artifact(self, fmt: str, x: torch.Tensor) -> bytes:
        """Integer artifact bytes for ``fmt`` (pte, tflite, onnx), through ``compress.quantize.deploy``."""
        from edgeopt.compress.quantize import deploy
        from edgeopt.errors import EdgeoptError

        if fmt == "pte":
            program = self.program(True, x)
            deploy.float_pads(program)  # XNNPACK's lowering fails on an int8 pad feeding a strided conv
            return deploy.export_pte(program, x)
        if fmt == "tflite":
            return deploy.export_tflite(self.program(False, x), x)
        if fmt == "onnx":
            return deploy.export_onnx(self.program(True, x), x)
        raise EdgeoptError(f"no integer export for format '{fmt}'", "use pte, tflite or onnx")
