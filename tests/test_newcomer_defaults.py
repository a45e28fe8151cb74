"""Issue 15's last gaps: a run at chance is flagged everywhere, one name per thread pool, defaults that train.

Cheap on purpose (tiny MLPs, one federated round, a recipe of one stage): ~10 s of CPU in all.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import click
import numpy as np
import pytest

from edgeopt.cli import command, main


def run_cli(capfd: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    out, err = capfd.readouterr()
    return rc, out, err


def cli_json(capfd: pytest.CaptureFixture[str], *args: object) -> tuple[dict, str]:
    rc, out, err = run_cli(capfd, *args, "--json")
    assert rc == 0, err
    return json.loads(out.strip()), err


@pytest.fixture(scope="module")
def noise_labels(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Feature vectors with random labels: no model can beat chance on its test split."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("noise") / "noise.npz"
    x = rng.normal(size=(600, 16)).astype(np.float32)
    np.savez(path, x_train=x[:400], y_train=rng.integers(0, 10, 400), x_test=x[400:], y_test=rng.integers(0, 10, 200))
    return f"npz:{path}"


# ----------------------------------------------------------------------------- items 2 and 8: at chance


def test_one_test_of_at_chance_for_every_report() -> None:
    """Evaluations, the federated report and the recipe report ask one function what "at chance" means."""
    from edgeopt.federated.report import chance_accuracy, stayed_at_chance
    from edgeopt.train.diagnose import CHANCE_MARGIN, chance_level, chance_note, is_at_chance

    assert chance_level(10) == pytest.approx(0.1) and chance_level(4, majority=0.7) == pytest.approx(0.7)
    assert is_at_chance(0.1 + CHANCE_MARGIN, 0.1) and not is_at_chance(0.1 + CHANCE_MARGIN + 1e-6, 0.1)
    skewed = np.array([[70, 10, 10, 10], [70, 10, 10, 10]])
    assert chance_accuracy(skewed) == pytest.approx(0.7) and chance_accuracy(np.full((3, 10), 5)) == pytest.approx(0.1)
    for best in (0.12, 0.15, 0.16, 0.5):  # the federated flag and an evaluation's note agree at every accuracy
        assert stayed_at_chance(best, 0.1) == (chance_note(best, 10) is not None), best
    assert stayed_at_chance(0.74, 0.7) and chance_note(0.74, 4, majority=0.7) is not None
    assert "most common label" in chance_note(0.74, 4, majority=0.7)


def test_federate_warns_when_the_run_stayed_at_chance(noise_labels: str, tmp_path: Path, capfd) -> None:
    got, err = cli_json(capfd, "federate", "zoo:mlp", "--data", noise_labels, "--clients", "2", "--per-round", "2",
                        "--rounds", "1", "--train-threads", "1", "--out", tmp_path / "fl")  # fmt: skip
    assert "best_accuracy: accuracy" in got["warning"] and "did not learn" in got["warning"], got
    assert "warning: best_accuracy" in err and "--lr" in err
    curves = json.loads((tmp_path / "fl" / "curves.json").read_text())
    assert curves["summary"]["stayed_at_chance"] is True
    assert 'id="at-chance"' in (tmp_path / "fl" / "report.html").read_text()


def test_recipe_report_flags_a_final_model_at_chance(noise_labels: str, tmp_path: Path, capfd, monkeypatch) -> None:
    # the stage's profile (a torch.export: seconds of CPU, first import) is not under test here
    def cheap_profile(model):
        return SimpleNamespace(to_json=lambda: {"params": sum(p.numel() for p in model.module.parameters())})

    monkeypatch.setattr("edgeopt.profile.profile_model", cheap_profile)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model: zoo:mlp\ndata: '{noise_labels}'\npasses: []\n")
    got, err = cli_json(capfd, "recipe", recipe, "--out", tmp_path / "run")
    assert "final model is at chance" in got["warning"] and "PyTorch: accuracy" in got["warning"], got
    report = json.loads(Path(got["report_json"]).read_text())
    assert report["stages"][0]["metrics"]["num_classes"] == 10  # what the check compares against
    page = Path(got["report_html"]).read_text()
    assert page.index('id="at-chance"') < page.index('class="headline"')


def test_search_warns_when_the_chosen_model_is_at_chance(tmp_path: Path, capfd, monkeypatch) -> None:
    """The CLI's wiring only (a real search trains for minutes: tests/test_nas.py runs one)."""
    from edgeopt.model import save_model
    from edgeopt.models import create_model

    model = save_model(create_model("mlp", input_shape=(1, 8, 8), num_classes=10), tmp_path / "chosen.edgeopt")
    measured = {"onnxruntime": {"accuracy": 0.12, "latency_ms": 0.1}, "litert": {"accuracy": 0.9, "latency_ms": 0.1}}
    result = {"model": str(model), "trials": 1, "trials_this_worker": 1, "feasible_trials": 1, "latency_source": {},
              "pareto": [], "chosen": {"config": {}, "measured": measured}, "report": None}  # fmt: skip
    monkeypatch.setattr("edgeopt.nas.search", lambda *a, **k: dict(result))
    got, err = cli_json(capfd, "search", "--out", tmp_path / "run")
    assert got["warning"].startswith("onnxruntime_accuracy: accuracy 0.1200 is at or below chance"), got
    assert "litert" not in got["warning"] and "warning: onnxruntime_accuracy" in err


def test_optimize_and_adapt_warn_when_their_model_is_at_chance(tmp_path: Path, capfd, monkeypatch) -> None:
    """The CLIs' wiring only (a real optimize or adapt takes minutes: tests/test_optimize.py and
    tests/test_ondevice.py run them)."""
    from types import SimpleNamespace

    from edgeopt.model import load_model, save_model
    from edgeopt.models import create_model

    model = save_model(create_model("mlp", input_shape=(1, 8, 8), num_classes=10), tmp_path / "m.edgeopt")
    result = {"baseline": {"accuracy": 0.91}, "measured": {"accuracy": 0.09}, "artifact": "a.onnx"}
    monkeypatch.setattr("edgeopt.optimize.optimize", lambda *a, **k: dict(result))
    got, err = cli_json(capfd, "optimize", model, "--runtime", "onnxruntime", "--target", "latency_ms=1",
                        "--max-drop", "1", "--out", tmp_path / "o")  # fmt: skip
    assert got["warning"].startswith("accuracy: accuracy 0.0900 is at or below chance"), got
    assert "baseline" not in got["warning"] and "warning: accuracy:" in err

    adapted = SimpleNamespace(model=load_model(model), step_ms=1.0, to_json=lambda: {
        "accuracy_before": 0.1, "accuracy_after": 0.8, "memory": {}})  # fmt: skip
    monkeypatch.setattr("edgeopt.ondevice.adapt", lambda *a, **k: adapted)
    got, err = cli_json(capfd, "adapt", model, "--out", tmp_path / "a.edgeopt")
    assert got["warning"].startswith("accuracy_before: accuracy 0.1000 is at or below chance"), got
    assert "accuracy_after" not in got["warning"]


def test_recipe_report_is_quiet_for_a_model_that_learned() -> None:
    from edgeopt.report import build_report
    from edgeopt.report.html import render_html

    def ledger(acc: float, classes: int | None = 10) -> list[dict]:
        metrics = {"accuracy": acc, "accuracy_by_runtime": {"torch": acc, "onnxruntime": 0.11},
                   "latency_ms": {"torch": 1.0, "onnxruntime": 0.2}}  # fmt: skip
        if classes is not None:
            metrics["num_classes"] = classes
        return [{"stage": 0, "name": "baseline", "pass": "baseline", "status": "done", "metrics": metrics}]

    learned = build_report([{**ledger(0.9)[0], "metrics": {**ledger(0.9)[0]["metrics"],
                                                            "accuracy_by_runtime": {"torch": 0.9}}}], {})  # fmt: skip
    assert "warning" not in learned["summary"] and 'id="at-chance"' not in render_html(learned)
    one_runtime = build_report(ledger(0.9), {})["summary"]["warning"]  # ONNX Runtime's 11% is enough
    assert "ONNX Runtime: accuracy 0.1100" in one_runtime and "PyTorch" not in one_runtime
    assert "warning" not in build_report(ledger(0.1, classes=None), {})["summary"]  # old ledgers: unknown


# ----------------------------------------------------------------------------- item 10: one name per thread pool


def _commands() -> dict[str, click.Command]:
    root = command()
    out = {}
    for name, c in root.commands.items():
        subs = c.commands.items() if isinstance(c, click.Group) else [("", c)]
        out.update({f"{name} {s}".strip(): sc for s, sc in subs})
    return out


def _option(cmd: click.Command, flag: str) -> click.Option | None:
    return next((p for p in cmd.params if isinstance(p, click.Option) and flag in p.opts and not p.hidden), None)


def test_threads_is_always_a_runtime_and_train_threads_always_torch() -> None:
    cmds = _commands()
    for name, cmd in cmds.items():
        threads, train_threads = _option(cmd, "--threads"), _option(cmd, "--train-threads")
        if threads is not None:
            assert "runtime" in (threads.help or ""), (name, threads.help)
        if train_threads is not None:
            assert "torch" in (train_threads.help or ""), (name, train_threads.help)
    trains = ("train", "prune", "distill", "compress", "quantize", "federate")
    measures = ("train", "eval", "run", "bench", "prune", "search", "optimize", "hw calibrate", "hw transfer")
    assert all(_option(cmds[n], "--train-threads") for n in trains), trains
    assert all(_option(cmds[n], "--threads") for n in measures), measures
    for name in ("search", "optimize"):  # they train candidates too: seed (and search's batch) are settable
        assert _option(cmds[name], "--seed") is not None, name
    assert _option(cmds["search"], "--batch-size") is not None


def test_threads_where_it_meant_torch_still_works_with_a_warning(tmp_path: Path, capfd, monkeypatch) -> None:
    seen: dict = {}

    def fake_distill(student, teacher, data, cfg, kd):
        seen["threads"] = cfg.threads
        raise KeyboardInterrupt  # stop before any training: what was passed is recorded

    monkeypatch.setattr("edgeopt.compress.distill.distill", fake_distill)
    args = ["distill", "--teacher", "zoo:mlp", "--student", "zoo:mlp", "--out", tmp_path / "s.edgeopt"]
    rc, _, err = run_cli(capfd, *args, "--threads", "1")
    assert rc == 130 and seen["threads"] == 1
    assert "--threads is deprecated for torch's threads" in err and "use --train-threads" in err
    rc, _, err = run_cli(capfd, *args, "--train-threads", "1", "--threads", "1")
    assert rc == 2 and "--threads is the old name of --train-threads" in err


def test_train_threads_reaches_training(tmp_path: Path, capfd, monkeypatch) -> None:
    seen: dict = {}

    def fake_fit(model, data, cfg, *a, **k):
        seen["threads"] = cfg.threads
        raise KeyboardInterrupt

    monkeypatch.setattr("edgeopt.train.fit", fake_fit)
    rc, _, _ = run_cli(capfd, "train", "zoo:mlp", "--train-threads", "1", "--out", tmp_path / "m.edgeopt")
    assert rc == 130 and seen["threads"] == 1


# ----------------------------------------------------------------------------- item 3: defaults that train


def test_default_learning_rate_is_registered_per_zoo_model() -> None:
    from edgeopt.errors import EdgeoptError
    from edgeopt.models import create_model
    from edgeopt.train.fit import default_lr

    mlp, lenet = create_model("mlp", input_shape=(1, 8, 8)), create_model("lenet5", input_shape=(1, 8, 8))
    assert default_lr(mlp, "sgd") == pytest.approx(0.3) and default_lr(mlp, "adam") == pytest.approx(0.012)
    assert default_lr(create_model("dscnn", input_shape=(1, 8, 8)), "sgd") == pytest.approx(0.15)
    assert default_lr(lenet, "sgd") == pytest.approx(0.05) and default_lr(lenet, "adam") == pytest.approx(2e-3)
    # measured on classifiers only: a regression MLP keeps the plain default (SGD 0.3 diverges there)
    regression = create_model("mlp", input_shape=(6,), num_classes=1, task="regression")
    assert default_lr(regression, "sgd") == pytest.approx(0.05)
    with pytest.raises(EdgeoptError, match="unknown optimizer 'rmsprop'"):
        default_lr(mlp, "rmsprop")


def test_mlp_trains_to_a_useful_model_with_default_flags(tmp_path: Path, capfd, one_thread) -> None:
    """`edgeopt train zoo:mlp` with every default: 86% with the BN networks' learning rate, 94% with its own."""
    got, err = cli_json(capfd, "train", "zoo:mlp", "--out", tmp_path / "m.edgeopt")
    assert got["test_accuracy"] >= 0.9, got
    assert "warning" not in got


def test_recipe_prune_recovers_by_default() -> None:
    """A recipe's prune stage fine-tunes as `edgeopt prune` does unless told `epochs: 0`."""
    from edgeopt.compress.passes import PrunePass
    from edgeopt.compress.workflows import RECOVERY_EPOCHS

    prune_cmd = _commands()["prune"]
    (epochs,) = [p for p in prune_cmd.params if "--epochs" in p.opts]
    assert PrunePass().epochs == RECOVERY_EPOCHS == epochs.default > 0
