"""ExecuTorch training programs: one joint forward-backward method, the frozen part delegated to XNNPACK.

The model (prepared by :func:`edgeopt.ondevice.scopes.prepare_scope`, batch norm in eval mode) is wrapped
to return ``(loss, predicted class)``; ``torch.export`` captures it and
``torch.export.experimental._export_forward_backward`` adds the backward of the trainable parameters (the
frozen ones are constants, left out). The program's outputs are the user outputs, then one gradient per
trainable parameter, then the parameters themselves: ExecuTorch's training module hands them to its SGD.

Delegation (``frozen``):

* ``float`` (default) — the *frozen prefix* is lowered to XNNPACK: every op none of whose inputs depends
  on a trainable parameter or on the labels (when at least the first block is wholly frozen; otherwise the
  partitioner's cost would buy at most a lone op). The rest (the trainable layers, the loss, the backward)
  runs in ExecuTorch's portable kernels.
* ``int8`` — the frozen blocks before the first trainable one are quantized (PT2E, XNNPACKQuantizer,
  symmetric per-channel, calibrated on the given batches) and delegated; the trainable part stays float.
* ``none`` — no delegate at all.

float32 programs get :func:`staged_sums`: ExecuTorch's portable ``sum`` adds a reduction's terms one after another
in float32, so the long sums of the backward (every bias gradient: N·H·W terms) are rewritten as chains of
single-dimension sums, which keeps the program float32 and its gradients as close to float64 as PyTorch's.

float64 programs (``work`` and ``x`` in float64; ``frozen="none"``, as XNNPACK has no float64 kernels) exist to
check the runtime's arithmetic against PyTorch's without float32 rounding: the loss is written out
(:class:`WithLoss`) and every ``sum`` over dimensions becomes ``mean * n`` (:func:`exact_sums`), as ExecuTorch
1.5.1's portable single-dimension ``sum`` loses float64 precision. ExecuTorch's SGD reads float32 only, so
:class:`edgeopt.ondevice.loops.ExecuTorchTrainer` updates float64 parameters on the host.

XNNPACK packs weights when it loads them, so a trainable parameter inside a delegate would never be
updated (and the loss turns NaN): :func:`check_delegates` refuses any program where that would happen,
with one line naming the parameter. ``delegate="all"`` hands the whole graph to the stock partitioner,
which is what that check exists to catch.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from edgeopt.errors import EdgeoptError
from edgeopt.runtimes.base import quiet_output

FROZEN_MODES = ("float", "int8", "none")


class WithLoss(nn.Module):
    """``(x, y) -> (cross-entropy loss, argmax class)``: the method an ExecuTorch training program runs."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.loss = nn.CrossEntropyLoss()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.net(x)
        if logits.dtype == torch.float64:
            # hand-written: ExecuTorch 1.5.1's portable _log_softmax.out has no float64 kernel (error 0x12)
            z = logits - logits.detach().amax(dim=1, keepdim=True)
            logp = z - z.exp().sum(dim=1, keepdim=True).log()
            return -logp.gather(1, y[:, None]).mean(), logits.detach().argmax(dim=1)
        return self.loss(logits, y), logits.detach().argmax(dim=1)


@dataclass
class TrainingProgram:
    """A serialized ExecuTorch training program and what it trains.

    ``trainable`` are parameter names of the prepared module (without the ``net.`` prefix the program
    uses), ``delegated`` the frozen parameters inside XNNPACK delegates, ``batch_size`` the static batch.
    """

    buffer: bytes
    trainable: list[str]
    frozen: str
    delegated: list[str]
    batch_size: int
    detail: dict[str, Any] = field(default_factory=dict)
    lowered: Any = field(default=None, repr=False)  # the lowered edge program (for inspection)

    @property
    def size_bytes(self) -> int:
        """Bytes of the .pte program."""
        return len(self.buffer)


def build_training_program(
    work: nn.Module,
    trainable: list[str],
    x: torch.Tensor,
    y: torch.Tensor,
    frozen: str = "float",
    calibration: list[torch.Tensor] | None = None,
    delegate: str = "frozen",
    float64_convolutions: bool = False,
) -> TrainingProgram:
    """Export ``work`` (trainable parameters already marked) as an ExecuTorch training program.

    ``x``/``y`` fix the static batch shape; ``frozen`` picks the delegate (module doc); ``calibration`` are
    input batches for the int8 backbone. ``delegate="all"`` uses the stock XNNPACK partitioner on the whole
    graph (refused when it would swallow a trainable parameter). ``float64_convolutions`` computes the forward
    convolutions of a float32 program in float64 (:func:`float64_convolutions_pass`; not with a delegated frozen
    prefix, as XNNPACK has no float64 kernels). Cost: one export and lowering, seconds
    (tens of seconds for a ResNet-8 with a large frozen prefix; the int8 path adds PT2E calibration).
    """
    if frozen not in FROZEN_MODES:
        raise EdgeoptError(f"unknown frozen-part mode '{frozen}'", "use float, int8 or none")
    if not trainable:
        raise EdgeoptError("the scope trains no parameters", "choose a scope with parameters (head, all, ...)")
    f64 = x.dtype == torch.float64
    if f64 and frozen != "none":
        raise EdgeoptError("a float64 training program cannot delegate its frozen part (XNNPACK has no float64 "
                           "kernels)", "use frozen='none'")  # fmt: skip
    delegated_prefix = frozen != "none" and (delegate == "all" or bool(frozen_prefix_blocks(work, trainable)))
    if float64_convolutions and (f64 or delegated_prefix):
        raise EdgeoptError("float64 convolutions are for float32 programs without a delegated frozen part",
                           "use frozen='none', or leave float64_convolutions off")  # fmt: skip
    with quiet_output():
        from executorch.exir import EdgeCompileConfig, to_edge
        from torch.export.experimental import _export_forward_backward
    net: nn.Module = work.eval()
    detail: dict[str, Any] = {}
    if frozen == "int8":
        net, detail["quantized_blocks"] = _quantize_frozen_prefix(work, trainable, x, calibration or [x])
        keep = set(trainable)
        for n, p in net.named_parameters():
            p.requires_grad_(n in keep)
    wrapped = WithLoss(net)
    try:
        with quiet_output():
            ep = _export_forward_backward(torch.export.export(wrapped, (x, y)))
            if f64:
                exact_sums(ep)
            else:
                detail["staged_sums"] = staged_sums(ep)
                if float64_convolutions:
                    detail["float64_convolutions"] = float64_convolutions_pass(ep)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise EdgeoptError(f"the model does not export as an ExecuTorch training program ({first})",
                           "keep batch norm in eval mode and use standard layers") from e  # fmt: skip
    with quiet_output():
        edge = to_edge(ep, compile_config=EdgeCompileConfig(_check_ir_validity=False))
        # XNNPACK's partitioner walks the whole joint graph (tens of seconds for a ResNet-8): skip it when no
        # block at the front is wholly frozen, as then at most a lone frozen op would be delegated
        if frozen != "none" and (delegate == "all" or frozen_prefix_blocks(work, trainable)):
            edge = edge.to_backend(_partitioner({f"net.{n}" for n in trainable}, whole=delegate == "all"))
    delegated = check_delegates(edge.exported_program(), trainable)
    with quiet_output():
        buffer = edge.to_executorch().buffer
    return TrainingProgram(bytes(buffer), list(trainable), frozen, delegated, int(x.shape[0]), detail,
                           edge.exported_program())


def _call(graph: torch.fx.Graph, target: Any, args: tuple, val: Any, kwargs: dict | None = None) -> torch.fx.Node:
    """A new ``call_function`` node at the graph's insertion point, with its ``meta["val"]`` set."""
    node = graph.call_function(target, args, kwargs or {})
    node.meta["val"] = val
    return node


def _rewrite(program: Any, target: Any, build: Callable[[torch.fx.Graph, torch.fx.Node], Any]) -> int:
    """Replace every ``target`` call of an exported program by what ``build(graph, node)`` returns, built just
    before it (``None``: leave that node); in place, how many were replaced."""
    graph = program.graph_module.graph
    done = 0
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target != target:
            continue
        with graph.inserting_before(node):
            new = build(graph, node)
        if new is None:
            continue
        node.replace_all_uses_with(new)
        graph.erase_node(node)
        done += 1
    graph.lint()
    program.graph_module.recompile()
    return done


def exact_sums(program: Any) -> int:
    """Rewrite every ``aten.sum.dim_IntList`` of an exported program into ``mean.dim * n`` (in place); how many.

    Why: ExecuTorch 1.5.1's portable ``sum.IntList_out`` over one dimension of a float64 tensor is only
    float32-accurate (2.5e-6 off on a sum of ten values ~3), while its ``mean.dim`` is exact to 1e-16. The
    joint graph sums in the softmax and in every bias gradient (addmm's, the loss's), so a float64 program
    would otherwise carry float32 rounding. ``mean * n`` is the same sum up to float64 rounding."""
    def mean_times_n(graph: torch.fx.Graph, node: torch.fx.Node) -> torch.fx.Node:
        src, dims = node.args[0], node.args[1]
        keep = node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)
        shape = src.meta["val"].shape
        dims = list(dims) if dims else list(range(len(shape)))
        n = 1
        for d in dims:
            n *= int(shape[d])
        mean = _call(graph, torch.ops.aten.mean.dim, (src, dims, keep), node.meta["val"])
        return _call(graph, torch.ops.aten.mul.Tensor, (mean, float(n)), node.meta["val"])

    return _rewrite(program, torch.ops.aten.sum.dim_IntList, mean_times_n)


def staged_sums(program: Any) -> int:
    """Rewrite an exported float32 training graph's long sums into short staged ones (in place); how many sums.

    Why: ExecuTorch 1.5.1's portable ``sum.IntList_out`` adds every element of a reduction one after another
    into one float32 accumulator, so a bias gradient of a 32×32 feature map at batch 8 (8192 terms) carries
    ~sqrt(8192) times float32's rounding, where ATen sums in vectorised lanes and blocks. On a ResNet-8 the
    batch-norm and convolution bias gradients came out 5-10× further from float64 than PyTorch float32's
    (``tests/test_ondevice_sums.py``), enough to set the float32 program's loss 10× further from eager than eager
    float32 drifts from float64 over 50 steps of the ``bias`` scope.

    What: every ``aten.sum.dim_IntList`` over several dimensions becomes a chain of single-dimension sums,
    innermost dimension first (for ``[N, C, H, W]`` over ``[0, 2, 3]``: over W, then H, then N), so each output
    element adds at most one dimension's length of terms at a time; and every ``convolution_backward`` that
    computes its bias gradient (its own sequential sum over N·H·W) leaves it out, the bias gradient becoming such a
    staged sum of ``grad_output``. Same values up to rounding, the same ops (no new kernels), still float32. Cost:
    one walk of the graph; the program gains one small sum per stage.
    """
    graph = program.graph_module.graph
    conv_bwd = torch.ops.aten.convolution_backward.default
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target != conv_bwd or not node.args[10][2]:
            continue
        grad_out = node.args[0]
        bias_users = [u for u in node.users if u.target is operator.getitem and u.args[1] == 2]
        mask = list(node.args[10])
        mask[2] = False
        node.args = (*node.args[:10], mask)
        val = node.meta.get("val")
        if val is not None:
            node.meta["val"] = (val[0], val[1], None)
        rank = len(grad_out.meta["val"].shape)
        for user in bias_users:
            with graph.inserting_before(user):
                total = _call(graph, torch.ops.aten.sum.dim_IntList, (grad_out, [d for d in range(rank) if d != 1]),
                              user.meta["val"])  # fmt: skip
            user.replace_all_uses_with(total)
            graph.erase_node(user)

    def staged(graph: torch.fx.Graph, node: torch.fx.Node) -> torch.fx.Node | None:
        src = node.args[0]
        shape = src.meta["val"].shape
        dims = sorted({int(d) % len(shape) for d in (node.args[1] or range(len(shape)))}, reverse=True)
        if len(dims) < 2:
            return None
        keep = node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)
        part = src
        for d in dims:  # descending: removing dimension d leaves the lower ones' indices unchanged
            val = torch.ops.aten.sum.dim_IntList(part.meta["val"], [d], keep)
            part = _call(graph, torch.ops.aten.sum.dim_IntList, (part, [d], keep), val, dict(node.kwargs))
        return part

    return _rewrite(program, torch.ops.aten.sum.dim_IntList, staged)


def float64_convolutions_pass(program: Any) -> int:
    """Compute every float32 ``aten.convolution`` of an exported program in float64 and cast the result back (in
    place); how many.

    Why: ExecuTorch 1.5.1's portable convolution adds its C·k·k terms one after another in float32. Where a
    pre-ReLU value lies within that rounding of zero (a ResNet-8 on the benchmark's batches: 4 of 29.5 million
    below 1e-7), the float32 program can set a ReLU mask element PyTorch does not, and with large gradients one
    such element moves a step's gradients by ~1e-3 (the ``bias`` scope: 5.4e-3 from float64 eager over 50 steps,
    10x PyTorch float32's 5.0e-4; with this pass 3.2e-7). Inputs, weights, outputs, saved tensors and gradients
    stay float32; each convolution gets float64 copies of its operands and result as temporaries. Opt-in, as
    those temporaries add to the planned memory. Cost: one walk of the graph."""
    def in_float64(graph: torch.fx.Graph, node: torch.fx.Node) -> torch.fx.Node | None:
        if node.meta["val"].dtype != torch.float32:
            return None
        wide = [None if arg is None else _call(graph, torch.ops.aten._to_copy.default, (arg,),
                                               arg.meta["val"].to(torch.float64), {"dtype": torch.float64})
                for arg in node.args[:3]]  # fmt: skip
        conv = _call(graph, torch.ops.aten.convolution.default, (*wide, *node.args[3:]),
                     node.meta["val"].to(torch.float64))  # fmt: skip
        return _call(graph, torch.ops.aten._to_copy.default, (conv,), node.meta["val"], {"dtype": torch.float32})

    return _rewrite(program, torch.ops.aten.convolution.default, in_float64)


def check_delegates(program: Any, trainable: list[str]) -> list[str]:
    """The frozen parameter names inside the program's delegates; a trainable one raises ``EdgeoptError``."""
    from executorch.exir.lowered_backend_module import get_lowered_submodules

    inside: list[str] = []
    for _, lowered, _ in get_lowered_submodules(program.graph_module):
        sig = lowered.original_module.graph_signature
        inside += [fqn.removeprefix("net.") for fqn in sig.inputs_to_parameters.values()]
    bad = sorted(set(inside) & set(trainable))
    if bad:
        raise EdgeoptError(
            f"trainable parameter '{bad[0]}' would sit inside an XNNPACK delegate (XNNPACK packs weights at load: "
            "updates would be lost)",
            "delegate only the frozen part (the default), or choose a scope that leaves it frozen",
        )
    return sorted(set(inside))


def _partitioner(trainable_fqns: set[str], whole: bool) -> Any:
    """The XNNPACK partitioner, restricted to the frozen prefix unless ``whole``."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir.backend.partitioner import Partitioner, PartitionResult

    inner = XnnpackPartitioner()
    if whole:
        return inner

    class FrozenPrefixPartitioner(Partitioner):
        """XNNPACK's partitions, minus every node that depends on a trainable parameter or on the labels."""

        def __init__(self) -> None:
            super().__init__()
            self.delegation_spec = inner.delegation_spec

        def partition(self, exported_program: Any) -> Any:
            result = inner.partition(exported_program)
            sig = exported_program.graph_signature
            tainted_inputs = {n for n, fqn in sig.inputs_to_parameters.items() if fqn in trainable_fqns}
            tainted_inputs |= set(sig.user_inputs[1:])  # the labels: the loss and the backward hang on them
            tainted: set[Any] = set()
            for node in exported_program.graph.nodes:
                if (node.op == "placeholder" and node.name in tainted_inputs) or any(
                    a in tainted for a in node.all_input_nodes
                ):
                    tainted.add(node)
            for node in tainted:
                node.meta.pop("delegation_tag", None)
            used = {n.meta["delegation_tag"] for n in exported_program.graph.nodes if "delegation_tag" in n.meta}
            tags = {k: v for k, v in result.partition_tags.items() if k in used}
            return PartitionResult(tagged_exported_program=exported_program, partition_tags=tags)

    return FrozenPrefixPartitioner()


def frozen_prefix_blocks(work: nn.Module, trainable: list[str]) -> list[str]:
    """Names of the blocks (:func:`edgeopt.ondevice.scopes.blocks`) before the first one with a trainable parameter."""
    from edgeopt.ondevice.scopes import blocks

    keep = set(trainable)
    out: list[str] = []
    for name, block in blocks(work):
        if any(f"{name}.{n}" in keep for n, _ in block.named_parameters()):
            break
        out.append(name)
    return out


def _quantize_frozen_prefix(
    work: nn.Module, trainable: list[str], x: torch.Tensor, calibration: list[torch.Tensor]
) -> tuple[nn.Module, list[str]]:
    """PT2E int8 (XNNPACK symmetric per-channel) of the frozen prefix blocks; the rest stays float."""
    prefix = frozen_prefix_blocks(work, trainable)
    if not prefix:
        first = trainable[0]
        raise EdgeoptError(
            f"an int8 backbone must be frozen, but this scope trains '{first}' in the first block "
            "(an int8 XNNPACK delegate cannot hold trainable weights)",
            "use --frozen float, or a scope that freezes the backbone (head, lastk:K)",
        )
    with quiet_output():
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    # set_module_name would match nothing: the exported module's weight nodes (get_attr) carry no
    # nn_module_stack, so every conv pattern failed its name filter and only activations were quantized
    # (float weights, a program no smaller than the float one). This filter names weights by their target.
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    quantizer.set_filter_function(_in_modules(_frozen_prefix_modules(work, trainable)))
    with quiet_output():
        gm = torch.export.export(work.eval(), (x,)).module()
        gm = prepare_pt2e(gm, quantizer)
        with torch.no_grad():
            for batch in calibration:
                gm(batch)
        gm = convert_pt2e(gm)
    return gm, prefix


def _frozen_prefix_modules(work: nn.Module, trainable: list[str]) -> list[str]:
    """Every leaf module (parameter-less ones too: ReLU, pooling) before the first one with a trainable parameter,
    in the order :func:`edgeopt.ondevice.scopes.blocks` walks them."""
    keep = set(trainable)
    out: list[str] = []

    def walk(prefix: str, m: nn.Module) -> bool:
        for name, child in m.named_children():
            full = f"{prefix}{name}"
            if isinstance(child, (nn.Sequential, nn.ModuleDict, nn.ModuleList)):
                if not walk(f"{full}.", child):
                    return False
                continue
            if any(f"{full}.{n}" in keep for n, _ in child.named_parameters()):
                return False
            out.append(full)
        return True

    walk("", work)
    return out


def _in_modules(names: list[str]) -> Callable[[Any], bool]:
    """A PT2E node filter: does the node come from one of the modules ``names`` (by nn_module_stack; a weight
    node by its attribute path)? ``names`` are a prefix of the model, so the model input belongs too."""
    wanted = set(names)
    prefixes = tuple(f"{n}." for n in names)

    def inside(node: Any) -> bool:
        if node.op == "placeholder":
            return True
        if node.op == "get_attr":
            return str(node.target).startswith(prefixes)
        stack = node.meta.get("nn_module_stack") or {}
        return any(path.removeprefix("L['self'].") in wanted for path, _ in stack.values())

    return inside
