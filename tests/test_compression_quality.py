"""Compression keeps accuracy: pruning, distillation and Deep Compression of a *trained* ResNet-8 on digits.

Each check compares the compressed model, evaluated here on the 360 test images, with the trained
base (~99%), so a broken technique (no recovery, masks lost, soft targets ignored, codebooks wrong)
fails the floor instead of passing ``0 <= accuracy <= 1``. The prune and compress runs go through
the CLI, so they are also the tests of those commands' successful runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from edgeopt.cli import main
from edgeopt.compress.distill import DistillConfig, distill
from edgeopt.model import load_model, save_model
from edgeopt.models import create_model
from edgeopt.profile import profile_model
from edgeopt.train import FitConfig, evaluate, fit

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def base(digits, tmp_path_factory: pytest.TempPathFactory):
    """(trained ResNet-8, its .edgeopt file, its test accuracy): 6 epochs, ~99% on digits."""
    train, test = digits
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # module fixtures run before the function-scoped one_thread
    torch.manual_seed(0)
    model, _ = fit(create_model("resnet8", input_shape=(1, 8, 8), num_classes=10), train,
                   FitConfig(epochs=6, batch_size=64, seed=0))  # fmt: skip
    acc = evaluate(model, test).accuracy
    torch.set_num_threads(before)
    assert acc > 0.97
    return model, save_model(model, tmp_path_factory.mktemp("quality") / "base.edgeopt"), acc


def _cli(capfd, *args: object) -> dict:
    rc = main([str(a) for a in args] + ["--json"])
    out, err = capfd.readouterr()
    assert rc == 0, err
    return json.loads(out)


def _weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    kinds = (torch.nn.Conv2d, torch.nn.Linear)
    return {n: m.weight.detach() for n, m in module.named_modules() if isinstance(m, kinds)}


def test_channel_pruning_removes_80pct_of_macs_and_recovers(base, digits, tmp_path: Path, capfd) -> None:
    model, path, acc = base
    _cli(capfd, "prune", path, "--data", "digits", "--ratio", "0.8", "--epochs", "2", "--distill-from", path,
         "--out", tmp_path / "p.edgeopt")  # fmt: skip
    pruned = load_model(tmp_path / "p.edgeopt")
    assert profile_model(pruned).macs <= 0.2 * profile_model(model).macs  # counted here, not taken from the CLI
    # ~96% right after the cut (reconstruction only), ~98% after 2 KD epochs
    assert evaluate(pruned, digits[1]).accuracy >= acc - 0.02


def test_magnitude_pruning_zeroes_80pct_and_recovers(base, digits, tmp_path: Path, capfd) -> None:
    model, path, acc = base
    _cli(capfd, "prune", path, "--data", "digits", "--method", "magnitude", "--ratio", "0.8", "--epochs", "4",
         "--out", tmp_path / "m.edgeopt")  # fmt: skip
    pruned = load_model(tmp_path / "m.edgeopt")
    w = _weights(pruned.module)
    zeros = sum(int((t == 0).sum()) for t in w.values()) / sum(t.numel() for t in w.values())
    assert zeros == pytest.approx(0.8, abs=0.01)
    assert evaluate(pruned, digits[1]).accuracy >= acc - 0.03  # 0% recovery would be ~10%


def test_two_four_sparsity_is_exact_and_keeps_accuracy(base, digits, tmp_path: Path, capfd) -> None:
    _, path, acc = base
    _cli(capfd, "prune", path, "--data", "digits", "--method", "nm", "--nm", "2:4", "--epochs", "1",
         "--out", tmp_path / "nm.edgeopt")  # fmt: skip
    pruned = load_model(tmp_path / "nm.edgeopt")
    sparse = 0
    for name, t in _weights(pruned.module).items():
        flat = (t.permute(0, 2, 3, 1) if t.dim() == 4 else t).reshape(t.shape[0], -1)
        if flat.shape[1] % 4:
            continue  # the 1-channel stem cannot be grouped by four
        nonzero_per_group = (flat.reshape(-1, 4) != 0).sum(1)
        assert int(nonzero_per_group.max()) <= 2, name  # at most 2 of every 4 consecutive input weights
        sparse += 1
    assert sparse >= 9
    assert evaluate(pruned, digits[1]).accuracy >= acc - 0.03


def test_distillation_from_soft_targets_alone_transfers_the_teacher(base, digits) -> None:
    teacher, _, acc = base
    train, test = digits
    torch.manual_seed(0)
    student = create_model("resnet8", input_shape=(1, 8, 8), num_classes=10, width=8)
    # alpha 1: no label term at all, so everything the student knows comes through the teacher's logits
    student, _ = distill(student, teacher, train, FitConfig(epochs=4, batch_size=64, seed=0), DistillConfig(alpha=1.0))
    s, t = evaluate(student, test), evaluate(teacher, test)
    assert s.accuracy >= acc - 0.06
    assert float((s.predictions == t.predictions).mean()) >= 0.93


def test_deep_compression_file_is_small_and_keeps_accuracy(base, digits, tmp_path: Path, capfd) -> None:
    model, path, acc = base
    res = _cli(capfd, "compress", path, "--data", "digits", "--sparsity", "0.75", "--bits", "4", "--prune-epochs",
               "2", "--cluster-epochs", "2", "--distill-from", path, "--out", tmp_path / "dc.eoz")  # fmt: skip
    params = sum(p.numel() for p in model.module.parameters())
    assert Path(res["model"]).stat().st_size * 10 <= 4 * params  # >= 10x under the float32 weights
    restored = load_model(res["model"])
    for name, t in _weights(restored.module).items():
        if t.numel() >= 256:  # Deep Compression leaves very small layers dense
            assert int((t == 0).sum()) / t.numel() == pytest.approx(0.75, abs=0.02), name
            assert len(torch.unique(t[t != 0])) <= 16, name  # a 4-bit codebook per layer
    assert evaluate(restored, digits[1]).accuracy >= acc - 0.03
