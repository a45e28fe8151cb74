"""Clients that train a compressed model: QAT int8 (fake quantization, int8 result) and pruned width."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgeopt.errors import EdgeoptError
from edgeopt.federated import run_federated
from edgeopt.federated.algorithms import get_flat
from edgeopt.federated.client_model import (
    build_client_module,
    federated_input_ranges,
    input_ranges,
    parse_client_model,
    prepare_client_model,
    quant_layers,
)
from edgeopt.federated.config import FederatedConfig
from edgeopt.model import build_module
from edgeopt.models import create_model


def _model(name: str = "mlp", **kw):
    torch.manual_seed(0)
    return create_model(name, input_shape=(1, 8, 8), num_classes=10, **kw)


def _cfg(**kw) -> FederatedConfig:
    base = dict(clients=8, per_round=4, rounds=8, partition="iid", lr=0.1, batch_size=16, eval_limit=200)
    return FederatedConfig(**{**base, **kw})


def test_parse_and_validation() -> None:
    assert parse_client_model("float") == ("float", 0.0)
    assert parse_client_model("qat-int8") == ("qat-int8", 0.0)
    assert parse_client_model("pruned:0.5") == ("pruned", 0.5)
    for bad in ("pruned:1.0", "pruned:x", "int4", "pruned"):
        with pytest.raises(ValueError):
            parse_client_model(bad)
        with pytest.raises(EdgeoptError, match="client model"):
            _cfg(client_model=bad)
    from edgeopt.federated.client_model import wrap_qat

    with pytest.raises(EdgeoptError, match="batch norm"):
        wrap_qat(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2)))


def test_federated_calibration_merges_client_ranges(digits) -> None:
    """The server's merged range equals the range over all clients' data pooled (no raw data shared)."""
    train, _ = digits
    m = _model()
    x = torch.from_numpy(m.meta.input.to_model_input(train.images[:300]))
    parts = [x[:50], x[50:170], x[170:]]
    names = quant_layers(m.module)
    merged = federated_input_ranges(m.module, parts)
    pooled = input_ranges(m.module, x, names)
    for i, n in enumerate(names):
        assert merged[n] == pytest.approx(tuple(pooled[i]), rel=1e-6)
    assert merged[names[1]][0] >= 0.0  # after a ReLU


def test_qat_clients_train_an_int8_deployable_model(digits, tmp_path) -> None:
    train, test = digits
    cfg = _cfg(client_model="qat-int8", local_epochs=2)
    init, info = prepare_client_model(_model(), "qat-int8", _client_inputs(_model(), train, cfg))
    # one input step per layer and one weight step per output channel (128 + 64 + 10) are federated too
    assert info["layers"] == 3 and info["params_after"] == info["params_before"] + 3 + (128 + 64 + 10)
    res = run_federated(_model(), train, test, cfg, threads=1)
    extra = res.extra["client_model"]
    # the federation trained the fake-quantized model: its quantization steps moved from their start
    start_steps = {k: v.clone() for k, v in init.module.state_dict().items() if k.endswith("_step")}
    assert len(start_steps) == 6
    # the result is the int8 program (quantized module), whose weight scales are the learned steps
    q = res.model
    assert getattr(q.module, "quantized", False) and q.meta.arch["kind"] == "quantized"
    assert extra["fake_quant_accuracy"] > 0.6
    floating = run_federated(_model(), train, test, _cfg(local_epochs=2), threads=1)
    assert abs(extra["fake_quant_accuracy"] - floating.history[-1]["test_accuracy"]) <= 0.08
    assert abs(extra["int8_accuracy"] - extra["fake_quant_accuracy"]) <= 0.05
    assert extra["fake_quant_accuracy"] == pytest.approx(res.history[-1]["test_accuracy"])
    fake_steps = _learned_steps(res)
    assert any(not torch.allclose(fake_steps[k], start_steps[k]) for k in start_steps)
    # the int8 model exports and runs in ONNX Runtime with about the same accuracy
    from edgeopt.federated.client_model import runtime_accuracy

    rt = runtime_accuracy(q, test.take(200, seed=0), tmp_path)  # the engine's eval_limit subset
    assert rt["runtime"] == "onnxruntime" and rt["artifact_bytes"] > 0
    assert abs(rt["accuracy"] - extra["int8_accuracy"]) <= 0.03


def _client_inputs(model, train, cfg):
    from edgeopt.federated.engine import client_tensors
    from edgeopt.federated.partition import partition

    return [x for x, _ in client_tensors(model, train, partition(train.labels, cfg.clients, cfg.partition, cfg.seed))]


def _learned_steps(res) -> dict[str, torch.Tensor]:
    """The trained fake-quant model's quantization steps."""
    return {k: v for k, v in res.extra["fake_quant_model"].module.state_dict().items() if k.endswith("_step")}


def test_pruned_clients_upload_fewer_bytes_and_learn(digits) -> None:
    train, test = digits
    dense = run_federated(_model(), train, test, _cfg(local_epochs=2), threads=1)
    pruned = run_federated(_model(), train, test, _cfg(local_epochs=2, client_model="pruned:0.5"), threads=1)
    info = pruned.extra["client_model"]
    assert info["macs_after"] <= 0.55 * info["macs_before"]
    n_dense = get_flat(dense.model.module).size
    n_pruned = get_flat(pruned.model.module).size
    assert n_pruned == info["params_after"] < 0.6 * n_dense
    up = lambda r: sum(h["upload_bytes"] for h in r.history)  # noqa: E731
    # every completed client uploads the pruned model's float32 tensors, counted from its own state dict
    sent = sum(t.numel() * t.element_size() for t in pruned.model.module.state_dict().values() if t.is_floating_point())
    assert up(pruned) == sent * sum(h["completed"] for h in pruned.history)
    assert pruned.history[-1]["test_accuracy"] > dense.history[-1]["test_accuracy"] - 0.1
    # the trained pruned model is an ordinary zoo model: its arch rebuilds it (save/load, Flower engines)
    rebuilt = build_module(pruned.model.meta.arch)
    rebuilt.load_state_dict(pruned.model.module.state_dict())
    built = build_client_module(pruned.model.meta, "pruned:0.5")
    assert get_flat(built).size == n_pruned


def test_qat_structure_rebuilds_for_flower_engines() -> None:
    """Flower engines rebuild the module from metadata: the QAT structure must match the prepared one."""
    m = _model()
    prepared, _ = prepare_client_model(m, "qat-int8", [torch.rand(16, 1, 8, 8)])
    rebuilt = build_client_module(prepared.meta, "qat-int8")
    a, b = prepared.module.state_dict(), rebuilt.state_dict()
    assert list(a) == list(b) and all(a[k].shape == b[k].shape for k in a)
    from edgeopt.federated.algorithms import set_flat

    set_flat(rebuilt, get_flat(prepared.module))
    x = torch.rand(4, 1, 8, 8)
    torch.testing.assert_close(prepared.module.eval()(x), rebuilt.eval()(x))


def test_cli_client_model_qat_reports_the_int8_artifact(tmp_path, capfd) -> None:
    from edgeopt.cli import main

    out = tmp_path / "run"
    # no --per-round: it defaults to every client (a fixed 10 refused --clients 4)
    args = ["federate", "zoo:mlp", "--data", "digits", "--clients", "4", "--rounds", "3",
            "--client-model", "qat-int8", "--lr", "0.1", "--threads", "1", "--out", str(out), "--json"]  # fmt: skip
    assert main(args) == 0
    got = json.loads(capfd.readouterr().out.strip())
    assert got["client_model"]["client_model"] == "qat-int8"
    assert got["int8_artifact"]["runtime"] == "onnxruntime" and 0.3 < got["int8_artifact"]["accuracy"] <= 1.0
    from edgeopt.model import load_model

    saved = load_model(out / "model.edgeopt")
    assert saved.meta.arch["kind"] == "quantized"
    assert np.isfinite(get_flat(saved.module.float_module)).all()
