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
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edgeopt.checks import check_numbers
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
    hints = typing.get_type_hints(cls) if params else {}
    for key, value in params.items():
        if not value_fits(value, hints[key]):
            hint = hints[key]
            raise EdgeoptError(f"pass '{name}': {key} is {value!r}, not {type_name(hint)}",
                               f"write e.g. {key}: {_example(hint)}")  # fmt: skip
    check_numbers(params, where=f"pass '{name}': ")
    try:
        return cls(**params)
    except (TypeError, ValueError) as e:
        raise EdgeoptError(f"bad parameters for pass '{name}': {e}") from e


# passes that need a float model, and what they would do to it
FLOAT_ONLY = {"prune": "pruned", "compress": "compressed"}


def refuse_float_only_after_quantize(passes: list[Pass]) -> None:
    """A recipe that prunes (or packs) after quantizing is refused before anything runs."""
    quantized = False
    for p in passes:
        if quantized and p.name in FLOAT_ONLY:
            raise EdgeoptError(
                f"pass '{p.name}' comes after 'quantize': a quantized model can't be {FLOAT_ONLY[p.name]}",
                f"move '{p.name}' before 'quantize' ({p.name} before quantizing)",
            )
        quantized = quantized or p.name == "quantize"


def value_fits(value: Any, hint: Any) -> bool:
    """Whether a YAML value fits a pass field's type (int, float, str, bool, None, lists, dicts, unions). Pure."""
    if hint is Any:
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        return any(value_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple):
        inner = args[0] if args else Any
        return isinstance(value, list | tuple) and all(value_fits(v, inner) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    return isinstance(value, hint) if isinstance(hint, type) else True


def type_name(hint: Any) -> str:
    """``float | None`` -> ``a number or null``: a field's type in a recipe writer's words. Pure."""
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        return " or ".join(type_name(a) for a in typing.get_args(hint))
    words = {int: "a whole number", float: "a number", str: "a string", bool: "true/false", type(None): "null"}
    if hint in words:
        return words[hint]
    origin = typing.get_origin(hint)
    if origin in (list, tuple):
        args = typing.get_args(hint)
        return f"a list ({type_name(args[0])} each)" if args else "a list"
    if origin is dict:
        return "a mapping"
    return getattr(hint, "__name__", str(hint))


def _example(hint: Any) -> str:
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        return _example(next(a for a in typing.get_args(hint) if a is not type(None)))
    origin = typing.get_origin(hint)
    examples = {int: "5", float: "0.5", str: "name", bool: "true"}
    if hint in examples:
        return examples[hint]
    return "[...]" if origin in (list, tuple) else "{...}" if origin is dict else "..."


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
    refuse_float_only_after_quantize(passes)
    allowed = {"model", "data", "passes", "threads", "eval_limit", "input_shape", "seed"}
    extra = {k: v for k, v in d.items() if k not in allowed}
    if extra:
        raise EdgeoptError(f"unknown recipe key {sorted(extra)[0]!r}", f"recipe keys: {sorted(allowed)}")
    for key, hint in (("threads", int), ("eval_limit", int | None), ("seed", int), ("input_shape", list[int] | None)):
        if key in d and not value_fits(d[key], hint):
            raise EdgeoptError(f"recipe key {key} is {d[key]!r}, not {type_name(hint)}")
    check_numbers({k: d.get(k) for k in ("threads", "eval_limit")}, where="recipe: ")
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
