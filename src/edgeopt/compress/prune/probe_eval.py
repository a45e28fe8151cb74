"""Accuracy of many cuts of one imported graph, each run only from where it differs from the original.

A latency table (:func:`.netadapt.measure_units`) evaluates every variant of a model with one
group cut on the same held-out images. The nodes before the first layer a cut changes are the
original's, weights included (reconstruction re-fits only from that layer on), so their values
are the same in every variant. ``cut_accuracies`` runs the original once per batch and, at each
node where some variant first differs, hands a copy of the live values to those variants, which
run only the rest of their graph. The outputs are then scored by
:func:`edgeopt.train.evaluate` (``predict`` replaying them batch by batch), so class matching,
sampling and warnings are exactly evaluate's.

Only ``GraphModule`` s (imported graphs) have the node list this needs; other models are
evaluated whole. Cost: one forward of the original plus each variant's suffix per batch (on the
MLPerf ResNet-8 latency table about half of evaluating every variant whole).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from edgeopt.data import ImageDataset
from edgeopt.interop.graph import GraphModule
from edgeopt.model import EdgeModel, model_args

Tick = Callable[[float], None]  # fraction of the shared pass done


def first_difference(base: GraphModule, variant: GraphModule) -> int:
    """Index of the first node of ``variant`` that is not ``base``'s (IR entry or tensors); nodes
    before it compute the same values. Pure."""
    for i, (a, b) in enumerate(zip(base.ir["nodes"], variant.ir["nodes"], strict=False)):
        if a != b or not _same_tensors(base, variant, a["name"]):
            return i
    return min(len(base.ir["nodes"]), len(variant.ir["nodes"]))


def _same_tensors(base: GraphModule, variant: GraphModule, name: str) -> bool:
    if name in base.mods or name in variant.mods:
        if name not in base.mods or name not in variant.mods:
            return False
        sa, sb = base.mods[name].state_dict(), variant.mods[name].state_dict()
        if sa.keys() != sb.keys() or any(not torch.equal(sa[k], sb[k]) for k in sa):
            return False
    ca, cb = getattr(base.consts, name, None), getattr(variant.consts, name, None)
    if ca is None or cb is None:
        return ca is None and cb is None
    return ca.shape == cb.shape and bool(torch.equal(ca, cb))


def _run(gm: GraphModule, env: dict[str, torch.Tensor], start: int, stop: int) -> None:
    """Nodes ``start``..``stop-1`` of ``gm``'s plan on ``env`` (in place), freeing values after last use."""
    for run, name, attrs, ins, out, frees in gm._plan[start:stop]:
        env[out] = run(gm, name, attrs, [env[v] for v in ins])
        for v in frees:
            env.pop(v, None)


def _as_numpy(gm: GraphModule, env: dict[str, torch.Tensor]) -> Any:
    outs = tuple(env[v].float().numpy() for v in gm.output_names)
    return outs[0] if len(outs) == 1 else outs


def cut_accuracies(
    base: EdgeModel, variants: list[EdgeModel], data: ImageDataset, tick: Tick | None = None
) -> tuple[float, list[float]]:
    """Accuracy (evaluate's metric) of ``base`` and of each of ``variants`` on ``data``.

    ``variants`` must be cuts of ``base`` (same input spec and classes); ``tick`` is told the share of
    the shared pass done after each batch. Non-graph models are evaluated whole, one after another.
    """
    from edgeopt.train import evaluate

    graphs = [v.module for v in variants]
    if not isinstance(base.module, GraphModule) or not all(isinstance(g, GraphModule) for g in graphs):
        accs = []
        for i, m in enumerate([base, *variants]):
            accs.append(evaluate(m, data).accuracy)
            if tick is not None:
                tick((i + 1) / (len(variants) + 1))
        return accs[0], accs[1:]
    gm: GraphModule = base.module.eval()
    for g in graphs:
        g.eval()
    cuts = [first_difference(gm, g) for g in graphs]  # type: ignore[arg-type]
    stops = sorted(set(cuts))
    outputs: list[list[Any]] = [[] for _ in variants]
    batches = max(1, -(-len(data) // 256))  # evaluate's batch size (an estimate: matching may drop classes)
    done = [0]

    def predict_all(x: np.ndarray) -> Any:
        with torch.inference_mode():
            env = dict(zip(gm.input_names, model_args(x), strict=True))
            at = 0
            for stop in stops:
                _run(gm, env, at, stop)
                at = stop
                for k, g in enumerate(graphs):
                    if cuts[k] == stop:
                        own = dict(env)
                        _run(g, own, stop, len(g._plan))  # type: ignore[arg-type]
                        outputs[k].append(_as_numpy(g, own))  # type: ignore[arg-type]
            _run(gm, env, at, len(gm._plan))
            done[0] += 1
            if tick is not None:
                tick(min(1.0, done[0] / batches))
            return _as_numpy(gm, env)

    base_acc = evaluate(base, data, predict=predict_all).accuracy
    accs = [evaluate(v, data, predict=_replay(out)).accuracy for v, out in zip(variants, outputs, strict=True)]
    return base_acc, accs


def _replay(outputs: list[Any]) -> Callable[[np.ndarray], Any]:
    """A ``predict`` returning ``outputs`` one batch per call, in order."""
    it = iter(outputs)
    return lambda _x: next(it)
