"""Compression commands and passes: one-line errors, outputs that load, recipes with the new passes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from edgeopt.cli import main
from edgeopt.model import load_model, save_model
from edgeopt.models import create_model
from edgeopt.pipeline import recipe_from_dict, run_recipe
from edgeopt.pipeline.passes import available_passes


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run_cli(capfd: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    out, err = capfd.readouterr()
    return rc, out, err


def one_line_error(rc: int, err: str, fragment: str) -> None:
    assert rc == 2, err
    assert "Traceback" not in err
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and fragment in lines[0], err


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--ratio", "0.5", "--target-macs", "1000"], "exactly one target"),
        ([], "exactly one target"),
        (["--ratio", "2"], "not in [0, 1)"),
        (["--target-macs", "10"], "cannot reach 10 MACs"),
        (["--method", "magnitude"], "needs --ratio"),
        (["--method", "nm", "--target-latency-ms", "1"], "dense runtimes"),
        (["--method", "nm", "--nm", "2x4"], "is not N:M"),
        (["--method", "snip", "--ratio", "0.5"], "unknown pruning method"),
        (["--ratio", "0.5", "--criterion", "hessian"], "unknown importance criterion"),
        (["--ratio", "0.5", "--distill-from", "nope.edgeopt"], "model file not found"),
        (["--ratio", "0.5", "--steps", "2", "--epochs", "1"], "need at least 2 fine-tuning epochs"),
        (["--widths", "16,8,x"], "is not a comma list"),
        (["--widths", "16,8"], "2 widths for 6 channel groups"),
        (["--ratio", "0.5", "--epochs", "1", "--device", "gpu0"], "unknown training device"),
        (["--ratio", "0.5", "--allocation", "latency", "--runtime", "onnxruntime,tvm"], "cannot time latency in 'tvm'"),
    ],
)
def test_prune_errors_are_one_line(tmp_path: Path, capfd, args: list[str], fragment: str) -> None:
    rc, _, err = run_cli(capfd, "prune", "zoo:resnet8", "--data", "digits", "--out", tmp_path / "p", *args)
    one_line_error(rc, err, fragment)
    assert list(tmp_path.iterdir()) == []


def test_prune_distill_compress_commands(tmp_path: Path, capfd) -> None:
    torch.manual_seed(0)
    teacher = save_model(create_model("resnet8", input_shape=(1, 8, 8), num_classes=10), tmp_path / "t")
    rc, out, err = run_cli(capfd, "prune", teacher, "--data", "digits", "--ratio", "0.5", "--epochs", "2",
                           "--steps", "2", "--distill-from", teacher, "--out", tmp_path / "p", "--json")  # fmt: skip
    assert rc == 0, err
    rec = json.loads(out)
    assert rec["macs_after"] <= rec["macs_before"] / 2
    pruned = load_model(rec["model"])
    assert pruned.module.stack3.conv2.out_channels < 64
    rc, out, err = run_cli(capfd, "distill", "--teacher", teacher, "--student", "zoo:resnet8", "--width", "4",
                           "--data", "digits", "--epochs", "1", "--out", tmp_path / "s", "--json")  # fmt: skip
    assert rc == 0, err
    assert load_model(json.loads(out)["model"]).module.stem[0].out_channels == 4
    flags = ["--sparsity", "0.5", "--prune-epochs", "0", "--cluster-epochs", "0", "--out", tmp_path / "c", "--json"]
    rc, out, err = run_cli(capfd, "compress", rec["model"], "--data", "digits", *flags)
    assert rc == 0, err
    c = json.loads(out)
    dense_fp32 = 4 * sum(p.numel() for p in pruned.module.parameters())
    assert c["file_bytes"] < 0.5 * dense_fp32  # half the weights are zeros, the rest 4-bit cluster indices
    # (accuracy after compression on a trained model: tests/test_compression_quality.py)
    # the .eoz file, loaded from disk, is the model compress scored in memory
    rc, out, err = run_cli(capfd, "eval", c["model"], "--data", "digits", "--json")
    assert rc == 0, err
    assert json.loads(out)["accuracy"] == pytest.approx(c["restored_test_accuracy"], abs=1e-9)
    rc, _, err = run_cli(capfd, "compress", tmp_path / "missing.edgeopt", "--data", "digits", "--out", tmp_path / "x")
    one_line_error(rc, err, "model file not found")


def test_passes_registered_and_run_in_a_recipe(tmp_path: Path) -> None:
    assert {"prune", "distill", "compress"} <= set(available_passes())
    recipe = {
        "model": "zoo:resnet8", "data": "digits", "eval_limit": 100,
        "passes": [
            {"train": {"epochs": 1}},
            {"distill": {"student": "zoo:resnet8", "student_kwargs": {"width": 8}, "epochs": 1}},
            {"prune": {"method": "channel", "ratio": 0.5, "epochs": 1}},
            {"compress": {"sparsity": 0.5, "bits": 4, "prune_epochs": 0, "cluster_epochs": 0}},
        ],
    }  # fmt: skip
    ledger = run_recipe(recipe_from_dict(recipe), tmp_path / "run")
    names = [r["name"] for r in ledger]
    assert names[-3:] == ["distill", "prune", "compress"]
    prune_m, comp_m = ledger[-2]["metrics"], ledger[-1]["metrics"]
    assert prune_m["macs_after"] <= prune_m["macs_before"] / 2
    assert comp_m["artifact_bytes"]["eoz"] == comp_m["file_bytes"] > 0
