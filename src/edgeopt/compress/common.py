"""Helpers every compression technique shares: logits view of imported models, module paths.

Imported classifiers often end in a softmax (MLPerf Tiny's ResNet-8 does). Training losses and
distillation want logits, so ``strip_output_softmax`` drops that final node; the predicted
class (argmax) is unchanged, and the change is recorded in the model's lineage.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from edgeopt.interop.graph import GraphModule
from edgeopt.model import EdgeModel


def ends_in_softmax(module: nn.Module) -> bool:
    """True when ``module`` is an imported graph whose (single) output is a softmax node."""
    if not isinstance(module, GraphModule) or len(module.output_names) != 1:
        return False
    last = {n["outputs"][0]: n for n in module.ir["nodes"]}.get(module.output_names[0])
    return last is not None and last["op"] == "softmax"


def strip_output_softmax(model: EdgeModel) -> EdgeModel:
    """A copy of ``model`` that outputs logits instead of softmax probabilities (same argmax).

    Models that do not end in a softmax are returned unchanged. Cost: one module rebuild.
    """
    module = model.module
    if not ends_in_softmax(module):
        return model
    assert isinstance(module, GraphModule)
    ir = copy.deepcopy(module.ir)
    last = next(n for n in ir["nodes"] if n["outputs"][0] == ir["outputs"][0])
    ir["outputs"] = [last["inputs"][0]]
    ir["nodes"] = [n for n in ir["nodes"] if n is not last]
    new = GraphModule(ir)
    new.load_state_dict(module.state_dict())
    out = model.with_lineage({"pass": "strip_softmax", "note": "outputs logits; argmax unchanged"}, new.eval())
    out.meta.arch = {"kind": "graph", "ir": new.ir}
    return out


def as_logits(output: torch.Tensor) -> torch.Tensor:
    """Class scores usable as logits: probabilities (rows summing to 1, all >= 0) become log-probabilities."""
    if output.dim() == 2 and bool((output >= 0).all()) and torch.allclose(output.sum(1), torch.ones(len(output))):
        return output.clamp_min(1e-12).log()
    return output
