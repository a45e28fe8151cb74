"""Bad input gives one clear line, a non-zero exit, no traceback and no half-written output."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from edgeopt.cli import main
from edgeopt.model import save_model
from edgeopt.models import create_model


def run_cli(capfd: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    out, err = capfd.readouterr()
    return rc, out, err


def assert_one_line_error(rc: int, err: str, fragment: str) -> None:
    assert rc == 2, err
    assert "Traceback" not in err
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and fragment in lines[0], err


def leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def test_missing_model_file(tmp_path: Path, capfd) -> None:
    rc, _, err = run_cli(capfd, "profile", tmp_path / "nope.edgeopt")
    assert_one_line_error(rc, err, "model file not found")


def test_unknown_extension(tmp_path: Path, capfd) -> None:
    (tmp_path / "m.h5").write_bytes(b"x")
    rc, _, err = run_cli(capfd, "profile", tmp_path / "m.h5")
    assert_one_line_error(rc, err, "unknown model file type '.h5'")


def test_bare_zoo_name_suggests_the_zoo_prefix(tmp_path: Path, capfd, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    rc, _, err = run_cli(capfd, "profile", "resnet8")
    assert_one_line_error(rc, err, "did you mean zoo:resnet8?")
    rc, _, err = run_cli(capfd, "profile", "resnet9")  # not in the zoo: the general hint
    assert_one_line_error(rc, err, "or zoo:NAME")


def test_corrupt_model_file_leaves_no_output(tmp_path: Path, capfd) -> None:
    (tmp_path / "bad.edgeopt").write_bytes(b"\x00garbage")
    rc, _, err = run_cli(capfd, "export", tmp_path / "bad.edgeopt", "--format", "onnx", "--out", tmp_path / "o.onnx")
    assert_one_line_error(rc, err, "is not a valid edgeopt model")
    assert leftovers(tmp_path) == ["bad.edgeopt"]


@pytest.mark.parametrize("suffix", [".tflite", ".onnx"])
def test_corrupt_import_source(tmp_path: Path, capfd, suffix: str) -> None:
    src = tmp_path / f"bad{suffix}"
    src.write_bytes(b"\x01\x02 definitely not a model")
    rc, _, err = run_cli(capfd, "import", src, "--out", tmp_path / "m.edgeopt")
    assert_one_line_error(rc, err, f"is not a valid {suffix} file")
    assert leftovers(tmp_path) == [src.name]


def test_unknown_onnx_op_names_op_and_node(tmp_path: Path, capfd) -> None:
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("Einsum", ["x", "x"], ["y"], name="mystery_node", equation="bi,bi->b")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    rc, _, err = run_cli(capfd, "import", tmp_path / "m.onnx", "--out", tmp_path / "m.edgeopt")
    assert_one_line_error(rc, err, "unsupported ONNX op 'Einsum' at node 'mystery_node'")
    assert leftovers(tmp_path) == ["m.onnx"]


def test_empty_dataset(tmp_path: Path, capfd) -> None:
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out" / "m.edgeopt"
    rc, _, err = run_cli(capfd, "train", "zoo:mlp", "--data", f"imagefolder:{tmp_path / 'empty'}", "--out", out)
    assert_one_line_error(rc, err, "no class folders under train/")
    assert not out.parent.exists() or leftovers(out.parent) == []


def test_malformed_dataset(tmp_path: Path, capfd) -> None:
    (tmp_path / "d.zip").write_bytes(b"PK not really")
    rc, _, err = run_cli(capfd, "eval", "zoo:mlp", "--data", f"imagefolder:{tmp_path / 'd.zip'}")
    assert_one_line_error(rc, err, "neither a directory nor a valid .zip")


def test_model_data_shape_mismatch(tmp_path: Path, capfd) -> None:
    save_model(create_model("resnet8"), tmp_path / "r8.edgeopt")  # 32x32x3
    rc, _, err = run_cli(capfd, "train", tmp_path / "r8.edgeopt", "--data", "digits", "--out", tmp_path / "t")
    assert_one_line_error(rc, err, "model expects 32x32x3 images but the data has 8x8x1")
    assert leftovers(tmp_path) == ["r8.edgeopt"]


def test_nan_weights(tmp_path: Path, capfd) -> None:
    m = create_model("mlp")
    with torch.no_grad():
        m.module.head.weight[0, 0] = float("nan")
    save_model(m, tmp_path / "nan.edgeopt")
    rc, _, err = run_cli(capfd, "export", tmp_path / "nan.edgeopt", "--format", "onnx", "--out", tmp_path / "x.onnx")
    assert_one_line_error(rc, err, "NaN or Inf (in 'head.weight')")
    assert leftovers(tmp_path) == ["nan.edgeopt"]


def test_bad_input_range_and_debug_traceback(tmp_path: Path, capfd) -> None:
    rc, _, err = run_cli(capfd, "eval", "zoo:mlp", "--data", "digits", "--input-range", "5")
    assert_one_line_error(rc, err, "--input-range '5' is not LO,HI")
    rc, _, err = run_cli(capfd, "--debug", "profile", tmp_path / "nope.edgeopt")
    assert rc == 2 and "Traceback" in err


def test_json_prints_exactly_one_object(capfd) -> None:
    import json

    rc, out, _ = run_cli(capfd, "profile", "zoo:resnet8", "--json")
    assert rc == 0
    d = json.loads(out)
    assert d["params"] == 78666 and d["macs"] == 12501632 and d["input_shape"] == [3, 32, 32]


def test_ctrl_c_exits_130_and_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "m.edgeopt"
    cmd = [sys.executable, "-m", "edgeopt.cli", "train", "zoo:resnet8", "--data", "digits", "--epochs", "500",
           "--out", str(out)]  # fmt: skip
    env = {**os.environ, "EDGEOPT_PROGRESS": "lines"}  # one stderr line per finished step
    env.pop("EDGEOPT_QUIET", None)  # set by any earlier in-process --json call
    # a terminal's Ctrl-C: SIGINT handled by default even when this test runs under a background job (whose
    # children inherit SIGINT ignored, and Python then never raises KeyboardInterrupt)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    started: list[str] = []
    deadline = time.monotonic() + 300  # imports on a loaded 2-core machine
    while time.monotonic() < deadline and proc.poll() is None:
        line = proc.stderr.readline()  # blocks until training reports progress (or the process ends)
        started.append(line)
        if "epoch" in line:
            break
    # training is under way before the interrupt (if the process ended instead, say how)
    assert started and "epoch" in started[-1], f"exit code {proc.poll()}: {''.join(started)!r}"
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=120)
    err = "".join(started) + rest
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert leftovers(tmp_path) == []


def test_federate_refuses_a_label_skewed_partition_for_an_anomaly_model(tmp_path: Path, capfd) -> None:
    # dirichlet/shards split by class label: an autoencoder's training split is all normal (one label)
    rc, _, err = run_cli(
        capfd, "federate", "zoo:fc_autoencoder", "--data", "anomaly:200", "--clients", "2", "--rounds", "1",
        "--partition", "dirichlet:0.5", "--out", tmp_path / "run",
    )  # fmt: skip
    assert_one_line_error(rc, err, "--partition dirichlet:0.5 splits by class label, but this is an anomaly model")
    assert not (tmp_path / "run" / "checkpoint.npz").exists()


@pytest.mark.parametrize(
    ("data", "space", "fragment"),
    [
        ("anomaly:200", "dscnn", "holds flat vectors of shape 640"),  # no channel/length structure: no space fits
        ("SEQ", "resnet", "the 'resnet' space builds image networks (H x W x C inputs), but"),  # 1-D: dscnn only
    ],
)
def test_search_refuses_array_data_before_any_trial(tmp_path: Path, capfd, data: str, space: str,
                                                    fragment: str) -> None:  # fmt: skip
    if data == "SEQ":  # (n, 1, 40) sequences, the mnist1d layout, without building mnist1d
        import numpy as np

        rng = np.random.default_rng(0)
        arrays = {f"x_{s}": rng.random((40, 1, 40), dtype=np.float32) for s in ("train", "test")}
        np.savez(tmp_path / "seq.npz", **arrays, y_train=np.arange(40) % 2, y_test=np.arange(40) % 2)
        data = f"npz:{tmp_path / 'seq.npz'}"
    rc, _, err = run_cli(capfd, "search", "--data", data, "--space", space, "--trials", "2", "--out", tmp_path / "nas")
    assert_one_line_error(rc, err, fragment)
    assert not (tmp_path / "nas" / "search.json").exists()


def test_size_weight_without_a_latency_allocation(tmp_path: Path, capfd) -> None:
    rc, _, err = run_cli(
        capfd, "prune", "zoo:mlp", "--ratio", "0.5", "--size-weight", "0.5", "--out", tmp_path / "p.edgeopt"
    )
    assert_one_line_error(rc, err, "--size-weight weighs the cuts of a latency allocation")
    assert leftovers(tmp_path) == []
