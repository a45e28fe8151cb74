"""Split a labelled dataset across clients: IID, Dirichlet(α) over labels, pathological shards.

Every partitioner is a pure function of (labels, num_clients, parameter, seed) returning one
sorted index array per client; together they cover each sample exactly once.

- ``iid``: a random permutation cut into near-equal parts.
- ``dirichlet:α``: per class, proportions ~ Dir(α) over clients (Hsu et al. 2019; NIID-Bench's
  "label distribution skew"); small α = more skew. Redrawn until every client has at least
  ``min_size`` samples, as NIID-Bench does.
- ``shards:k``: sort by label, cut into ``k·num_clients`` shards, deal ``k`` to each client
  (McMahan et al. 2017's pathological non-IID; k=2 gives most clients two classes).

Cost: O(N log N).
"""

from __future__ import annotations

import numpy as np

SCHEMES = ("iid", "dirichlet", "shards")


def parse_partition(spec: str) -> tuple[str, float]:
    """``iid`` | ``dirichlet:α`` | ``shards:k`` -> (scheme, parameter)."""
    name, _, arg = spec.partition(":")
    try:
        if name == "iid" and not arg:
            return "iid", 0.0
        if name == "dirichlet" and float(arg) > 0:
            return "dirichlet", float(arg)
        if name == "shards" and int(arg) >= 1:
            return "shards", float(int(arg))
    except ValueError:
        pass
    raise ValueError(f"unknown partition '{spec}' (use iid, dirichlet:ALPHA or shards:K)")


def partition_iid(n: int, num_clients: int, seed: int) -> list[np.ndarray]:
    """Random near-equal split of ``range(n)``."""
    perm = np.random.default_rng([seed, 1]).permutation(n)
    return [np.sort(p) for p in np.array_split(perm, num_clients)]


def partition_dirichlet(
    labels: np.ndarray, num_clients: int, alpha: float, seed: int, min_size: int = 10, max_tries: int = 1000
) -> list[np.ndarray]:
    """Label-skewed split: class ``c``'s samples go to clients in proportions ~ Dir(α)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng([seed, 2])
    min_size = min(min_size, len(labels) // num_clients)
    for _ in range(max_tries):
        parts: list[list[int]] = [[] for _ in range(num_clients)]
        for c in np.unique(labels):
            idx = rng.permutation(np.flatnonzero(labels == c))
            p = rng.dirichlet(np.full(num_clients, alpha))
            # NIID-Bench balance rule: a client that already holds its share gets no more
            sizes = np.array([len(q) for q in parts])
            p = p * (sizes < len(labels) / num_clients)
            p = p / p.sum() if p.sum() > 0 else np.full(num_clients, 1.0 / num_clients)
            cuts = (np.cumsum(p) * len(idx)).astype(int)[:-1]
            for k, chunk in enumerate(np.split(idx, cuts)):
                parts[k].extend(chunk.tolist())
        if min(len(q) for q in parts) >= min_size:
            return [np.sort(np.asarray(q, np.int64)) for q in parts]
    raise ValueError(f"no Dirichlet({alpha}) split gives every one of {num_clients} clients {min_size} samples")


def partition_shards(labels: np.ndarray, num_clients: int, shards_per_client: int, seed: int) -> list[np.ndarray]:
    """Pathological non-IID: sorted-by-label shards, ``shards_per_client`` random ones per client."""
    labels = np.asarray(labels)
    rng = np.random.default_rng([seed, 3])
    order = np.argsort(labels, kind="stable")
    n_shards = num_clients * shards_per_client
    if n_shards > len(labels):
        raise ValueError(f"{n_shards} shards need at least that many samples, have {len(labels)}")
    shards = np.array_split(order, n_shards)
    deal = rng.permutation(n_shards).reshape(num_clients, shards_per_client)
    return [np.sort(np.concatenate([shards[s] for s in row])) for row in deal]


def partition(labels: np.ndarray, num_clients: int, spec: str, seed: int = 0) -> list[np.ndarray]:
    """Indices of each client's samples under the scheme named by ``spec``."""
    if num_clients < 1:
        raise ValueError("num_clients must be at least 1")
    if num_clients > len(labels):
        raise ValueError(f"{num_clients} clients but only {len(labels)} samples")
    scheme, arg = parse_partition(spec)
    if scheme == "iid":
        return partition_iid(len(labels), num_clients, seed)
    if scheme == "dirichlet":
        return partition_dirichlet(labels, num_clients, arg, seed)
    return partition_shards(labels, num_clients, int(arg), seed)


def label_histogram(labels: np.ndarray, parts: list[np.ndarray], num_classes: int) -> np.ndarray:
    """(num_clients, num_classes) counts of each label on each client."""
    labels = np.asarray(labels)
    return np.stack([np.bincount(labels[p], minlength=num_classes) for p in parts]) if parts else np.zeros((0, 0))
