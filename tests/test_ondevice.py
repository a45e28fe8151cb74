"""On-device learning (edgeopt.ondevice): scopes, ExecuTorch parity, delegate refusal, memory, LiteRT head, CLI.

Tiny models on digits; one ExecuTorch training program is built per module and shared.
"""

from __future__ import annotations

import importlib
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from edgeopt.errors import EdgeoptError
from edgeopt.model import load_model
from edgeopt.ondevice import AdaptConfig, parse_scope, prepare_scope
from edgeopt.ondevice.adapt import candidate_scopes, choose_scope
from edgeopt.ondevice.loops import ExecuTorchTrainer, clip_gradients, make_batches, torch_train
from edgeopt.ondevice.memory import MemoryFigures, analytic_memory, measured_memory, planned_memory
from edgeopt.ondevice.program import build_training_program
from edgeopt.ondevice.scopes import finish_scope, trainable_names

STEPS = 12


@pytest.fixture(scope="module")
def mlp():
    return load_model("zoo:mlp", input_shape=(1, 8, 8), num_classes=10, seed=0)


@pytest.fixture(scope="module")
def resnet():
    return load_model("zoo:resnet8", input_shape=(1, 8, 8), num_classes=10, seed=0)


@pytest.fixture(scope="module")
def lenet():
    return load_model("zoo:lenet5", input_shape=(1, 8, 8), num_classes=10, seed=0)


@pytest.fixture(scope="module")
def head_program(lenet, digits):
    """LeNet-5's last-two-layer training program, its frozen convs in XNNPACK, and the batches it trains on."""
    batches = list(make_batches(digits[0], lenet.meta.input, 16, STEPS, seed=0))
    work, trainable = prepare_scope(lenet.module, parse_scope("lastk:2"))
    program = build_training_program(work, trainable, *batches[0], frozen="float")
    return work, trainable, program, batches


def test_scopes_pick_the_right_parameters(resnet, mlp):
    m = resnet.module
    assert trainable_names(m, parse_scope("head")) == ["fc.weight", "fc.bias"]
    bias = trainable_names(m, parse_scope("bias"))
    assert "fc.weight" in bias and all(n.endswith(".bias") or n.startswith("fc.") for n in bias)
    bn = trainable_names(m, parse_scope("bn"))
    assert "stack1.bn1.weight" in bn and "stack1.conv1.weight" not in bn and "fc.bias" in bn
    assert {n.split(".")[0] for n in trainable_names(m, parse_scope("lastk:2"))} == {"stack3", "fc"}
    assert len(trainable_names(m, parse_scope("all"))) == len(list(m.parameters()))
    with pytest.raises(EdgeoptError, match="more blocks"):
        trainable_names(mlp.module, parse_scope("lastk:9"))
    with pytest.raises(EdgeoptError, match="batch norm"):
        trainable_names(mlp.module, parse_scope("bn"))
    for bad in ("lastk:0", "lora:x", "everything"):
        with pytest.raises(EdgeoptError):
            parse_scope(bad)
    work, names = prepare_scope(m, parse_scope("head"))
    assert [n for n, p in work.named_parameters() if p.requires_grad] == names
    assert all(p.requires_grad for p in m.parameters())  # the original is untouched


def test_lora_adapters_merge_exactly(resnet):
    work, names = prepare_scope(resnet.module, parse_scope("lora:2"))
    assert any("lora_up" in n for n in names) and "fc.weight" in names
    torch.manual_seed(1)
    with torch.no_grad():
        for n, p in work.named_parameters():
            if "lora_up" in n:
                p.normal_(0, 0.1)  # as if trained: the adapters now change the output
    x = resnet.example_input(4)
    target = load_model("zoo:resnet8", input_shape=(1, 8, 8), num_classes=10, seed=0)
    before = target.module(x)
    finish_scope(work, target.module)
    merged = target.module(x)
    assert not torch.allclose(before, merged, atol=1e-3)
    torch.testing.assert_close(merged, work(x), atol=1e-4, rtol=1e-4)


def test_executorch_loss_matches_pytorch_every_step(head_program, lenet):
    work, trainable, program, batches = head_program
    assert program.delegated and not set(program.delegated) & set(trainable)  # frozen body in XNNPACK, head outside
    grads = [torch.full((3,), 10.0), torch.full((2, 2), -10.0)]
    assert clip_gradients(grads, 1.0) == pytest.approx(700**0.5)  # the norm before
    assert float(torch.nn.utils.get_total_norm(grads)) == pytest.approx(1.0, abs=1e-5)  # clipped in place
    trainer = ExecuTorchTrainer(program.buffer, lr=0.1)  # both clip the gradient norm at 1.0 by default
    et = trainer.train(batches)
    ref_work, _ = prepare_scope(lenet.module, parse_scope("lastk:2"))
    ref = torch_train(ref_work, batches, lr=0.1)
    assert len(et.losses) == STEPS
    np.testing.assert_allclose(et.losses, ref.losses, atol=1e-4, rtol=0)
    trained = trainer.parameters()
    assert not torch.allclose(trained["classifier.4.weight"], lenet.module.classifier[4].weight)  # it learned
    own = dict(ref_work.named_parameters())
    for name in trainable:
        torch.testing.assert_close(trained[name], own[name].detach(), atol=1e-5, rtol=1e-5)
    # --threads: the program loads on a pool of that size (the delegated frozen part runs on it)
    from executorch.extension.pybindings.portable_lib import _threadpool_get_thread_count

    two = ExecuTorchTrainer(program.buffer, lr=0.1, threads=2)
    assert _threadpool_get_thread_count() == 2 and np.isfinite(two.step(*batches[0])[0])
    ExecuTorchTrainer(program.buffer, lr=0.1, threads=1)
    assert _threadpool_get_thread_count() == 1


def test_trainable_parameter_inside_a_delegate_is_refused(mlp, head_program):
    from edgeopt.ondevice.program import check_delegates

    _, trainable, program, batches = head_program
    assert check_delegates(program.lowered, trainable) == program.delegated
    inside = program.delegated[0]  # a program whose delegate holds a parameter that should train: refused
    with pytest.raises(EdgeoptError, match=f"trainable parameter '{inside}' would sit inside an XNNPACK delegate"):
        check_delegates(program.lowered, [*trainable, inside])
    work, trainable = prepare_scope(mlp.module, parse_scope("bias"))  # trains the first layer's bias
    with pytest.raises(EdgeoptError, match="int8 backbone must be frozen"):
        build_training_program(work, trainable, *batches[0], frozen="int8")
    # the int8 backbone: every frozen conv and linear layer gets int8 per-channel weights, not only int8 activations
    from edgeopt.ondevice.program import _quantize_frozen_prefix

    work, trainable, _, _ = head_program
    gm, prefix = _quantize_frozen_prefix(work, trainable, batches[0][0], [batches[0][0]])
    layers = (torch.nn.Conv2d, torch.nn.Linear)
    convs = [m for name in prefix for m in work.get_submodule(name).modules() if isinstance(m, layers)]
    dq = torch.ops.quantized_decomposed.dequantize_per_channel.default
    per_channel = [n for n in gm.graph.nodes if n.target == dq]
    assert convs and len(per_channel) == len(convs)


def test_memory_figures(head_program, lenet):
    work, trainable, program, batches = head_program
    x, y = batches[0]
    parts = analytic_memory(work, x, y)
    weights = sum(p.numel() * 4 for n, p in work.named_parameters() if n in trainable)
    assert parts["trainable_weights"] == parts["gradients"] == weights
    assert parts["batch"] == x.numel() * 4 + y.numel() * 8
    assert parts["optimizer_state"] == 0 and analytic_memory(work, x, y, momentum=0.9)["optimizer_state"] == weights
    assert parts["total"] == sum(v for k, v in parts.items() if k != "total")
    # a frozen model saves nothing for backward; a fully trainable one saves every layer's input
    all_work, _ = prepare_scope(lenet.module, parse_scope("all"))
    assert analytic_memory(all_work, x, y)["saved_tensors"] > parts["saved_tensors"] > 0
    planned = planned_memory(program.buffer)
    assert planned > 0
    rec = measured_memory(program.buffer, tuple(x.shape), 10, steps=2)
    assert rec["method"].startswith("vmhwm") and rec["peak"] >= rec["baseline"]
    assert 0 < rec["bytes"] <= rec["rise_bytes"]
    assert np.isfinite(rec["loss"])
    figs = MemoryFigures(parts["total"], planned, rec["bytes"], parts).to_json()
    assert set(figs["counts"]) == {"analytic", "planned", "measured"}


def test_auto_scope_takes_the_best_expected_gain_that_fits(mlp, monkeypatch):
    order = [s.name for s in candidate_scopes(mlp.module)]
    assert order[0] == "all" and order[-1] == "head"  # expected gain: trainable parameters, largest first
    measured = {"all": 900_000, "lora:4": 500_000, "lastk:2": 300_000, "bias": 200_000, "head": 100_000}
    calls = []

    def fake(model, scope, x, y, cfg, program=None, measure=True):
        calls.append(scope.name)
        return MemoryFigures(1, 1, measured[scope.name] if measure else None), SimpleNamespace(buffer=b"")

    def fake_measure(buffer, shape, classes, lr=0.01, threads=1, accumulate=1):
        return {"bytes": measured[calls[-1]]}

    adapt_mod = importlib.import_module("edgeopt.ondevice.adapt")

    monkeypatch.setattr(adapt_mod, "memory_figures", fake)
    monkeypatch.setattr(adapt_mod, "measured_memory", fake_measure)
    x, y = mlp.example_input(4), torch.zeros(4, dtype=torch.int64)
    cfg = AdaptConfig(scope="auto")
    scope, figs, _, tried = choose_scope(mlp, x, y, cfg, budget_kb=350_000 / 1024)
    assert scope.name == "lastk:2" and figs.measured_bytes == 300_000
    assert [t["scope"] for t in tried] == order[: order.index("lastk:2") + 1]
    with pytest.raises(EdgeoptError, match=r"no trainable scope fits 50 KB \(smallest: head measured 98 KB\)"):
        choose_scope(mlp, x, y, cfg, budget_kb=50)


def test_auto_scope_falls_back_to_micro_batches(mlp, monkeypatch):
    """No scope fits at the whole batch: auto tries the same order at micro-batch 1, then the largest micro-batch
    that still fits for the first scope that does (memory here: a fixed part plus one per sample per scope)."""
    per_sample = {"all": 100_000, "lora:4": 60_000, "lastk:2": 40_000, "bias": 20_000, "head": 10_000}
    seen = []

    def fake(model, scope, x, y, cfg, program=None, measure=True):
        mb = cfg.micro_batch(int(x.shape[0]))
        seen.append(f"{scope.name}@{mb}")
        return MemoryFigures(1, 1, None), SimpleNamespace(buffer=b"", batch_size=mb)

    def fake_measure(buffer, shape, classes, lr=0.01, threads=1, accumulate=1):
        name, _, mb = seen[-1].partition("@")
        return {"bytes": 50_000 + per_sample[name] * int(mb)}

    adapt_mod = importlib.import_module("edgeopt.ondevice.adapt")
    monkeypatch.setattr(adapt_mod, "memory_figures", fake)
    monkeypatch.setattr(adapt_mod, "measured_memory", fake_measure)
    x, y = mlp.example_input(8), torch.zeros(8, dtype=torch.int64)
    order = [s.name for s in candidate_scopes(mlp.module)]
    # 100,000 B: nothing at batch 8 (the smallest, head, needs 130,000)
    scope, figs, program, tried = choose_scope(mlp, x, y, AdaptConfig(scope="auto"), budget_kb=100_000 / 1024)
    # at micro-batch 1: all 150k no, lastk:2 (second in the MLP's order) 90k fits; at 2: 130k no
    assert order[:2] == ["all", "lastk:2"]
    assert (scope.name, program.batch_size, figs.measured_bytes) == ("lastk:2", 1, 90_000)
    assert [t["scope"] for t in tried] == order + ["all@1", "lastk:2@1", "lastk:2@2"]
    scope, figs, program, _ = choose_scope(mlp, x, y, AdaptConfig(scope="auto"), budget_kb=135_000 / 1024)
    assert (scope.name, program.batch_size) == ("head", 8)  # the whole batch fits: no micro-batches tried
    scope, figs, program, _ = choose_scope(mlp, x, y, AdaptConfig(scope="auto"), budget_kb=140_000 / 1024,
                                           candidates=[parse_scope("lastk:2")])  # fmt: skip
    assert (scope.name, program.batch_size, figs.measured_bytes) == ("lastk:2", 2, 130_000)  # 4 would be 210k
    with pytest.raises(EdgeoptError, match=r"smallest: head@1 measured 59 KB"):
        choose_scope(mlp, x, y, AdaptConfig(scope="auto"), budget_kb=50)
    with pytest.raises(EdgeoptError, match=r"smallest: head measured 127 KB"):
        choose_scope(mlp, x, y, AdaptConfig(scope="auto"), budget_kb=100_000 / 1024, micro_batches=False)


def test_litert_head_gradients_match_pytorch(mlp, digits, tmp_path):
    from edgeopt.ondevice.litert import LiteRTHead, check_litert_scope, export_trainable_head

    with pytest.raises(EdgeoptError, match="convolution_backward"):
        check_litert_scope(mlp, parse_scope("bias"))
    path = export_trainable_head(mlp, 16, tmp_path / "head.tflite")
    head = mlp.module.head
    runner = LiteRTHead(path, head.weight.detach().numpy(), head.bias.detach().numpy())
    work, _ = prepare_scope(mlp.module, parse_scope("head"))
    opt = torch.optim.SGD([p for p in work.parameters() if p.requires_grad], lr=0.1)
    for x, y in make_batches(digits[0], mlp.meta.input, 16, 5, seed=3):
        out = runner.step(x.numpy(), y.numpy(), 0.1)
        loss = torch.nn.functional.cross_entropy(work(x), y)
        opt.zero_grad()
        loss.backward()
        np.testing.assert_allclose(out["dw"], work.head.weight.grad.numpy(), atol=1e-5, rtol=0)
        np.testing.assert_allclose(out["db"], work.head.bias.grad.numpy(), atol=1e-5, rtol=0)
        assert abs(out["loss"] - float(loss)) < 1e-5
        opt.step()
    np.testing.assert_allclose(runner.w, work.head.weight.detach().numpy(), atol=1e-5, rtol=0)


def test_cli_adapt_json(tmp_path, capfd):
    from edgeopt.cli import main

    out = tmp_path / "adapted.edgeopt"  # torch runtime here: the ExecuTorch path and its memory are tested above
    rc = main(["adapt", "zoo:mlp", "--data", "digits", "--scope", "head", "--runtime", "torch", "--steps", "30",
               "--lr", "0.05", "--batch-size", "16", "--out", str(out), "--json"])  # fmt: skip
    captured = capfd.readouterr()
    assert rc == 0, captured.err
    rec = json.loads(captured.out.strip().splitlines()[-1])
    keys = {"accuracy_before", "accuracy_after", "runtime", "scope", "steps", "seconds", "memory", "warning"}
    assert set(rec) == keys
    assert rec["warning"].startswith("accuracy_before:")  # an untrained zoo:mlp starts at chance, and is told so
    assert set(rec["memory"]) == {"analytic_bytes", "planned_bytes", "measured_bytes"}
    assert rec["memory"]["analytic_bytes"] > 0 and rec["memory"]["measured_bytes"] is None  # not taken in torch
    assert rec["runtime"] == "torch" and rec["scope"] == "head" and rec["steps"] == 30
    assert rec["accuracy_after"] != rec["accuracy_before"]
    adapted = load_model(out)
    assert adapted.meta.lineage[-1]["pass"] == "adapt"
    assert not torch.equal(adapted.module.head.weight, load_model("zoo:mlp", (1, 8, 8), 10, seed=0).module.head.weight)
    rc = main(["adapt", "zoo:mlp", "--scope", "bias", "--runtime", "litert", "--out", str(tmp_path / "x.edgeopt")])
    assert rc == 2 and "convolution_backward" in capfd.readouterr().err
    assert not (tmp_path / "x.edgeopt").exists()


def test_adapt_recipe_pass(mlp, tmp_path):
    from edgeopt.pipeline.passes import PassContext, available_passes

    cls = available_passes()["adapt"]
    ctx = PassContext("digits", tmp_path)
    out = cls(scope="head", runtime="torch", steps=10, lr=0.05, batch_size=16).apply(mlp, ctx)
    rec = ctx.metrics["adapt"]
    assert rec["scope"] == "head" and rec["steps"] == 10 and rec["memory"]["analytic_bytes"] > 0
    assert out.meta.lineage[-1]["pass"] == "adapt" and out is not mlp
    assert not torch.equal(out.module.head.weight, mlp.module.head.weight)
