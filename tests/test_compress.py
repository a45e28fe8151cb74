"""Weight clustering, low-rank factorisation and the entropy-coded storage format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from edgeopt.compress.cluster import ClusteredTraining, cluster_model, codebooks_of, kmeans_1d
from edgeopt.compress.lowrank import choose_rank, lowrank_model
from edgeopt.compress.prune import apply_masks, magnitude_masks
from edgeopt.compress.storage import entropy_report, load_packed, pack_model, save_packed, unpack_model
from edgeopt.compress.workflows import TuneSettings, deep_compress
from edgeopt.data import load_dataset
from edgeopt.errors import EdgeoptError
from edgeopt.model import load_model, save_model
from edgeopt.models import create_model
from edgeopt.train import FitConfig, fit

pytestmark = pytest.mark.usefixtures("one_thread")


def test_kmeans_1d_hand_example() -> None:
    v = np.array([0.0, 0.1, 0.2, 5.0, 5.1, 9.9, 10.0, 10.1])
    c, labels = kmeans_1d(v, 3)
    np.testing.assert_allclose(c, [0.1, 5.05, 10.0], atol=1e-9)
    assert labels.tolist() == [0, 0, 0, 1, 1, 2, 2, 2]
    c2, l2 = kmeans_1d(np.array([1.0, 1.0, 2.0]), 8)  # fewer distinct values than k
    assert c2.tolist() == [1.0, 2.0] and l2.tolist() == [0, 0, 1]


def _sparse_clustered(seed: int = 0):
    torch.manual_seed(seed)
    m = create_model("resnet8")
    apply_masks(m.module, magnitude_masks(m.module, 0.7))
    books = cluster_model(m.module, bits=4)
    return m, books


def test_clustering_keeps_zeros_and_few_values() -> None:
    m, books = _sparse_clustered()
    for name, book in books.items():
        w = m.module.get_submodule(name).weight.detach()
        assert len(torch.unique(w[w != 0])) <= 16
        assert (w == 0).float().mean().item() == pytest.approx(0.7, abs=0.01)
        assert (book.indices < 0).sum() == (w == 0).sum().item()
    again = codebooks_of(m.module)
    assert again.keys() == books.keys()


def test_packed_roundtrip_restores_identical_outputs(tmp_path: Path) -> None:
    m, _ = _sparse_clustered()
    path, info = save_packed(m, tmp_path / "m", float_bits=32)
    assert path.suffix == ".eoz" and path.stat().st_size == info.total_bytes
    restored = load_packed(path)
    x = m.example_input(3)
    torch.testing.assert_close(restored.module(x), m.module(x), rtol=0, atol=0)
    # the packed file is far smaller than the float32 state dict (78K floats = 312 KB)
    assert info.total_bytes < 40_000
    assert info.nonzero_weights == pytest.approx(0.3 * info.weights, rel=0.02)
    ent = entropy_report(m)
    assert ent["indices_entropy_bytes"] < info.streams["indices"]["raw_bytes"]
    # also through the public loader
    torch.testing.assert_close(load_model(path).module(x), m.module(x), rtol=0, atol=0)


def test_float16_extras_and_imported_graph(tmp_path: Path) -> None:
    from test_prune_channel import tiny_imported

    m = tiny_imported()
    cluster_model(m.module, bits=3)
    data, info = pack_model(m, float_bits=16)
    restored = unpack_model(data)
    x = m.example_input(2)
    torch.testing.assert_close(restored.module(x), m.module(x), rtol=1e-2, atol=1e-3)  # biases in float16
    assert info.clustered_layers == 7


@pytest.mark.parametrize("damage", ["magic", "truncate"])
def test_corrupt_packed_file_is_one_clear_error(tmp_path: Path, damage: str) -> None:
    m, _ = _sparse_clustered()
    data, _ = pack_model(m)
    bad = (b"XXXX" + data[4:]) if damage == "magic" else data[: len(data) // 2]
    (tmp_path / "bad.eoz").write_bytes(bad)
    with pytest.raises(EdgeoptError, match="not a valid packed"):
        load_packed(tmp_path / "bad.eoz")


def test_clustered_training_moves_centroids_only() -> None:
    torch.manual_seed(0)
    data = load_dataset("digits").take(128)
    m = create_model("mlp", input_shape=(1, 8, 8), num_classes=10)
    books = cluster_model(m.module, bits=2)
    before = {n: torch.unique(m.module.get_submodule(n).weight.detach()) for n in books}
    with ClusteredTraining(m.module, books):
        fit(m, data, FitConfig(epochs=1, optimizer="adam", lr=1e-2))
    for n in books:
        after = torch.unique(m.module.get_submodule(n).weight.detach())
        assert len(after) <= 4 and not torch.equal(after, before[n])


def test_lowrank_factorises_and_rebuilds(tmp_path: Path) -> None:
    assert choose_rank(np.array([3.0, 2.0, 1.0, 0.1]), energy=0.9) == 2
    assert choose_rank(np.array([3.0, 2.0, 1.0, 0.1]), rank_ratio=0.5) == 2
    torch.manual_seed(0)
    m = create_model("resnet8")
    with torch.no_grad():
        m.module.fc.weight.copy_(torch.randn(10, 2) @ torch.randn(2, 64))  # rank 2
    lr, rep = lowrank_model(m, energy=0.9999, min_params=0)
    assert rep.layers["fc"]["rank"] == 2 and rep.layers["fc"]["params_after"] < 640
    x = m.example_input(2)
    torch.testing.assert_close(lr.module(x), m.module(x), rtol=1e-4, atol=1e-5)
    again = load_model(save_model(lr, tmp_path / "lr"))
    torch.testing.assert_close(again.module(x), lr.module(x))


def test_deep_compress_file_is_what_is_evaluated(tmp_path: Path) -> None:
    torch.manual_seed(0)
    data = load_dataset("digits").take(200)
    m = create_model("mlp", input_shape=(1, 8, 8), num_classes=10)
    res = deep_compress(m, data, tmp_path / "dc.eoz", sparsity=0.8, bits=3, prune_epochs=1, cluster_epochs=1,
                        settings=TuneSettings(optimizer="adam"))  # fmt: skip
    float32_bytes = 4 * sum(p.numel() for p in m.module.parameters())
    assert (tmp_path / "dc.eoz").stat().st_size * 8 <= float32_bytes  # 20% of weights left, 3-bit codes: >= 8x
    assert res.metrics["sparsity"] == pytest.approx(0.8, abs=0.01)
    x = m.example_input(4)
    torch.testing.assert_close(load_packed(tmp_path / "dc.eoz").module(x), res.model.module(x))
