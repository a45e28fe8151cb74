"""The search's sampler (edgeopt.nas.sampling): no repeated configurations, the space's corners first;
the proxy subset; the .tflite-schedule arena estimate a budget is checked against."""

from __future__ import annotations

import json

import numpy as np
import optuna
import pytest

from edgeopt.nas import Budget, architecture_cost, parse_space, random_chooser, sample, violations
from edgeopt.nas.sampling import DistinctSampler, search_sampler, seed_corners
from edgeopt.nas.search import candidate_model, make_sampler, stratified_subset
from edgeopt.nas.space import config_key, corner_params, enumerate_configs

# 2 x 2 x 2 x 2 = 16 configurations
SMALL = {
    "family": "nas_resnet",
    "stages": 2,
    "knobs": {"stem": [8], "widths": [[8, 16], [16, 32]], "depths": [[1, 2], [1]], "kernels": [[3, 5], [3]]},
}


def _keys(study: optuna.Study, space) -> list[str]:
    return [config_key(sample(parse_space(space), lambda n, c, t=t: t.params[n])) for t in study.trials]


def _run(sampler: optuna.samplers.BaseSampler, space: dict, n: int) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    parsed = parse_space(space)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        cfg = sample(parsed, trial.suggest_categorical)
        size = sum(cfg["widths"]) * sum(cfg["depths"]) * sum(cfg["kernels"])
        return 1 - 1 / size, float(size)  # bigger: more accurate and dearer, a front along the whole space

    study.optimize(objective, n_trials=n)
    return study


@pytest.mark.parametrize("name", ["tpe", "random", "nsga2"])
def test_the_search_sampler_never_repeats_a_configuration_until_the_space_is_exhausted(name: str) -> None:
    study = _run(search_sampler(name, seed=0), SMALL, 16)
    keys = _keys(study, SMALL)
    assert len(set(keys)) == 16  # 16 trials covered all 16 configurations


def test_plain_tpe_repeats_what_the_distinct_sampler_redraws() -> None:
    plain = _run(make_sampler("tpe", 0), SMALL, 16)
    assert len(set(_keys(plain, SMALL))) < 16  # TPE alone spends trials on configurations it has
    wrapped = DistinctSampler(make_sampler("tpe", 0), seed=0)
    _run(wrapped, SMALL, 12)
    assert wrapped.redraws > 0  # and the wrapper redrew those proposals


def test_corners_are_the_cheapest_and_largest_configurations(digits) -> None:
    train, _ = digits
    space = parse_space({**SMALL, "knobs": {**SMALL["knobs"], "strides": [[1], [1, 2]]}})
    lo, hi = corner_params(space, largest=False), corner_params(space, largest=True)
    assert lo == {"widths.0": 8, "widths.1": 16, "depths.0": 1, "kernels.0": 3, "strides.1": 2}
    assert hi == {"widths.0": 16, "widths.1": 32, "depths.0": 2, "kernels.0": 5, "strides.1": 1}

    def macs(params: dict) -> int:
        cfg = sample(space, lambda n, c: params[n])
        return architecture_cost(candidate_model(space, cfg, train))["macs"]

    rng = np.random.default_rng(0)
    others = []  # a few random configurations lie between the corners
    for _ in range(4):
        rec: dict = {}
        sample(space, lambda n, c, rec=rec: rec.setdefault(n, random_chooser(rng)(n, c)))
        others.append(macs(rec))
    assert macs(lo) <= min(others) and max(others) <= macs(hi)
    # shipped spaces: dscnn's corners are the fewest / most blocks with the smallest / largest widths
    from edgeopt.nas import load_space

    d = load_space("dscnn")
    assert corner_params(d, False)["blocks"] == 2 and corner_params(d, True)["blocks"] == 5
    assert corner_params(d, True)["stem_kernel"] == "10x4"


def test_a_fresh_study_tries_the_corners_first_and_a_joined_one_is_not_seeded_again() -> None:
    space = parse_space(SMALL)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=search_sampler("tpe", 0))
    corners = [corner_params(space, largest=False), corner_params(space, largest=True)]
    assert seed_corners(study, corners) == 2
    study.optimize(lambda t: (0.5, float(len(json.dumps(sample(space, t.suggest_categorical))))), n_trials=3)
    assert [t.params for t in study.trials[:2]] == corners
    assert seed_corners(study, corners) == 0  # a study with trials (another worker's, a resumed run) is left alone


def test_stratified_subset_keeps_the_class_balance(digits) -> None:
    train, _ = digits
    sub = stratified_subset(train, 300, seed=1)
    assert abs(len(sub) - 300) <= 10
    full = np.bincount(train.labels) / len(train)
    assert np.abs(np.bincount(sub.labels, minlength=len(full)) / len(sub) - full).max() < 0.01
    assert stratified_subset(train, None) is train and stratified_subset(train, 10**6) is train
    assert len({tuple(x.ravel()) for x in sub.images[:50]}) == 50  # distinct images, no repeats


def test_the_arena_budget_counts_the_pad_and_transpose_copies_of_a_tflite_export(digits, tmp_path) -> None:
    """A strided padded conv is PAD + VALID CONV_2D in the .tflite, and an NCHW input is transposed:
    the estimate must equal edgeopt's liveness over the exported .tflite itself."""
    from edgeopt.interop.export import export_model
    from edgeopt.runtimes.memory_plan import memory_plan

    train, _ = digits
    space = parse_space({**SMALL, "knobs": {**SMALL["knobs"], "strides": [[2], [2]]}})
    cfg = {"stem": 16, "widths": [16, 32], "depths": [1, 1], "kernels": [5, 3], "strides": [2, 2]}
    model = candidate_model(space, cfg, train)
    cost = architecture_cost(model)
    assert cost["arena_bytes_int8_tflite"] > cost["arena_bytes_int8"]
    plan = memory_plan(export_model(model, "tflite", tmp_path / "m.tflite").path)
    assert cost["arena_bytes_int8_tflite"] == plan.arena_bytes // 4  # float32 .tflite: 4 bytes per value
    limit_kb = (cost["arena_bytes_int8"] + cost["arena_bytes_int8_tflite"]) / 2 / 1024
    assert violations(cost, Budget(arena_kb=limit_kb), [])["arena_kb"] > 0  # the larger figure decides


def test_enumeration_and_the_distinct_sampler_agree_on_the_space() -> None:
    every = {config_key(c) for _, c in enumerate_configs(parse_space(SMALL))}
    seen = set(_keys(_run(search_sampler("random", 3), SMALL, 16), SMALL))
    assert seen == every
