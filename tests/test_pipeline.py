"""Recipes, the run directory's ledger, resume after interruption, and the report."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from edgeopt.errors import EdgeoptError
from edgeopt.model import EdgeModel
from edgeopt.pipeline import PASSES, recipe_from_dict, register_pass, run_recipe
from edgeopt.pipeline.ledger import read_ledger

RECIPE = {
    "model": "zoo:mlp",
    "data": "digits",
    "eval_limit": 100,
    "passes": [{"train": {"epochs": 1, "optimizer": "adam"}}, {"export": {"formats": ["onnx"]}}],
}


def test_recipe_runs_and_records_every_stage(tmp_path: Path) -> None:
    ledger = run_recipe(recipe_from_dict(RECIPE), tmp_path / "run")
    assert [r["name"] for r in ledger] == ["baseline", "train", "export"]
    export = ledger[-1]["metrics"]
    assert set(export["latency_ms"]) == {"torch", "onnxruntime"}
    assert export["accuracy_by_runtime"]["onnxruntime"] == pytest.approx(export["accuracy"], abs=0.011)
    assert export["params"] > 0 and export["macs"] > 0 and export["parity"]["onnxruntime"]["rel_diff"] < 1e-4
    assert (tmp_path / "run" / "stages" / "02-export" / "model.onnx").is_file()
    assert read_ledger(tmp_path / "run" / "ledger.jsonl") == json.loads(json.dumps(ledger, default=str))
    with pytest.raises(EdgeoptError, match="already holds a run"):
        run_recipe(recipe_from_dict(RECIPE), tmp_path / "run")


@register_pass
@dataclass
class _Explode:
    """Test pass: interrupts the run like Ctrl-C would."""

    name: ClassVar[str] = "explode"
    armed: bool = True

    def apply(self, model: EdgeModel, ctx) -> EdgeModel:
        (ctx.stage_dir / "half-written.bin").write_bytes(b"x")
        if self.armed and not (ctx.stage_dir.parent.parent / "disarm").exists():
            raise KeyboardInterrupt
        return model


def test_interrupted_run_resumes_without_redoing_stages(tmp_path: Path) -> None:
    recipe = recipe_from_dict({**RECIPE, "passes": [{"train": {"epochs": 1}}, "explode"]})
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_recipe(recipe, out)
    ledger = read_ledger(out / "ledger.jsonl")
    assert [r["name"] for r in ledger] == ["baseline", "train"]
    assert sorted(p.name for p in (out / "stages").iterdir()) == ["00-baseline", "01-train"]  # no partial stage
    trained = (out / "stages" / "01-train" / "model.edgeopt").stat().st_mtime_ns
    (out / "disarm").touch()
    ledger = run_recipe(recipe, out, resume=True)
    assert [r["name"] for r in ledger] == ["baseline", "train", "explode"]
    assert (out / "stages" / "01-train" / "model.edgeopt").stat().st_mtime_ns == trained
    changed = recipe_from_dict({**RECIPE, "passes": [{"train": {"epochs": 2}}, "explode"]})
    with pytest.raises(EdgeoptError, match="different recipe"):
        run_recipe(changed, out, resume=True)
    PASSES.pop("explode")


@pytest.mark.parametrize(
    "recipe, message",
    [
        ({"model": "zoo:mlp", "passes": [{"nope": {}}]}, "unknown pass 'nope'"),
        ({"model": "zoo:mlp", "passes": [{"train": {"epochz": 1}}]}, "has no parameter 'epochz'"),
        ({"model": "zoo:mlp", "passes": [], "colour": 1}, "unknown recipe key 'colour'"),
        ({"model": "zoo:mlp"}, "needs 'model', 'data' and a 'passes' list"),
    ],
)
def test_bad_recipes(recipe: dict, message: str) -> None:
    with pytest.raises(EdgeoptError, match=message):
        recipe_from_dict(recipe)


def test_same_recipe_same_seed_same_model(tmp_path: Path) -> None:
    import torch

    from edgeopt.model import load_model

    recipe = recipe_from_dict({**RECIPE, "passes": []})
    weights = []
    for name in ("a", "b"):
        ledger = run_recipe(recipe, tmp_path / name)
        weights.append(load_model(tmp_path / name / ledger[-1]["checkpoint"]).module.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


@register_pass
@dataclass
class _RecordDevice:
    """Test pass: notes the device its context says to train on."""

    name: ClassVar[str] = "record_device"
    seen: ClassVar[list[str]] = []

    def apply(self, model: EdgeModel, ctx) -> EdgeModel:
        self.seen.append(ctx.device)
        return model


def test_a_recipe_trains_on_the_device_asked(tmp_path: Path, monkeypatch) -> None:
    import edgeopt.train

    devices: list[str] = []
    real_fit = edgeopt.train.fit

    def fit(model, data, cfg, *args, **kwargs):  # the train pass's call, noted
        devices.append(cfg.device)
        return real_fit(model, data, cfg, *args, **kwargs)

    monkeypatch.setattr(edgeopt.train, "fit", fit)
    passes = [{"train": {"epochs": 1, "optimizer": "adam"}}, {"record_device": {}}]
    recipe = recipe_from_dict({**RECIPE, "passes": passes})
    run_recipe(recipe, tmp_path / "run", device="auto")  # auto: cuda where present, else cpu
    assert devices == ["auto"] and _RecordDevice.seen[-1] == "auto"
    with pytest.raises(EdgeoptError, match="unknown training device 'tpu'"):
        run_recipe(recipe, tmp_path / "other", device="tpu")
    assert not (tmp_path / "other").exists()  # refused before any stage
