"""edgeopt optimize on digits with a small time budget: a candidate within the limits, best.yaml reproduces it,
the infeasible budget fails naming the limits missed, and the --json forms."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgeopt.cli import main
from edgeopt.errors import EdgeoptError
from edgeopt.optimize import Budget, parse_target

RUNTIME = "onnxruntime"
LIMITS = "latency_ms=2.0,flash_kb=60"  # the float MLP's artifact is ~76 KB: int8 or pruning is needed
MAX_DROP = 5.0


def cli_json(args: list[str], tmp: Path) -> tuple[int, Any]:
    """Run the CLI with the real stdout on a file (main() writes JSON there); returns (rc, parsed stdout)."""
    path = tmp / "stdout.json"
    saved = os.dup(1)
    try:
        with open(path, "w") as f:
            os.dup2(f.fileno(), 1)
            rc = main(args)
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    text = path.read_text().strip()
    return rc, (json.loads(text) if text else None)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgeopt.data import load_dataset
    from edgeopt.model import load_model, save_model
    from edgeopt.train import FitConfig, fit

    train = load_dataset("digits", "train")
    model = load_model("zoo:mlp", input_shape=train.sample_shape, num_classes=10, seed=0)
    model, _ = fit(model, train, FitConfig(epochs=8, optimizer="adam", seed=0, threads=1))
    return save_model(model, tmp_path_factory.mktemp("opt") / "mlp.edgeopt")


TRAINED_ON: list[str] = []  # the devices the run's training asked for (the `run` fixture's --device auto)


@pytest.fixture(scope="module")
def run(trained: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    import edgeopt.optimize.search
    import edgeopt.pipeline.run

    out = tmp_path_factory.mktemp("opt") / "run"
    args = ["optimize", str(trained), "--data", "digits", "--runtime", RUNTIME, "--target", LIMITS,
            "--max-drop", str(MAX_DROP), "--minutes", "1.0", "--out", str(out), "--device", "auto",
            "--json"]  # fmt: skip
    real_epoch, real_run = edgeopt.optimize.search.epoch_seconds, edgeopt.pipeline.run.run_recipe

    def epoch_seconds(*a, device: str = "cpu", **kw):  # the time an epoch of recovery takes
        TRAINED_ON.append(device)
        return real_epoch(*a, device=device, **kw)

    def run_recipe(*a, device: str = "cpu", **kw):  # the baseline's and finalists' recipes
        TRAINED_ON.append(device)
        return real_run(*a, device=device, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(edgeopt.optimize.search, "epoch_seconds", epoch_seconds)
        mp.setattr(edgeopt.pipeline.run, "run_recipe", run_recipe)
        rc, result = cli_json(args, out.parent)
    assert rc == 0, result
    return out, result


def test_optimize_trains_on_the_device_asked(run: tuple[Path, dict[str, Any]], trained: Path) -> None:
    from edgeopt.optimize import optimize

    # the epoch timing, the baseline's recipe, a finalist's (whose prune and distill passes train there; QAT
    # trains on the CPU)
    assert len(TRAINED_ON) >= 3 and set(TRAINED_ON) == {"auto"}
    with pytest.raises(EdgeoptError, match="unknown training device 'tpu'"):
        optimize(trained, target="latency_ms=1", device="tpu")


def test_optimize_returns_a_candidate_within_every_limit(run: tuple[Path, dict[str, Any]]) -> None:
    out, result = run
    assert set(result["measured"]) >= {"accuracy", "latency_ms", "flash_bytes", "arena_bytes"}
    assert Path(result["artifact"]).is_file() and Path(result["artifact"]).suffix == ".onnx"
    assert Path(result["recipe"]) == out / "best.yaml"
    m, base = result["measured"], result["baseline"]
    assert m["latency_ms"] <= 2.0 and m["flash_bytes"] <= 60 * 1024
    assert m["accuracy"] >= base["accuracy"] - MAX_DROP / 100
    assert m["flash_bytes"] == Path(result["artifact"]).stat().st_size
    pareto = json.loads((out / "pareto.json").read_text())
    assert pareto["chosen"]["trial"] == result["chosen_trial"] and pareto["candidates"]
    html = (out / "report.html").read_text()
    assert "<svg" in html and "Chosen: trial" in html and "met" in html


def test_best_yaml_reproduces_the_choice(run: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    from edgeopt.optimize.confirm import final_artifact
    from edgeopt.pipeline import load_recipe, run_recipe

    out, result = run
    recipe = yaml.safe_load((out / "best.yaml").read_text())
    assert recipe["passes"][-1] == {"export": {"formats": ["onnx"]}}
    ledger = run_recipe(load_recipe(out / "best.yaml"), tmp_path / "again")
    acc = ledger[-1]["metrics"]["accuracy_by_runtime"][RUNTIME]
    size = final_artifact(ledger, tmp_path / "again", RUNTIME).stat().st_size
    assert abs(acc - result["measured"]["accuracy"]) <= 0.02
    assert abs(size - result["measured"]["flash_bytes"]) <= 0.02 * result["measured"]["flash_bytes"]


def test_target_parsing_and_misses() -> None:
    b = parse_target("latency_ms=0.5, flash_kb=40,arena_kb=8", 1.0)
    assert b == Budget(latency_ms=0.5, max_drop=1.0, arena_kb=8.0, flash_kb=40.0)
    figures = {"accuracy": 0.74, "latency_ms": 0.4, "flash_bytes": 50 * 1024, "arena_bytes": 4096}
    assert [m["limit"] for m in b.misses(figures, 0.7548)] == ["accuracy", "flash_bytes"]  # worst first
    assert b.misses({**figures, "flash_bytes": 1000, "accuracy": 0.75}, 0.7548) == []
    for bad, fragment in [("flash_kb=40", "needs latency_ms"), ("latency_ms=x", "not a number"),
                          ("latency_ms=1,speed=2", "KEY=VALUE"), ("latency_ms=-1", "positive")]:  # fmt: skip
        with pytest.raises(EdgeoptError, match=fragment):
            parse_target(bad, 1.0)
    with pytest.raises(EdgeoptError, match="max-drop"):
        parse_target("latency_ms=1", -1.0)


def test_infeasible_budget_exits_nonzero_naming_the_missed_limits(
    run: tuple[Path, dict[str, Any]], trained: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """In the same RUN with a new study: the baseline and confirmations are reused, judged by the new budget."""
    out, _ = run
    args = ["optimize", str(trained), "--runtime", RUNTIME, "--target", "latency_ms=2.0,flash_kb=1",
            "--max-drop", "0.5", "--minutes", "0.2", "--out", str(out), "--storage",
            f"sqlite:///{tmp_path / 'inf.db'}", "--json"]  # fmt: skip
    rc, payload = cli_json(args, tmp_path)
    err = capfd.readouterr().err
    assert rc == 2
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "no candidate meets the budget" in errors[0] and "flash" in errors[0]
    closest = payload["closest"]
    assert closest and all(any(m["limit"] == "flash_bytes" for m in c["misses"]) for c in closest)
    assert closest[0]["figures"] == "measured" and closest[0]["flash_bytes"] > 1024
    assert (out / "pareto.json").is_file() and not (out / "best.yaml").exists()  # this run chose nothing


def test_recovery_is_set_at_confirmation_not_searched() -> None:
    from edgeopt.optimize.space import describe, prunes, training_epochs, with_recovery

    screened = [
        {"prune": {"ratio": 0.5, "allocation": "global", "round_to": 8, "distill": True}},
        {"quantize": {"method": "qat", "calib": "mse", "qat_epochs": 2}},
        {"export": {"formats": ["onnx"]}},
    ]
    assert prunes(screened) and training_epochs(screened) == 2 and " e" not in describe(screened).split("→")[0]
    confirmed = with_recovery(screened, 7)
    assert confirmed[0]["prune"]["epochs"] == 7 and confirmed[1:] == screened[1:]
    assert "epochs" not in screened[0]["prune"]  # the screened recipe is left as it was
    assert training_epochs(confirmed) == 9 and "e7 KD" in describe(confirmed)
    assert with_recovery(screened[1:], 7) == screened[1:] and not prunes(screened[1:])


def test_a_second_timing_keeps_the_faster() -> None:
    from edgeopt.optimize.measure import keep_faster_timing

    first = {"accuracy": 0.75, "latency_ms": 0.127, "latency_p50_all_ms": 0.14, "latency_p90_ms": 0.15}
    faster = keep_faster_timing(first, {"latency_ms": 0.074, "latency_p50_all_ms": 0.08, "latency_p90_ms": 0.09})
    assert faster == {"accuracy": 0.75, "latency_ms": 0.074, "latency_p50_all_ms": 0.08, "latency_p90_ms": 0.09,
                      "latency_timings": [0.127, 0.074]}  # fmt: skip
    slower = keep_faster_timing(first, {"latency_ms": 0.2, "latency_p50_all_ms": 0.2, "latency_p90_ms": 0.2})
    assert slower == {**first, "latency_timings": [0.127, 0.2]} and "latency_timings" not in first


def test_best_yaml_pins_a_latency_allocation_to_the_widths_it_landed_on() -> None:
    from edgeopt.optimize.confirm import landed_passes

    passes = [{"prune": {"method": "channel", "ratio": 0.8, "allocation": "latency", "size_weight": 0.5, "round_to": 8,
                         "epochs": 16}},
              {"quantize": {"method": "qat"}}, {"export": {"formats": ["onnx"]}}]  # fmt: skip
    groups = [{"before": 16, "after": 8}, {"before": 16, "after": 0}, {"before": 64, "after": 52}]
    ledger = [{"pass": "baseline", "metrics": {}}, {"pass": "prune", "metrics": {"channels": {"groups": groups}}},
              {"pass": "quantize", "metrics": {}}, {"pass": "export", "metrics": {}}]  # fmt: skip
    landed = landed_passes(passes, ledger)
    assert landed[0] == {"prune": {"method": "channel", "round_to": 8, "epochs": 16, "widths": [8, 0, 52]}}
    assert landed[1:] == passes[1:]
    uniform = [{"prune": {**passes[0]["prune"], "allocation": "uniform"}}]
    assert landed_passes(uniform, ledger[:2]) == uniform  # only a latency allocation depends on a timing
    from edgeopt.pipeline import recipe_from_dict

    recipe_from_dict({"model": "m.edgeopt", "data": "digits", "passes": landed})  # a valid recipe


def test_a_screened_structure_is_the_one_confirmation_builds(
    trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A latency allocation chooses its cuts by the accuracy each loses on training images (``eval_data``), and
    reconstruction calibrates on them: the screen must draw both from the same split as confirmation's recipe run,
    or it costs another structure (38 KB screened, 43 KB confirmed on the ExecuTorch ResNet-8, 2026-12-03)."""
    import numpy as np
    import torch.nn as nn

    import edgeopt.compress.prune as prune_package
    import edgeopt.compress.prune.netadapt as netadapt
    from edgeopt.model import EdgeModel
    from edgeopt.optimize.screen import screen_candidate
    from edgeopt.optimize.search import _Run
    from edgeopt.pipeline.passes import PassContext
    from edgeopt.pipeline.recipe import build_pass
    from edgeopt.profile import profile_model

    def latency(models: list[EdgeModel]) -> list[float]:  # the first layer's units cost most: an uneven allocation
        widths = [[m.out_features for m in x.module.modules() if isinstance(m, nn.Linear)] for x in models]
        return [0.01 + 0.002 * w[0] + 0.0005 * sum(w[1:]) for w in widths]

    seen: list[tuple[np.ndarray, np.ndarray]] = []  # what each pruning allocated and calibrated on
    real = prune_package.prune_channels

    def recording(*args: Any, **kwargs: Any) -> Any:
        seen.append((np.asarray(kwargs["eval_data"].labels), kwargs["calibration"].numpy()))
        return real(*args, **kwargs)

    monkeypatch.setattr(netadapt, "latency_source", lambda *a, **k: (latency, {"latency": "measured"}))
    monkeypatch.setattr(prune_package, "prune_channels", recording)
    run = _Run(trained, "digits", RUNTIME, parse_target(LIMITS, MAX_DROP), 1.0, None, tmp_path / "run", 1, 0, None)
    run.setup(val_images=200)
    prune = {"method": "channel", "ratio": 0.6, "allocation": "latency", "round_to": 4, "runtime": RUNTIME}
    screened = screen_candidate(run.model, [{"prune": prune}, {"export": {"formats": ["onnx"]}}], run.screen_data,
                                RUNTIME)  # fmt: skip
    confirmed = build_pass("prune", {**prune, "epochs": 0}).apply(run.model, PassContext("digits", tmp_path))
    assert len(seen) == 2
    np.testing.assert_array_equal(seen[0][0], seen[1][0])
    np.testing.assert_array_equal(seen[0][1], seen[1][1])
    assert screened["cost"]["macs"] == profile_model(confirmed).macs


def test_structure_ignores_recovery_and_quantization() -> None:
    """Finalists are confirmed architectures first (``search._Run.finalists``): ``structure`` is what they are
    grouped by."""
    from edgeopt.optimize.space import structure, with_recovery

    prune = {"prune": {"method": "channel", "ratio": 0.8, "allocation": "latency", "round_to": 8}}
    ptq = [prune, {"quantize": {"method": "ptq", "calib": "mse"}}]
    qat = [with_recovery([prune], 12)[0], {"quantize": {"method": "qat", "calib": "minmax", "qat_epochs": 3}}]
    assert structure(ptq) == structure(qat) != ""
    assert structure([{"prune": {**prune["prune"], "distill": True}}]) == structure(ptq)
    assert structure([{"prune": {**prune["prune"], "ratio": 0.85}}]) != structure(ptq)
    assert structure(ptq[1:]) == ""


@pytest.mark.parametrize("profiled", [False, True])
def test_warm_starts_fix_every_choice_of_the_space(profiled: bool) -> None:
    """Each warm start names every parameter its recipe samples, and none it does not (a name the space does not
    ask, such as ``allocation`` when the profiled space asks ``allocation_profiled``, would leave a choice to TPE)."""
    import optuna

    from edgeopt.optimize.search import QAT_EPOCHS, warm_starts
    from edgeopt.optimize.space import sample_passes

    starts = warm_starts(profiled)
    allocations = []
    for params in starts:
        trial = optuna.trial.FixedTrial(params)
        passes = sample_passes(trial, RUNTIME, QAT_EPOCHS, profiled)
        assert trial.params == params
        allocations += [p["prune"]["allocation"] for p in passes if "prune" in p]
    assert allocations == (["global", "latency"] if profiled else ["global"])


def test_finalists_order_unbuilt_architectures_then_warm_starts_then_accuracy() -> None:
    from types import SimpleNamespace

    import optuna

    from edgeopt.optimize.search import QAT_EPOCHS, _Run, warm_starts
    from edgeopt.optimize.space import sample_passes

    def screened(params: dict[str, Any], accuracy: float, **constraints: float) -> SimpleNamespace:
        passes = sample_passes(optuna.trial.FixedTrial(params), RUNTIME, QAT_EPOCHS, profiled=True)
        return SimpleNamespace(params=params, user_attrs={"passes": passes, "screen": {"accuracy_val": accuracy},
                                                          "constraints": constraints})  # fmt: skip

    start = warm_starts(True)[-1]  # the profiled warm start
    light = {**start, "prune_ratio": 0.5, "distill": False}
    built = {**start, "prune_ratio": 0.3}
    trials = [
        screened(built, 0.9, flash_bytes=-0.1),
        screened(light, 0.8, flash_bytes=-0.1),
        screened(start, 0.5, flash_bytes=-0.1),
        screened({**light, "prune_ratio": 0.4}, 0.95, flash_bytes=0.2),  # over the flash limit: not a finalist
    ]
    built_recipe = {"recipe": {"passes": trials[0].user_attrs["passes"]}}
    run = SimpleNamespace(confirmed={"t0": built_recipe}, profiled=True, _done_trials=lambda: trials)
    order = [t.params["prune_ratio"] for t in _Run.finalists(run)]
    assert order == [0.8, 0.5, 0.3]
