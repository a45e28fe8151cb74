"""Trainable scopes: which parameters an on-device update touches.

A scope is named by a string:

* ``all`` — every parameter (full fine-tuning).
* ``head`` — the last layer with parameters (the classifier).
* ``bias`` — every bias, plus the head (TinyTL's bias update keeps the classifier trainable too).
* ``bn`` — every batch-norm affine pair (weight and bias), plus the head. Batch norm stays in eval mode:
  the running statistics are frozen, only the affine parameters learn.
* ``lastk:K`` — the last K blocks (``lastk:1`` is the head). Blocks are the model's top-level children,
  with ``nn.Sequential`` (and ModuleDict/ModuleList) children opened up into their own items; only blocks
  with parameters count.
* ``lora:R`` — rank-R low-rank adapters beside every frozen conv and linear layer except the head, plus the
  trainable head (see :mod:`edgeopt.ondevice.lora`); merged back into the weights after training.
* ``auto`` — chosen for a memory budget by :func:`edgeopt.ondevice.adapt.choose_scope`.

:func:`prepare_scope` returns a deep copy of the module set up for the scope (parameters outside it have
``requires_grad=False``) and the names of the trainable parameters. Pure module surgery: no data, no runtime.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from torch import nn

from edgeopt.errors import EdgeoptError

SCOPE_HELP = "all, head, bias, bn, lastk:K, lora:R or auto"


@dataclass(frozen=True)
class Scope:
    """A parsed scope: ``kind`` is all/head/bias/bn/lastk/lora/auto, ``k`` the K of lastk or the R of lora."""

    kind: str
    k: int = 0

    @property
    def name(self) -> str:
        """The scope as the user writes it (``lastk:2``, ``lora:4``, ``head``)."""
        return f"{self.kind}:{self.k}" if self.kind in ("lastk", "lora") else self.kind


def parse_scope(text: str) -> Scope:
    """Parse a scope string (see the module doc); a malformed one raises ``EdgeoptError``."""
    raw = text.strip().lower()
    kind, _, arg = raw.partition(":")
    if kind in ("all", "head", "bias", "bn", "auto") and not arg:
        return Scope(kind)
    if kind in ("lastk", "lora"):
        try:
            k = int(arg)
        except ValueError:
            k = 0
        if k >= 1:
            return Scope(kind, k)
        raise EdgeoptError(f"scope '{text}' needs a positive number after '{kind}:'", f"for example {kind}:2")
    raise EdgeoptError(f"unknown scope '{text}'", f"use {SCOPE_HELP}")


def blocks(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's blocks in forward order (top-level children, ``Sequential`` opened up), parameterised only."""
    out: list[tuple[str, nn.Module]] = []

    def walk(prefix: str, m: nn.Module) -> None:
        for name, child in m.named_children():
            full = f"{prefix}{name}"
            if isinstance(child, (nn.Sequential, nn.ModuleDict, nn.ModuleList)):
                walk(f"{full}.", child)
            elif any(True for _ in child.parameters()):
                out.append((full, child))

    walk("", module)
    return out


def head_name(module: nn.Module) -> str:
    """The qualified name of the head: the last block with parameters."""
    found = blocks(module)
    if not found:
        raise EdgeoptError("the model has no parameters to train", "give a trained model")
    return found[-1][0]


def trainable_names(module: nn.Module, scope: Scope) -> list[str]:
    """Names of the parameters ``scope`` trains in ``module`` (before any adapters are added)."""
    names = [n for n, _ in module.named_parameters()]
    head = head_name(module)
    in_head = {n for n in names if n.startswith(head + ".")}
    if scope.kind == "all":
        return names
    if scope.kind == "head":
        return [n for n in names if n in in_head]
    if scope.kind == "bias":
        return [n for n in names if n.endswith(".bias") or n in in_head]
    if scope.kind == "bn":
        bn = {f"{m_name}.{p}" for m_name, m in module.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
              for p in ("weight", "bias") if getattr(m, p, None) is not None}  # fmt: skip
        if not bn:
            raise EdgeoptError("scope 'bn' needs batch norm layers; this model has none", "use bias or head")
        return [n for n in names if n in bn or n in in_head]
    if scope.kind == "lastk":
        found = blocks(module)
        if scope.k > len(found):
            raise EdgeoptError(f"scope lastk:{scope.k} asks for more blocks than the model has ({len(found)})",
                               f"use lastk:1 .. lastk:{len(found)}, or all")  # fmt: skip
        chosen = [name for name, _ in found[-scope.k :]]
        return [n for n in names if any(n.startswith(c + ".") for c in chosen)]
    if scope.kind == "lora":
        return [n for n in names if n in in_head]  # plus the adapters, added by prepare_scope
    raise EdgeoptError(f"scope '{scope.name}' is not a concrete scope", "choose one, or run adapt with --scope auto")


def prepare_scope(module: nn.Module, scope: Scope) -> tuple[nn.Module, list[str]]:
    """A deep copy of ``module`` in eval mode with only ``scope``'s parameters trainable, and their names.

    For ``lora:R`` the copy carries adapters (:func:`edgeopt.ondevice.lora.add_adapters`); their parameters
    are in the returned names. Cost: one copy of the weights.
    """
    work = copy.deepcopy(module).eval()
    names = trainable_names(work, scope)
    if scope.kind == "lora":
        from edgeopt.ondevice.lora import add_adapters

        names = names + add_adapters(work, scope.k, skip=head_name(work))
    keep = set(names)
    for n, p in work.named_parameters():
        p.requires_grad_(n in keep)
    return work, [n for n, _ in work.named_parameters() if n in keep]


def finish_scope(work: nn.Module, target: nn.Module) -> None:
    """Copy the trained weights of ``work`` (adapters merged) into ``target``'s parameters, in place."""
    from edgeopt.ondevice.lora import merge_adapters

    merged = merge_adapters(work)
    own = dict(target.named_parameters())
    for name, value in merged.items():
        if name in own:
            own[name].data.copy_(value)
