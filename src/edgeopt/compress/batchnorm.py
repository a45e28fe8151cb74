"""Batch-norm unfolding: make an imported (BN-folded) graph trainable again, and fold it back after.

Converters fold batch norm into the convolutions (MLPerf Tiny's ResNet-8 .tflite has none left),
so an imported graph trains like a network without normalisation: slowly, and badly with Adam,
whose fixed step size is huge next to the tiny first-layer weights of a model fed raw 0..255
pixels. ``unfold_batchnorm`` puts a BatchNorm after every convolution, initialised to the identity
on sample inputs (running mean/var = the conv output's statistics, scale = std, shift = mean),
and brings every conv's weights to He-init scale (which BN makes free), so the function is
unchanged in eval mode and training sees an ordinarily scaled, normalised network.
``fold_batchnorm`` merges each of those BNs back into its convolution, so the trained model has
the original architecture (same IR, same export) and no extra ops in the runtimes.

Cost: one forward over the sample inputs; folding is a per-layer weight rescale.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from edgeopt.compress.quantize.transforms import fold_bn_weights
from edgeopt.interop.graph import GraphModule
from edgeopt.model import EdgeModel

BN_SUFFIX = "_unfolded_bn"
BN_EPS = 1e-3


def needs_unfolding(model: EdgeModel) -> bool:
    """True for imported graphs with a convolution not followed by a batch norm."""
    return isinstance(model.module, GraphModule) and bool(_convs_without_bn(model.module.ir))


def _consumers(ir: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for n in ir["nodes"]:
        for v in n["inputs"]:
            out.setdefault(v, []).append(n)
    return out


def _convs_without_bn(ir: dict[str, Any]) -> list[dict[str, Any]]:
    """The conv nodes of ``ir`` none of whose consumers is a batch norm."""
    consumers = _consumers(ir)
    return [
        n for n in ir["nodes"]
        if n["op"] == "conv2d" and not any(c["op"] == "batchnorm" for c in consumers.get(n["outputs"][0], []))
    ]  # fmt: skip


def _conv_bn_pairs(ir: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(conv node, BN node) for every batch norm that is the only consumer of a conv's output."""
    consumers = _consumers(ir)
    producer = {n["outputs"][0]: n for n in ir["nodes"]}
    pairs = []
    for n in ir["nodes"]:
        conv = producer.get(n["inputs"][0]) if n["op"] == "batchnorm" and n["inputs"] else None
        if conv is not None and conv["op"] == "conv2d" and len(consumers[conv["outputs"][0]]) == 1:
            pairs.append((conv, n))
    return pairs


def _rebuilt(model: EdgeModel, ir: dict[str, Any], state: dict[str, torch.Tensor], step: dict[str, Any]) -> EdgeModel:
    gm = GraphModule(ir)
    gm.load_state_dict(state)
    out = model.with_lineage(step, gm.train(model.module.training))
    out.meta.arch = {"kind": "graph", "ir": gm.ir}
    return out


def unfold_batchnorm(model: EdgeModel, inputs: torch.Tensor) -> EdgeModel:
    """A copy of ``model`` (an imported graph) with an identity-initialised BatchNorm after every conv.

    ``inputs``: a model-ready batch (a few hundred samples) whose conv-output statistics set the
    BNs' running mean/var and affine terms. Models that are not graphs, or already have BN after
    every conv, are returned unchanged.
    """
    if not needs_unfolding(model):
        return model
    module = model.module
    assert isinstance(module, GraphModule)
    ir = copy.deepcopy(module.ir)
    convs = _convs_without_bn(ir)
    # A conv followed by BN computes the same function at any weight scale, so each conv is brought
    # to He-init scale (c = target std / weight std): the folded first conv of a model fed 0..255
    # has weights ~100x smaller than usual, which an optimiser's step size would swamp.
    state = dict(module.state_dict())
    scales: dict[str, float] = {}
    for n in convs:
        w = state[f"mods.{n['name']}.weight"]
        fan_in = w[0].numel()
        c = float((2.0 / fan_in) ** 0.5 / max(float(w.std()), 1e-12))
        scales[n["name"]] = c
        state[f"mods.{n['name']}.weight"] = w * c
        if f"mods.{n['name']}.bias" in state:
            state[f"mods.{n['name']}.bias"] = state[f"mods.{n['name']}.bias"] * c
    stats = _conv_output_stats(module, inputs, {n["outputs"][0] for n in convs})  # unscaled statistics
    nodes: list[dict[str, Any]] = []
    renamed: dict[str, str] = {}
    for n in ir["nodes"]:
        n["inputs"] = [renamed.get(v, v) for v in n["inputs"]]
        nodes.append(n)
        if n in convs:
            out = n["outputs"][0]
            bn_out = f"{out}{BN_SUFFIX}"
            attrs = {"num_features": n["attrs"]["out_channels"], "eps": BN_EPS, "momentum": 0.1}
            nodes.append({"name": f"{n['name']}{BN_SUFFIX}", "op": "batchnorm", "inputs": [out],
                          "outputs": [bn_out], "attrs": attrs, "source": "edgeopt: unfolded batch norm"})  # fmt: skip
            renamed[out] = bn_out
    ir["nodes"] = nodes
    ir["outputs"] = [renamed.get(v, v) for v in ir["outputs"]]
    for n in convs:
        mean, var = stats[n["outputs"][0]]
        c = scales[n["name"]]
        p = f"mods.{n['name']}{BN_SUFFIX}"
        # eval: (c*y - c*mean) / sqrt(c^2 var + eps) * gamma + mean == y exactly, for gamma below
        gamma = torch.sqrt(c * c * var + BN_EPS) / c
        state.update({f"{p}.running_mean": c * mean, f"{p}.running_var": c * c * var, f"{p}.weight": gamma,
                      f"{p}.bias": mean, f"{p}.num_batches_tracked": torch.tensor(0)})  # fmt: skip
    return _rebuilt(model, ir, state, {"pass": "unfold_batchnorm", "layers": len(convs)})


def _conv_output_stats(
    module: GraphModule, inputs: torch.Tensor, values: set[str]
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per-channel mean and variance of the named conv outputs over ``inputs``."""
    env: dict[str, torch.Tensor] = {module.input_names[0]: inputs}
    stats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    with torch.no_grad():
        for run, name, attrs, ins, out, _frees in module._plan:
            env[out] = run(module, name, attrs, [env[v] for v in ins])
            if out in values:
                y = env[out].transpose(0, 1).flatten(1)
                stats[out] = (y.mean(1), y.var(1, unbiased=False))
    return stats


def fold_batchnorm(model: EdgeModel) -> EdgeModel:
    """Merge every BatchNorm that alone consumes a conv's output into that conv; drop the BN node.

    The result computes the same function in eval mode. Graph models only; others are returned
    unchanged. Cost: one weight rescale per BN.
    """
    module = model.module
    if not isinstance(module, GraphModule):
        return model
    ir = copy.deepcopy(module.ir)
    state = {k: v.clone() for k, v in module.state_dict().items()}
    drop: set[str] = set()
    renamed: dict[str, str] = {}
    for conv, n in _conv_bn_pairs(ir):
        bn = module.mods[n["name"]]
        assert isinstance(bn, nn.BatchNorm2d)
        c, b = f"mods.{conv['name']}", f"mods.{n['name']}"
        bias = state.get(f"{c}.bias")
        w, nb = fold_bn_weights(state[f"{c}.weight"].numpy(), None if bias is None else bias.numpy(),
                                bn.weight.detach().numpy(), bn.bias.detach().numpy(), bn.running_mean.numpy(),
                                bn.running_var.numpy(), bn.eps)  # fmt: skip
        state[f"{c}.weight"], state[f"{c}.bias"] = torch.from_numpy(w), torch.from_numpy(nb)
        conv["attrs"]["bias"] = True
        for k in [k for k in state if k.startswith(f"{b}.")]:
            del state[k]
        drop.add(n["name"])
        renamed[n["outputs"][0]] = conv["outputs"][0]
    if not drop:
        return model
    ir["nodes"] = [n for n in ir["nodes"] if n["name"] not in drop]
    for n in ir["nodes"]:
        n["inputs"] = [renamed.get(v, v) for v in n["inputs"]]
    ir["outputs"] = [renamed.get(v, v) for v in ir["outputs"]]
    return _rebuilt(model, ir, state, {"pass": "fold_batchnorm", "layers": len(drop)})


def canonical_batchnorm(model: EdgeModel) -> EdgeModel:
    """``model`` with every BatchNorm rewritten as a plain per-channel scale and shift (eval-mode equal).

    Running mean 0 and variance ``1 - eps`` make the statistics constant, and in a graph the bias of a
    conv feeding only a BN moves into the BN's shift (zeroed), so these cost almost nothing in a
    compressed file. Modifies the module in place and returns the model.
    """
    module = model.module
    feeding: dict[str, nn.Module] = {}  # BN module path -> the conv whose output only it consumes
    if isinstance(module, GraphModule):
        feeding = {f"mods.{bn['name']}": module.mods[conv["name"]] for conv, bn in _conv_bn_pairs(module.ir)}
    with torch.no_grad():
        for name, bn in module.named_modules():
            if isinstance(bn, nn.BatchNorm2d | nn.BatchNorm1d) and bn.track_running_stats and bn.affine:
                scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                shift = bn.bias - bn.running_mean * scale
                conv = feeding.get(name)
                if conv is not None and conv.bias is not None:
                    shift += scale * conv.bias
                    conv.bias.zero_()
                bn.bias.copy_(shift)
                bn.weight.copy_(scale)
                bn.running_mean.zero_()
                bn.running_var.fill_(1.0 - bn.eps)
    return model
