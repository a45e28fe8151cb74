"""In-process engine: determinism, resume == uninterrupted, faults, compression, DP, secure aggregation."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from edgeopt.errors import EdgeoptError
from edgeopt.federated.algorithms import get_flat
from edgeopt.federated.config import FederatedConfig
from edgeopt.federated.engine import load_checkpoint
from edgeopt.federated.engine import run_inprocess as _run
from edgeopt.models import create_model


def _model():
    torch.manual_seed(0)
    return create_model("mlp", input_shape=(1, 8, 8), num_classes=10, hidden=(32,))


def _cfg(**kw) -> FederatedConfig:
    base = dict(clients=10, per_round=4, rounds=3, partition="dirichlet:0.5", lr=0.1, batch_size=16, eval_limit=200)
    return FederatedConfig(**{**base, **kw})


def run_inprocess(*args, **kw):
    return _run(*args, threads=1, **kw)


def _weights(res) -> np.ndarray:
    return get_flat(res.model.module)


def test_same_seed_same_model_and_it_learns(digits) -> None:
    train, test = digits
    a = run_inprocess(_model(), train, test, _cfg(rounds=6, partition="iid"))
    b = run_inprocess(_model(), train, test, _cfg(rounds=6, partition="iid"))
    np.testing.assert_array_equal(_weights(a), _weights(b))
    assert [h["test_accuracy"] for h in a.history] == [h["test_accuracy"] for h in b.history]
    assert a.history[-1]["test_accuracy"] > 0.5
    assert a.histogram.sum() == len(train)


@pytest.mark.parametrize("algo", ["fedavg", "scaffold", "fedadam"])
def test_resume_equals_uninterrupted(digits, tmp_path, algo: str) -> None:
    train, test = digits
    cfg = _cfg(rounds=4, algo=algo, compress="topk:0.1", server_lr=0.05 if algo == "fedadam" else 1.0)
    full = run_inprocess(_model(), train, test, cfg)
    out = tmp_path / algo
    run_inprocess(_model(), train, test, cfg, out_dir=out, stop_after=2)  # "killed" after round 2
    assert load_checkpoint(out / "checkpoint.npz")[1].state.round == 2
    with pytest.raises(EdgeoptError, match="--resume"):
        run_inprocess(_model(), train, test, cfg, out_dir=out)
    resumed = run_inprocess(_model(), train, test, cfg, out_dir=out, resume=True)
    assert resumed.resumed_from == 2
    np.testing.assert_array_equal(_weights(full), _weights(resumed))
    assert [h["round"] for h in resumed.history] == [1, 2, 3, 4]
    assert resumed.history[-1]["test_accuracy"] == full.history[-1]["test_accuracy"]


def test_nan_and_scaled_clients_are_rejected_and_logged(digits, caplog) -> None:
    train, test = digits

    def faulty(rnd: int, client: int, v: np.ndarray) -> np.ndarray:
        if client == 3:
            return np.full_like(v, np.nan)
        if client == 5:
            return v * 1e6
        return v

    cfg = _cfg(per_round=10, rounds=3, partition="iid")
    with caplog.at_level(logging.WARNING, logger="edgeopt.federated"):
        res = run_inprocess(_model(), train, test, cfg, faulty=faulty)
    rejected = {(d["client"], d["reason"].split()[0]) for h in res.history for d in h["rejected"]}
    assert rejected == {(3, "non-finite"), (5, "norm")}
    assert "rejected the update of client 3" in caplog.text
    w = _weights(res)
    assert np.isfinite(w).all() and np.abs(w).max() < 100
    clean = run_inprocess(_model(), train, test, cfg, faulty=lambda r, c, v: v if c not in (3, 5) else v * 0)
    assert clean.history[-1]["completed"] == 10 and clean.history[-1]["test_accuracy"] > 0.5
    # rejecting the two (rather than averaging in their zeroed updates) costs nothing measurable
    assert res.history[-1]["test_accuracy"] > clean.history[-1]["test_accuracy"] - 0.05


def test_dropouts_stragglers_and_min_completion(digits) -> None:
    train, test = digits
    res = run_inprocess(_model(), train, test, _cfg(per_round=10, rounds=4, dropout=0.3, deadline=0.5))
    for h in res.history:
        assert h["completed"] == 10 - len(h["dropouts"]) - len(h["stragglers"])
    assert sum(len(h["dropouts"]) for h in res.history) > 0
    assert sum(len(h["stragglers"]) for h in res.history) > 0
    strict = run_inprocess(_model(), train, test, _cfg(per_round=10, rounds=2, dropout=0.5, min_completion=0.99))
    assert all(h["skipped"] for h in strict.history)
    np.testing.assert_array_equal(_weights(strict), get_flat(_model().module))


def test_compressed_uploads_measure_bytes(digits) -> None:
    train, test = digits
    dense = run_inprocess(_model(), train, test, _cfg())
    q = run_inprocess(_model(), train, test, _cfg(compress="int8"))
    k = run_inprocess(_model(), train, test, _cfg(compress="topk:0.01"))
    up = lambda r: sum(h["upload_bytes"] for h in r.history)  # noqa: E731
    assert up(dense) == sum(h["upload_bytes_dense"] for h in dense.history)
    assert up(dense) / up(q) >= 3.9
    assert up(dense) / up(k) >= 50
    assert abs(q.history[-1]["test_accuracy"] - dense.history[-1]["test_accuracy"]) < 0.1


def test_secure_aggregation_matches_plain_with_dropouts(digits) -> None:
    train, test = digits
    plain = run_inprocess(_model(), train, test, _cfg(per_round=6, dropout=0.3))
    secure = run_inprocess(_model(), train, test, _cfg(per_round=6, dropout=0.3, secagg=True))
    assert sum(len(h["dropouts"]) for h in secure.history) > 0
    np.testing.assert_allclose(_weights(plain), _weights(secure), atol=1e-5)


def _spy_rounds(monkeypatch) -> list[tuple[np.ndarray, list, np.ndarray]]:
    """Record, through the engine, each round's (params before, client replies, params after)."""
    from edgeopt.federated import engine

    seen: list[tuple[np.ndarray, list, np.ndarray]] = []
    real = engine.aggregate_round

    def spy(cfg, plan, state, replies, revealed=None):
        result = real(cfg, plan, state, replies, revealed)
        seen.append((state.params.copy(), list(replies), result.state.params.copy()))
        return result

    monkeypatch.setattr(engine, "aggregate_round", spy)
    return seen


def test_dp_clips_every_update_and_adds_noise_of_the_promised_size(digits, monkeypatch) -> None:
    from opacus.accountants import RDPAccountant

    from edgeopt.federated.algorithms import decompress

    train, test = digits
    clip, sigma = 0.05, 1.0
    cfg = _cfg(clients=10, per_round=5, rounds=2, partition="iid", dp_clip=clip, dp_noise=sigma)
    raw_norms: list[float] = []
    seen = _spy_rounds(monkeypatch)
    res = run_inprocess(_model(), train, test, cfg,
                        faulty=lambda r, c, v: raw_norms.append(float(np.linalg.norm(v))) or v)  # fmt: skip
    assert min(raw_norms) > 2 * clip  # clipping binds for every client
    deviations = []
    for before, replies, after in seen:
        deltas = np.stack([decompress(r.payload, len(before)).astype(np.float64) for r in replies])
        assert len(deltas) == 5
        assert np.linalg.norm(deltas, axis=1).max() <= clip * (1 + 1e-5)  # each upload clipped to C
        clean_mean = deltas.sum(0) / cfg.per_round
        deviations.append((after.astype(np.float64) - before) - clean_mean)  # server lr 1: x += aggregate
    dev = np.concatenate(deviations)
    expected_std = sigma * clip / cfg.per_round  # N(0, (σC)^2) on the sum, divided by the expected count
    assert abs(dev.std() / expected_std - 1) < 0.05  # ~4,800 samples: 5% is > 4 standard errors
    assert abs(dev.mean()) < 4 * expected_std / np.sqrt(dev.size)
    # ε matches Opacus' own RDP accountant run over the same rounds
    eps = [h["epsilon"] for h in res.history]
    acct = RDPAccountant()
    for i in range(cfg.rounds):
        acct.step(noise_multiplier=sigma, sample_rate=cfg.per_round / cfg.clients)
        assert eps[i] == pytest.approx(acct.get_epsilon(delta=cfg.dp_delta), rel=0.02)
    assert eps[0] < eps[1]
    with pytest.raises(EdgeoptError, match="--dp-clip"):
        _cfg(dp_noise=1.0)


def test_robust_aggregators_resist_a_poisoned_client_that_the_mean_does_not(digits) -> None:
    train, test = digits
    poison = lambda r, c, v: -10 * v if c == 0 else v  # noqa: E731  sign-flipped, 10x: under the norm screen
    cfg = dict(clients=5, per_round=5, rounds=4, partition="iid")
    clean = run_inprocess(_model(), train, test, _cfg(**cfg)).history[-1]["test_accuracy"]
    assert clean > 0.7
    mean = run_inprocess(_model(), train, test, _cfg(**cfg), faulty=poison).history[-1]
    assert mean["rejected"] == [] and mean["test_accuracy"] < 0.3  # the mean is wrecked
    for rule in ("median", "trimmed:0.2", "krum:1"):
        acc = run_inprocess(_model(), train, test, _cfg(**cfg, aggregator=rule), faulty=poison).history[-1]
        assert acc["test_accuracy"] > clean - 0.15, rule


def test_fedprox_pulls_local_models_toward_the_global_one(digits) -> None:
    train, test = digits
    norms: dict[str, list[float]] = {"fedavg": [], "fedprox": []}
    for algo in norms:
        cfg = _cfg(algo=algo, mu=1.0, rounds=1, per_round=5, local_epochs=3, partition="dirichlet:0.5")
        run_inprocess(_model(), train, test, cfg,
                      faulty=lambda r, c, v, a=algo: norms[a].append(float(np.linalg.norm(v))) or v)  # fmt: skip
    # same start, data and minibatch order: only the proximal term differs, and it shrinks every drift
    ratio = np.array(norms["fedprox"]) / np.array(norms["fedavg"])
    assert len(ratio) == 5 and ratio.max() < 0.9


@pytest.mark.parametrize(("algo", "server_lr"), [("fedadam", 0.1), ("fedyogi", 0.1), ("scaffold", 1.0)])
def test_adaptive_and_scaffold_learn_non_iid_digits(digits, algo: str, server_lr: float) -> None:
    train, test = digits
    cfg = _cfg(algo=algo, server_lr=server_lr, rounds=10, per_round=5, local_epochs=2, eval_limit=None)
    res = run_inprocess(_model(), train, test, cfg)
    assert res.history[-1]["test_accuracy"] > 0.85  # plain FedAvg reaches ~0.76 here in 10 rounds


def test_cli_federate_writes_curves_report_and_resumes(tmp_path, capfd) -> None:
    import json

    from edgeopt.cli import main

    out = tmp_path / "run"
    args = ["federate", "zoo:mlp", "--data", "digits", "--clients", "8", "--per-round", "4", "--rounds", "2",
            "--partition", "shards:2", "--algo", "fedprox", "--compress", "int8", "--threads", "1", "--out", str(out),
            "--json"]  # fmt: skip
    assert main(args) == 0
    first = json.loads(capfd.readouterr().out.strip())
    assert first["rounds"] == 2 and first["upload_compression"] > 3.9
    curves = json.loads((out / "curves.json").read_text())
    assert len(curves["test_accuracy"]) == 2 and len(curves["label_histogram"]) == 8
    assert ((np.array(curves["label_histogram"]) > 0).sum(1) <= 4).all()  # 2 shards, each within <= 2 classes
    html = (out / "report.html").read_text()
    assert "<svg" in html and "Label histogram" in html and "http" not in html.split("<body>")[1].split("<svg")[0]
    assert (out / "model.edgeopt").exists()
    assert main(args) == 2  # an existing checkpoint needs --resume
    assert "--resume" in capfd.readouterr().err
    assert main([*args[:9], "4", *args[10:], "--resume"]) == 0  # extend to 4 rounds
    resumed = json.loads(capfd.readouterr().out.strip())
    assert resumed["rounds"] == 4 and resumed["resumed_from"] == 2
    assert main(["federate", "zoo:mlp", "--data", "digits", "--algo", "fedsgd", "--out", str(tmp_path / "x")]) == 2
    assert "unknown --algo" in capfd.readouterr().err


def test_secure_aggregation_client_withholds_a_nan_update(digits, caplog) -> None:
    train, test = digits
    nan_at_3 = lambda r, c, v: np.full_like(v, np.nan) if c == 3 else v  # noqa: E731
    cfg = _cfg(per_round=10, rounds=2, secagg=True)
    with caplog.at_level(logging.WARNING, logger="edgeopt.federated"):
        res = run_inprocess(_model(), train, test, cfg, faulty=nan_at_3)
    assert "client 3: non-finite update withheld" in caplog.text
    assert all(h["completed"] == 9 for h in res.history)
    assert np.isfinite(_weights(res)).all()
