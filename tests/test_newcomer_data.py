"""What a newcomer hits with data (issue 15): class names, a forgotten input range, repeatable training."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeopt.cli import main
from edgeopt.errors import EdgeoptError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DIGITS = [str(i) for i in range(10)]

def cli_json(capfd: pytest.CaptureFixture[str], *args: object) -> tuple[dict, str]:
    """Run the CLI with --json; (the one JSON object on stdout, stderr)."""
    rc = main([str(a) for a in args] + ["--json"])
    out, err = capfd.readouterr()
    assert rc == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 1, out
    return json.loads(lines[0]), err


def saved_weights(path: Path) -> dict[str, torch.Tensor]:
    with zipfile.ZipFile(path) as zf:
        return torch.load(io.BytesIO(zf.read("weights.pt")), weights_only=True)


# ----------------------------------------------------------------------------- item 4: same seed, same model


def test_training_with_one_seed_gives_bit_identical_weights(tmp_path: Path, capfd, one_thread) -> None:
    """The CLI twice in one process (torch's global RNG moved on between them) with --seed 0, once with 1.

    LeNet-5 (a conv model, trained channels-last like ResNet-8) keeps it fast.
    """
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        out = tmp_path / f"{name}.edgeopt"
        cli_json(capfd, "train", "zoo:lenet5", "--data", "digits", "--epochs", "1", "--seed", seed, "--out", out)
        runs[name] = saved_weights(out)
    a, b, c = runs["a"], runs["b"], runs["c"]
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


# ----------------------------------------------------------------------------- item 1: class names


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLP trained on digits through the CLI (it should record the classes "0".."9")."""
    out = tmp_path_factory.mktemp("newcomer") / "mlp.edgeopt"
    args = ["train", "zoo:mlp", "--data", "digits", "--epochs", "10", "--optimizer", "adam", "--out", str(out)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is faster, and immune to a busy machine
    try:
        assert main(args) == 0
    finally:
        torch.set_num_threads(threads)
    return out


def image_folder(root: Path, split_classes: dict[str, dict[str, np.ndarray]]) -> Path:
    """Write ``{split: {class: uint8 images (N, H, W, 1)}}`` as PNG files under ``root``."""
    from PIL import Image

    for split, classes in split_classes.items():
        for name, images in classes.items():
            d = root / split / name
            d.mkdir(parents=True)
            for i, im in enumerate(images):
                Image.fromarray(im[..., 0]).save(d / f"{i:03d}.png")
    return root


def test_training_records_class_names_and_they_survive_saving(digits_model: Path, capfd) -> None:
    from edgeopt.model import load_model

    assert load_model(digits_model).meta.class_names == DIGITS


def test_eval_on_a_subset_of_classes_maps_labels_by_name(digits_model: Path, digits, tmp_path: Path, capfd) -> None:
    """Folders 3 and 7 only: folder order would call them 0 and 1; by name they are the model's 3 and 7."""
    from edgeopt.model import load_model
    from edgeopt.train import evaluate

    train, test = digits
    pick = {c: test.images[test.labels == int(c)] for c in ("3", "7")}
    root = image_folder(tmp_path / "sub", {"train": {c: v[:2] for c, v in pick.items()}, "test": pick})
    got, err = cli_json(capfd, "eval", digits_model, "--data", f"imagefolder:{root}")
    mask = np.isin(test.labels, [3, 7])
    preds = evaluate(load_model(digits_model), test).predictions[mask]
    want = float((preds == test.labels[mask]).mean())
    by_folder_order = float((preds == (test.labels[mask] == 7)).mean())  # what labels 0 and 1 would score
    assert want > 0.6 and want > by_folder_order + 0.25 and got["samples"] == int(mask.sum())
    assert got["accuracy"] == pytest.approx(want)
    assert "2 of the model's 10 classes" in got["note"] and "by name" in got["note"] and "note:" in err


def test_eval_refuses_data_with_other_classes(digits_model: Path, digits, tmp_path: Path, capfd) -> None:
    images = digits[1].images[:4]
    root = image_folder(tmp_path / "pets", {s: {"cat": images[:2], "dog": images[2:]} for s in ("train", "test")})
    rc = main(["eval", str(digits_model), "--data", f"imagefolder:{root}"])
    _, err = capfd.readouterr()
    line = err.strip()
    assert rc == 2 and "\n" not in line
    assert "{cat, dog}" in line and "{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}" in line


def test_training_on_one_class_is_refused(digits, tmp_path: Path, capfd) -> None:
    images = digits[1].images[:6]
    root = image_folder(tmp_path / "one", {"train": {"cat": images[:4]}, "test": {"cat": images[4:]}})
    rc = main(["train", "zoo:mlp", "--data", f"imagefolder:{root}", "--epochs", "1", "--out", str(tmp_path / "m")])
    _, err = capfd.readouterr()
    assert rc == 2 and "1 class {cat}" in err and "at least 2" in err
    assert not (tmp_path / "m.edgeopt").exists()


def test_class_matching_is_by_name() -> None:
    from edgeopt.data import ImageDataset
    from edgeopt.data.classes import match_classes

    images = np.zeros((3, 2, 2, 1), np.uint8)
    data = ImageDataset(images, np.array([0, 1, 1]), ["b", "c"], "t")
    mapped, note = match_classes(["a", "b", "c"], 3, data)
    assert mapped.labels.tolist() == [1, 2, 2] and mapped.class_names == ["a", "b", "c"] and note
    swapped, note = match_classes(["c", "b"], 2, data)
    assert swapped.labels.tolist() == [1, 0, 0] and "another order" in note
    same, note = match_classes(["b", "c"], 2, data)
    assert same is data and note is None
    with pytest.raises(EdgeoptError, match="unknown to the model"):
        match_classes(["a", "b"], 2, data)
    with pytest.raises(EdgeoptError, match="the model outputs 1"):
        match_classes(None, 1, data)


def test_passes_carry_class_names(digits_model: Path, digits, tmp_path: Path) -> None:
    """prune, quantize, compress (.eoz), distill and export metadata keep the model's class names."""
    from edgeopt.compress.distill import distill
    from edgeopt.compress.quantize.ptq import quantize_ptq
    from edgeopt.compress.storage import load_packed
    from edgeopt.compress.workflows import TuneSettings, deep_compress, prune_model
    from edgeopt.interop.export import export_model, read_sidecar
    from edgeopt.model import load_model
    from edgeopt.models import create_model
    from edgeopt.train import FitConfig

    train = digits[0].take(300, seed=0)
    model = load_model(digits_model)
    pruned = prune_model(model, train, method="magnitude", ratio=0.5, settings=TuneSettings(epochs=0)).model
    assert pruned.meta.class_names == DIGITS
    quantized = quantize_ptq(pruned, train)
    assert quantized.meta.class_names == DIGITS
    packed = deep_compress(model, train, tmp_path / "m.eoz", prune_epochs=0, cluster_epochs=0)
    assert packed.model.meta.class_names == DIGITS and load_packed(tmp_path / "m.eoz").meta.class_names == DIGITS
    student = create_model("mlp", input_shape=(1, 8, 8), num_classes=10, seed=0)
    student, _ = distill(student, model, train, FitConfig(epochs=1, optimizer="adam"))
    assert student.meta.class_names == DIGITS
    result = export_model(quantized, "onnx", tmp_path / "q.onnx")
    assert read_sidecar(result.path).class_names == DIGITS


def test_federated_training_records_class_names(digits) -> None:
    from edgeopt.federated import FederatedConfig, run_federated
    from edgeopt.models import create_model

    train, test = digits
    model = create_model("mlp", input_shape=(1, 8, 8), num_classes=10, hidden=(16,), seed=0)
    cfg = FederatedConfig(clients=4, per_round=2, rounds=1, batch_size=32, eval_limit=50)
    assert run_federated(model, train, test, cfg, threads=1).model.meta.class_names == DIGITS


# ----------------------------------------------------------------------------- item 2: the input range


def test_int8_quantization_states_the_input_range() -> None:
    from edgeopt.interop.input_range import range_from_quantization

    assert range_from_quantization(1.0, -128, "int8") == (0.0, 255.0)  # the MLPerf Tiny int8 ResNet-8
    assert range_from_quantization(1 / 255, 0, "uint8") == (0.0, 1.0)
    assert range_from_quantization(1 / 128, 0, "int8") == (-1.0, 1.0)  # -1..0.992, snapped
    assert range_from_quantization(0.05, 10, "int8") == pytest.approx((-6.9, 5.85))


def onnx_classifier(path: Path, prefix: list[tuple[str, float]], props: dict[str, str] | None = None) -> Path:
    """x (1x3x4x4) -> the elementwise ``prefix`` ops with scalar constants -> a 4x4 conv to 5 classes."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((5, 3, 4, 4)).astype(np.float32), "w")]
    nodes, value = [], "x"
    for i, (op, c) in enumerate(prefix):
        inits.append(numpy_helper.from_array(np.array(c, np.float32), f"c{i}"))
        nodes.append(helper.make_node(op, [value, f"c{i}"], [f"p{i}"]))
        value = f"p{i}"
    nodes += [helper.make_node("Conv", [value, "w"], ["conv"]), helper.make_node("Flatten", ["conv"], ["y"])]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    for k, v in (props or {}).items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize(
    ("prefix", "want", "source"),
    [
        ([("Div", 255.0)], [0.0, 255.0], "graph"),
        ([("Sub", 127.5), ("Div", 127.5)], [0.0, 255.0], "graph"),
        ([("Sub", 0.5), ("Mul", 2.0)], [0.0, 1.0], "graph"),
        ([], [0.0, 1.0], "assumed"),
    ],
)
def test_import_reads_the_range_from_normalisation_ops(tmp_path: Path, capfd, prefix, want, source) -> None:
    path = onnx_classifier(tmp_path / "m.onnx", prefix)
    got, err = cli_json(capfd, "import", path, "--out", tmp_path / "m.edgeopt")
    assert got["input_range"] == want and got["input_range_source"] == source
    assert ("--input-range 0,255" in got.get("note", "") and "note:" in err) == (source == "assumed")


def test_import_records_class_names_the_file_carries(tmp_path: Path) -> None:
    from edgeopt.interop import import_model

    names = ["ant", "bee", "cat", "dog", "eel"]
    as_json = onnx_classifier(tmp_path / "a.onnx", [], {"class_names": json.dumps(names)})
    ultralytics = onnx_classifier(tmp_path / "b.onnx", [], {"names": str(dict(enumerate(names)))})
    too_few = onnx_classifier(tmp_path / "c.onnx", [], {"labels": "ant\nbee"})
    assert import_model(as_json).meta.class_names == names
    assert import_model(ultralytics).meta.class_names == names
    assert import_model(too_few).meta.class_names is None


def test_an_evaluation_at_chance_warns_and_names_the_range(digits_model: Path, capfd) -> None:
    """Fed almost nothing (range 0..1e-6 instead of 0..1) the model answers one class: chance."""
    plain, err = cli_json(capfd, "eval", digits_model, "--data", "digits")
    assert "warning" not in plain and "warning" not in err
    got, err = cli_json(capfd, "eval", digits_model, "--data", "digits", "--input-range", "0,0.000001")
    assert got["accuracy"] <= 0.15 and "at or below chance" in got["warning"]
    assert "--input-range 0,1" in got["warning"] and err.startswith("warning:")


@pytest.fixture(scope="module")
def cifar_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 10-class image folder of 12 CIFAR-10-JPEG test images per class (and 1 train image each)."""
    archive = SHARED / "cifar10-jpg.zip"
    if not archive.is_file():
        pytest.skip("../shared/data/cifar10-jpg.zip not present")
    root = tmp_path_factory.mktemp("cifar")
    with zipfile.ZipFile(archive) as zf:
        names = sorted(n for n in zf.namelist() if n.endswith(".jpg"))
        for split, per_class in (("train", 1), ("test", 12)):
            taken: dict[str, int] = {}
            for n in names:
                parts = n.split("/")
                if parts[-3] != split or taken.get(parts[-2], 0) >= per_class:
                    continue
                taken[parts[-2]] = taken.get(parts[-2], 0) + 1
                (root / split / parts[-2]).mkdir(parents=True, exist_ok=True)
                (root / split / parts[-2] / parts[-1]).write_bytes(zf.read(n))
    return root


def mlperf(name: str) -> Path:
    path = SHARED / "mlperf-tiny" / name
    if not path.is_file():
        pytest.skip(f"../shared/data/mlperf-tiny/{name} not present")
    return path


def test_mlperf_float_model_without_its_range_warns_and_names_it(cifar_sample: Path, capfd) -> None:
    args = ["eval", mlperf("resnet8_float32.tflite"), "--data", f"imagefolder:{cifar_sample}"]
    got, err = cli_json(capfd, *args)
    assert got["accuracy"] <= 0.15 and "--input-range 0,255" in got["warning"] and "warning:" in err
    fixed, _ = cli_json(capfd, *args, "--input-range", "0,255")
    assert fixed["accuracy"] > 0.5 and "warning" not in fixed


def test_mlperf_int8_model_states_its_range(cifar_sample: Path, capfd) -> None:
    """Its int8 input (scale 1, zero point -128) says 0..255: eval needs no --input-range."""
    from edgeopt.interop.input_range import range_from_quantization
    from edgeopt.runtimes.litert_runner import LiteRTRunner

    path = mlperf("resnet8_int8.tflite")
    runner = LiteRTRunner(path)
    assert runner.input_quant is not None
    assert range_from_quantization(*runner.input_quant, runner.input_dtype) == (0.0, 255.0)
    got, _ = cli_json(capfd, "eval", path, "--data", f"imagefolder:{cifar_sample}")
    assert got["accuracy"] > 0.5 and "warning" not in got


def test_other_commands_warn_when_an_accuracy_is_at_chance(digits_model: Path, tmp_path: Path, capfd) -> None:
    """prune (like distill, compress and quantize) flags a test accuracy at chance."""
    from edgeopt.cli.app import warn_at_chance

    args = ["prune", digits_model, "--data", "digits", "--method", "magnitude", "--ratio", "0.3", "--epochs", "0"]
    ok, _ = cli_json(capfd, *args, "--out", tmp_path / "p")
    assert "at or below chance" not in ok.get("warning", "")
    bad, err = cli_json(capfd, *args, "--input-range", "0,0.000001", "--out", tmp_path / "q")
    assert "test_accuracy: accuracy" in bad["warning"] and "at or below chance" in err
    out: dict = {"warning": "earlier"}
    warn_at_chance(out, 10, a=0.9, b=0.12, c=None)
    _, err = capfd.readouterr()
    assert out["warning"].startswith("earlier; b: accuracy 0.1200 is at or below chance (0.1 for 10 classes)")
    assert "a:" not in out["warning"] and err.count("warning:") == 1
