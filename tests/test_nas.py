"""Architecture search (edgeopt.nas): spaces, sampling, records, costs and constraints, the front, shared studies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from optuna.storages import RetryHeartbeatStaleTrialCallback

from edgeopt.errors import EdgeoptError
from edgeopt.model import load_model, save_model
from edgeopt.nas import (
    Budget,
    SearchSettings,
    architecture_cost,
    enumerate_configs,
    hypervolume_2d,
    load_space,
    pareto_front,
    parse_space,
    random_chooser,
    sample,
    search,
    violations,
)
from edgeopt.nas.search import candidate_model, split_train_val
from edgeopt.nas.space import SHIPPED, space_size

TINY = {"family": "nas_resnet", "stages": 2,
        "knobs": {"stem": [8], "widths": [[8, 16], [16, 32]], "depths": [1, 2], "kernels": [3, 5]}}  # fmt: skip
TINY_YAML = """family: nas_resnet
stages: 2
knobs:
  stem: [8]
  widths: [[8, 16], [16, 32]]
  depths: [1, 2]
  kernels: [3, 5]
"""
CLI = [sys.executable, "-m", "edgeopt.cli"]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "EDGEOPT_QUIET": "1"}


def test_shipped_spaces_parse_and_every_knob_is_searchable() -> None:
    for name in SHIPPED:
        space = load_space(name)
        cfg = sample(space, random_chooser(np.random.default_rng(0)))
        assert set(cfg) >= {"stem", "widths"}
    assert space_size(load_space("resnet")) == 3 * 3**3 * 3**3 * 3**3  # stem x (width, depth, kernel) per stage
    # the dscnn space's per-block knobs exist only for the blocks drawn (define-by-run)
    sizes = {}
    for n in (2, 3):
        d = _dscnn()
        d["blocks"], d["knobs"]["strides"] = [n], d["knobs"]["strides"][:n]
        sizes[n] = sum(1 for _ in enumerate_configs(parse_space(d)))
    assert sizes[3] == sizes[2] * 4  # a third block adds a width choice (its stride is fixed)


def _dscnn() -> dict:
    knobs = {"stem": [16, 32], "stem_kernel": ["3x3"], "widths": [16, 32, 48, 64], "strides": [[2], [1], [1]]}
    return {"family": "nas_dscnn", "blocks": [2, 3], "knobs": knobs}


def test_enumeration_matches_the_space_size_and_every_config_builds(digits) -> None:
    space = parse_space(_dscnn(), "d")
    configs = list(enumerate_configs(space))
    assert len(configs) == space_size(space) == 2 * (4**2 + 4**3)
    assert len({json.dumps(c, sort_keys=True) for _, c in configs}) == len(configs)
    assert {len(c["widths"]) for _, c in configs} == {2, 3}
    train, _ = digits
    model = candidate_model(space, configs[-1][1], train)
    assert model.module(model.example_input(2)).shape == (2, 10)
    with pytest.raises(EdgeoptError, match="more than 10 configurations"):
        list(enumerate_configs(space, limit=10))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"family": "vgg"}, "unknown family 'vgg'"),
        ({"knobs": {**TINY["knobs"], "kernels": [3, 4]}}, "kernel sizes must be odd"),
        ({"knobs": {**TINY["knobs"], "widths": [[8], [16], [32]]}}, "lists choices for 3 stages, the space has 2"),
        ({"knobs": {**TINY["knobs"], "expand": [6]}}, "'nas_resnet' has no knob 'expand'"),
        ({"knobs": {"stem": [8], "widths": [16]}}, "missing knob"),
        ({"stages": 0}, "'stages' must be an integer"),
        ({"knobs": {**TINY["knobs"], "depths": [1, True]}}, "positive integers"),
        ({"extra": 1}, "unknown key"),
    ],
)
def test_space_validation_gives_one_line_errors(change: dict, message: str) -> None:
    with pytest.raises(EdgeoptError, match=message) as e:
        parse_space({**TINY, **change}, "bad.yaml")
    assert "\n" not in str(e.value)


def test_space_files_are_read_safely(tmp_path) -> None:
    good = tmp_path / "s.yaml"
    good.write_text(TINY_YAML)
    assert load_space(good).knobs["kernels"] == [[3, 5], [3, 5]]
    bad = tmp_path / "b.yaml"
    bad.write_text("family: !!python/object/apply:os.system ['echo hi']\n")  # safe_load refuses to run this
    with pytest.raises(EdgeoptError, match="not valid YAML"):
        load_space(bad)
    with pytest.raises(EdgeoptError, match="neither a shipped space nor a file"):
        load_space(tmp_path / "missing.yaml")


def test_optuna_samples_the_space_define_by_run() -> None:
    import optuna

    space = parse_space(_dscnn(), "d")
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(12):
        trial = study.ask()
        cfg = sample(space, trial.suggest_categorical)
        n = trial.params["blocks"]
        assert len(cfg["widths"]) == n and set(trial.params) == {"blocks", "stem"} | {f"widths.{i}" for i in range(n)}
        seen.add(n)
        study.tell(trial, [0.5, 1.0])
    assert seen == {2, 3}
    a = sample(space, random_chooser(np.random.default_rng(7)))
    assert a == sample(space, random_chooser(np.random.default_rng(7)))  # the random sampler is reproducible


def test_a_sampled_architecture_is_a_zoo_record_that_saves_reloads_and_exports(digits, tmp_path) -> None:
    from edgeopt.interop.export import export_model

    train, _ = digits
    space = load_space("mobilenet")
    cfg = sample(space, random_chooser(np.random.default_rng(3)))
    model = candidate_model(space, cfg, train, seed=5)
    assert model.meta.arch["kind"] == "zoo" and model.meta.arch["name"] == "nas_mobilenet"
    path = save_model(model, tmp_path / "m.edgeopt")
    assert sorted(zipfile.ZipFile(path).namelist()) == ["meta.json", "weights.pt"]
    back = load_model(path)
    x = model.example_input(3)
    with torch.no_grad():
        assert torch.equal(back.module(x), model.module(x))
    same_seed = candidate_model(space, cfg, train, seed=5)
    assert all(torch.equal(a, b) for a, b in zip(same_seed.module.state_dict().values(),
                                                 model.module.state_dict().values(), strict=True))  # fmt: skip
    assert export_model(back, "onnx", tmp_path / "m.onnx").parity.ok


def test_costs_agree_with_the_hardware_predictor_and_budgets_become_constraints(digits) -> None:
    from edgeopt.hardware.predict import predict_cost

    train, _ = digits
    model = candidate_model(
        parse_space(TINY), {"stem": 8, "widths": [16, 32], "depths": [1, 1], "kernels": [3, 3]}, train
    )
    cost = architecture_cost(model, mcu="stm32f746")
    ref = predict_cost(model, "mcu:stm32f746")
    assert (cost["arena_bytes_int8"], cost["flash_bytes_int8"], cost["macs"]) == (
        ref["arena_bytes"],
        ref["flash_bytes"],
        ref["macs"],
    )
    assert cost["mcu"]["fits"] == ref["fits"]
    budget = Budget(params=cost["params"], macs=cost["macs"] - 1, arena_kb=1.0, mcu="stm32f746")
    cons = violations(cost, budget, ["onnxruntime"])
    assert cons["params"] == 0.0 and cons["macs"] > 0 and cons["mcu"] <= 0
    # an arena budget is checked against the larger of the torch-graph and .tflite-schedule estimates
    arena = max(cost["arena_bytes_int8"], cost["arena_bytes_int8_tflite"])
    assert cons["arena_kb"] == pytest.approx(arena / 1024 - 1)
    assert "latency_ms.onnxruntime" not in cons  # no profile, no measurement: left to the final measurement
    assert violations({**cost, "latency_ms": {"onnxruntime": 0.3}}, Budget(latency_ms=0.2), ["onnxruntime"]) == {
        "latency_ms.onnxruntime": pytest.approx(0.5)
    }
    with pytest.raises(EdgeoptError, match="must be positive"):
        Budget(params=0)
    with pytest.raises(EdgeoptError):
        Budget(mcu="pdp11")


def test_pareto_front_and_hypervolume() -> None:
    def rec(n, acc, cost, ok=True):
        return {"number": n, "state": "COMPLETE", "feasible": ok, "trained": ok, "values": [acc, cost],
                "config": {"n": n}}  # fmt: skip

    records = [rec(0, 0.5, 1.0), rec(1, 0.7, 2.0), rec(2, 0.6, 3.0), rec(3, 0.9, 4.0), rec(4, 0.95, 0.5, ok=False)]
    assert [r["number"] for r in pareto_front(records)] == [0, 1, 3]  # 2 is dominated, 4 over budget
    hv = hypervolume_2d([(0.5, 1.0), (0.7, 2.0), (0.9, 4.0)], ref_cost=5.0)
    assert hv == pytest.approx(1 * 0.5 + 2 * 0.7 + 1 * 0.9)
    assert hypervolume_2d([(0.6, 3.0)], 5.0) < hv  # a dominated point adds nothing
    assert hypervolume_2d([(0.5, 1.0), (0.7, 2.0), (0.9, 4.0), (0.6, 3.0)], 5.0) == pytest.approx(hv)


def test_search_trains_only_candidates_within_budget(tmp_path) -> None:
    settings = SearchSettings(trials=5, epochs=1, sampler="random", seed=0)
    result = search(parse_space(TINY, "tiny"), "digits", Budget(params=6000), settings, tmp_path, final=False)
    records = json.loads((tmp_path / "trials.json").read_text())
    assert result["trials"] == result["trials_this_worker"] == len(records) == 5
    for r in records:
        assert r["feasible"] == (r["cost"]["params"] <= 6000) == r["trained"]
        if not r["trained"]:
            assert r["accuracy_val"] == 0.0
    assert result["latency_source"]["onnxruntime"].startswith("not known during the search: MACs")
    assert result["cost_axis"] == "mmacs"


def test_search_trains_candidates_on_the_device_asked(tmp_path, monkeypatch) -> None:
    import edgeopt.train

    devices: list[str] = []
    real_fit = edgeopt.train.fit

    def fit(model, data, cfg, *args, **kwargs):  # every candidate's training, noted
        devices.append(cfg.device)
        return real_fit(model, data, cfg, *args, **kwargs)

    monkeypatch.setattr(edgeopt.train, "fit", fit)
    settings = SearchSettings(trials=2, epochs=1, sampler="random", device="auto")  # auto: cuda where present
    search(parse_space(TINY, "tiny"), "digits", Budget(), settings, tmp_path, final=False)
    assert devices == ["auto", "auto"]
    with pytest.raises(EdgeoptError, match="unknown training device 'tpu'"):
        SearchSettings(device="tpu")


def test_validation_split_is_held_out_of_training(digits) -> None:
    train, _ = digits
    a, b = split_train_val(train, 0.2, seed=0)
    assert len(a) + len(b) == len(train) and abs(len(b) - 0.2 * len(train)) < 12
    assert set(np.unique(b.labels)) == set(np.unique(train.labels))


def _worker(tmp_path: Path, db: Path, trials: int, *extra: str) -> subprocess.Popen:
    cmd = [*CLI, "search", "--data", "digits", "--space", str(tmp_path / "tiny.yaml"), "--storage", f"sqlite:///{db}",
           "--trials", str(trials), "--worker", "--heartbeat", "3", "--epochs", "1", "--out", str(tmp_path / "w"),
           *extra]  # fmt: skip
    log = tmp_path / f"worker{time.monotonic_ns()}.log"  # a file, not a pipe: a full pipe would block the worker
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=log.open("w"))
    proc.log = log  # type: ignore[attr-defined]
    return proc


def _trials(db: Path) -> list:
    import optuna

    if not db.exists():
        return []
    from sqlalchemy.exc import OperationalError

    from edgeopt.nas.search import SearchSettings, _storage

    for _ in range(20):
        try:
            # through the product's opener: a worker may be creating this fresh file's tables right now
            # (CI lost that race here: "UNIQUE constraint failed: alembic_version")
            storage = _storage(SearchSettings(storage=f"sqlite:///{db}", shared=True))
            study = optuna.load_study(study_name="edgeopt-search", storage=storage)
            return study.get_trials(deepcopy=False)
        except KeyError:  # the file exists but the first worker has not created the study yet
            return []
        except OperationalError:  # "database is locked" while a worker writes: ask again
            time.sleep(0.5)
    raise AssertionError(f"{db} stayed locked")


def _open_storage(url: str, start: float) -> str:
    from edgeopt.nas.search import SearchSettings, _storage

    time.sleep(max(0.0, start - time.time()))  # all processes open the fresh file at the same instant
    _storage(SearchSettings(storage=url, shared=True))
    return "ok"


def test_workers_opening_a_fresh_sqlite_study_at_once_all_succeed(tmp_path) -> None:
    # CI found the race: two workers on a new file, one lost "UNIQUE constraint failed: alembic_version"
    import multiprocessing as mp

    url = f"sqlite:///{tmp_path / 'race.db'}"
    import optuna  # noqa: F401  (imported before the fork: the children start at once, nothing to import)

    # forked, not spawned: four spawned interpreters re-importing torch and edgeopt cost ~24 s of CPU; forked
    # children lose the same race without the retry (3 of 3 tries, 2026-12-02)
    with mp.get_context("fork").Pool(4) as pool:
        start = time.time() + 1
        assert pool.starmap(_open_storage, [(url, start)] * 4) == ["ok"] * 4


def test_two_workers_share_one_sqlite_study_then_a_killed_worker_is_retried_and_the_study_resumes(tmp_path) -> None:
    (tmp_path / "tiny.yaml").write_text(TINY_YAML)
    db = tmp_path / "study.db"
    # two workers, 3 trials each, at once (over a params budget: priced, not trained, so they are quick)
    workers = [_worker(tmp_path, db, 3, "--max-params", "5000") for _ in range(2)]
    for w in workers:
        assert w.wait(timeout=900) == 0, w.log.read_text()[-2000:]
    done = _trials(db)
    complete = [t for t in done if t.state.name == "COMPLETE"]
    assert len(complete) == 6  # none lost, none duplicated: each worker completed its 3
    # a trial whose worker's heartbeat came late on a loaded machine is failed and re-run, never lost
    retried = {RetryHeartbeatStaleTrialCallback.retried_trial_number(t) for t in complete}
    assert all(t.number in retried for t in done if t.state.name == "FAIL")
    assert not [t for t in done if t.state.name == "RUNNING"]
    # a worker killed in the middle of a trial (trained ones last seconds): its RUNNING trial goes stale and
    # is re-run by the next worker
    db = tmp_path / "killed.db"
    victim = _worker(tmp_path, db, 5, "--epochs", "3")
    running = None
    deadline = time.time() + 600
    while running is None and time.time() < deadline:
        time.sleep(0.3)
        # in training, i.e. past define-by-run sampling (every knob of the space sampled)
        live = [t for t in _trials(db) if t.state.name == "RUNNING" and t.params.keys() == complete[0].params.keys()]
        running = live[0].number if live else None
    assert running is not None, "the worker never started a trial"
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    before = sum(t.state.name == "COMPLETE" for t in _trials(db))
    time.sleep(7)  # past the grace period (2 heartbeats)
    again = _worker(tmp_path, db, 2)
    assert again.wait(timeout=900) == 0, again.log.read_text()[-2000:]
    after = _trials(db)
    states = {t.number: t.state.name for t in after}
    assert states[running] == "FAIL"
    retries = [t for t in after if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == running]
    assert retries and retries[0].state.name == "COMPLETE"
    assert retries[0].params == next(t for t in after if t.number == running).params
    assert sum(s == "COMPLETE" for s in states.values()) == before + 2  # the restarted worker ran its 2 trials


def test_search_cli_exports_the_front_and_the_chosen_model(tmp_path, capfd) -> None:
    # in this process (the CLI's own entry point): a subprocess would import the three exporters again
    from edgeopt.cli import main

    (tmp_path / "tiny.yaml").write_text(TINY_YAML)
    out = tmp_path / "run"
    cmd = ["search", "--data", "digits", "--space", str(tmp_path / "tiny.yaml"), "--runtime", "onnxruntime",
           "--max-params", "40000", "--trials", "3", "--epochs", "1", "--front", "2",
           "--out", str(out), "--json"]  # fmt: skip
    rc = main(cmd)
    stdout, stderr = capfd.readouterr()
    assert rc == 0, stderr[-3000:]
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["trials"] == 3 and len(json.loads((out / "trials.json").read_text())) == 3
    model = load_model(result["model"])
    assert model.meta.arch["name"] == "nas_resnet"
    for point in result["pareto"]:
        assert point["cost"]["params"] <= 40000 and point["within_budget"]
        m = point["measured"]["onnxruntime"]
        assert 0 <= m["accuracy"] <= 1 and m["latency_ms"] > 0 and Path(m["artifact"]).is_file()
    measured = result["chosen"]["measured"]
    assert set(measured) == {"onnxruntime", "executorch", "litert"}
    assert len({round(m["accuracy"], 3) for m in measured.values()}) == 1  # the same model in every runtime
    assert "<svg" in (out / "report.html").read_text()
    # over budget everywhere: one line, non-zero exit, no model written
    rc = main([*cmd[:-5], "--max-params", "10", "--out", str(tmp_path / "none")])
    assert rc == 2 and "met the budget" in capfd.readouterr().err and not (tmp_path / "none" / "model.edgeopt").exists()


def test_supernet_subnetwork_equals_the_standalone_network_with_inherited_weights(digits) -> None:
    from edgeopt.nas.supernet import ResNetSupernet, extract, largest, recalibrate_bn, smallest, train_supernet

    train, _ = digits
    space = parse_space({**TINY, "knobs": {**TINY["knobs"], "stem": [8, 16]}}, "tiny")
    torch.manual_seed(0)
    net = ResNetSupernet(space, (1, 8, 8), 10)
    g = torch.Generator().manual_seed(1)
    for m in net.modules():  # statistics and affine parameters that differ per channel, so slices matter
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    net.eval()
    rng = np.random.default_rng(0)
    configs = [largest(space), smallest(space)] + [sample(space, random_chooser(rng)) for _ in range(4)]
    x = candidate_model(space, configs[0], train).example_input(4)
    for cfg in configs:
        sub = extract(net, cfg, candidate_model(space, cfg, train, seed=9))
        with torch.no_grad():
            assert torch.allclose(sub.module(x), net(x, cfg), atol=1e-5), cfg
    # sandwich training moves the shared weights; a sub-network then re-estimates its BN statistics
    before = net.fc.weight.detach().clone()
    train_supernet(net, train.take(256, seed=0), sub.meta.input, epochs=1, n_random=1)
    assert not torch.equal(before, net.fc.weight)
    cfg = configs[1]
    sub = extract(net, cfg, candidate_model(space, cfg, train))
    stats = sub.module.stem[1].running_mean.clone()
    recalibrate_bn(sub, train, images=128)
    assert not torch.equal(stats, sub.module.stem[1].running_mean) and not sub.module.training


def test_supernet_mode_scores_candidates_with_inherited_weights_without_training_them(tmp_path) -> None:
    settings = SearchSettings(trials=3, sampler="random", mode="supernet", supernet_epochs=1, device="auto")
    result = search(parse_space(TINY, "tiny"), "digits", Budget(), settings, tmp_path, final=False)
    records = json.loads((tmp_path / "trials.json").read_text())
    assert result["trials"] == 3 and all(r["trained"] for r in records)
    accs = [r["accuracy_val"] for r in records]  # inherited weights after one sandwich epoch beat chance (0.1)
    assert min(accs) > 0.1 and np.mean(accs) > 0.25
    with pytest.raises(EdgeoptError, match="supernet is built for nas_resnet"):
        search(load_space("dscnn"), "digits", Budget(), settings, tmp_path / "d", final=False)


def test_a_trial_another_worker_settled_is_dropped_and_another_run() -> None:
    # SQLite has no SELECT ... FOR UPDATE: two workers may pop the same queued trial, and the second to finish
    # got "Cannot tell a COMPLETE trial", which ended that worker (CI, 2026-12-02)
    from edgeopt.nas.run import _optimize
    from edgeopt.nas.search import SearchSettings

    class Study:
        def __init__(self, errors: list[str]) -> None:
            self.errors, self.calls = errors, 0

        def optimize(self, *_args, **_kwargs) -> None:
            self.calls += 1
            if self.errors:
                raise ValueError(self.errors.pop(0))

    study = Study(["Cannot tell a COMPLETE trial.", "Cannot tell a FAIL trial."])
    assert _optimize(study, None, SearchSettings(trials=3), None) == 2 and study.calls == 5
    with pytest.raises(ValueError, match="something else"):
        _optimize(Study(["something else"]), None, SearchSettings(trials=1), None)
