"""Recipes: a YAML list of passes with their parameters, validated before anything runs.

    model: zoo:resnet8
    data: digits
    passes:
      - train: {epochs: 8}
      - export: {formats: [onnx, pte, tflite]}

Parsed with ``yaml.safe_load``; pass parameters are checked against each pass's typed
fields, never evaluated.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edgeopt.errors import EdgeoptError
from edgeopt.pipeline.passes import Pass, available_passes


@dataclass
class Recipe:
    model: str
    data: str
    passes: list[Pass]
    threads: int = 1
    eval_limit: int | None = None  # test samples per evaluation (None: the whole split)
    input_shape: list[int] | None = None
    seed: int = 0  # seeds the initial weights of a zoo model
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "data": self.data,
            "threads": self.threads,
            "eval_limit": self.eval_limit,
            "input_shape": self.input_shape,
            "seed": self.seed,
            "passes": [{p.name: dataclasses.asdict(p)} for p in self.passes],
        }

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()[:16]


def build_pass(name: str, params: dict[str, Any] | None) -> Pass:
    passes = available_passes()
    if name not in passes:
        raise EdgeoptError(f"unknown pass '{name}' in recipe", f"available passes: {', '.join(sorted(passes))}")
    cls = passes[name]
    params = params or {}
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(params) - known
    if unknown:
        raise EdgeoptError(f"pass '{name}' has no parameter {sorted(unknown)[0]!r}", f"its parameters: {sorted(known)}")
    try:
        return cls(**params)
    except (TypeError, ValueError) as e:
        raise EdgeoptError(f"bad parameters for pass '{name}': {e}") from e


def recipe_from_dict(d: dict[str, Any]) -> Recipe:
    if not isinstance(d, dict) or "passes" not in d:
        raise EdgeoptError("a recipe needs 'model', 'data' and a 'passes' list")
    passes = []
    for item in d["passes"] or []:
        if isinstance(item, str):
            item = {item: {}}
        if not isinstance(item, dict) or len(item) != 1:
            raise EdgeoptError(f"recipe pass entry {item!r} is malformed", "write '- name: {param: value}'")
        ((name, params),) = item.items()
        passes.append(build_pass(name, params))
    allowed = {"model", "data", "passes", "threads", "eval_limit", "input_shape", "seed"}
    extra = {k: v for k, v in d.items() if k not in allowed}
    if extra:
        raise EdgeoptError(f"unknown recipe key {sorted(extra)[0]!r}", f"recipe keys: {sorted(allowed)}")
    return Recipe(
        model=str(d.get("model", "")),
        data=str(d.get("data", "digits")),
        passes=passes,
        threads=int(d.get("threads", 1)),
        eval_limit=d.get("eval_limit"),
        input_shape=d.get("input_shape"),
        seed=int(d.get("seed", 0)),
    )


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise EdgeoptError(f"recipe not found: {path}", "check the path")
    try:
        d = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise EdgeoptError(f"recipe {path} is not valid YAML ({str(e).splitlines()[0]})") from e
    return recipe_from_dict(d)
