"""Low-rank (truncated SVD) factorisation of fully-connected and 1x1 convolution layers.

``W (out x in) ~= (U_r S_r) V_r^T`` becomes two layers, ``in -> r`` (no bias) then ``r -> out``
(the original bias), which saves parameters and MACs when ``r < in*out / (in+out)``. The
rank is the smallest that keeps ``energy`` of the squared singular values (or ``rank_ratio``
of the full rank). Zoo models record the factorised layers in ``arch["layers"]``; imported
graphs get two IR nodes. Cost: one SVD per layer.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeopt.errors import EdgeoptError
from edgeopt.interop.graph import GraphModule
from edgeopt.model import EdgeModel, build_module, refuse_multi_output
from edgeopt.models.resize import set_submodule

__all__ = ["LowRankReport", "choose_rank", "factorize_layer", "lowrank_model"]


def choose_rank(singular: np.ndarray, energy: float | None = None, rank_ratio: float | None = None) -> int:
    """Smallest rank keeping ``energy`` of sum(s^2), or ``ceil(rank_ratio * len(s))``. Pure."""
    if rank_ratio is not None:
        return max(1, int(np.ceil(rank_ratio * len(singular))))
    e = np.cumsum(singular.astype(np.float64) ** 2)
    return int(np.searchsorted(e / e[-1], energy if energy is not None else 0.9) + 1)


def _matrix(layer: nn.Module) -> torch.Tensor:
    return layer.weight.detach().reshape(layer.weight.shape[0], -1)


def factorize_layer(layer: nn.Module, rank: int) -> nn.Sequential:
    """Two layers computing the rank-``rank`` SVD approximation of ``layer`` (Linear or 1x1 Conv2d)."""
    u, s, vh = torch.linalg.svd(_matrix(layer), full_matrices=False)
    a = vh[:rank]  # r x in
    b = u[:, :rank] * s[:rank]  # out x r
    bias = layer.bias is not None
    if isinstance(layer, nn.Linear):
        first, second = nn.Linear(layer.in_features, rank, bias=False), nn.Linear(rank, layer.out_features, bias=bias)
        w1, w2 = a, b
    else:
        first = nn.Conv2d(layer.in_channels, rank, 1, layer.stride, layer.padding, bias=False)
        second = nn.Conv2d(rank, layer.out_channels, 1, bias=bias)
        w1, w2 = a[:, :, None, None], b[:, :, None, None]
    with torch.no_grad():
        first.weight.copy_(w1)
        second.weight.copy_(w2)
        if bias:
            second.bias.copy_(layer.bias)
    return nn.Sequential(first, second)


def _eligible(layer: nn.Module) -> bool:
    if isinstance(layer, nn.Linear):
        return True
    return (isinstance(layer, nn.Conv2d) and layer.kernel_size == (1, 1) and layer.groups == 1
            and layer.dilation == (1, 1))  # fmt: skip


@dataclass
class LowRankReport:
    layers: dict[str, dict[str, int]]  # path -> {in, out, rank, params_before, params_after}

    def to_json(self) -> dict[str, Any]:
        return {"layers": self.layers}


def lowrank_model(
    model: EdgeModel, energy: float | None = 0.9, rank_ratio: float | None = None, min_params: int = 256
) -> tuple[EdgeModel, LowRankReport]:
    """Factorise every Linear / 1x1 Conv2d where the chosen rank saves parameters."""
    refuse_multi_output(model, "low-rank factorisation")
    module = model.module
    plan: dict[str, int] = {}
    for name, layer in module.named_modules():
        if not _eligible(layer) or layer.weight.numel() < min_params:
            continue
        m = _matrix(layer)
        s = torch.linalg.svdvals(m).numpy()
        r = choose_rank(s, energy, rank_ratio)
        if r * (m.shape[0] + m.shape[1]) < m.numel():
            plan[name] = r
    report = LowRankReport({})
    if not plan:
        return model, report
    new = copy.deepcopy(module)
    for name, r in plan.items():
        layer = module.get_submodule(name)
        m = _matrix(layer)
        set_submodule(new, name, factorize_layer(layer, r))
        report.layers[name] = {"in": m.shape[1], "out": m.shape[0], "rank": r, "params_before": m.numel(),
                               "params_after": r * (m.shape[0] + m.shape[1])}  # fmt: skip
    out = model.with_lineage({"pass": "lowrank", "energy": energy, "rank_ratio": rank_ratio, "layers": len(plan)})
    if isinstance(module, GraphModule):
        by_node = {name.removeprefix("mods."): r for name, r in plan.items()}
        gm = GraphModule(_split_ir(module.ir, by_node))
        state = {}
        for k, v in new.state_dict().items():
            parts = k.split(".")  # mods.<name>.<0|1>.<param>
            if parts[0] == "mods" and parts[1] in by_node:
                k = f"mods.{parts[1]}_u.{parts[3]}" if parts[2] == "0" else f"mods.{parts[1]}.{parts[3]}"
            state[k] = v
        gm.load_state_dict(state)
        out.module, out.meta.arch = gm.eval(), {"kind": "graph", "ir": gm.ir}
        return out, report
    if out.meta.arch.get("kind") != "zoo":
        raise EdgeoptError("low-rank factorisation needs a zoo or imported model", "import the model first")
    layers = dict(out.meta.arch.get("layers", {}))
    for name, r in plan.items():
        layer = module.get_submodule(name)
        kind = "linear" if isinstance(layer, nn.Linear) else "conv2d"
        layers[name] = {"type": "lowrank", "layer": kind, "in": _matrix(layer).shape[1],
                        "out": _matrix(layer).shape[0], "rank": r}  # fmt: skip
    out.meta.arch = {**out.meta.arch, "layers": layers}
    rebuilt = build_module(out.meta.arch)
    rebuilt.load_state_dict(new.state_dict())
    out.module = rebuilt.eval()
    return out, report


def _split_ir(ir: dict[str, Any], plan: dict[str, int]) -> dict[str, Any]:
    ir = copy.deepcopy(ir)
    nodes = []
    for node in ir["nodes"]:
        r = plan.get(node["name"])
        if r is None:
            nodes.append(node)
            continue
        a = node["attrs"]
        mid = f"v_{node['name']}_u"
        first = {"name": f"{node['name']}_u", "op": node["op"], "inputs": node["inputs"], "outputs": [mid],
                 "attrs": dict(a), "source": node.get("source", "")}  # fmt: skip
        second = {**node, "inputs": [mid], "attrs": dict(a)}
        if node["op"] == "linear":
            first["attrs"].update(out_features=r, bias=False)
            second["attrs"].update(in_features=r)
        else:
            first["attrs"].update(out_channels=r, bias=False)
            second["attrs"].update(in_channels=r, stride=[1, 1], padding=[0, 0])
        nodes += [first, second]
    ir["nodes"] = nodes
    return ir
