"""Partitioner properties: every sample exactly once, the promised skew, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from edgeopt.federated.partition import label_histogram, parse_partition, partition

LABELS = np.repeat(np.arange(10), 100)


@pytest.mark.parametrize("spec", ["iid", "dirichlet:0.5", "dirichlet:100", "shards:2"])
def test_partition_covers_each_sample_once(spec: str) -> None:
    parts = partition(LABELS, 20, spec, seed=1)
    assert len(parts) == 20
    allidx = np.concatenate(parts)
    assert sorted(allidx.tolist()) == list(range(len(LABELS)))
    for a, b in zip(parts, partition(LABELS, 20, spec, seed=1), strict=True):
        np.testing.assert_array_equal(a, b)


def test_iid_is_balanced_and_dirichlet_is_skewed() -> None:
    iid = label_histogram(LABELS, partition(LABELS, 10, "iid"), 10)
    assert {int(s) for s in iid.sum(1)} == {100}
    skew = label_histogram(LABELS, partition(LABELS, 10, "dirichlet:0.1"), 10)
    flat = label_histogram(LABELS, partition(LABELS, 10, "dirichlet:1000"), 10)
    top_share = lambda h: (h.max(1) / h.sum(1)).mean()  # noqa: E731
    assert top_share(skew) > 0.5 > top_share(flat)
    assert top_share(flat) < 0.2
    assert skew.sum() == len(LABELS)


def test_shards_give_at_most_k_classes() -> None:
    h = label_histogram(LABELS, partition(LABELS, 50, "shards:2"), 10)
    assert ((h > 0).sum(1) <= 2).all()
    assert (h.sum(1) == 20).all()


def test_bad_specs() -> None:
    for bad in ("dirichlet:0", "shards:x", "zipf", "iid:3"):
        with pytest.raises(ValueError):
            parse_partition(bad)
    with pytest.raises(ValueError):
        partition(LABELS, 2000, "iid")
