"""Weight clustering (weight sharing): every layer's weights take one of ``k`` codebook values.

Deep Compression's second stage (Han et al. 2016). ``kmeans_1d`` is a deterministic Lloyd
k-means on one dimension (linear initialisation between min and max, as the paper found
best); ``cluster_model`` replaces each Conv2d / Linear weight by its centroids, keeping exact
zeros (pruned weights) out of the codebook. ``ClusteredTraining`` fine-tunes the centroids
(gradients of all weights in a cluster are summed into its centroid) while ``fit`` runs.

Cost: ``iters`` passes over each layer's weights (milliseconds for ResNet-8).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from edgeopt.compress.prune.sparse import prunable_layers
from edgeopt.errors import EdgeoptError

__all__ = ["ClusteredTraining", "Codebook", "cluster_model", "codebooks_of", "kmeans_1d"]


def kmeans_1d(values: np.ndarray, k: int, iters: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """(centroids [k], labels [n]) of 1-D k-means with linear initialisation. Pure, deterministic."""
    v = np.asarray(values, np.float64).ravel()
    if v.size == 0:
        return np.zeros(0), np.zeros(0, np.int64)
    k = int(min(k, np.unique(v).size))
    c = np.linspace(v.min(), v.max(), k)
    labels = np.zeros(v.size, np.int64)
    for _ in range(iters):
        edges = (c[1:] + c[:-1]) / 2  # sorted centroids: nearest = bucket between midpoints
        labels = np.searchsorted(edges, v)
        sums = np.bincount(labels, v, minlength=k)
        counts = np.bincount(labels, minlength=k)
        new = np.where(counts > 0, sums / np.maximum(counts, 1), c)
        new.sort()
        if np.allclose(new, c):
            c = new
            break
        c = new
    edges = (c[1:] + c[:-1]) / 2
    return c, np.searchsorted(edges, v)


@dataclass
class Codebook:
    """One layer's clustering: centroids and, per weight, its centroid index (-1: pruned zero)."""

    centroids: np.ndarray  # float32 [k]
    indices: np.ndarray  # int64, weight shape; -1 where the weight is exactly zero


def cluster_weight(weight: torch.Tensor, k: int) -> Codebook:
    """Cluster the non-zero entries of ``weight`` into ``k`` centroids (zeros stay zero)."""
    w = weight.detach().cpu().numpy().astype(np.float64)
    nz = w != 0
    idx = np.full(w.shape, -1, np.int64)
    cents, labels = kmeans_1d(w[nz], k)
    idx[nz] = labels
    return Codebook(cents.astype(np.float32), idx)


def cluster_model(module: nn.Module, bits: int = 4, min_size: int = 0) -> dict[str, Codebook]:
    """Cluster every Conv2d / Linear weight (in place) into ``2**bits`` shared values; returns the codebooks."""
    if not 1 <= bits <= 8:
        raise EdgeoptError(f"clustering to {bits} bits is not supported", "use 1 to 8 bits (e.g. --bits 4)")
    books = {}
    with torch.no_grad():
        for name, layer in prunable_layers(module, min_size).items():
            book = cluster_weight(layer.weight, 2**bits)
            books[name] = book
            layer.weight.copy_(_decode(book))
    return books


def _decode(book: Codebook) -> torch.Tensor:
    table = np.concatenate([book.centroids, np.zeros(1, np.float32)])  # index -1 -> 0.0
    return torch.from_numpy(table[book.indices].astype(np.float32))


def codebooks_of(module: nn.Module, max_values: int = 256, min_size: int = 0) -> dict[str, Codebook]:
    """Recover codebooks from a clustered module (its weights hold few distinct non-zero values)."""
    books = {}
    for name, layer in prunable_layers(module, min_size).items():
        w = layer.weight.detach().cpu().numpy()
        nz = w != 0
        cents, inv = np.unique(w[nz], return_inverse=True)
        if cents.size > max_values:
            continue
        idx = np.full(w.shape, -1, np.int64)
        idx[nz] = inv
        books[name] = Codebook(cents.astype(np.float32), idx)
    return books


class _SharedWeight(nn.Module):
    """Parametrisation: weight = centroids[indices] (zeros where pruned); the centroids are trained."""

    def __init__(self, book: Codebook) -> None:
        super().__init__()
        self.centroids = nn.Parameter(torch.from_numpy(book.centroids.copy()))
        idx = torch.from_numpy(book.indices)
        self.register_buffer("index", idx.clamp_min(0), persistent=False)
        self.register_buffer("keep", (idx >= 0).to(torch.float32), persistent=False)

    def forward(self, _original: torch.Tensor) -> torch.Tensor:
        return self.centroids[self.index] * self.keep


class ClusteredTraining:
    """Context manager: inside it the layers' weights are tied to trainable centroids.

    On exit the parametrisation is removed and the weights keep their clustered values, so
    ``fit`` inside the block fine-tunes the codebooks (and biases / BN) only for those layers.
    """

    def __init__(self, module: nn.Module, books: dict[str, Codebook]) -> None:
        self.module, self.books = module, books

    def __enter__(self) -> ClusteredTraining:
        for name, book in self.books.items():
            layer = self.module.get_submodule(name)
            parametrize.register_parametrization(layer, "weight", _SharedWeight(book), unsafe=True)
            layer.parametrizations.weight.original.requires_grad_(False)
        return self

    def __exit__(self, *exc: object) -> None:
        for name in self.books:
            layer = self.module.get_submodule(name)
            if parametrize.is_parametrized(layer, "weight"):
                parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
            layer.weight.requires_grad_(True)
