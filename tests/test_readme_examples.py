"""README's command examples run through the CLI and end with a useful model (issue 15).

The commands are read from README.md's bash blocks (continuation lines joined, comments dropped),
so a README change that breaks one fails here. Each is adapted to this test's scale by the rules in
``adapt`` (digits instead of CIFAR, few epochs, rounds and calibration samples) and run in one
working directory in README order, so that they chain as they do for a reader (train -> export ->
bench -> prune -> quantize ...). Every model a command writes is then evaluated on digits' test
split and must clear ``FLOOR``; federated training must clear ``FEDERATED_FLOOR`` (chance is 0.1).
Commands that cannot run offline or in seconds are listed in ``SKIP`` with the reason; a README
command that is neither run nor skipped fails the test, and so does a stale skip.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from edgeopt.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"
FLOOR = 0.8  # digits test accuracy every trained, pruned, distilled, quantized or compressed model must reach
FEDERATED_FLOOR = 0.3  # 30 rounds of 100 non-IID clients with 1% top-k uploads (0.48 here); chance is 0.1
EPOCHS = {"train": 4, "prune": 2, "distill": 4}  # README epochs are capped at these
ROUNDS = 30
CALIB_SAMPLES = 64

SKIP = {
    "import mlperf8.edgeopt": "needs ../shared's int8 ResNet-8; tests/test_import_tflite_int8.py imports generated "
    "int8 and hybrid files",
    "debug r8.edgeopt": "needs r8.tflite (this test's chain exports .pte/.onnx); tests/test_debug.py runs debug",
    "demo runs/demo": "the demo recipe trains, distills, prunes, quantizes and exports (~3 min of CPU); "
    "tests/test_cli_messages.py and tests/test_pipeline.py cover its parts",
    "prune fast.edgeopt": "NetAdapt exports and times every candidate each iteration (minutes here); "
    "tests/test_prune_channel.py covers prune_to_latency with a latency model",
    "hw calibrate executorch": "calibration measures hundreds of models for minutes",
    "hw calibrate litert": "calibration measures hundreds of models for minutes",
    "hw predict ~/.cache/edgeopt/profiles/executorch_t1.json": "needs a profile from `edgeopt hw calibrate`",
    "hw transfer litert.json": "needs a profile from `edgeopt hw calibrate`",
    "train fast.edgeopt": "a latency budget asks this machine's calibrated profile (`edgeopt hw calibrate`)",
    "search run/": "architecture search trains 40 candidate networks (many minutes); tests/test_nas.py covers search",
    "optimize opt/": "a search of --minutes (10 here); tests/test_optimize.py runs optimize on digits in 2 minutes",
    "search w1/": "README elides this worker's flags ('...'): it is not a runnable line",
    "train ae.edgeopt": "array data (anomaly:), not digits, which this test substitutes for --data; "
    "tests/test_tasks.py trains fc_autoencoder on anomaly windows",
    "eval ae.edgeopt": "needs ae.edgeopt (skipped above); tests/test_tasks.py evaluates anomaly models",
    "train seq.edgeopt": "MNIST-1D sequences, not digits; tests/test_tasks.py and benchmarks/breadth_tasks.py "
    "cover cnn1d",
    "train price.edgeopt": "needs the user's houses.csv; tests/test_tasks.py trains a regression MLP from a CSV",
    "import dense.edgeopt": "needs the user's dense.onnx; tests/test_tasks.py imports a [None, 640] ONNX model",
    "adapt adapted.edgeopt": "--scope auto exports and measures a training program per candidate scope (a minute "
    "or more); tests/test_ondevice.py covers adapt, the scope choice and the --json keys",
    "export train.pte": "exports a ResNet-8 training program (tens of seconds); tests/test_ondevice.py builds "
    "training programs",
}


def readme_commands() -> list[list[str]]:
    """Every ``edgeopt ...`` line of README.md's bash blocks, as argv lists (without 'edgeopt')."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith("edgeopt "):
                commands.append([a for a in shlex.split(line)[1:] if not (a.startswith("[") and a.endswith("]"))])
    return commands


def readme_recipe() -> str:
    """The YAML recipe README shows."""
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) == 1, "README should show one recipe"
    return blocks[0]


def key(argv: list[str]) -> str:
    """A name for a README command: the command and what it writes (or reads)."""
    name = " ".join(argv[:2]) if argv[0] == "hw" else argv[0]
    for flag in ("--out", "--profile"):
        if flag in argv:
            return f"{name} {argv[argv.index(flag) + 1]}"
    rest = [a for a in argv[len(name.split()) :] if not a.startswith("-")]
    return f"{name} {rest[0]}" if rest else name


def option(argv: list[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv else None


def adapt(argv: list[str]) -> list[str]:
    """README's command at this test's scale: digits, capped epochs and rounds, small calibration."""
    out = list(argv)
    for i, a in enumerate(out[:-1]):
        nxt = out[i + 1]
        if a == "--data":
            out[i + 1] = "digits"
        elif a == "--epochs" and "magnitude" in out:
            # gradual pruning to 80% zeros over README's 2 epochs is 24 steps on digits (782 on CIFAR-10): too abrupt
            out[i + 1] = "6"
        elif a == "--epochs":
            out[i + 1] = str(min(int(nxt), EPOCHS.get(out[0], 2)))
        elif a == "--calib-samples":
            out[i + 1] = str(CALIB_SAMPLES)
        elif a == "--rounds":
            out[i + 1] = str(ROUNDS)
        elif a == "--runtime" and out[0] == "prune":
            out[i + 1] = "onnxruntime"  # ExecuTorch lowers each of the latency table's variants (~5 s each)
        elif a == "--runtime" and out[0] == "eval":
            # lowering the imported graph to ExecuTorch took 40 s here; test_import_tflite.py lowers it, and
            # test_cli_success.py evaluates inside each runtime
            out[i + 1] = "onnxruntime"
        elif a == "--steps" and out[0] == "prune":
            out[i + 1] = "1"  # one latency table, not one per step (each exports, times and scores ~20 variants)
        elif a == "--input-range" and out[0] == "import":
            out[i + 1] = "0,1"  # the stand-in below is edgeopt's own export, which takes 0..1
    if out[0] == "import":  # MLPerf's .tflite lives in ../shared: import edgeopt's own ResNet-8 export instead
        out[1] = "r8.onnx"
    if out[0] == "prune":  # for the imported graph, the IR interpreter re-fits each variant (6 s each); a latency
        # table exports, times and scores ~20 variants (2 min for ResNet-8): the MLP stands in there
        # (test_prune_channel.py prunes the imported graph and ResNet-8)
        stand_in = "mlp.edgeopt" if "latency" in out else "r8.edgeopt"
        out = [stand_in if a == "mlperf.edgeopt" else a for a in out]
    if out[0] == "quantize" and "--calib-samples" not in out:
        out += ["--calib-samples", str(CALIB_SAMPLES)]
    if out[0] == "quantize" and "--mix-runtime" in out:  # one PTQ + QDQ export per layer: ResNet-8's 10 took minutes
        out[1] = "mlp.edgeopt"  # a trained 4-layer MLP (see chain)
    if out[0] == "compress":  # 75% zeros + 4-bit clusters: one fine-tuning epoch each left digits at 78.6%
        out += ["--prune-epochs", "2", "--cluster-epochs", "2"]
    if out[0] == "recipe":
        out = [a for a in out if a != "--resume"]
    return out


def run_cli(*args: str) -> tuple[int, str, str]:
    """Run the CLI in this process; (exit code, stdout, stderr), captured at the file-descriptor level
    (the JSON, libraries' output) and from Python's ``sys.stderr`` (progress, warnings)."""
    py_err = io.StringIO()
    with tempfile.TemporaryFile("w+") as o, tempfile.TemporaryFile("w+") as e:
        saved = os.dup(1), os.dup(2)
        os.dup2(o.fileno(), 1)
        os.dup2(e.fileno(), 2)
        try:
            with contextlib.redirect_stderr(py_err):
                rc = main(list(args))
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
        o.seek(0)
        e.seek(0)
        return rc, o.read(), py_err.getvalue() + e.read()


def cli_json(*args: str) -> dict:
    rc, out, err = run_cli(*args, "--json")
    assert rc == 0, f"edgeopt {' '.join(args)} failed: {err.strip().splitlines()[-3:]}"
    return json.loads(out.strip().splitlines()[-1])


def accuracy_of(path: str) -> float:
    return float(cli_json("eval", path, "--data", "digits")["accuracy"])


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Every runnable README command, adapted, run in README order in one directory: key -> result.

    A result holds the command run, its JSON, and the digits accuracy of the model it wrote.
    """
    work = tmp_path_factory.mktemp("readme")
    cwd = Path.cwd()
    os.chdir(work)
    results: dict[str, dict] = {}
    try:
        np.save("x.npy", np.random.default_rng(0).random((3, 1, 8, 8), dtype=np.float32))
        # a trained 4-layer MLP stands in where ResNet-8 would take minutes (see adapt and the recipe below)
        cli_json("train", "zoo:mlp", "--data", "digits", "--epochs", "6", "--lr", "0.3", "--out", "mlp.edgeopt")
        # the recipe fine-tunes that MLP for one epoch and exports it to the three runtimes (ResNet-8's three
        # exports with parity checks took a minute; test_export_runtimes.py exports ResNet-8 to each)
        recipe = readme_recipe().replace("model: zoo:resnet8", "model: mlp.edgeopt")
        Path("recipe.yaml").write_text(re.sub(r"epochs: \d+", "epochs: 1", recipe))
        for argv in readme_commands():
            k = key(argv)
            if k in SKIP:
                continue
            cmd = adapt(argv)
            if cmd[0] == "import" and not Path("r8.onnx").exists():
                cli_json("export", "r8.edgeopt", "--format", "onnx", "--out", "r8.onnx")
            res: dict = {"cmd": cmd}
            results[k] = res
            args = cmd if "--json" in cmd else [*cmd, "--json"]
            start = time.perf_counter()
            rc, out, err = run_cli(*args)
            res["seconds"] = round(time.perf_counter() - start, 1)
            if rc != 0:
                res["error"] = err.strip().splitlines()[-1:] if err.strip() else f"exit {rc}"
                continue
            lines = out.strip().splitlines()
            res["json"] = json.loads(lines[-1]) if lines else {}
            written = option(cmd, "--out")
            if cmd[0] == "federate":
                res["accuracy"] = res["json"]["final_accuracy"]
            elif cmd[0] == "recipe":
                stages = json.loads((Path(written) / "report.json").read_text())["stages"]
                res["accuracy"] = min(stages[-1]["metrics"]["accuracy_by_runtime"].values())  # in every runtime
            elif written and written.endswith((".edgeopt", ".eoz")):
                res["accuracy"] = accuracy_of(written)
            elif cmd[0] == "eval":
                res["accuracy"] = res["json"]["accuracy"]
    finally:
        os.chdir(cwd)
    return results


def test_every_readme_command_is_run_or_skipped_with_a_reason() -> None:
    keys = [key(a) for a in readme_commands()]
    assert len(keys) >= 20, keys  # the extraction found README's examples
    assert not set(SKIP) - set(keys), f"skips for commands README no longer shows: {set(SKIP) - set(keys)}"
    for expected in ("train r8.edgeopt", "export r8.pte", "bench r8.pte", "prune half.edgeopt", "quantize q.edgeopt",
                     "distill student.edgeopt", "compress r8.eoz", "federate runs/fl"):  # fmt: skip
        assert expected in keys, f"README lost the example '{expected}' (or this test's key for it changed)"


@pytest.mark.timeout(1800)  # the chain (~20 commands) runs in this test's setup; minutes on a loaded machine
def test_every_readme_example_ends_with_a_useful_model(chain: dict[str, dict]) -> None:
    failures = [f"{k}: {r['error']} (ran: edgeopt {' '.join(r['cmd'])})" for k, r in chain.items() if "error" in r]
    for k, r in chain.items():
        floor = FEDERATED_FLOOR if r["cmd"][0] == "federate" else FLOOR
        if "accuracy" in r and not r["accuracy"] >= floor:
            failures.append(f"{k}: accuracy {r['accuracy']:.3f} < {floor} (ran: edgeopt {' '.join(r['cmd'])})")
    assert not failures, "\n".join(failures)
    print("seconds per README command:", {k: r["seconds"] for k, r in chain.items()})
    models = [k for k, r in chain.items() if "accuracy" in r]
    assert len(models) >= 12, models  # train, import, prunes, distill, compress, quantizations, recipe, federate


@pytest.mark.timeout(1800)  # when run alone, the chain runs in this test's setup
def test_readme_examples_report_what_they_promise(chain: dict[str, dict]) -> None:
    """The figures README's comments name are in the JSON."""
    bench = chain["bench r8.pte"]["json"]
    assert bench["latency_ms_p50"] > 0 and "arena_bytes" in bench and "memory_source" in bench
    prof = chain["profile zoo:resnet8"]["json"]
    assert prof["params"] > 0 and prof["macs"] > 0
    half = chain["prune half.edgeopt"]["json"]
    assert half["macs_after"] <= 0.55 * half["macs_before"]  # --ratio 0.5 of the MACs
    assert half["test_accuracy_before"] >= FLOOR and "latency" in half and "onnxruntime" in half["latency"]
    assert half["widths"] and all(w >= 0 for w in half["widths"])
    assert 0.75 <= chain["prune sparse.edgeopt"]["json"]["sparsity"] <= 0.85
    assert chain["federate runs/fl"]["json"]["upload_compression"] > 10  # top-k 1% uploads
    assert Path(chain["compress r8.eoz"]["json"]["model"]).name == "r8.eoz"


def test_prune_progress_names_each_phase_and_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tiny latency-allocated prune in two steps with --epochs 2, progress as plain lines on stderr."""
    monkeypatch.delenv("EDGEOPT_QUIET", raising=False)  # an earlier --json run in this process set it
    monkeypatch.setenv("EDGEOPT_PROGRESS", "lines")
    monkeypatch.setenv("COLUMNS", "200")  # the summary table's rows unwrapped
    out_path = str(tmp_path / "p.edgeopt")
    rc, out, err = run_cli("prune", "zoo:mlp", "--data", "digits", "--ratio", "0.45", "--allocation", "latency",
                           "--round-to", "64", "--steps", "2", "--epochs", "2", "--out", out_path)  # fmt: skip
    assert rc == 0, err
    lines = err.splitlines()
    for step in (1, 2):
        assert any(re.match(rf"prune step {step}/2, latency table, variant \d+/\d+: ", x) for x in lines), err
        assert any(re.match(rf"prune step {step}/2, latency table, accuracy \d+/\d+: ", x) for x in lines), err
        # the recovery's epochs are numbered within the --epochs 2 asked for, not per step ("epoch 1/1")
        assert any(x.startswith(f"recovery step {step}/2, epoch {step}/2: ") for x in lines), err
    assert not any("epoch 1/1" in x for x in lines), err
    assert not any(x.startswith("evaluating") for x in lines), err  # every bar is labelled with its phase
    assert any(x.startswith("accuracy before pruning, evaluating") for x in lines), err
    # the summary ends with before -> after: accuracy, MACs, latency, and the widths chosen
    for row in ("test accuracy", "MACs", "latency (onnxruntime, p50)", "widths"):
        assert re.search(rf"{re.escape(row)}\s.*->", out), out


def test_accuracy_drop_warns_over_three_points() -> None:
    from edgeopt.compress.workflows import accuracy_drop

    assert accuracy_drop(0.7548, 0.5083) == "accuracy fell 24.7 points (75.48% -> 50.83%)"
    assert accuracy_drop(0.80, 0.78) is None and accuracy_drop(0.80, 0.85) is None
    assert accuracy_drop(0.80, 0.769, points=3.0) is not None
