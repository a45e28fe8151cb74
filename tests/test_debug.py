"""``edgeopt debug`` (issue 14 item 6): op-by-op error between PyTorch and the runtime, first divergent op."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tflite_files import int8_model, with_scale

from edgeopt.cli import main
from edgeopt.errors import EdgeoptError
from edgeopt.interop import import_model
from edgeopt.interop.debug import debug_artifact, pair_tensors, rel_error


def test_pairing_finds_the_nhwc_tensor_and_flags_divergence() -> None:
    a = np.arange(24, dtype=np.float32).reshape(1, 2, 3, 4)
    theirs = [("nhwc", a.transpose(0, 2, 3, 1).copy()), ("other", np.zeros((1, 24), np.float32))]
    rows = pair_tensors([("ok", a), ("bad", a * 2)], theirs, 1e-3)
    assert rows[0].runtime_tensor == "nhwc" and rows[0].rel_diff == 0.0 and not rows[0].diverged
    assert rows[1].diverged and rows[1].rel_diff == pytest.approx(0.5)
    assert rel_error(np.ones(3), np.array([1.0, np.nan, 1.0]))[0] == float("inf")


def test_debug_names_the_op_a_wrong_activation_range_breaks(tmp_path: Path) -> None:
    good = int8_model(tmp_path / "m.tflite")
    model = import_model(good)
    clean = debug_artifact(model, good)
    assert clean.available and len(clean.rows) >= 5
    # every layer agrees; LiteRT's int8 softmax kernel (a lookup table) may differ by a few codes
    assert not any(r.diverged for r in clean.rows[:-1]) and "softmax" in clean.rows[-1].op
    broken = with_scale(good, tmp_path / "broken.tflite", "short/out", 0.25)  # the shortcut conv's range
    report = debug_artifact(model, broken)
    assert report.first_divergent is not None and "short/out" in report.first_divergent
    first = next(i for i, r in enumerate(report.rows) if r.diverged)
    assert all(not r.diverged for r in report.rows[:first])


def test_debug_cli_json_and_executorch_not_available(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    good = int8_model(tmp_path / "m.tflite")
    np.save(tmp_path / "x.npy", np.full((8, 8, 2), 100, np.float32))
    assert main(["debug", str(good), str(good), "--inputs", str(tmp_path / "x.npy"), "--json"]) == 0
    out = json.loads(capfd.readouterr().out)
    assert out["runtime"] == "litert" and out["first_divergent"] is None and out["rows"]
    pte = tmp_path / "m.pte"
    pte.write_bytes(b"not a program, never opened")
    report = debug_artifact(import_model(good), pte)
    assert not report.available and "ETDump" in report.note
    with pytest.raises(EdgeoptError):
        debug_artifact(import_model(good), tmp_path / "missing.tflite")


def test_parity_failure_hint_names_the_op(tmp_path: Path) -> None:
    from edgeopt.interop.debug import divergence_hint

    good = int8_model(tmp_path / "m.tflite")
    model = import_model(good)
    broken = with_scale(good, tmp_path / "broken.bin", "short/out", 0.25)  # any name: the format is given
    x = model.example_input(2).numpy()
    assert "short/out" in divergence_hint(model, broken, x, "tflite")
    assert divergence_hint(model, tmp_path / "absent.tflite", x, "tflite") == ""  # never raises
