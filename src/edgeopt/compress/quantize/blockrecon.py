"""BRECQ / QDrop-style block reconstruction of the weights' rounding (Li et al. 2021; Wei et al. 2022).

AdaRound (``adaround``) learns each layer's rounding against that layer's own output. Here the unit
is a *block*: the layers between two points of the graph where a single tensor is live (a residual
block with its shortcut and the activation after the add), and the rounding of the chosen layers of a
block is learned together so that the block's *output* on calibration data matches the float block's.

- ``find_blocks``: the model is traced with ``torch.fx``; a cut is a node after which it is the only
  tensor still needed; a block closes at the first cut after one or more conv/linear layers (never
  between a layer or an add and the activation that alone consumes it).
- Inside a block the learned layers' weights are AdaRound's soft weights
  ``s * clamp(floor(w / s) + h(V), -qmax, qmax)``; the other quantized layers are fixed at
  round-to-nearest. Activations are fake-quantized (8-bit affine per tensor, at the block input and at
  every conv / add / activation output the PT2E program quantizes, ranges from ``calib`` on the float
  model's calibration activations, not learned) and, as in QDrop, each element's quantization is
  dropped (the float value kept) with probability ``drop`` during the optimisation.
- Loss: ``|block(x_q) - float_block(x_fp)|²`` summed over the output, mean over a minibatch, plus
  AdaRound's regulariser ``λ Σ (1 - |2 h(V) - 1|^β)`` (off for the first 20% of the steps, β 20 → 2).
  ``x_q`` is the block input produced by the already reconstructed prefix (quantized weights and
  activations); ``x_fp`` is the float model's.
- The result is ``floor(w / s) + (h(V) >= 0.5)``: integers on the grid; ``apply_brecq`` writes
  ``q * s`` into the module and returns the per-channel scales to pin, like ``adaround``/``gptq``.

Not done here (QDrop does it): learned activation step sizes. Cost: per block one pass of the
calibration images through the prefix, then ``iters`` Adam steps of a minibatch through the block;
``time_budget_s`` caps the whole run (each remaining block gets an even share of what is left, the
schedule scaled to the steps that fit). Only blocks holding a layer to learn are reconstructed (on the
MLPerf ResNet-8 4-bit mix: 2 of 5). Per step, what is not learned costs nothing extra: the model's own
parameters are frozen (no back-propagation into earlier layers for unused bias gradients), the
activation quantizers are one autograd node each (identity gradient, no STE graph), QDrop's masks are
windows of one random pool (``DropMasks``) instead of a fresh ``rand_like`` per point and step, and
the convolutions run channels-last; on ResNet-8 at batch 32, one thread, a step costs about half the
CPU time it did (docs/quantization.md). The minibatch is 16: half the work a step of 32, so 2,000 steps a
block fit the 45 s default budget on the shared 2-core machine (ResNet-8's 4-bit mix: 46-48 s of PTQ for
2 x 2,000 steps, 1 thread), where a batch of 32 got only the 600-1,100 steps that proved unreliable. Over
three calibration draws the mix's accuracy change against float was -0.10 / +1.05 / +0.72 pt simulated,
-0.40 / +1.01 / +0.64 in ONNX Runtime (batch 32, 2,000 steps: +0.29 / -0.06 / +0.87 and +0.60 / +0.04 /
+0.88, at 2.4-3x the time; docs/quantization.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import GraphModule, Node

from edgeopt.compress.quantize import calibration as cal
from edgeopt.compress.quantize.adaround import _init_v, annealed_beta, rectified_sigmoid, rounding_regulariser
from edgeopt.errors import EdgeoptError

_ACT_FUNCS = (F.relu, torch.relu, F.relu6, F.hardtanh, torch.nn.functional.leaky_relu)
_ACT_MODULES = (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.LeakyReLU)
_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Linear)


class _Wrap(nn.Module):
    """``forward(x) = m(x)``: gives fx a single named input even when ``m`` takes ``*inputs``."""

    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.m = m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.m(x)


def trace(module: nn.Module) -> GraphModule:
    """``torch.fx`` trace of ``module`` (one input); its layers are ``m.<path>``. Refused with a one-line error."""
    try:
        return torch.fx.symbolic_trace(_Wrap(module))
    except Exception as e:  # fx raises TraceError, TypeError, RuntimeError ...
        raise EdgeoptError(f"block reconstruction cannot trace the model ({type(e).__name__}: {str(e)[:120]})",
                           "use --rounding adaround (per layer) or gptq") from e  # fmt: skip


@dataclass
class Block:
    """Nodes from just after ``inp`` up to ``out`` (both cuts); ``layers``: conv/linear paths inside."""

    inp: Node
    out: Node
    nodes: list[Node]
    layers: list[str] = field(default_factory=list)


def _is_act(gm: GraphModule, n: Node) -> bool:
    if n.op == "call_function":
        return n.target in _ACT_FUNCS
    if n.op == "call_method":
        return n.target in ("relu", "relu_", "clamp")
    return n.op == "call_module" and isinstance(gm.get_submodule(str(n.target)), _ACT_MODULES)


def _is_add(n: Node) -> bool:
    return (n.op == "call_function" and n.target in (torch.add, torch.Tensor.add)) or (
        n.op == "call_function" and getattr(n.target, "__name__", "") == "add"
    ) or (n.op == "call_method" and n.target == "add")  # fmt: skip


def _layer(gm: GraphModule, n: Node) -> str | None:
    if n.op == "call_module" and isinstance(gm.get_submodule(str(n.target)), _LAYERS):
        return str(n.target)[2:]  # strip the wrapper's "m."
    return None


def _feeds_only_act(gm: GraphModule, n: Node) -> bool:
    return len(n.users) == 1 and _is_act(gm, next(iter(n.users)))


def quant_points(gm: GraphModule) -> list[Node]:
    """Tensors the PT2E program quantizes: the input, each layer / add / activation output, except a layer
    or add whose only consumer is an activation (quantized after it)."""
    out = []
    for n in gm.graph.nodes:
        if n.op == "placeholder":
            out.append(n)
        elif (_layer(gm, n) or _is_add(n) or _is_act(gm, n)) and not _feeds_only_act(gm, n):
            out.append(n)
    return out


def find_blocks(gm: GraphModule) -> list[Block]:
    """Blocks of a traced model (see the module doc). Raises when the graph has other than one input."""
    nodes = list(gm.graph.nodes)
    inputs = [n for n in nodes if n.op == "placeholder"]
    if len(inputs) != 1:
        raise EdgeoptError(f"block reconstruction needs a model with one input, not {len(inputs)}")
    index = {n: i for i, n in enumerate(nodes)}
    last = {n: max((index[u] for u in n.users), default=index[n]) for n in nodes}
    blocks: list[Block] = []
    start, cur = inputs[0], []
    for i, n in enumerate(nodes):
        if n.op in ("placeholder", "output"):
            continue
        cur.append(n)
        if n.op == "get_attr":
            continue
        live = [m for m in nodes[: i + 1] if m.op not in ("get_attr", "output") and last[m] > i]
        layers = [p for p in (_layer(gm, m) for m in cur) if p]
        if live == [n] and layers and not _feeds_only_act(gm, n):
            blocks.append(Block(start, n, cur, layers))
            start, cur = n, []
    return blocks


class _FakeQuantSTE(torch.autograd.Function):
    """8-bit affine fake quantization, the elements of ``keep`` left float; gradient: the identity
    (the straight-through estimator, as ``x + (q - x).detach()`` gives it, without its autograd graph)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: float, zero_point: int, keep: torch.Tensor | None) -> torch.Tensor:
        q = torch.round(x / scale).add_(zero_point).clamp_(-128, 127).sub_(zero_point).mul_(scale)
        return q if keep is None else torch.where(keep, x, q)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        return grad, None, None, None


class DropMasks:
    """QDrop's per-element masks drawn cheaply: windows at random offsets of one pool of ``size`` random
    booleans (``True`` with probability ``drop``) drawn once from ``generator``. A fresh ``rand_like`` per
    quantization point and step was a third of a reconstruction step's time on ResNet-8."""

    def __init__(self, drop: float, generator: torch.Generator, size: int = 1 << 23) -> None:
        self.generator, self.size = generator, size
        self.pool = torch.rand(size, generator=generator) < drop
        self.drop = drop

    def take(self, like: torch.Tensor) -> torch.Tensor:
        """A mask of ``like``'s shape, in its memory layout (channels-last 4-D tensors stay so)."""
        n = like.numel()
        if n > self.size:  # larger than the pool: a fresh draw
            return torch.rand(like.shape, generator=self.generator) < self.drop
        start = int(torch.randint(0, self.size - n + 1, (1,), generator=self.generator))
        flat = self.pool[start : start + n]
        if like.dim() == 4 and not like.is_contiguous() and like.is_contiguous(memory_format=torch.channels_last):
            b, c, h, w = like.shape
            return flat.view(b, h, w, c).permute(0, 3, 1, 2)
        return flat.view(like.shape)


class ActQuant(nn.Module):
    """8-bit affine fake quantization with a straight-through gradient; in training each element's
    quantization is dropped (kept float) with probability ``drop`` (QDrop), masks from ``masks``
    (default: a fresh ``rand_like``)."""

    def __init__(self, scale: float, zero_point: int, drop: float = 0.0, masks: DropMasks | None = None) -> None:
        super().__init__()
        self.scale, self.zero_point, self.drop, self.masks = scale, zero_point, drop, masks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keep = None
        if self.training and self.drop > 0:
            keep = self.masks.take(x) if self.masks is not None else torch.rand_like(x) < self.drop
        return _FakeQuantSTE.apply(x, self.scale, self.zero_point, keep)


def segment(gm: GraphModule, inp: Node, nodes: list[Node], acts: dict[Node, ActQuant] | None = None) -> GraphModule:
    """A module computing ``nodes`` from ``inp`` (layers shared with ``gm``); ``acts`` fake-quantize those nodes."""
    g = torch.fx.Graph()
    root = nn.Module()
    root.m = gm.m
    env: dict[Node, Any] = {inp: g.placeholder("x")}

    def arg(a: Node) -> Any:
        if a not in env:  # a constant defined before the segment
            env[a] = g.node_copy(a, arg)
        return env[a]

    for n in nodes:
        env[n] = g.node_copy(n, arg)
        if acts and n in acts:
            root.add_module(f"act_{n.name}", acts[n])
            env[n] = g.call_module(f"act_{n.name}", (env[n],))
    g.output(env[nodes[-1]])
    for n in g.nodes:  # constants referenced by get_attr live on the wrapper's module
        if n.op == "get_attr" and not hasattr(root, str(n.target).split(".")[0]):
            setattr(root, str(n.target).split(".")[0], getattr(gm, str(n.target).split(".")[0]))
    return GraphModule(root, g)


def _channels_last(t: torch.Tensor) -> torch.Tensor:
    """A 4-D tensor in channels-last layout (oneDNN's convolutions run it ~1.3-1.8x faster, forward
    and backward, at ResNet-8's sizes on one core); others as they are."""
    return t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t


def _chunked(fn: Any, x: torch.Tensor, size: int = 128) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([fn(x[i : i + size]) for i in range(0, x.shape[0], size)])


def activation_ranges(gm: GraphModule, x: torch.Tensor, points: list[Node], method: str = "entropy"
                      ) -> dict[Node, tuple[float, int]]:  # fmt: skip
    """8-bit (scale, zero point) of each of ``points`` from the float model's values on ``x``."""
    from edgeopt.compress.quantize.observers import _merge_torch  # torch.histc: several times numpy's speed

    hists: dict[Node, Any] = {}

    class Rec(torch.fx.Interpreter):
        def run_node(self, n: Node) -> Any:
            out = super().run_node(n)
            if n in hists or n in points:
                hists[n] = _merge_torch(hists.get(n), out.detach().float(), cal.DEFAULT_BINS)
            return out

    with torch.no_grad():
        for i in range(0, x.shape[0], 128):
            Rec(gm).run(x[i : i + 128])
    rng = {n: cal.choose_range(h, method if method in cal.RANGE_METHODS else "entropy") for n, h in hists.items()}
    return {n: cal.qparams_from_range(lo, hi) for n, (lo, hi) in rng.items()}


def _fixed_weights(mods: dict[str, nn.Module], layer_bits: dict[str, int], method: str) -> dict[str, torch.Tensor]:
    """Round-to-nearest weights of every 4/8-bit layer (4-bit: MSE scales, as the PT2E mix uses)."""
    out = {}
    for name, bits in layer_bits.items():
        if bits in (4, 8) and name in mods:
            w = mods[name].weight.detach()
            w2 = w.reshape(w.shape[0], -1).numpy()
            s = cal.weight_scales(w2, bits, "mse" if bits == 4 else method)
            out[name] = torch.from_numpy(cal.quantize_weight(w2, s, bits)).reshape(w.shape).to(w.dtype)
    return out


def _params(seg: nn.Module, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``weights`` as ``functional_call`` parameters of ``seg`` (only the layers it holds)."""
    held = {n for n, _ in seg.named_modules()}
    return {f"m.{k}.weight": v for k, v in weights.items() if f"m.{k}" in held}


def _with(seg: GraphModule, weights: dict[str, torch.Tensor]) -> Any:
    return lambda b: torch.func.functional_call(seg, _params(seg, weights), (b,))


class _SoftRounding:
    """AdaRound's soft weights of some layers: ``s * clamp(floor(w / s) + h(V), -qmax, qmax)``, per-channel
    scales (MSE-clipped at 4 bits, ``method`` at 8), ``V`` starting at the float weights."""

    def __init__(self, weights: dict[str, torch.Tensor], bits: dict[str, int], method: str) -> None:
        self.shapes = {n: w.shape for n, w in weights.items()}
        w = {n: t.detach().reshape(t.shape[0], -1).float() for n, t in weights.items()}
        self.scales = {}
        for n in w:
            s = cal.weight_scales(w[n].numpy(), bits[n], "mse" if bits[n] == 4 else method)
            self.scales[n] = torch.from_numpy(np.asarray(s, np.float32)).reshape(-1, 1)
        self.base = {n: torch.floor(w[n] / self.scales[n]) for n in w}
        self.qmax = {n: 2 ** (bits[n] - 1) - 1 for n in w}
        self.v = {n: _init_v(w[n] / self.scales[n] - self.base[n]).requires_grad_(True) for n in w}

    def weights(self, current: dict[str, torch.Tensor], hard: bool) -> dict[str, torch.Tensor]:
        """``current`` with these layers' soft (or, ``hard``, rounded: on the grid) weights."""
        out = dict(current)
        for n, v in self.v.items():
            h = (rectified_sigmoid(v) >= 0.5).float() if hard else rectified_sigmoid(v)
            q = torch.clamp(self.base[n] + h, -self.qmax[n], self.qmax[n])
            out[n] = (self.scales[n] * q).reshape(self.shapes[n])
        return out

    def regulariser(self, beta: float) -> torch.Tensor:
        return sum(rounding_regulariser(v, beta) for v in self.v.values())


def block_error(seg: GraphModule, weights: dict[str, torch.Tensor], x_in: torch.Tensor, target: torch.Tensor) -> float:
    """Mean over samples of the summed squared error of ``seg`` (eval mode, ``weights``) against ``target``."""
    seg.eval()
    out = _chunked(_with(seg, weights), x_in)
    return float(((out - target) ** 2).flatten(1).sum(1).mean())


def apply_brecq(
    module: nn.Module,
    layer_bits: dict[str, int],
    learn: list[str],
    x: torch.Tensor,
    weight_method: str = "minmax",
    calib: str = "entropy",
    iters: int = 2000,
    batch: int = 16,
    lam: float = 0.01,
    lr: float = 1e-2,
    drop: float = 0.5,
    time_budget_s: float = 45.0,
    seed: int = 0,
) -> tuple[dict[str, list[float]], list[dict[str, Any]]]:
    """Learn the rounding of the ``learn`` layers block by block, in place (see the module doc).

    ``layer_bits``: bits of every conv/linear (8, 4 or 0 = float). Returns the learned layers'
    per-channel scales (to pin) and, per reconstructed block, its layers and its output error on
    ``x`` with round-to-nearest and after reconstruction (hard rounding, no dropping).
    """
    from edgeopt.progress import ProgressBar

    module.eval()
    gm = trace(module)
    mods = dict(module.named_modules())
    blocks = [b for b in find_blocks(gm) if set(b.layers) & set(learn)]
    gen = torch.Generator().manual_seed(seed)
    masks = DropMasks(drop, gen)
    ranges = activation_ranges(gm, x, quant_points(gm), calib)
    acts = {n: ActQuant(s, z, drop, masks) for n, (s, z) in ranges.items()}
    rtn = _fixed_weights(mods, layer_bits, weight_method)
    current = dict(rtn)  # the weights the quantized prefix runs with: learned blocks replace theirs
    steps: dict[str, list[float]] = {}
    report: list[dict[str, Any]] = []
    nodes = list(gm.graph.nodes)
    start = time.perf_counter()
    bar = ProgressBar("BRECQ", len(blocks))
    # the module's own parameters (biases, float layers) are not learned: without this, autograd would
    # also back-propagate into every earlier layer of a block for their unused bias gradients
    grads = {p: p.requires_grad for p in module.parameters()}
    for p in grads:
        p.requires_grad_(False)
    try:
        for bi, blk in enumerate(blocks):
            upto = nodes[1 : nodes.index(blk.inp) + 1]
            placeholder = nodes[0]
            if upto:
                pre_q = segment(gm, placeholder, upto, {n: a for n, a in acts.items() if n is not blk.inp}).eval()
                pre_f = segment(gm, placeholder, upto).eval()
                x_pre = _chunked(_with(pre_q, current), x)
                x_fp = _chunked(pre_f, x)
            else:
                x_pre = x_fp = x
            target = _chunked(segment(gm, blk.inp, blk.nodes).eval(), x_fp)
            in_act = acts[blk.inp]
            seg = segment(gm, blk.inp, blk.nodes, {n: a for n, a in acts.items() if n in blk.nodes})
            names = [n for n in blk.layers if n in learn]
            r = _SoftRounding({n: mods[n].weight for n in names}, {n: layer_bits[n] for n in names}, weight_method)
            opt = torch.optim.Adam(list(r.v.values()), lr=lr)
            x_in_eval = _chunked(in_act.eval(), x_pre)
            before = block_error(seg, current, x_in_eval, target)
            left = time_budget_s - (time.perf_counter() - start)
            deadline = time.perf_counter() + max(left, 0.0) / (len(blocks) - bi)
            n_it, warm, t0 = iters, int(0.2 * iters), time.perf_counter()
            seg.train()
            in_act.train()
            x_pre_cl, target_cl = _channels_last(x_pre), _channels_last(target)  # mkldnn's faster layout
            dims = tuple(range(1, target.dim()))
            for step in range(iters):
                if step == 5:  # fit the whole schedule (warm-up + annealing) in this block's share of the budget
                    per = (time.perf_counter() - t0) / 5
                    n_it = max(6, min(iters, int((deadline - t0) / max(per, 1e-9))))
                    warm = int(0.2 * n_it)
                if step >= n_it:
                    break
                idx = torch.randint(0, x.shape[0], (min(batch, x.shape[0]),), generator=gen)
                xb = in_act(_channels_last(x_pre_cl[idx]))
                out = torch.func.functional_call(seg, _params(seg, r.weights(current, False)), (xb,))
                loss = (out - _channels_last(target_cl[idx])).pow(2).sum(dim=dims).mean()
                if step >= warm:
                    loss = loss + lam * r.regulariser(annealed_beta(step, warm, n_it))
                opt.zero_grad()
                loss.backward()
                opt.step()
            in_act.eval()
            with torch.no_grad():
                hard = r.weights(current, True)
            after = block_error(seg, hard, x_in_eval, target)
            for n in names:
                current[n] = hard[n].detach()
                steps[n] = [float(s) for s in r.scales[n].ravel()]
            report.append({"layers": blk.layers, "learned": names, "steps": n_it,
                           "error_nearest": before, "error_after": after})  # fmt: skip
            bar.advance(status=f"{blk.out.name} err {before:.3g}→{after:.3g}")
    finally:
        bar.close()
        for p, g in grads.items():
            p.requires_grad_(g)
    with torch.no_grad():
        for n in steps:
            mods[n].weight.copy_(current[n])
    return steps, report
