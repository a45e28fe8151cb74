"""Multi-input graphs (issue 14, item 4): an imported two-input model in PyTorch and in each runtime.

A two-input classifier (a small CNN on a 1x16x16 "image" and an MLP on a 12-vector "sensor" reading,
concatenated) is written by PyTorch's exporters as a foreign ``.onnx`` (dynamo, dynamic batch) and a foreign
``.tflite`` (litert-torch), both imported into edgeopt (the imports must equal the PyTorch module), then the
ONNX import is fine-tuned on a synthetic task where each class needs both inputs (class = which quadrant of
the image is brightest, 0..3, plus 4 when the vector's mean is above 0.5: 8 classes). The trained model is
exported to ONNX Runtime, ExecuTorch and LiteRT (parity over every combination of 8 examples per input: 64
inputs), scored there, timed at batch 1 on one thread (interleaved, with PyTorch eager), and each float
``.onnx``/``.tflite`` is imported back and scored. The data is also scored with one input blanked (zeros) to
show the model uses both.

Offline (no ../shared data needed); torch on one thread. Writes ``benchmarks/results/multi_input.json``.
``--quick`` shrinks the data, epochs and timing rounds for a smoke run (figures not comparable).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from breadth_tasks import RUNTIMES, in_runtimes, log, reimport_summary  # noqa: E402
from common import interleaved_p50, write_result  # noqa: E402
from torch import nn  # noqa: E402

from edgeopt.data import ImageDataset, load_dataset  # noqa: E402
from edgeopt.interop import import_model  # noqa: E402
from edgeopt.runtimes.torch_runner import TorchRunner  # noqa: E402
from edgeopt.train import FitConfig, evaluate, fit  # noqa: E402


class ImageAndSensor(nn.Module):
    """Two branches (conv on the image, dense on the vector) joined by concatenation."""

    def __init__(self) -> None:
        super().__init__()
        self.image = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        )  # fmt: skip
        self.sensor = nn.Sequential(nn.Linear(12, 32), nn.ReLU())
        self.head = nn.Sequential(nn.Linear(16 * 4 + 32, 32), nn.ReLU(), nn.Linear(32, 8))

    def forward(self, image: torch.Tensor, sensor: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.image(image), self.sensor(sensor)], 1))


def make_data(n: int, seed: int) -> dict[str, np.ndarray]:
    """Images with one bright quadrant (0..3), sensor vectors around a level in 0..1.

    The class is the quadrant + 4 * (level > 0.5): each input tells half of it."""
    rng = np.random.default_rng(seed)
    quadrant, level = rng.integers(0, 4, n), rng.uniform(0, 1, n)
    image = rng.uniform(0, 0.5, (n, 1, 16, 16)).astype(np.float32)
    for i, q in enumerate(quadrant):
        r, c = divmod(int(q), 2)
        image[i, 0, r * 8 : r * 8 + 8, c * 8 : c * 8 + 8] += 0.35
    sensor = np.clip(level[:, None] + rng.normal(0, 0.15, (n, 12)), 0, 1).astype(np.float32)
    return {"image": np.clip(image, 0, 1), "sensor": sensor, "y": quadrant + 4 * (level > 0.5)}


def write_files(d: Path, n: int) -> dict[str, Path]:
    torch.manual_seed(0)
    m = ImageAndSensor().eval()
    args = (torch.rand(1, 1, 16, 16), torch.rand(1, 12))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batch = torch.export.Dim("batch")
        program = torch.onnx.export(m, args, dynamo=True, input_names=["image", "sensor"], output_names=["logits"],
                                    dynamic_shapes={"image": {0: batch}, "sensor": {0: batch}})  # fmt: skip
        program.save(str(d / "two.onnx"))
        import litert_torch

        litert_torch.convert(m, args).export(str(d / "two.tflite"))
    a = make_data(n, seed=0)
    t = int(n * 0.8)
    np.savez(d / "two.npz", x_train_image=a["image"][:t], x_train_sensor=a["sensor"][:t], y_train=a["y"][:t],
             x_test_image=a["image"][t:], x_test_sensor=a["sensor"][t:], y_test=a["y"][t:])  # fmt: skip
    return {"onnx": d / "two.onnx", "tflite": d / "two.tflite", "npz": d / "two.npz", "module": m}  # type: ignore[dict-item]


def import_agreement(files: dict[str, Any], test: Any) -> dict[str, Any]:
    """Each foreign file imported, against the PyTorch module that wrote it, on the test inputs."""
    img, sen = torch.from_numpy(test.images["image"]), torch.from_numpy(test.images["sensor"])
    with torch.no_grad():
        ref = files["module"](img, sen)
        out = {}
        for fmt in ("onnx", "tflite"):
            m = import_model(files[fmt])
            got = m.module(img, sen)
            out[fmt] = {"inputs": m.meta.input.describe(), "max_abs_diff": float((got - ref).abs().max()),
                        "top1_agreement": float((got.argmax(1) == ref.argmax(1)).float().mean())}  # fmt: skip
            log(f"  imported {fmt}: {out[fmt]}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=3000)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--lr", type=float, default=0.005)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved latency rounds")
    ap.add_argument("--quick", action="store_true", help="600 samples, 3 epochs, 1 timing round (smoke run)")
    args = ap.parse_args()
    if args.quick:
        args.samples, args.epochs, args.rounds = 600, 3, 1
    torch.set_num_threads(1)
    start = time.perf_counter()
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="edgeopt-multi-input-") as d:
        tmp = Path(d)
        files = write_files(tmp, args.samples)
        spec = f"npz:{files['npz']}"
        train, test = load_dataset(spec, "train"), load_dataset(spec, "test")
        log(f"two inputs {train.images.dtype.names}: {len(train)} train, {len(test)} test, 8 classes")
        figures["import"] = import_agreement(files, test)
        m = import_model(files["onnx"])
        before = evaluate(m, test).score
        cfg = FitConfig(epochs=args.epochs, optimizer="adam", lr=args.lr, batch_size=32, threads=1)
        t0 = time.perf_counter()
        m, hist = fit(m, train, cfg)
        train_s = time.perf_counter() - t0
        torch_eval = evaluate(m, test)
        blanked = {}
        for name in test.images.dtype.names:  # one input zeroed: how much the model needs it
            x = test.images.copy()
            x[name] = 0
            blanked[name] = evaluate(m, ImageDataset(x, test.labels, test.class_names, test.name)).score
        log(f"fine-tuned {train_s:.0f} s: accuracy {before:.4f} -> {torch_eval.score:.4f}; blanked {blanked}")
        rt = in_runtimes({"float": m}, test, tmp / "rt", args.rounds)
        runner = TorchRunner.from_model(m, threads=1)
        torch_lat = interleaved_p50({"torch": runner}, {"torch": m.meta.input.example_batch(1)}, rounds=args.rounds)
        figures.update({
            "model": "ImageAndSensor (conv 1x16x16 + dense 12 -> concat -> 8 classes), foreign .onnx imported",
            "inputs": m.meta.input.to_json(),
            "params": sum(p.numel() for p in m.module.parameters()),
            "train": {"epochs": args.epochs, "lr": args.lr, "final_loss": hist.epochs[-1]["loss"],
                      "s": round(train_s, 1), "accuracy_before": before},  # fmt: skip
            "torch": {**torch_eval.to_json(), "latency_p50_ms": torch_lat["torch"]["p50_ms"]},
            "blanked_input_accuracy": blanked,
            "runtimes": rt["float"],
            "reimport": reimport_summary(rt),
        })  # fmt: skip
    figures["seconds"] = round(time.perf_counter() - start, 1)
    t = figures["torch"]
    rows = [f"{'':12s} {'accuracy':>8s} {'parity rel':>10s} {'p50 us':>7s}",
            f"{'torch':12s} {t['accuracy']:8.4f} {'':>10s} {t['latency_p50_ms'] * 1e3:7.1f}"]  # fmt: skip
    for r in RUNTIMES:
        f = figures["runtimes"][r]
        rows.append(f"{r:12s} {f['score']:8.4f} {f['parity_rel_diff']:10.2e} {f['latency_p50_ms'] * 1e3:7.1f}")
    print(f"\ntwo-input model ({len(test)} test samples, 1 thread, batch 1)\n" + "\n".join(rows))
    settings = {"samples": args.samples, "epochs": args.epochs, "optimizer": "adam", "lr": args.lr, "batch_size": 32,
                "rounds": args.rounds, "quick": args.quick, "torch_threads": 1, "parity_inputs": 64}  # fmt: skip
    path = write_result("multi_input", figures, settings)
    print(f"\nwrote {path} ({figures['seconds']} s)")


if __name__ == "__main__":
    main()
