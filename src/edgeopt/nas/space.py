"""Search spaces as data: a YAML file names a searchable zoo family and the choices of each knob.

A space file (``yaml.safe_load``; nothing in it is executed)::

    family: nas_resnet        # nas_resnet | nas_mobilenet | nas_dscnn (edgeopt.models.searchable)
    stages: 3                 # staged families: how many stages
    knobs:
      stem: [8, 16, 24]                                  # a scalar knob: its choices
      widths: [[8, 16, 24], [16, 32, 48], [32, 48, 64]]  # per stage: one list of choices per stage
      kernels: [3, 5, 7]                                 # or one list shared by every stage
      strides: [[1], [2], [2]]                           # a single choice is fixed, not searched

``nas_dscnn`` has ``blocks: [2, 3, 4]`` (how many blocks) instead of ``stages``; its per-block knobs
are drawn for the chosen number of blocks only. ``width_mult`` (mobilenet) scales the stem and all
widths, rounded to a multiple of 8. The shipped spaces (``resnet``, ``mobilenet``, ``dscnn``) live
in ``edgeopt/nas/spaces/``.

Sampling is define-by-run: :func:`sample` walks the space and asks ``choose(name, choices)`` for
each knob in turn, so the same walk serves Optuna (``trial.suggest_categorical``), a plain random
sampler (:func:`random_chooser`) and exhaustive enumeration (:func:`enumerate_configs`). A sampled
configuration is the keyword arguments of the family's zoo builder. Pure functions throughout.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.errors import EdgeoptError

Chooser = Callable[[str, list[Any]], Any]

SHIPPED = ("resnet", "mobilenet", "dscnn")


@dataclass(frozen=True)
class FamilyKnobs:
    scalar: tuple[str, ...]  # one value for the network
    unit: tuple[str, ...]  # one value per stage (staged families) or per block (nas_dscnn)
    required: tuple[str, ...]
    unit_word: str  # "stage" | "block"


FAMILIES: dict[str, FamilyKnobs] = {
    "nas_resnet": FamilyKnobs(("stem",), ("widths", "depths", "kernels", "strides"),
                              ("stem", "widths", "depths", "kernels"), "stage"),
    "nas_mobilenet": FamilyKnobs(("stem", "width_mult"), ("widths", "depths", "kernels", "expand", "se", "strides"),
                                 ("stem", "widths", "depths", "kernels", "expand", "se"), "stage"),
    "nas_dscnn": FamilyKnobs(("stem", "stem_kernel"), ("widths", "strides"), ("stem", "stem_kernel", "widths"),
                             "block"),
}  # fmt: skip


@dataclass(frozen=True)
class SearchSpace:
    """A validated space. ``knobs[name]`` is a list of choice lists: one per stage/block, or one for a scalar."""

    name: str
    family: str
    knobs: dict[str, list[list[Any]]]
    stages: int | None = None  # staged families
    blocks: tuple[int, ...] | None = None  # nas_dscnn: choices of the block count

    @property
    def units(self) -> int:
        """Stages, or the largest number of blocks."""
        return int(self.stages if self.stages is not None else max(self.blocks or (1,)))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "family": self.family, "knobs": self.knobs}
        if self.stages is not None:
            out["stages"] = self.stages
        if self.blocks is not None:
            out["blocks"] = list(self.blocks)
        return out


def _err(
    where: str, what: str, fix: str = "see the shipped spaces in edgeopt/nas/spaces/ for the format"
) -> EdgeoptError:
    return EdgeoptError(f"search space {where}: {what}", fix)


def _check_choice(where: str, knob: str, v: Any) -> Any:
    """One choice of ``knob``, type-checked (bool is not accepted where an int is meant)."""
    if knob == "se":
        if not isinstance(v, bool):
            raise _err(where, f"'se' choices must be true or false, not {v!r}")
        return v
    if knob == "width_mult":
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < float(v) <= 4:
            raise _err(where, f"'width_mult' choices must be numbers in (0, 4], not {v!r}")
        return float(v)
    if knob == "stem_kernel":
        parts = str(v).lower().split("x")
        if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise _err(where, f"'stem_kernel' choices are HxW strings such as \"10x4\", not {v!r}")
        return f"{int(parts[0])}x{int(parts[1])}"
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise _err(where, f"'{knob}' choices must be positive integers, not {v!r}")
    if knob == "kernels" and v % 2 == 0:
        raise _err(where, f"kernel sizes must be odd (symmetric padding), not {v}")
    if knob == "strides" and v > 2:
        raise _err(where, f"strides must be 1 or 2, not {v}")
    if knob == "expand" and v > 8:
        raise _err(where, f"expansion ratios above 8 are not supported, not {v}")
    return v


def _choices(where: str, knob: str, value: Any) -> list[Any]:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise _err(where, f"knob '{knob}' has no choices")
    out = [_check_choice(where, knob, v) for v in values]
    return list(dict.fromkeys(out))  # duplicates would only skew sampling


def parse_space(data: Any, name: str = "space") -> SearchSpace:
    """Validate a space's parsed YAML (a dict); one-line errors name the file and the problem."""
    where = f"'{name}'"
    if not isinstance(data, dict):
        raise _err(where, "is not a mapping with 'family' and 'knobs'")
    unknown = set(data) - {"family", "stages", "blocks", "knobs", "description"}
    if unknown:
        raise _err(where, f"unknown key(s) {', '.join(sorted(map(str, unknown)))}",
                   "allowed: family, stages, blocks, knobs, description")  # fmt: skip
    family = data.get("family")
    if family not in FAMILIES:
        raise _err(where, f"unknown family {family!r}", f"use one of: {', '.join(FAMILIES)}")
    spec = FAMILIES[family]
    knobs_in = data.get("knobs")
    if not isinstance(knobs_in, dict) or not knobs_in:
        raise _err(where, "'knobs' must be a mapping of knob name to choices")
    stages: int | None = None
    blocks: tuple[int, ...] | None = None
    if spec.unit_word == "stage":
        stages = data.get("stages")
        if isinstance(stages, bool) or not isinstance(stages, int) or not 1 <= stages <= 8:
            raise _err(where, f"'stages' must be an integer from 1 to 8, not {stages!r}")
        if "blocks" in data:
            raise _err(where, f"'{family}' has stages, not 'blocks'")
        units = stages
    else:
        raw = data.get("blocks")
        raw = raw if isinstance(raw, list) else [raw]
        if not raw or any(isinstance(b, bool) or not isinstance(b, int) or not 1 <= b <= 16 for b in raw):
            raise _err(where, f"'blocks' must be integers from 1 to 16, not {data.get('blocks')!r}")
        if "stages" in data:
            raise _err(where, f"'{family}' has 'blocks', not stages")
        blocks = tuple(sorted(set(raw)))
        units = max(blocks)
    allowed = set(spec.scalar) | set(spec.unit)
    for knob in knobs_in:
        if knob not in allowed:
            raise _err(where, f"'{family}' has no knob '{knob}'", f"its knobs: {', '.join(sorted(allowed))}")
    missing = [k for k in spec.required if k not in knobs_in]
    if missing:
        raise _err(where, f"missing knob(s) {', '.join(missing)} for '{family}'")
    knobs: dict[str, list[list[Any]]] = {}
    for knob, value in knobs_in.items():
        if knob in spec.scalar:
            knobs[knob] = [_choices(where, knob, value)]
        elif isinstance(value, list) and value and all(isinstance(v, list) for v in value):
            if len(value) != units:
                raise _err(where, f"knob '{knob}' lists choices for {len(value)} {spec.unit_word}s, "
                                  f"the space has {units}")  # fmt: skip
            knobs[knob] = [_choices(where, knob, v) for v in value]
        else:
            shared = _choices(where, knob, value)
            knobs[knob] = [shared] * units
    return SearchSpace(str(name), family, knobs, stages, blocks)


def load_space(source: str | Path) -> SearchSpace:
    """A shipped space by name (``resnet``, ``mobilenet``, ``dscnn``) or a user's YAML file."""
    import yaml

    text = str(source)
    if text in SHIPPED:
        body = resources.files("edgeopt.nas").joinpath("spaces", f"{text}.yaml").read_text()
        name = text
    else:
        path = Path(text)
        if not path.is_file():
            raise EdgeoptError(f"search space '{text}' is neither a shipped space nor a file",
                               f"use one of {', '.join(SHIPPED)} or a path to a .yaml file")  # fmt: skip
        try:
            body = path.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise EdgeoptError(f"cannot read search space {path} ({e})", "check the file") from e
        name = str(path)
    try:
        data = yaml.safe_load(body)
    except yaml.YAMLError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise EdgeoptError(f"search space '{name}' is not valid YAML ({first})", "fix the file's syntax") from e
    return parse_space(data, name)


def _round8(x: float) -> int:
    return max(8, int(round(x / 8)) * 8)


def sample(space: SearchSpace, choose: Chooser) -> dict[str, Any]:
    """One configuration (the family builder's keyword arguments), each knob decided by ``choose``.

    Knobs with a single choice are fixed without asking. Parameter names are ``stem``, ``blocks``,
    ``widths.0``, ``kernels.2``...: stable, so Optuna can model them across trials.
    """

    def pick(name: str, choices: list[Any]) -> Any:
        return choices[0] if len(choices) == 1 else choose(name, list(choices))

    n = space.units if space.blocks is None else int(pick("blocks", list(space.blocks)))
    cfg: dict[str, Any] = {}
    spec = FAMILIES[space.family]
    for knob in spec.scalar:
        if knob in space.knobs:
            cfg[knob] = pick(knob, space.knobs[knob][0])
    for knob in spec.unit:
        if knob in space.knobs:
            cfg[knob] = [pick(f"{knob}.{i}", space.knobs[knob][i]) for i in range(n)]
    mult = cfg.pop("width_mult", None)
    if mult is not None:
        cfg["stem"] = _round8(cfg["stem"] * mult)
        cfg["widths"] = [_round8(w * mult) for w in cfg["widths"]]
    if "stem_kernel" in cfg:
        cfg["stem_kernel"] = [int(p) for p in cfg["stem_kernel"].split("x")]
    return cfg


def _cost_rank(name: str, value: Any) -> float:
    """How much a choice of knob ``name`` adds to a network's cost, for ordering (larger: dearer). Pure."""
    knob = name.split(".")[0]
    if knob == "stem_kernel":
        h, w = (int(p) for p in str(value).split("x"))
        return float(h * w)
    if knob == "strides":  # a larger stride shrinks everything after it
        return -float(value)
    return float(value)  # widths, depths, kernels, expand, width_mult, blocks, stem; se: False < True


def corner_params(space: SearchSpace, largest: bool) -> dict[str, Any]:
    """The parameters of the space's cheapest (``largest=False``) or largest configuration: every knob
    at its least or most costly choice (narrowest/widest, fewest/most blocks, smallest/largest kernel,
    no/with squeeze-excite, largest/smallest stride). Pure."""
    params: dict[str, Any] = {}

    def choose(name: str, choices: list[Any]) -> Any:
        pick = (max if largest else min)(choices, key=lambda c: _cost_rank(name, c))
        params[name] = pick
        return pick

    sample(space, choose)
    return params


def random_chooser(rng: np.random.Generator) -> Chooser:
    """Uniform random choices: the plain random sampler."""
    return lambda _name, choices: choices[int(rng.integers(len(choices)))]


def enumerate_configs(space: SearchSpace, limit: int = 100_000) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """Every (params, configuration) of ``space``, depth first over the define-by-run walk.

    Raises when the space has more than ``limit`` configurations. Different parameters can give the
    same configuration (a width multiplier that rounds alike); both are listed.
    """
    path: list[int] = []  # the choice index taken at each decision of the current walk
    count = 0
    while True:
        walk = _Walk(path)
        cfg = sample(space, walk)
        count += 1
        if count > limit:
            raise EdgeoptError(f"search space '{space.name}' has more than {limit:,} configurations",
                               "shrink it to enumerate it")  # fmt: skip
        yield walk.params, cfg
        sizes = walk.sizes
        path = path + [0] * (len(sizes) - len(path))
        # odometer: advance the last decision that has choices left, drop the ones after it
        i = len(sizes) - 1
        while i >= 0 and path[i] + 1 >= sizes[i]:
            i -= 1
        if i < 0:
            return
        path = path[:i] + [path[i] + 1]


class _Walk:
    """A chooser that follows ``path`` (choice indices, then first choices) and records the decisions."""

    def __init__(self, path: list[int]) -> None:
        self.path = path
        self.sizes: list[int] = []
        self.params: dict[str, Any] = {}

    def __call__(self, name: str, choices: list[Any]) -> Any:
        i = len(self.sizes)
        idx = self.path[i] if i < len(self.path) else 0
        self.sizes.append(len(choices))
        self.params[name] = choices[idx]
        return choices[idx]


def space_size(space: SearchSpace) -> int:
    """How many parameter combinations the space has (Optuna's view; exact, without enumerating)."""
    spec = FAMILIES[space.family]

    def product(n: int) -> int:
        total = 1
        for knob in spec.scalar:
            if knob in space.knobs:
                total *= len(space.knobs[knob][0])
        for knob in spec.unit:
            if knob in space.knobs:
                total *= int(np.prod([len(c) for c in space.knobs[knob][:n]]))
        return total

    if space.blocks is None:
        return product(space.units)
    return sum(product(n) for n in space.blocks)


def config_key(cfg: dict[str, Any]) -> str:
    """A canonical string for a configuration (dedupe, cache keys)."""
    import json

    return json.dumps(cfg, sort_keys=True)
