"""Federated personalization: kept parts never averaged, shared body averaged, per-client gains, resume, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgeopt.errors import EdgeoptError
from edgeopt.federated import run_federated
from edgeopt.federated.algorithms import LocalTrainer, get_flat
from edgeopt.federated.config import FederatedConfig
from edgeopt.federated.engine import load_checkpoint, run_inprocess
from edgeopt.federated.personalize import local_names, split_holdout
from edgeopt.models import create_model


def _mlp():
    torch.manual_seed(0)
    return create_model("mlp", input_shape=(1, 8, 8), num_classes=10, hidden=(32,))


def _cfg(**kw) -> FederatedConfig:
    base = dict(clients=4, per_round=4, rounds=2, partition="shards:2", lr=0.1, batch_size=16, eval_limit=100)
    return FederatedConfig(**{**base, **kw})


def _mask(model, mode: str) -> np.ndarray:
    layout = LocalTrainer(model.module).layout
    return layout.mask(local_names(model.module, mode, layout))


def test_head_stays_on_clients_and_the_body_is_the_plain_mean(digits, tmp_path) -> None:
    train, test = digits
    model = _mlp()
    init = get_flat(model.module)
    head = _mask(model, "head")
    assert head.sum() == 32 * 10 + 10  # the classifier only
    out = tmp_path / "head"
    res = run_inprocess(model, train, test, _cfg(rounds=1, personalize="head"), out_dir=out, threads=1)
    plain = run_inprocess(model, train, test, _cfg(rounds=1, holdout=0.2), threads=1)  # same splits, no personalization
    w, w_plain = get_flat(res.model.module), get_flat(plain.model.module)
    # round 1: every client starts from the same weights, so the body is FedAvg's weighted mean exactly
    np.testing.assert_allclose(w[~head], w_plain[~head], atol=1e-6)
    assert not np.allclose(w_plain[head], init[head])  # plain FedAvg moved the head ...
    np.testing.assert_array_equal(w[head], init[head])  # ... the server's head never moves under FedPer
    locals_ = [load_checkpoint(out / "checkpoint.npz")[1].client_states[c].local for c in range(4)]
    assert all(v is not None and v.shape == (head.sum(),) for v in locals_)
    for a in range(4):
        assert not np.allclose(locals_[a], init[head])
        assert all(not np.allclose(locals_[a], locals_[b]) for b in range(a))


def test_resume_keeps_each_clients_part(digits, tmp_path) -> None:
    train, test = digits
    cfg = _cfg(rounds=3, per_round=2, personalize="head")
    full = run_inprocess(_mlp(), train, test, cfg, out_dir=tmp_path / "full", threads=1)
    run_inprocess(_mlp(), train, test, cfg, out_dir=tmp_path / "cut", stop_after=1, threads=1)  # killed after round 1
    resumed = run_inprocess(_mlp(), train, test, cfg, out_dir=tmp_path / "cut", resume=True, threads=1)
    np.testing.assert_array_equal(get_flat(full.model.module), get_flat(resumed.model.module))
    a, b = (load_checkpoint(tmp_path / d / "checkpoint.npz")[1].client_states for d in ("full", "cut"))
    assert sorted(a) == sorted(b)
    for c in a:
        np.testing.assert_array_equal(a[c].local, b[c].local)
    assert full.extra["per_client"]["personal"] == resumed.extra["per_client"]["personal"]


@pytest.mark.parametrize("mode", ["head", "finetune"])
def test_personalization_beats_the_global_model_on_a_pathological_split(digits, mode: str) -> None:
    train, test = digits
    cfg = _cfg(clients=10, per_round=10, rounds=3, personalize=mode)
    p = run_federated(_mlp(), train, test, cfg, threads=1).extra["personalization"]
    assert len(p["per_client"]) == 10 and p["mode"] == mode
    for row in p["per_client"]:
        assert 0 <= row["before"] <= 1 and 0 <= row["after"] <= 1 and row["holdout"] > 0
    # two labels per client: the client's own head knows which two (measured: +0.44 head, +0.50 finetune)
    assert p["mean_gain"] > 0.25
    assert p["mean_after"] > 0.8
    assert p["worst_client"]["after"] == min(r["after"] for r in p["per_client"])


def test_fedbn_keeps_batch_norm_on_clients(digits) -> None:
    train, test = digits
    torch.manual_seed(0)
    model = create_model("resnet8", input_shape=(1, 8, 8), num_classes=10, width=4)
    bn = _mask(model, "bn")
    layout = LocalTrainer(model.module).layout
    names = local_names(model.module, "bn", layout)
    assert {n.rsplit(".", 1)[1] for n in names} == {"weight", "bias", "running_mean", "running_var"}
    assert all("bn" in n or n.startswith("stem.1.") for n in names)
    init = get_flat(model.module)
    res = run_inprocess(model, train, test, _cfg(rounds=1, personalize="bn", lr=0.05), threads=1)
    w = get_flat(res.model.module)
    np.testing.assert_array_equal(w[bn], init[bn])
    assert not np.allclose(w[~bn], init[~bn])
    personal = res.extra["per_client"]["personal"]
    assert all(a is not None and 0 <= a <= 1 for a in personal)


def test_holdout_split_is_seeded_and_disjoint() -> None:
    parts = [np.arange(0, 50), np.arange(50, 53)]
    tr, ho = split_holdout(parts, 0.2, seed=1)
    tr2, ho2 = split_holdout(parts, 0.2, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(ho, ho2, strict=True))
    assert [len(h) for h in ho] == [10, 1]
    for p, a, b in zip(parts, tr, ho, strict=True):
        assert not set(a) & set(b) and sorted([*a, *b]) == list(p)


def test_bad_inputs_are_one_line_errors(digits, tmp_path, capfd) -> None:
    train, test = digits
    with pytest.raises(EdgeoptError, match="unknown personalize mode"):
        _cfg(personalize="body")
    with pytest.raises(EdgeoptError, match="SCAFFOLD"):
        _cfg(personalize="head", algo="scaffold")
    with pytest.raises(EdgeoptError, match="batch-norm"):
        run_inprocess(_mlp(), train, test, _cfg(personalize="bn"), threads=1)
    with pytest.raises(EdgeoptError, match="in-process engine only"):
        run_federated(_mlp(), train, test, _cfg(personalize="head"), engine="flower-sim", data_spec="digits")
    from edgeopt.cli import main

    out = tmp_path / "cli"
    args = ["federate", "zoo:mlp", "--data", "digits", "--clients", "4", "--per-round", "4", "--rounds", "1",
            "--partition", "shards:2", "--personalize", "finetune", "--finetune-epochs", "1", "--threads", "1",
            "--out", str(out), "--json"]  # fmt: skip
    assert main(args) == 0
    got = json.loads(capfd.readouterr().out.strip())["personalization"]
    assert got["mode"] == "finetune" and len(got["per_client"]) == 4 and "worst_client" in got
    assert got["mean_after"] == pytest.approx(np.mean([r["after"] for r in got["per_client"]]))
    assert "Personalization" in (out / "report.html").read_text()
    assert main([*args[:-3], "--engine", "flower", "--out", str(tmp_path / "f")]) == 2
    assert "in-process engine only" in capfd.readouterr().err
