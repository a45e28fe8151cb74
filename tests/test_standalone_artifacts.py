"""Artifacts stand alone: a copied .pte/.tflite/.onnx runs in its own runtime with nothing beside it.

Issue 15, items 5 and 6. A LeNet-5 trained briefly on digits is exported once to every format (and
once to int8 .tflite); each artifact is copied into a fresh folder without any sidecar and driven
through the CLI (eval, run, bench, profile). Copies with edgeopt's record stripped out stand for
files from elsewhere (and for .pte files exported before the record existed). bench must report
the same planned memory whether it is given the artifact or the model with --runtime.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeopt.cli import main
from edgeopt.interop.embedded import KEY, PTE_METHOD, read_embedded
from edgeopt.interop.export import FORMAT_RUNTIME, ExportResult, embedded_record, export_model, sidecar_path
from edgeopt.model import EdgeModel, ModelMeta, save_model
from edgeopt.models import create_model
from edgeopt.runtimes.interface import InterfaceFlags, apply_flags, guess_layout, parse_classes, shape_layout
from edgeopt.runtimes.memory_plan import memory_plan
from edgeopt.train import FitConfig, evaluate, fit

FORMATS = ("pte", "tflite", "onnx")
ONE_IMAGE = 1 / 360  # one digits test image, as accuracy


def cli(capfd: pytest.CaptureFixture[str], *args: object) -> tuple[int, dict | None, str]:
    rc = main([str(a) for a in args] + ["--json"])
    out, err = capfd.readouterr()
    lines = out.strip().splitlines()
    return rc, (json.loads(lines[-1]) if rc == 0 and lines else None), err


def cli_json(capfd: pytest.CaptureFixture[str], *args: object) -> dict:
    rc, got, err = cli(capfd, *args)
    assert rc == 0 and got is not None, err
    return got


def alone(path: Path, where: Path) -> Path:
    """``path`` copied into a fresh folder ``where``, nothing beside it."""
    where.mkdir(parents=True, exist_ok=True)
    dst = where / path.name
    shutil.copyfile(path, dst)
    assert sorted(p.name for p in where.iterdir()) == [path.name]
    return dst


def strip_record(path: Path) -> None:
    """Remove edgeopt's embedded record from an artifact in place (a file from elsewhere)."""
    data = path.read_bytes()
    if path.suffix == ".onnx":
        import onnx

        proto = onnx.load_model_from_string(data)
        keep = [p for p in proto.metadata_props if p.key != KEY]
        del proto.metadata_props[:]
        proto.metadata_props.extend(keep)
        path.write_bytes(proto.SerializeToString())
    elif path.suffix == ".tflite":
        from ai_edge_litert.tools import flatbuffer_utils as fbu

        model = fbu.read_model_from_bytearray(bytearray(data))
        model.metadata = [m for m in model.metadata if m.name not in (KEY, KEY.encode())]
        path.write_bytes(bytes(fbu.convert_object_to_bytearray(model)))
    else:
        from executorch.exir._serialize._program import deserialize_pte_binary, serialize_pte_binary

        pte = deserialize_pte_binary(data)
        pte.program.execution_plan = [p for p in pte.program.execution_plan if p.name != PTE_METHOD]
        path.write_bytes(bytes(serialize_pte_binary(pte, extract_delegate_segments=True, segment_alignment=128)))
    assert read_embedded(path) is None


@pytest.fixture(scope="module")
def trained(digits, tmp_path_factory: pytest.TempPathFactory) -> tuple[EdgeModel, Path, float]:
    torch.manual_seed(0)
    model = create_model("lenet5", input_shape=(1, 8, 8), num_classes=10)
    model, _ = fit(model, digits[0], FitConfig(epochs=4, optimizer="adam", batch_size=64, seed=0))
    path = save_model(model, tmp_path_factory.mktemp("model") / "lenet.edgeopt")
    return model, path, evaluate(model, digits[1]).accuracy


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory: pytest.TempPathFactory) -> dict[str, ExportResult]:
    out = tmp_path_factory.mktemp("export")
    return {fmt: export_model(trained[0], fmt, out / f"lenet.{fmt}") for fmt in FORMATS}


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_artifact_alone_evaluates_runs_benches_and_profiles(trained, exported, fmt, tmp_path, capfd) -> None:
    model, _, accuracy = trained
    assert accuracy > 0.6  # far from chance: equal accuracies mean the same predictions
    art = alone(exported[fmt].path, tmp_path / "elsewhere")
    ev = cli_json(capfd, "eval", art, "--data", "digits")
    assert ev["runtime"] == FORMAT_RUNTIME[fmt] and ev["input_source"] == "embedded"
    assert abs(ev["accuracy"] - accuracy) <= ONE_IMAGE + 1e-9
    x = model.example_input(3, seed=1).numpy()
    np.save(tmp_path / "x.npy", x)
    cli_json(capfd, "run", art, "--inputs", tmp_path / "x.npy", "--out", tmp_path / "y.npy")
    with torch.inference_mode():
        ref = model.module(torch.from_numpy(x)).numpy()
    assert np.abs(np.load(tmp_path / "y.npy") - ref).max() <= 1e-4 * np.abs(ref).max()
    bench = cli_json(capfd, "bench", art, "--runs", "5", "--warmup", "1")
    assert bench["runtime"] == FORMAT_RUNTIME[fmt] and bench["arena_bytes"] > 0
    prof = cli_json(capfd, "profile", art)
    assert prof["input_shape"] == [1, 8, 8] and prof["layout"] == "NCHW" and prof["num_classes"] == 10
    assert prof["input_source"] == "embedded" and prof["class_names"] == model.meta.class_names
    assert prof["arena_bytes"] == bench["arena_bytes"] and prof["file_bytes"] == art.stat().st_size


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_artifact_without_edgeopt_record_is_described_from_the_file(trained, exported, fmt, tmp_path, capfd):
    """A file from elsewhere: the importer reads float .onnx/.tflite; a .pte states its interface to the runtime."""
    _, _, accuracy = trained
    art = alone(exported[fmt].path, tmp_path / "elsewhere")
    strip_record(art)
    ev = cli_json(capfd, "eval", art, "--data", "digits")
    assert ev["input_source"] == ("inferred" if fmt == "pte" else "graph")
    assert abs(ev["accuracy"] - accuracy) <= ONE_IMAGE + 1e-9
    prof = cli_json(capfd, "profile", art)
    assert prof["input_shape"] == [1, 8, 8] and prof["layout"] == "NCHW" and prof["num_classes"] == 10
    # the old sidecar beside it is still read
    shutil.copyfile(sidecar_path(exported[fmt].path), sidecar_path(art))
    assert cli_json(capfd, "eval", art, "--data", "digits", "--limit", "50")["input_source"] == "sidecar"


def test_int8_tflite_alone_runs_in_litert_with_its_own_input_quantization(trained, digits, tmp_path, capfd) -> None:
    from edgeopt.compress.quantize.ptq import QuantRecipe, quantize_ptq
    from edgeopt.profile import profile_model
    from edgeopt.runtimes import open_runner

    model, _, _ = trained
    q = quantize_ptq(model, digits[0], QuantRecipe(calib="minmax", calib_samples=128))
    res = export_model(q, "tflite", tmp_path / "q.tflite")
    with open_runner("litert", res.path) as runner:
        assert runner.input_dtype.kind == "i" and runner.input_quant is not None  # an integer interface
        want = evaluate(q.meta, digits[1], predict=runner.run).accuracy
    assert want > 0.6
    art = alone(res.path, tmp_path / "elsewhere")
    ev = cli_json(capfd, "eval", art, "--data", "digits")
    assert ev["input_source"] == "embedded" and ev["accuracy"] == pytest.approx(want)
    strip_record(art)  # as TFLite's own int8 models come: the range is what the input quantization represents
    prof = cli_json(capfd, "profile", art)
    assert prof["input_source"] == "inferred" and prof["input_range"] == [0.0, 1.0]
    # the int8 file imports (issue 14), so its parameters and MACs are counted from the graph itself
    counted = profile_model(model)
    assert "counts_note" not in prof and (prof["params"], prof["macs"]) == (counted.params, counted.macs)
    ev = cli_json(capfd, "eval", art, "--data", "digits")
    assert ev["accuracy"] == pytest.approx(want)
    wrong = cli_json(capfd, "eval", art, "--data", "digits", "--input-range", "-1,0")  # every pixel quantizes to -128
    assert wrong["accuracy"] < 0.3  # the flag is obeyed


def test_interface_flags_are_checked(exported, tmp_path, capfd) -> None:
    art = alone(exported["onnx"].path, tmp_path / "elsewhere")
    rc, _, err = cli(capfd, "eval", art, "--data", "digits", "--classes", "3")
    assert rc != 0 and "--classes gives 3 classes but the model has 10 outputs" in err
    rc, _, err = cli(capfd, "eval", art, "--data", "digits", "--layout", "NHWC")
    assert rc != 0 and "expects 1x8x8 images" in err  # (1, 8, 8) read as H,W,C
    rc, _, err = cli(capfd, "eval", art, "--data", "digits", "--layout", "CHW")
    assert rc != 0 and "--layout 'CHW' is not NCHW or NHWC" in err


def test_interface_rules() -> None:
    assert guess_layout((32, 32, 3), ".tflite") == "NHWC" and guess_layout((3, 32, 32), ".tflite") == "NCHW"
    assert guess_layout((1, 8, 8), ".onnx") == "NCHW" and guess_layout((8, 8, 1), ".pte") == "NHWC"
    assert guess_layout((3, 3, 3), ".tflite") == "NHWC" and guess_layout((3, 3, 3), ".pte") == "NCHW"
    assert shape_layout((1, 8, 8)) == "NCHW" and shape_layout((3, 3, 3)) is None
    assert parse_classes("10") == 10 and parse_classes("cat, dog") == ["cat", "dog"] and parse_classes(None) is None
    meta = ModelMeta.from_json({"input": {"shape": [3, 4, 4]}, "num_classes": 2, "arch": {}})
    got = apply_flags(meta, InterfaceFlags((0.0, 255.0), "nhwc", ["cat", "dog"]))
    assert got.input.value_range == (0.0, 255.0) and got.input.layout == "NHWC" and got.class_names == ["cat", "dog"]
    assert meta.input.layout == "NCHW" and meta.input.value_range == (0.0, 1.0)  # the original is untouched


def test_the_embedded_record_leaves_bulky_entries_in_the_model() -> None:
    bulky = {f"layer{i}": 0.123456789 for i in range(40)}  # per-layer metrics: well over the limit
    meta = ModelMeta.from_json(
        {
            "input": {"shape": [3, 4, 4]},
            "num_classes": 2,
            "arch": {"kind": "mlp", "ir": bulky},
            "lineage": [{"pass": "quantize", "method": "qat", "metrics": bulky}],
        }
    )
    got = embedded_record(meta, {"format": "onnx"})
    assert got["arch"] == {"kind": "mlp"} and got["lineage"] == [{"pass": "quantize", "method": "qat"}]
    assert got["export"] == {"format": "onnx"} and meta.lineage[0]["metrics"] == bulky  # the model keeps them


@pytest.mark.parametrize("fmt", FORMATS)
def test_bench_reports_the_same_planned_memory_on_every_path(trained, exported, fmt, tmp_path, capfd) -> None:
    _, model_path, _ = trained
    art = alone(exported[fmt].path, tmp_path / "elsewhere")
    runtime = FORMAT_RUNTIME[fmt]
    of_file = cli_json(capfd, "bench", art, "--runs", "5", "--warmup", "1")
    of_model = cli_json(capfd, "bench", model_path, "--runtime", runtime, "--runs", "5", "--warmup", "1")
    plan = memory_plan(art)
    for got in (of_file, of_model):
        assert got["runtime"] == runtime
        assert (got["arena_bytes"], got["weights_bytes"], got["memory_source"]) == (
            plan.arena_bytes,
            plan.weights_bytes,
            plan.source,
        )
        # the process's RSS is reported apart, under its own name, never as the model's memory
        assert "peak_memory_bytes" not in got and "process_rss_rise_bytes" in got
    assert plan.weights_bytes < 2 * art.stat().st_size and plan.arena_bytes < 1_000_000
