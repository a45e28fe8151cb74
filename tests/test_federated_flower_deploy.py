"""Flower deployment: a real SuperLink + SuperNodes on 127.0.0.1, the server killed and resumed, a node killed.

The test starts real Flower processes (a SuperLink, SuperExec, SuperNodes, the ServerApp and
ClientApps), so it takes a minute or two; it lives apart from the simulation tests so that
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


# two rounds on two SuperNodes, two events between them: the server is killed after round 1 and resumed, and a
# SuperNode is killed as the resumed run's round 2 starts. One federation for both: every SuperNode starts a
# ClientApp process per round (each imports torch), so nodes, rounds and restarts are what this test costs.
# SCAFFOLD with top-k uploads: the server's control variate and the clients' own must survive the kills, and
# Flower's messages must carry both (this replaced a separate simulation run of the same check)
CFG = FederatedConfig(clients=2, per_round=2, rounds=2, partition="iid", lr=0.1, batch_size=16, min_completion=0.5,
                      algo="scaffold", compress="topk:0.1")  # fmt: skip


def test_deployment_resumes_a_killed_server_and_survives_a_killed_supernode(digits, tmp_path) -> None:
    """Real SuperLink + 2 SuperNodes. After round 1: SIGKILL the SuperLink and its ServerApp, restart,
    resubmit; then SIGKILL SuperNode 1 as round 2 starts. Round 1 equals the in-process engine's round 1
    (deployment computes what the engine does), the resumed run continues from it without redoing it, and
    round 2 finishes without the dead node."""
    train, test = digits
    model = _model()
    one_round = run_federated(copy.deepcopy(model), train, test, dataclasses.replace(CFG, rounds=1),
                              engine="inprocess", threads=1)  # fmt: skip
    # a generous timeout costs nothing: the dead node's round ends a grace period after the quorum's replies
    # (collect_replies); at load 8, three ClientApps took over 45 s to reply in round 1
    write_setup(tmp_path, model, CFG, "digits", resume=True, threads=1, round_timeout=90.0, min_nodes=2)
    with LocalFederation(tmp_path, nodes=2) as fed:
        fed.submit()
        _wait_until(lambda: checkpoint_round(tmp_path) >= 1, 180, "round 1")
        fed.kill_superlink()
        assert checkpoint_round(tmp_path) == 1
        _, at_kill = load_checkpoint(tmp_path / "checkpoint.npz")
        fed.start_superlink()
        fed.submit()
        fed.kill_supernode(1)
        wait_for_rounds(tmp_path, 2, 240, fed=fed)
    # round 1 saw every client: the in-process engine's round-1 model
    np.testing.assert_allclose(at_kill.state.params, get_flat(one_round.model.module), atol=1e-5)
    _, ck = load_checkpoint(tmp_path / "checkpoint.npz")
    rounds = {h["round"]: h for h in ck.history}
    assert [h["round"] for h in ck.history] == [1, 2]  # resumed after round 1, nothing redone or lost
    assert ck.history[0] == at_kill.history[0]
    assert rounds[1]["upload_bytes"] == one_round.history[0]["upload_bytes"]  # top-k through Flower's messages
    assert rounds[1]["completed"] == 2 and not rounds[1]["lost"] and rounds[1]["nodes"] == 2
    # either the SuperLink still lists the dead node (its client's reply is lost: 1 of 2 complete, the quorum)
    # or it has dropped it already (both clients on the live node); both are survival, and the round counts
    h = rounds[2]
    assert not h["skipped"] and h["completed"] + len(h["lost"]) == 2, h
    assert bool(h["lost"]) == (h["nodes"] == 2), h
    assert h["lost"] or h["nodes"] == 1  # the kill was felt
    assert rounds[2]["test_accuracy"] > rounds[1]["test_accuracy"]
    assert not np.array_equal(ck.state.params, at_kill.state.params)  # the resumed rounds moved the weights


# round 1 drops client 1 (tests/test_federated_flower.py runs SecAgg+ with it in Flower's simulation;
# benchmarks/federated.py part (g) runs it in this deployment, ~3.5 min)
SECURE = FederatedConfig(clients=3, per_round=3, rounds=2, partition="iid", lr=0.1, batch_size=16, min_completion=0.5,
                         secagg=True, dropout=0.25, seed=23)  # fmt: skip
