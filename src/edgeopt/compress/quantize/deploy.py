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
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    ep = torch.export.export(program, (x,))
    return bytes(to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()]).to_executorch().buffer)


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


def export_tflite(program: torch.fx.GraphModule, x: torch.Tensor) -> bytes:
    import copy

    import litert_torch

    program = copy.deepcopy(program)
    float_pads(program)
    return bytes(litert_torch.convert(program, (x,), quant_config=_litert_static_config()).model_content())


def export_onnx(program: torch.nn.Module, x: torch.Tensor) -> bytes:
    import onnx

    from edgeopt.interop.export import ONNX_OPSET

    onnx_program = torch.onnx.export(
        program, (x,), dynamo=True, opset_version=ONNX_OPSET, input_names=["input"], output_names=["output"],
        external_data=False, optimize=True, verbose=False,
    )  # fmt: skip
    proto = onnx_program.model_proto
    quantize_onnx_biases(proto)
    drop_clamping_relus(proto)
    onnx.checker.check_model(proto, full_check=True)
    return proto.SerializeToString()


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


def drop_clamping_relus(proto: Any) -> int:
    """Remove each Relu whose only consumers are QuantizeLinear with zero point = the type's minimum.

    Exact: such a quantize already clamps every negative value to the code of 0, so
    ``Q(relu(x)) == Q(x)``. Why by hand: ONNX Runtime's own Relu/Q fusion did not fire on these
    graphs (its s8→u8 rewrite runs first), leaving Conv→Relu→Q as a float conv between DQ and Q.
    """
    import numpy as np
    from onnx import numpy_helper

    graph = proto.graph
    inits = {i.name: i for i in graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    outputs = {o.name for o in graph.output}
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
