"""The CLI's happy paths: each command's JSON shape, and artifacts that run where they should."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgeopt.cli import main


def cli_json(capfd: pytest.CaptureFixture[str], *args: object) -> dict:
    rc = main([str(a) for a in args] + ["--json"])
    out, err = capfd.readouterr()
    assert rc == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 1, out  # exactly one JSON object on stdout
    return json.loads(lines[0])


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "mlp.edgeopt"
    assert (
        main(["train", "zoo:mlp", "--data", "digits", "--epochs", "3", "--optimizer", "adam", "--out", str(out)]) == 0
    )
    return out


def test_train_eval_profile(trained: Path, capfd) -> None:
    ev = cli_json(capfd, "eval", trained, "--data", "digits", "--limit", "100")
    assert set(ev) >= {"accuracy", "samples"} and ev["samples"] == 100 and ev["accuracy"] > 0.5
    prof = cli_json(capfd, "profile", trained)
    assert prof["input_shape"] == [1, 8, 8] and prof["params"] == 64 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10


def test_export_bench_run_in_a_runtime(trained: Path, tmp_path: Path, capfd) -> None:
    art = tmp_path / "mlp.onnx"
    exp = cli_json(capfd, "export", trained, "--format", "onnx", "--out", art)
    assert exp["parity"]["rel_diff"] <= 1e-4 and art.is_file()
    bench = cli_json(capfd, "bench", art, "--threads", "1", "--runs", "20")
    assert bench["runtime"] == "onnxruntime" and bench["latency_ms_p50"] > 0  # the timing itself: test_export_runtimes
    assert bench["runs"] >= 20  # and more, until --seconds (1 s) passed
    x = np.random.default_rng(0).random((3, 1, 8, 8), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    cli_json(capfd, "run", art, "--inputs", tmp_path / "x.npy", "--out", tmp_path / "y_ort.npy")
    cli_json(capfd, "run", trained, "--inputs", tmp_path / "x.npy", "--out", tmp_path / "y_torch.npy")
    y_ort, y_torch = np.load(tmp_path / "y_ort.npy"), np.load(tmp_path / "y_torch.npy")
    assert y_ort.shape == (3, 10) and np.abs(y_ort - y_torch).max() <= 1e-4 * np.abs(y_torch).max()
    ev = cli_json(capfd, "eval", art, "--data", "digits", "--limit", "100")  # the bare artifact, via its sidecar
    assert ev["runtime"] == "onnxruntime"


def test_run_rejects_inputs_of_the_wrong_shape(trained: Path, tmp_path: Path, capfd) -> None:
    np.save(tmp_path / "x.npy", np.zeros((2, 3, 8, 8), np.float32))
    rc = main(["run", str(trained), "--inputs", str(tmp_path / "x.npy"), "--out", str(tmp_path / "y.npy")])
    _, err = capfd.readouterr()
    assert rc == 2 and "inputs have shape (2, 3, 8, 8) but the model takes N x 1x8x8" in err
    assert not (tmp_path / "y.npy").exists()


def test_recipe_command_writes_a_report(tmp_path: Path, capfd) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: zoo:mlp\ndata: digits\neval_limit: 50\npasses:\n  - train: {epochs: 1}\n")
    res = cli_json(capfd, "recipe", recipe, "--out", tmp_path / "run")
    assert res["stages"] == 2 and Path(res["report_html"]).is_file()
    html = Path(res["report_html"]).read_text()
    assert "<svg" in html and "train" in html
