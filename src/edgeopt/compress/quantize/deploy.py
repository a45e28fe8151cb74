"""A quantized model as real integer artifacts: ExecuTorch (XNNPACK int8), LiteRT (int8), ONNX (QDQ).

All three start from the same converted PT2E program (``QuantizedModule.program``), so the scales
that PyTorch simulates are the ones each runtime executes:

- ``pte``: ``torch.export`` of the converted program, lowered with ``XnnpackPartitioner``: XNNPACK
  recognises every dequantize→op→quantize group and runs it as a qs8 kernel (per-channel qc8 weights).
- ``tflite``: litert-torch converts the program with ``fold_quantize=False`` (float weights followed
  by quantize/dequantize) in its static QDQ mode (``QuantConfig(pt2e_quantizer=...)`` with a static
  config: the quantizer object only selects that mode, our graph already carries the q/dq pairs).
  The converter turns each q/dq group into an int8 TFLite op with int8 weights; the model's input
  and output become int8 (the LiteRT runner quantizes/dequantizes at the boundary).
- ``onnx``: the dynamo exporter translates PT2E's quantize/dequantize ops into ONNX
  QuantizeLinear/DequantizeLinear (per-channel via ``axis``) — a QDQ model that ONNX Runtime fuses
  into QLinearConv/QLinearMatMul-style int8 kernels at session creation.

Cost: as the float exporters (seconds each).
"""

from __future__ import annotations

from typing import Any

import torch

from edgeopt.errors import EdgeoptError


def _litert_static_config() -> Any:
    from litert_torch.quantize import pt2e_quantizer as lq
    from litert_torch.quantize.quant_config import QuantConfig

    return QuantConfig(pt2e_quantizer=lq.PT2EQuantizer().set_global(lq.get_symmetric_quantization_config(True)))


def export_pte(program: torch.nn.Module, x: torch.Tensor) -> bytes:
    from edgeopt.interop.export import lower_to_pte

    return lower_to_pte(program, (x,))


def float_pads(program: torch.fx.GraphModule) -> int:
    """Move each zero ``pad`` in front of the quantize/dequantize pair it follows, in place; returns the count.

    ``q(x) → dq → pad → q → dq`` (all with the same parameters, as ``EdgeQuantizer`` makes them)
    becomes ``x → pad → q → dq``: numerically identical, because zero quantizes exactly to the zero
    point, so ``pad(dq(q(x))) == dq(q(pad(x)))``. Why rewrite the graph at all: litert-torch's
    converter folds a pad that precedes quantization into the next convolution's padding, but it
    keeps an int8 pad as TRANSPOSE→PAD→TRANSPOSE around the NHWC conv (+20% latency on ResNet-8).
    """
    pads = (torch.ops.aten.pad.default, torch.ops.aten.constant_pad_nd.default)
    dq_op = torch.ops.quantized_decomposed.dequantize_per_tensor.default
    q_op = torch.ops.quantized_decomposed.quantize_per_tensor.default
    moved = 0
    for n in list(program.graph.nodes):
        if n.op != "call_function" or n.target not in pads:
            continue
        dq = n.args[0]
        if not (isinstance(dq, torch.fx.Node) and dq.target == dq_op and isinstance(dq.args[0], torch.fx.Node)):
            continue
        q = dq.args[0]
        users = list(n.users)
        same = len(users) == 1 and users[0].target == q_op and tuple(users[0].args[1:]) == tuple(q.args[1:])
        if q.target != q_op or not same:
            continue
        n.replace_input_with(dq, q.args[0])
        moved += 1
    if moved:
        program.graph.eliminate_dead_code()
        program.recompile()
    return moved


def global_pools_as_mean(program: torch.fx.GraphModule) -> int:
    """Replace each ``avg_pool2d`` that averages its whole (unpadded) input by ``mean`` over H, W, in place.

    Numerically the same op (a global average). Why: LiteRT's XNNPACK delegate does not take an int8
    AVERAGE_POOL_2D, so it runs as a builtin kernel that splits the graph into two delegate
    partitions; an int8 MEAN is delegated, and the whole network from the first conv to the
    classifier becomes one XNNPACK subgraph (one fewer hand-over per inference). Returns the count.
    """
    done = 0
    for n in list(program.graph.nodes):
        if n.op != "call_function" or n.target != torch.ops.aten.avg_pool2d.default:
            continue
        src = n.args[0]
        val = _shape_source(src)
        if val is None or val.dim() != 4:
            continue
        kernel = list(n.args[1]) if len(n.args) > 1 else []
        kernel = kernel * 2 if len(kernel) == 1 else kernel
        stride = list(n.args[2]) if len(n.args) > 2 and n.args[2] else kernel
        stride = stride * 2 if len(stride) == 1 else stride
        padding = list(n.args[3]) if len(n.args) > 3 else [0]
        divisor = n.args[6] if len(n.args) > 6 else n.kwargs.get("divisor_override")
        spatial = [int(d) for d in val.shape[2:]]
        if kernel != spatial or stride != spatial or any(int(p) for p in padding) or divisor is not None:
            continue
        with program.graph.inserting_before(n):
            mean = program.graph.call_function(torch.ops.aten.mean.dim, (src, [2, 3], True))
        mean.meta.update(n.meta)
        n.replace_all_uses_with(mean)
        program.graph.erase_node(n)
        done += 1
    if done:
        program.recompile()
    return done


def _shape_source(node: Any) -> Any:
    """The example value (``meta["val"]``) of ``node``, looking through the q/dq ops convert inserted."""
    while isinstance(node, torch.fx.Node):
        if "val" in node.meta:
            return node.meta["val"]
        if "quantized_decomposed" not in str(node.target) or not node.args:
            return None
        node = node.args[0]
    return None


def export_tflite(program: torch.fx.GraphModule, x: torch.Tensor) -> bytes:
    import copy

    import litert_torch

    program = copy.deepcopy(program)
    float_pads(program)
    global_pools_as_mean(program)
    return bytes(litert_torch.convert(program, (x,), quant_config=_litert_static_config()).model_content())


def export_onnx(program: torch.nn.Module, x: torch.Tensor) -> bytes:
    from edgeopt.interop.export import ONNX_OPSET, finished_onnx

    with torch.no_grad():
        out = program(x)
    outputs = len(out) if isinstance(out, tuple | list) else 1  # a multi-output model: one graph output each
    names = ["output"] if outputs == 1 else [f"output_{i}" for i in range(outputs)]
    onnx_program = torch.onnx.export(
        program, (x,), dynamo=True, opset_version=ONNX_OPSET, input_names=["input"], output_names=names,
        external_data=False, optimize=True, verbose=False,
    )  # fmt: skip
    proto = onnx_program.model_proto
    quantize_onnx_biases(proto)
    drop_clamping_relus(proto)
    fold_pads_into_convs(proto)
    activations_to_uint8(proto)
    return finished_onnx(proto, outputs)


def quantize_onnx_biases(proto: Any) -> int:
    """Give each Conv/Gemm fed by DequantizeLinear input and weight an int32 bias, in place; returns the count.

    Why hand-written graph surgery: PT2E leaves biases in float (XNNPACK and LiteRT quantize them
    themselves, to int32 with scale ``s_input * s_weight``), and the dynamo exporter writes them as
    float initializers. ONNX Runtime fuses ``DQ → Conv → Q`` into an integer kernel only when the
    bias is itself ``DequantizeLinear(int32)``; with a float bias it runs a float conv between
    dequantize and quantize (slower than fp32). This is the same int32 rounding the other runtimes
    apply, written where ORT can see it.
    """
    import numpy as np
    from onnx import helper, numpy_helper

    graph = proto.graph
    inits = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}

    def const(name: str) -> np.ndarray | None:
        return numpy_helper.to_array(inits[name]) if name in inits else None

    def dq_scale(name: str) -> np.ndarray | None:
        n = producer.get(name)
        if n is None or n.op_type != "DequantizeLinear" or len(n.input) < 2:
            return None
        return const(n.input[1])

    done = 0
    new_nodes = []
    for node in graph.node:
        if node.op_type in ("Conv", "Gemm") and len(node.input) == 3 and node.input[2] in inits:
            sx, sw, b = dq_scale(node.input[0]), dq_scale(node.input[1]), const(node.input[2])
            if sx is not None and sw is not None and b is not None and sx.size == 1:
                scale = (np.float32(sx.reshape(())) * sw.astype(np.float32).reshape(-1)).astype(np.float32)
                scale = np.broadcast_to(scale, b.shape).astype(np.float32)
                q = np.clip(np.round(b.astype(np.float64) / scale), -(2**31), 2**31 - 1).astype(np.int32)
                stem = f"{node.input[2]}_int32"
                graph.initializer.extend([
                    numpy_helper.from_array(q, stem),
                    numpy_helper.from_array(scale, stem + "_scale"),
                    numpy_helper.from_array(np.zeros_like(q), stem + "_zero_point"),
                ])  # fmt: skip
                new_nodes.append(
                    helper.make_node(
                        "DequantizeLinear",
                        [stem, stem + "_scale", stem + "_zero_point"],
                        [stem + "_dq"],
                        axis=0,
                        name=stem + "_dq",
                    )  # fmt: skip
                )
                node.input[2] = stem + "_dq"
                done += 1
    if new_nodes:
        nodes = list(new_nodes) + list(graph.node)
        del graph.node[:]
        graph.node.extend(nodes)
    return done


def export_quantized(qm: Any, fmt: str, x: torch.Tensor) -> bytes:
    """Integer artifact bytes of a ``QuantizedModule`` for ``fmt`` (pte, tflite or onnx)."""
    if fmt == "pte":
        return export_pte(qm.program(True), x)
    if fmt == "tflite":
        return export_tflite(qm.program(False), x)
    if fmt == "onnx":
        return export_onnx(qm.program(True), x)
    raise EdgeoptError(f"no integer export for format '{fmt}'", "use pte, tflite or onnx")


def _graph_index(graph: Any) -> tuple[dict[str, Any], dict[str, list[Any]], set[str]]:
    """An ONNX graph's initializers by name, the consumer nodes of each value, and its output names."""
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    return {i.name: i for i in graph.initializer}, consumers, {o.name for o in graph.output}


def drop_clamping_relus(proto: Any) -> int:
    """Remove each Relu whose only consumers are QuantizeLinear with zero point = the type's minimum.

    Exact: such a quantize already clamps every negative value to the code of 0, so
    ``Q(relu(x)) == Q(x)``. Why by hand: ONNX Runtime's own Relu/Q fusion did not fire on these
    graphs (its s8→u8 rewrite runs first), leaving Conv→Relu→Q as a float conv between DQ and Q.
    """
    import numpy as np
    from onnx import numpy_helper

    graph = proto.graph
    inits, consumers, outputs = _graph_index(graph)
    dropped = []
    for n in graph.node:
        if n.op_type != "Relu" or n.output[0] in outputs:
            continue
        users = consumers.get(n.output[0], [])
        ok = bool(users)
        for u in users:
            is_q = u.op_type == "QuantizeLinear" and len(u.input) > 2 and u.input[2] in inits
            zp = numpy_helper.to_array(inits[u.input[2]]) if is_q else None
            if zp is None or zp.size != 1 or zp.dtype.kind not in "iu" or int(zp.reshape(())) != np.iinfo(zp.dtype).min:
                ok = False
        if ok:
            for u in users:
                u.input[0] = n.input[0]
            dropped.append(n)
    for n in dropped:
        graph.node.remove(n)
    return len(dropped)


def activations_to_uint8(proto: Any) -> int:
    """Re-express every int8 activation QuantizeLinear→DequantizeLinear pair as uint8, in place; returns the count.

    Exact: ``q_u8 = q_s8 + 128`` with zero point ``z + 128`` dequantizes to the same values. Why: on
    x86 ONNX Runtime runs QDQ groups with uint8 activations (and int8 weights); its own s8→u8
    rewrite converts only a Q whose output feeds a single DQ, so a tensor with two consumers (the
    ResNet skip connections) stayed int8 while its neighbours became uint8, and a Conv whose input
    and output types differ is not fused into QLinearConv (4 of 9 convs and 2 of 3 adds ran in
    float between dequantize and quantize). Weights and int32 biases keep their types.
    """
    import numpy as np
    from onnx import TensorProto, numpy_helper

    graph = proto.graph
    inits, consumers, outputs = _graph_index(graph)
    made: dict[str, str] = {}

    def u8_zero_point(name: str) -> str:
        if name not in made:
            zp = numpy_helper.to_array(inits[name]).astype(np.int16) + 128
            new = numpy_helper.from_array(zp.astype(np.uint8), f"{name}_u8")
            graph.initializer.append(new)
            made[name] = new.name
        return made[name]

    def int8_zp(n: Any) -> bool:
        return len(n.input) > 2 and n.input[2] in inits and inits[n.input[2]].data_type == TensorProto.INT8

    value_info = {v.name: v for v in graph.value_info}
    done = 0
    for q in graph.node:
        if q.op_type != "QuantizeLinear" or not int8_zp(q):
            continue
        # the quantized tensor may pass through layout ops (Transpose, Reshape...) before its DQs
        tensors, dqs, ok, todo = [], [], True, [q.output[0]]
        while todo and ok:
            t = todo.pop()
            tensors.append(t)
            users = consumers.get(t, [])
            ok = bool(users) and t not in outputs
            for u in users:
                if u.op_type == "DequantizeLinear" and int8_zp(u) and u.input[0] == t:
                    dqs.append(u)
                elif u.op_type in _LAYOUT_OPS and u.input[0] == t:
                    todo.append(u.output[0])
                else:
                    ok = False
        if not ok:
            continue
        for n in [q, *dqs]:
            n.input[2] = u8_zero_point(n.input[2])
        for t in tensors:
            if t in value_info:
                value_info[t].type.tensor_type.elem_type = TensorProto.UINT8
        done += 1
    return done


# ops that move quantized values without changing them (a uint8 tensor passes through unchanged)
_LAYOUT_OPS = ("Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity")


def fold_pads_into_convs(proto: Any) -> int:
    """Fold each zero ``DQ → Pad → Q → DQ → Conv`` chain into the Conv's own ``pads``, in place; returns the count.

    Exact when the Q re-quantizes with the DQ's own parameters (``EdgeQuantizer`` makes a zero pad
    share its input's): zero quantizes to the zero point, so padding before or inside the conv is
    the same. Why: the imported TFLite models pad explicitly before stride-2 convs (``[0, 1, 0, 1]``,
    asymmetric, which ``aten.conv2d`` cannot express); ONNX Runtime ran that Pad in float between a
    dequantize and a quantize. Its Conv takes asymmetric pads, and the fused QLinearConv pads itself.
    """
    import numpy as np
    from onnx import helper, numpy_helper

    graph = proto.graph
    inits, consumers, outputs = _graph_index(graph)
    producer = {o: n for n in graph.node for o in n.output}

    def const(name: str) -> np.ndarray | None:
        return numpy_helper.to_array(inits[name]) if name in inits else None

    def same_params(a: Any, b: Any) -> bool:
        va = [const(x) for x in a.input[1:3]]
        vb = [const(x) for x in b.input[1:3]]
        if len(va) != 2 or len(vb) != 2:
            return False
        pairs = zip(va, vb, strict=True)
        return all(x is not None and y is not None and x.shape == y.shape and np.array_equal(x, y) for x, y in pairs)

    removed: list[Any] = []
    for pad in graph.node:
        if pad.op_type != "Pad" or len(pad.input) < 2:
            continue
        mode = next((a.s.decode() for a in pad.attribute if a.name == "mode"), "constant")
        amounts = const(pad.input[1])
        value = const(pad.input[2]) if len(pad.input) > 2 and pad.input[2] else np.zeros(())
        if mode != "constant" or amounts is None or value is None or amounts.size != 8 or np.any(value != 0):
            continue
        if len(pad.input) > 3 and pad.input[3]:  # explicit axes: leave it
            continue
        amounts = amounts.astype(np.int64).reshape(2, 4)  # begin/end over N, C, H, W
        if np.any(amounts[:, :2] != 0) or np.any(amounts < 0):
            continue
        dq_in = producer.get(pad.input[0])
        users = consumers.get(pad.output[0], [])
        if dq_in is None or dq_in.op_type != "DequantizeLinear" or len(users) != 1 or pad.output[0] in outputs:
            continue
        q = users[0]
        if q.op_type != "QuantizeLinear" or not same_params(q, dq_in) or q.output[0] in outputs:
            continue
        dqs = consumers.get(q.output[0], [])
        convs = [c for d in dqs for c in consumers.get(d.output[0], [])]
        if not dqs or any(d.op_type != "DequantizeLinear" or not same_params(d, q) or d.output[0] in outputs
                          for d in dqs):  # fmt: skip
            continue
        if not convs or any(c.op_type != "Conv" or c.input[0] not in {d.output[0] for d in dqs} for c in convs):
            continue
        if any(a.name == "auto_pad" and a.s not in (b"", b"NOTSET") for c in convs for a in c.attribute):
            continue
        for c in convs:
            old = next((list(a.ints) for a in c.attribute if a.name == "pads"), [0, 0, 0, 0])
            new = [old[0] + int(amounts[0, 2]), old[1] + int(amounts[0, 3]),
                   old[2] + int(amounts[1, 2]), old[3] + int(amounts[1, 3])]  # fmt: skip
            keep = [a for a in c.attribute if a.name != "pads"]
            del c.attribute[:]
            c.attribute.extend([*keep, helper.make_attribute("pads", new)])
            c.input[0] = pad.input[0]
        removed.extend([pad, q, *dqs])
    for n in removed:
        graph.node.remove(n)
    return sum(1 for n in removed if n.op_type == "Pad")
