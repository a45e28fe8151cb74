"""Flower's simulation engine: the same model as the in-process engine (deployment: test_federated_flower_deploy).

These start Flower's simulation runtime (Ray), so they take tens of seconds each (marked ``flower``;
deselect with ``-m "not flower"``).
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

pytest.importorskip("flwr")

from test_federated_engine import _model  # noqa: E402
from test_federated_flower_deploy import SECURE  # noqa: E402

from edgeopt.cli import main  # noqa: E402
from edgeopt.federated import run_federated  # noqa: E402
from edgeopt.federated.algorithms import get_flat  # noqa: E402
from edgeopt.federated.config import FederatedConfig  # noqa: E402
from edgeopt.federated.engine import load_checkpoint  # noqa: E402
from edgeopt.model import load_model, save_model  # noqa: E402

pytestmark = pytest.mark.flower


# SCAFFOLD with top-k uploads through Flower's messages is checked against the in-process engine in the
# deployment test (test_federated_flower_deploy.py): the same ServerApp and ClientApp, and each simulation here
# starts Ray (~40 s), so the simulation runtime is run once, with SecAgg+.


def test_flower_simulation_secagg_plus_with_dp_and_int8_matches_inprocess(digits, tmp_path, capfd) -> None:
    """SecAgg+ on Flower's simulation runtime, with DP-FedAvg (weight 1 per client) and int8 deltas, run
    through the CLI (`edgeopt federate --engine flower-sim`) against the in-process engine's API.

    SecAgg+'s stochastic 22-bit quantization moves the weights by ~1e-6 per round; the next
    round's int8 round trip can turn that into one int8 step (max|delta chunk| / 127, ~2e-4) on a
    rare entry, so the check is: almost every weight within 1e-4, none beyond 1e-3.
    """
    train, test = digits
    cfg = dataclasses.replace(SECURE, dp_clip=1.0, dp_noise=0.3, compress="int8")
    a = run_federated(_model(), train, test, cfg, engine="inprocess", threads=1)
    start = save_model(_model(), tmp_path / "start.edgeopt")
    out = tmp_path / "run"
    rc = main(["federate", str(start), "--data", "digits", "--engine", "flower-sim", "--clients", "3", "--per-round",
               "3", "--rounds", "2", "--partition", "iid", "--lr", "0.1", "--batch-size", "16", "--min-completion",
               "0.5", "--secagg", "--dropout", "0.25", "--seed", "23", "--dp-clip", "1.0", "--dp-noise", "0.3",
               "--compress", "int8", "--train-threads", "1", "--out", str(out), "--json"])  # fmt: skip
    assert rc == 0, capfd.readouterr().err[-3000:]
    result = json.loads(capfd.readouterr().out.strip().splitlines()[-1])
    assert result["rounds"] == 2 and result["epsilon"] == a.history[-1]["epsilon"]
    _, b = load_checkpoint(out / "checkpoint.npz")
    assert [h["completed"] for h in b.history] == [h["completed"] for h in a.history]
    assert [h["epsilon"] for h in b.history] == [h["epsilon"] for h in a.history]
    diff = np.abs(get_flat(load_model(out / "model.edgeopt").module) - get_flat(a.model.module))
    assert diff.max() < 1e-3 and np.mean(diff > 1e-4) < 0.01 and np.median(diff) < 1e-5


def test_flower_secagg_refuses_scaffold(digits) -> None:
    from edgeopt.errors import EdgeoptError

    train, test = digits
    cfg = dataclasses.replace(SECURE, algo="scaffold")
    with pytest.raises(EdgeoptError, match="SCAFFOLD"):
        run_federated(_model(), train, test, cfg, engine="flower-sim", data_spec="digits")


def test_simulation_retries_only_when_rays_node_did_not_start(digits, tmp_path, monkeypatch) -> None:
    """Ray's node has a fixed 30 s to start (a full suite at load 8 missed it): the simulation starts again,
    at most RAY_START_ATTEMPTS times; any other failure is raised at once."""
    import flwr.simulation

    from edgeopt.federated import flower_engine

    train, test = digits
    calls = []

    def fails_with(cause: str):
        def fake(*args, **kwargs):
            calls.append(cause)
            try:
                raise Exception(cause)
            except Exception as e:
                raise RuntimeError("An error was encountered. Ending simulation.") from e

        return fake

    cfg = FederatedConfig(clients=2, per_round=2, rounds=1, lr=0.1)
    monkeypatch.setattr(flwr.simulation, "run_simulation", fails_with("The current node timed out during startup."))
    with pytest.raises(RuntimeError, match="Ending simulation"):
        flower_engine.run_flower_simulation(_model(), train, test, cfg, "digits", out_dir=tmp_path / "a")
    assert len(calls) == flower_engine.RAY_START_ATTEMPTS == 3
    calls.clear()
    monkeypatch.setattr(flwr.simulation, "run_simulation", fails_with("a ClientApp raised"))
    with pytest.raises(RuntimeError, match="Ending simulation"):
        flower_engine.run_flower_simulation(_model(), train, test, cfg, "digits", out_dir=tmp_path / "b")
    assert calls == ["a ClientApp raised"]
