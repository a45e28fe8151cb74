"""Federated personalization as a name filter: which entries of the flat weight vector stay on the client.

Modes (``FederatedConfig.personalize``):

- ``none``: one global model (plain federated training).
- ``head`` (FedPer, Arivazhagan et al. 2019): the head (the last layer with parameters, as
  :func:`edgeopt.ondevice.scopes.head_name` finds it) is trained by each client and never uploaded;
  the server aggregates the shared body only.
- ``bn`` (FedBN, Li et al. 2021): every batch-norm layer's affine parameters and running statistics
  stay on the client.
- ``finetune``: plain federated training, then each client fine-tunes the head of the final global
  model on its own data (local adaptation after federated training).

Everything here is pure (names, boolean masks over the flat vector, index splits, summaries); the
engine applies the mask in the client's round (:func:`edgeopt.federated.rounds.client_work`) and keeps
each client's local part in its client state, so aggregation never sees personalization.
Cost: O(P) per call.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn

from edgeopt.federated.algorithms.params import ParamLayout

MODES = ("none", "head", "bn", "finetune")
DEFAULT_HOLDOUT = 0.2


def parse_personalize(spec: str) -> str:
    """``none`` | ``head`` | ``bn`` | ``finetune`` (ValueError otherwise)."""
    if spec not in MODES:
        raise ValueError(f"unknown personalize mode '{spec}' (use {', '.join(MODES)})")
    return spec


def local_names(module: nn.Module, mode: str, layout: ParamLayout) -> tuple[str, ...]:
    """Names of the flat-vector entries ``mode`` keeps on the client (for ``finetune``: the head it adapts).

    ValueError for ``bn`` on a model without batch norm.
    """
    from edgeopt.ondevice.scopes import head_name

    if mode == "none":
        return ()
    if mode in ("head", "finetune"):
        prefixes = (head_name(module) + ".",)
    else:
        prefixes = tuple(f"{n}." for n, m in module.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))
        if not prefixes:
            raise ValueError("personalize 'bn' needs batch-norm layers; this model has none")
    return tuple(n for n in layout.names if n.startswith(prefixes))


def with_local(params: np.ndarray, mask: np.ndarray, local: np.ndarray | None) -> np.ndarray:
    """``params`` with the masked entries replaced by a client's ``local`` part (a copy; as is when None)."""
    out = np.array(params, np.float32, copy=True)
    if local is not None:
        out[mask] = local
    return out


def split_holdout(parts: list[np.ndarray], fraction: float, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each client's indices cut into (train, held-out); ``fraction`` of each client is held out (at least 1).

    Seeded per client by (seed, client), so the split does not depend on the other clients.
    """
    train, held = [], []
    for c, p in enumerate(parts):
        if fraction <= 0 or len(p) < 2:
            train.append(p)
            held.append(p[:0])
            continue
        perm = np.random.default_rng([seed, c, 0x40]).permutation(len(p))
        k = min(len(p) - 1, max(1, round(fraction * len(p))))
        train.append(np.sort(p[perm[k:]]))
        held.append(np.sort(p[perm[:k]]))
    return train, held


def summarize(mode: str, before: list[float], after: list[float], sizes: list[int]) -> dict[str, Any]:
    """The per-client table, the mean per-client gain (after - before, unweighted) and the worst client.

    The worst client is the one with the lowest accuracy after personalization (ties: lowest gain).
    """
    rows = [
        {"client": c, "before": b, "after": a, "gain": a - b, "holdout": n}
        for c, (b, a, n) in enumerate(zip(before, after, sizes, strict=True))
        if n > 0
    ]
    if not rows:
        return {"mode": mode, "per_client": [], "mean_before": None, "mean_after": None, "mean_gain": None,
                "worst_client": None}  # fmt: skip
    worst = min(rows, key=lambda r: (r["after"], r["gain"]))
    return {
        "mode": mode,
        "per_client": rows,
        "mean_before": float(np.mean([r["before"] for r in rows])),
        "mean_after": float(np.mean([r["after"] for r in rows])),
        "mean_gain": float(np.mean([r["gain"] for r in rows])),
        "min_gain": float(min(r["gain"] for r in rows)),
        "worst_client": dict(worst),
    }
