"""Flower deployment: a real SuperLink + SuperNodes on 127.0.0.1, a node killed, the server killed and resumed.

Each test starts real Flower processes (a SuperLink, SuperExec, SuperNodes, the ServerApp and
ClientApps), so each takes a minute or two; they live apart from the simulation tests so that
`pytest -n 2 --dist loadfile` can run them beside other files (conftest schedules this file first).
Every process is started in its own session and killed at the end, whatever happens.
"""

from __future__ import annotations

import copy
import dataclasses
import time

import numpy as np
import pytest

pytest.importorskip("flwr")

from test_federated_engine import _model  # noqa: E402

from edgeopt.federated import run_federated  # noqa: E402
from edgeopt.federated.algorithms import get_flat  # noqa: E402
from edgeopt.federated.config import FederatedConfig  # noqa: E402
from edgeopt.federated.deploy import LocalFederation, checkpoint_round, wait_for_rounds  # noqa: E402
from edgeopt.federated.engine import load_checkpoint  # noqa: E402
from edgeopt.federated.flower_engine import write_setup  # noqa: E402

pytestmark = pytest.mark.flower


def _wait_until(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


# two rounds: the event (a kill) falls between them, so the second round shows how the run lived through it
CFG = FederatedConfig(clients=3, per_round=3, rounds=2, partition="iid", lr=0.1, batch_size=16, min_completion=0.5)


def test_deployment_survives_a_supernode_killed_in_round_2(digits, tmp_path) -> None:
    """Real SuperLink + 3 SuperNodes; SuperNode 1 is SIGKILLed as round 2 starts; both rounds finish."""
    train, test = digits
    model = _model()
    # a generous timeout costs nothing: the dead node's round ends a grace period after the quorum's replies
    # (collect_replies); at load 8, three ClientApps took over 45 s to reply in round 1
    write_setup(tmp_path, model, CFG, "digits", resume=False, threads=1, round_timeout=90.0, min_nodes=3)
    with LocalFederation(tmp_path, nodes=3) as fed:
        fed.submit()
        _wait_until(lambda: checkpoint_round(tmp_path) >= 1, 180, "round 1")
        fed.kill_supernode(1)
        wait_for_rounds(tmp_path, 2, 240, fed=fed)
    _, ck = load_checkpoint(tmp_path / "checkpoint.npz")
    rounds = {h["round"]: h for h in ck.history}
    assert sorted(rounds) == [1, 2]
    assert rounds[1]["completed"] == 3 and not rounds[1]["lost"] and rounds[1]["nodes"] == 3
    # either the SuperLink still lists the dead node (its client's reply is lost: 2 of 3 complete) or it has
    # dropped it already (3 clients on the 2 live nodes); both are survival, and the round counts
    h = rounds[2]
    assert not h["skipped"] and h["completed"] + len(h["lost"]) == 3
    assert bool(h["lost"]) == (h["nodes"] == 3), h
    assert h["lost"] or h["nodes"] == 2  # the kill was felt
    assert rounds[2]["test_accuracy"] > rounds[1]["test_accuracy"]
    # the same model as the in-process engine would reach with the same clients missing is not
    # expected (a lost reply is a real event), but the weights must have moved every round
    assert not np.array_equal(ck.state.params, get_flat(model.module))


def test_deployment_server_killed_and_resumed(digits, tmp_path) -> None:
    """SIGKILL the SuperLink and its ServerApp after round 1, restart, resubmit: rounds continue, nothing lost.

    The final weights equal the uninterrupted in-process run's, so this is also the deployment
    counterpart of the simulation equivalence test.
    """
    train, test = digits
    model = _model()
    # two SuperNodes (fewer ClientApp processes competing for the cores); wait for every client
    cfg = dataclasses.replace(CFG, clients=2, per_round=2, min_completion=1.0)
    full = run_federated(copy.deepcopy(model), train, test, cfg, engine="inprocess", threads=1)
    write_setup(tmp_path, model, cfg, "digits", resume=True, threads=1, round_timeout=90.0, min_nodes=2)
    with LocalFederation(tmp_path, nodes=2) as fed:
        fed.submit()
        _wait_until(lambda: checkpoint_round(tmp_path) >= 1, 180, "round 1")
        fed.kill_superlink()
        at_kill = checkpoint_round(tmp_path)
        assert at_kill < 2
        fed.start_superlink()
        fed.submit()
        wait_for_rounds(tmp_path, 2, 240, fed=fed)
    _, ck = load_checkpoint(tmp_path / "checkpoint.npz")
    assert [h["round"] for h in ck.history] == [1, 2]
    # every round saw both clients, so the resumed run ends where the uninterrupted one does
    assert all(h["completed"] == 2 for h in ck.history)
    np.testing.assert_allclose(ck.state.params, get_flat(full.model.module), atol=1e-5)


# round 1 drops client 1 (tests/test_federated_flower.py runs SecAgg+ with it in Flower's simulation;
# benchmarks/federated.py part (g) runs it in this deployment, ~3.5 min)
SECURE = dataclasses.replace(CFG, rounds=2, secagg=True, dropout=0.25, seed=23)
