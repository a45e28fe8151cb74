"""Hardware model: kernel detection, the latency predictor's fit and I/O, fingerprints, calibration, predict."""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

import edgeopt
import edgeopt.hardware.calibrate as calibrate_module
import edgeopt.report.environment as environment
from edgeopt.errors import EdgeoptError
from edgeopt.hardware.archs import FAMILIES, arch_model, build_arch, sample_arch
from edgeopt.hardware.calibrate import fit_profile, measure_samples, normalised_kernel_us, normalised_ms, reference_ms
from edgeopt.hardware.fingerprint import fingerprint_mismatch, machine_fingerprint
from edgeopt.hardware.kernels import Kernel, kernel_to_json, kernels_of_model
from edgeopt.hardware.predictor import LatencyPredictor, kernel_terms, model_summary, model_terms
from edgeopt.hardware.profile import DeviceProfile, load_profile
from edgeopt.model import EdgeModel, InputSpec, ModelMeta


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn(self.conv(x)))
        y = torch.relu(self.dw(y) + y)
        return self.fc(torch.flatten(self.pool(y), 1))


def _model(module: nn.Module, shape: tuple[int, int, int] = (3, 8, 8)) -> EdgeModel:
    return EdgeModel(module.eval(), ModelMeta(InputSpec(shape), 4, {"name": "t"}))


def test_kernels_fuse_conv_bn_relu_and_add_relu_with_hand_counted_macs() -> None:
    ks = kernels_of_model(_model(_Block()))
    assert [k.type for k in ks] == ["conv", "dwconv", "add", "pool", "linear"]
    conv, dw, add, pool, fc = ks
    assert conv.fused == ("conv2d", "bn", "relu")
    assert conv.macs == 8 * 8 * 8 * 3 * 9  # H*W*Cout*Cin*k*k
    assert (conv.cin, conv.cout, conv.k, conv.stride, conv.hw) == (3, 8, 9, 1, 64)
    assert dw.macs == 8 * 8 * 8 * 9 and dw.fused == ("conv2d",)  # the add reads it, not an activation
    assert add.fused == ("add", "relu")
    assert add.in_bytes == 2 * 8 * 8 * 8 * 4 and add.out_bytes == 8 * 8 * 8 * 4
    assert pool.out_bytes == 8 * 4
    assert fc.macs == 8 * 4 and fc.weight_bytes == (8 * 4 + 4) * 4
    assert conv.weight_bytes >= (8 * 3 * 9 + 8) * 4  # conv weight + bias (BN parameters read too)


def test_sampled_architectures_build_and_export_graph_for_every_family() -> None:
    rng = np.random.default_rng(3)
    for family in FAMILIES:
        spec = sample_arch(rng, family)
        assert json.loads(json.dumps(spec)) == spec  # plain data
        module = build_arch(spec)
        x = torch.rand(1, *spec["input_shape"])
        assert module(x).shape == (1, 10)
        ks = kernels_of_model(arch_model(spec))
        total = sum(k.macs for k in ks)
        assert total == edgeopt.profile.count_macs(torch.export.export(module, (x,)).graph)


def _random_kernels(rng: np.random.Generator) -> list[Kernel]:
    """A made-up model: a few convs, depthwise convs, adds, a pool and a linear layer."""
    ks = []
    for _ in range(int(rng.integers(2, 12))):
        cin, cout, hw, k = (
            int(rng.choice(v)) for v in ((3, 8, 16, 24, 32, 64), (8, 16, 20, 32, 64), (16, 64, 256), (1, 9, 25))
        )
        kind = "dwconv" if rng.random() < 0.3 else "conv"
        cin = cout if kind == "dwconv" else cin
        macs = hw * cout * (1 if kind == "dwconv" else cin) * k
        ks.append(Kernel(kind, macs, 4 * hw * cin, 4 * hw * cout, 4 * cout * cin * k, cin, cout, k, 1, hw))
        if rng.random() < 0.4:
            ks.append(Kernel("add", 0, 8 * hw * cout, 4 * hw * cout, 0))
    return [*ks, Kernel("pool", 0, 4000, 256, 0), Kernel("linear", 640, 256, 40, 2600, 64, 10, 1, 1, 1)]


TRUTH = {"conv.macs": 0.02, "conv.n": 0.004, "dwconv.macs": 0.05, "dwconv.io": 0.0002, "linear.macs": 0.01,
         "add.io": 0.0003, "pool.io": 0.0001, "model.n": 0.01}  # fmt: skip


def _synthetic_rows(n: int, seed: int) -> tuple[list[list[Kernel]], np.ndarray]:
    """Random kernel lists, with latency a known non-negative combination of their terms."""
    rng = np.random.default_rng(seed)
    models = [_random_kernels(rng) for _ in range(n)]
    y = [sum(w * model_terms(ks).get(name, 0.0) for name, w in TRUTH.items()) for ks in models]
    return models, np.array(y)


@pytest.fixture(scope="module")
def synthetic() -> tuple[list[list[Kernel]], np.ndarray]:
    return _synthetic_rows(80, 0)


def test_predictor_recovers_an_additive_latency_and_round_trips_json(synthetic) -> None:
    models, y = synthetic
    p = LatencyPredictor.fit(models[:60], y[:60], correction=False)
    pred = p.predict_many(models[60:])
    assert np.max(np.abs(pred / y[60:] - 1)) < 0.02  # exact model family: near-exact on unseen models
    assert all(w >= 0 for w in p.weights)
    again = LatencyPredictor.from_json(json.loads(json.dumps(p.to_json())))
    assert np.array_equal(again.predict_many(models[60:]), pred)
    # the per-kernel shares sum to the additive prediction
    k = [Kernel("conv", 10**6, 4000, 4000, 400, 8, 8, 9, 1, 64), Kernel("add", 0, 8000, 4000, 0)]
    assert sum(p.kernel_ms(k)) + p.weights[p.terms.index("model.n")] == pytest.approx(p.predict(k), rel=1e-9)


def test_kernel_terms_mark_kernel_size_stride_and_channel_blocking() -> None:
    def conv(cin: int, cout: int, k: int, stride: int = 1, kind: str = "conv") -> dict[str, float]:
        macs = 64 * cout * (1 if kind == "dwconv" else cin) * k
        return kernel_terms(
            Kernel(kind, macs, 4 * 256 * cin, 4 * 64 * cout, 4 * cout * cin * k, cin, cout, k, stride, 64)
        )

    assert conv(32, 32, 49)["conv.macs_k7"] == conv(32, 32, 49)["conv.macs"] > 0
    assert conv(32, 32, 25)["conv.macs_k5"] > 0 and conv(32, 32, 25)["conv.macs_k7"] == 0
    assert conv(32, 32, 9)["conv.macs_k5"] == conv(32, 32, 9)["conv.macs_k7"] == 0
    assert conv(32, 32, 9, stride=2)["conv.macs_stride2"] > 0 and conv(32, 32, 9)["conv.macs_stride2"] == 0
    # ONNX Runtime's NCHWc path takes Cin a multiple of 16 or under 16; 24 and 40 fall back
    assert [conv(c, 32, 9)["conv.macs_unblocked"] > 0 for c in (3, 8, 16, 24, 32, 40, 48)] == [
        False, False, False, True, False, True, False,
    ]  # fmt: skip
    assert conv(24, 24, 9, kind="dwconv")["dwconv.io_unblocked"] > 0
    assert conv(32, 32, 9, kind="dwconv")["dwconv.io_unblocked"] == 0
    # rows x channel blocks: 8 rows (hw 64) x 2 blocks of 16 for 20 output channels
    assert conv(16, 20, 9)["conv.rows"] == pytest.approx(8 * 2 / 1e3)


# the terms of profiles saved before 2026-12-02 (before the kernel-size, stride and blocking terms)
OLD_TERMS = ["add.io", "add.n", "conv.io", "conv.macs", "conv.macs_k1", "conv.macs_pad16", "conv.macs_smallcin",
             "conv.n", "conv.weights", "dwconv.io", "dwconv.macs", "dwconv.macs_pad16", "dwconv.n", "dwconv.stride2",
             "linear.macs", "linear.n", "linear.weights", "model.n", "pool.io", "pool.n"]  # fmt: skip


def test_profiles_fitted_on_the_older_terms_still_predict(synthetic) -> None:
    """A saved profile reads only its own term names: every one of them must still be produced, or
    its predictions would silently drop that cost."""
    models, _ = synthetic
    produced = {n for k in models for n in model_terms(k)}
    assert set(OLD_TERMS) <= produced
    w = np.linspace(0.001, 0.02, len(OLD_TERMS))
    old = LatencyPredictor.from_json({"terms": OLD_TERMS, "weights": list(w)})
    k = [Kernel("conv", 10**6, 4000, 4000, 400, 20, 20, 9, 1, 64)]  # pad16: 32*32/20 per 20-wide output
    by_name = dict(zip(OLD_TERMS, w, strict=True))
    hand = by_name["model.n"] + by_name["conv.n"] + by_name["conv.macs"] * 1.0 + by_name["conv.io"] * 8.0
    hand += by_name["conv.macs_pad16"] * 1e6 / 20 * 32 * 32 / 20 / 1e6 + by_name["conv.weights"] * 0.4
    assert old.predict(k) == pytest.approx(hand, rel=1e-9)


def test_predictor_correction_is_lightgbm_text_and_kept_only_if_it_helps(synthetic) -> None:
    models, y = synthetic
    noisy = y * np.exp(0.3 * np.array([model_summary(k)["share.dwconv"] for k in models]))  # not additive
    p = LatencyPredictor.fit(models, noisy)
    assert p.cv["chosen"].endswith("+correction") == (p.correction is not None)
    if p.correction is not None:
        assert p.correction.startswith("tree")  # LightGBM's text format, never a pickle
        candidates = p.cv["candidates"]
        assert candidates["additive+correction"]["median_abs_pct"] < candidates["additive"]["median_abs_pct"]
    again = LatencyPredictor.from_json(json.loads(json.dumps(p.to_json())))
    assert np.allclose(again.predict_many(models), p.predict_many(models))


def test_transfer_learns_a_slower_device_from_few_measurements(synthetic) -> None:
    models, y = synthetic
    p = LatencyPredictor.fit(models[:40], y[:40], correction=False)
    slower = 2.5 * y**0.95  # another runtime: slower, a little less than proportional
    t = p.transferred(models[40:60], slower[40:60])
    assert np.median(np.abs(t.predict_many(models[60:]) / slower[60:] - 1)) < 0.05
    assert np.median(np.abs(p.predict_many(models[60:]) / slower[60:] - 1)) > 0.5
    hiccups = slower[40:60].copy()
    hiccups[[1, 7, 13]] *= 4.0  # three of the 20 timings far off: the fit does not follow them
    t = p.transferred(models[40:60], hiccups)
    assert np.median(np.abs(t.predict_many(models[60:]) / slower[60:] - 1)) < 0.05


def test_transfer_design_keeps_the_architectures_that_span_the_base_predictors_view(synthetic) -> None:
    from edgeopt.hardware.predictor import KERNEL_GROUPS
    from edgeopt.hardware.transfer_design import d_optimal, design_features, design_order, designed_specs

    models, y = synthetic
    p = LatencyPredictor.fit(models[:40], y[:40], correction=False)
    x = design_features(p, models)
    g = len(KERNEL_GROUPS)
    assert x.shape == (len(models), g + 2) and np.allclose(x[:, :g].sum(axis=1), 1.0)
    assert np.allclose(x[:, g], np.log(p.predict_many(models)))
    # on a line, the first two kept are its two ends; then never one twice, and no more than there are
    assert set(d_optimal(np.arange(10.0)[:, None], 2)) == {0, 9}
    kept = d_optimal(x, 20)
    assert len(set(kept)) == 20 and len(d_optimal(x[:5], 20)) == 5
    # 95 copies of one model and five others: a design keeps the five, a random draw of ten mostly does not
    lopsided = np.vstack([np.repeat(x[:1], 95, axis=0), x[1:6]])
    assert set(range(95, 100)) <= set(d_optimal(lopsided, 10))
    rng = np.random.default_rng(3)
    candidates = [sample_arch(rng) for _ in range(5)]
    specs = designed_specs(p, seed=3, candidates=5)  # the five the same seed draws, in the design's order
    assert len(specs) == 5 and all(s in specs for s in candidates)
    # across kernel libraries, the models are kept for their kernels: of 95 copies of one model and five
    # others, one copy and the five; every index once, whatever the predictor
    lopsided_models = [*[models[0]] * 95, *models[1:6]]
    by_kernels = design_order(p, lopsided_models, by_kernels=True)
    assert sorted(by_kernels) == list(range(100)) and set(range(95, 100)) <= set(by_kernels[:6])
    assert by_kernels == design_order(LatencyPredictor.fit(models[40:], y[40:]), lopsided_models, by_kernels=True)


def test_kernel_coverage_keeps_the_models_whose_kernels_are_like_the_most_others() -> None:
    from edgeopt.hardware.kernels import Kernel
    from edgeopt.hardware.transfer_design import kernel_coverage

    def conv(cout: int, side: int) -> Kernel:
        hw = side * side
        return Kernel("conv", macs=9 * 16 * cout * hw, cin=16, cout=cout, k=3, stride=1, hw=hw,
                      in_bytes=4 * 16 * hw, out_bytes=4 * cout * hw, weight_bytes=4 * 9 * 16 * cout)  # fmt: skip

    small = [[conv(16, 8)] for _ in range(30)]  # thirty small convolutions, ten large ones, one model of both
    large = [[conv(256, 32)] for _ in range(10)]
    both = [[conv(16, 8), conv(256, 32)]]
    assert kernel_coverage([*small, *large, *both], 1) == [40]
    assert kernel_coverage([*small, *large], 2) == [0, 30]  # one of each kind, the common kind first


def test_fingerprint_mismatch_names_what_differs() -> None:
    here = machine_fingerprint("onnxruntime")
    assert here["runtime_version"] is not None and here["cpu_model"]
    assert fingerprint_mismatch(here, here) == []
    # sve2 is an ARM feature, so it is missing here whatever x86 CPU the suite runs on
    other = {**here, "cpu_model": "Some ARM core", "isa": [*here["isa"], "sve2"], "runtime_version": "0.0.1"}
    text = "; ".join(fingerprint_mismatch(other, here))
    assert "Some ARM core" in text and "0.0.1" in text and "-sve2" in text


def _profile(synthetic, fingerprint=None) -> DeviceProfile:
    models, y = synthetic
    samples = [{"kernels": [kernel_to_json(k) for k in ks], "latency_ms": v, "ratio": v, "reference_ms": 1.0,
                "macs": 0, "spec": {}}
               for ks, v in zip(models, y, strict=True)]  # fmt: skip
    prof = fit_profile(samples, "onnxruntime", 1)
    if fingerprint is not None:
        prof.fingerprint = fingerprint
    return prof


def test_profile_save_load_and_foreign_machine_warning(tmp_path, synthetic) -> None:
    prof = _profile(synthetic)
    prof.save(tmp_path / "p.json")
    back = load_profile(tmp_path / "p.json")
    assert back.mismatch() == []
    assert back.predictor.weights == prof.predictor.weights
    foreign = _profile(synthetic, {**prof.fingerprint, "cpu_model": "Cortex-A76"})
    assert foreign.mismatch() and "hw calibrate --runtime onnxruntime --threads 1" in foreign.recalibrate_hint()
    (tmp_path / "bad.json").write_text('{"kind": "something else"}')
    with pytest.raises(EdgeoptError, match="not an edgeopt device profile"):
        load_profile(tmp_path / "bad.json")


def test_fit_profile_refuses_too_few_samples_and_a_kernel_source_without_a_kernel_model(
    synthetic, monkeypatch
) -> None:
    with pytest.raises(EdgeoptError, match="at least 10"):
        fit_profile([], "onnxruntime", 1)
    additive = _profile(synthetic)  # fitted without kernel times: no per-kernel model to lend
    with pytest.raises(EdgeoptError, match="no per-kernel model"):
        fit_profile(additive.samples, "litert", 1, kernels_from=additive)

    def measured(*args, **kwargs):
        raise AssertionError("calibrate measured before refusing the profile")

    monkeypatch.setattr(calibrate_module, "measure_samples", measured)  # refused before minutes of measuring
    with pytest.raises(EdgeoptError, match="no per-kernel model"):
        calibrate_module.calibrate("litert", minutes=1, kernels_from=additive)


def test_drift_normalisation_follows_each_reference_by_the_models_memory_share() -> None:
    conv = {"type": "conv", "macs": 300}
    linear = {"type": "linear", "macs": 100}
    # the machine slowed compute 2x (reference 1 -> 2 ms) while the memory-bound reference stayed at 1 ms
    mlp = {"kernels": [linear], "latency_ms": 1.0, "reference_ms": 2.0, "memory_reference_ms": 1.0,
           "kernel_us": [800.0]}  # fmt: skip
    cnn = {"kernels": [conv, linear], "latency_ms": 4.0, "reference_ms": 2.0, "memory_reference_ms": 1.0,
           "kernel_us": [3000.0, 500.0]}  # fmt: skip
    older = {"kernels": [linear], "latency_ms": 1.0, "reference_ms": 2.0}  # journalled before the memory reference
    refs = {"reference_ms": 1.0, "memory_reference_ms": 1.0}
    y = normalised_ms([mlp, cnn, older], refs)
    assert y[0] == pytest.approx(1.0)  # all matrix products: only the memory reference's drift applies
    assert y[1] == pytest.approx(4.0 * 0.5**0.75)  # three quarters of its MACs in the convolution
    assert y[2] == pytest.approx(0.5)  # no memory reference timed: the compute one serves
    assert normalised_kernel_us([mlp, cnn, older], refs) == [[800.0], [1500.0, 500.0], None]
    assert normalised_ms([mlp], {"reference_ms": 1.0}) == pytest.approx([0.5])  # refs without it: likewise
    assert reference_ms([mlp, cnn]) == {"reference_ms": 2.0, "memory_reference_ms": 1.0}
    assert reference_ms([mlp, older]) == {"reference_ms": 2.0}  # a median needs every sample to carry it


def test_a_chunk_timed_in_a_slow_phase_is_timed_on_until_two_rounds_are_quiet(monkeypatch) -> None:
    def phases(reference_times):  # the reference's fastest call per round; the model runs 1.0x, or 1.5x when slow
        calls = iter(reference_times)
        state = {}

        def timed(runtime, path, threads, seconds):
            if path == "ref":
                state["ref"] = next(calls)
                return state["ref"], state["ref"]
            ms = 0.5 * (1.5 if state["ref"] > 0.11 else 1.0)
            return ms, ms

        return timed

    def run(reference_times, quiet_ms):
        monkeypatch.setattr(calibrate_module, "_timed", phases(reference_times))
        (t,) = calibrate_module.measured_ratios("onnxruntime", ["m"], "ref", rounds=3, quiet_ms=quiet_ms)
        return t

    quiet = run([0.1] * 3, 0.1)  # a quiet machine: the rounds asked for, no more
    assert (quiet.model_ms, quiet.ratio) == (0.5, 5.0)
    # three slow rounds, then quiet ones: timed on until two were quiet (round 6), and labelled as on a quiet machine
    late = run([0.13, 0.13, 0.13, 0.1, 0.13, 0.1, 0.1], 0.1)
    assert (late.model_ms, late.reference_ms, late.ratio) == (0.5, 0.1, 5.0)
    # without the recent level the slow phase cannot be told; a machine slow for good waits at most 4x the rounds
    assert run([0.13] * 3, None).model_ms == 0.75
    assert run([0.13] * 12, 0.1).reference_ms == 0.13 and run([0.13] * 12 + [0.1], 0.1).model_ms == 0.75


def test_measure_samples_times_real_artifacts_and_resumes_from_its_journal(tmp_path) -> None:
    journal = tmp_path / "p.json.samples.jsonl"
    first = measure_samples("onnxruntime", 1, minutes=5, max_models=2, journal=journal, workers=1, rounds=1)
    assert len(first) == 2 and all(s["latency_ms"] > 0 and s["reference_ms"] > 0 for s in first)
    assert all(s["memory_reference_ms"] > 0 for s in first)  # the memory-bound reference, timed in the same rounds
    assert all(s["ratio"] == pytest.approx(s["latency_ms"] / s["reference_ms"], rel=0.5) for s in first)
    more = measure_samples("onnxruntime", 1, minutes=5, max_models=3, journal=journal, workers=1, rounds=1)
    assert more[:2] == first and len(more) == 3  # kept the two, measured one more
    assert more[2]["spec"] not in [s["spec"] for s in first]
    assert all(s["ratio"] == pytest.approx(s["latency_ms"] / s["reference_ms"], rel=1e-9) for s in more)
    assert all(s["p50_ms"] >= s["latency_ms"] for s in more)  # the fastest call never exceeds the median
    assert 0 < more[0]["elapsed_s"] <= more[1]["elapsed_s"] <= more[2]["elapsed_s"]
    # a resumed calibration keeps its clock: with its minutes spent, it measures nothing more
    lines = journal.read_text().splitlines()
    last = json.loads(lines[-1])
    journal.write_text("\n".join([*lines[:-1], json.dumps({**last, "elapsed_s": 301.0})]) + "\n")
    assert len(measure_samples("onnxruntime", 1, minutes=5, max_models=10, journal=journal, workers=1)) == 3
    with pytest.raises(EdgeoptError, match="cannot calibrate"):
        measure_samples("torch", 1, max_models=1)


def test_calibration_starts_no_model_that_would_end_past_its_budget(tmp_path, monkeypatch) -> None:
    def slow_ratios(runtime, paths, *args, **kwargs):  # timing a model costs 0.8 s
        time.sleep(0.8 * len(paths))
        return [calibrate_module.RatioTiming(1.0, 0.1, 0.1, 0.1, 0.1) for _ in paths]

    monkeypatch.setattr(calibrate_module, "export_arch", lambda spec, *args: {"spec": spec, "kernels": [], "macs": 0})
    monkeypatch.setattr(calibrate_module, "measured_ratios", slow_ratios)
    monkeypatch.setattr(calibrate_module, "kernel_times", lambda *args: None)
    samples = measure_samples("onnxruntime", 1, minutes=0.05, workers=1)  # 3 s: room for three, not a fourth
    assert len(samples) == 3 and samples[-1]["elapsed_s"] <= 3.0
    # ``calibrate``'s budget covers the fit too: measuring stops FIT_RESERVE_S early (or halfway, for a short one)
    assert calibrate_module.measuring_minutes(15) * 60 == 900 - calibrate_module.FIT_RESERVE_S
    assert calibrate_module.measuring_minutes(0.2) == pytest.approx(0.1)


def run_cli(capfd: pytest.CaptureFixture[str], args: list[str]) -> tuple[int, str, str]:
    from edgeopt.cli import main

    rc = main(args)
    out, err = capfd.readouterr()
    return rc, out, err


def test_measure_samples_times_given_specs_in_order_and_resumes_past_those_timed(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(calibrate_module, "export_arch", lambda spec, *args: {"spec": spec, "kernels": [], "macs": 0})
    monkeypatch.setattr(calibrate_module, "measured_ratios", lambda runtime, paths, *args, **kwargs: [
        calibrate_module.RatioTiming(1.0, 0.1, 0.1, 0.1, 0.1) for _ in paths])  # fmt: skip
    monkeypatch.setattr(calibrate_module, "kernel_times", lambda *args: None)
    rng = np.random.default_rng(5)
    specs = [sample_arch(rng) for _ in range(5)]
    journal = tmp_path / "designed.jsonl"
    first = measure_samples("onnxruntime", 1, minutes=5, journal=journal, workers=1, specs=specs[:3])
    assert [s["spec"] for s in first] == specs[:3]  # exactly these, in order, and then it stops
    again = measure_samples("onnxruntime", 1, minutes=5, journal=journal, workers=1, specs=specs)
    assert [s["spec"] for s in again] == specs and again[:3] == first  # only the two not timed yet were timed
    assert measure_samples("onnxruntime", 1, journal=journal, workers=1, specs=specs[3:]) == again[3:]
    other = [sample_arch(rng) for _ in range(2)]  # another design on the same journal: the old samples count nothing
    fresh = measure_samples("onnxruntime", 1, 5, max_models=2, journal=journal, workers=1, specs=other)
    assert [s["spec"] for s in fresh] == other


@pytest.mark.parametrize(("references", "chunks_timed", "kept"), [
    # the second chunk met a slow phase and was timed again after the third; later, with two chunks deferred (the
    # most allowed here), a third slow one is kept as timed, and at the end the two deferred as they time
    ([0.1, 0.13, 0.1, 0.1, 0.13, 0.13, 0.13, 0.13, 0.13], [0, 1, 2, 1, 3, 4, 5, 3, 4], [0, 2, 1, 5, 3, 4]),
    # a deferred chunk still slow when timed again is kept as timed, and the next waits for another quiet chunk
    ([0.1, 0.13, 0.13, 0.1, 0.13, 0.1, 0.1], [0, 1, 2, 3, 1, 4, 2], [0, 3, 1, 4, 2]),
])  # fmt: skip
def test_a_chunk_still_slow_after_its_rounds_is_timed_again_after_a_quiet_one(
    references, chunks_timed, kept, monkeypatch
) -> None:
    monkeypatch.setattr(calibrate_module, "export_arch", lambda spec, *args: {"spec": spec, "kernels": [], "macs": 0})
    monkeypatch.setattr(calibrate_module, "kernel_times", lambda *args: None)
    timed_refs = iter(references)  # the reference's time for each chunk timed, in turn
    calls: list[int] = []

    def ratios(runtime, paths, *args, **kwargs):  # chunks of two: artifact m<2c> is the first of chunk c
        calls.append(int(os.path.basename(paths[0])[1:].split(".")[0]) // 2)
        ref = next(timed_refs)
        return [calibrate_module.RatioTiming(1.0, ref, ref, ref, ref) for _ in paths]

    monkeypatch.setattr(calibrate_module, "measured_ratios", ratios)
    monkeypatch.setattr(calibrate_module, "MAX_DEFERRED", 2)
    specs = [sample_arch(np.random.default_rng(i)) for i in range(2 * len(kept))]
    got = measure_samples("onnxruntime", 1, minutes=5, workers=1, specs=specs)
    assert calls == chunks_timed
    assert [s["spec"] for s in got] == [specs[2 * c + i] for c in kept for i in (0, 1)]
    last = {c: references[len(calls) - 1 - calls[::-1].index(c)] for c in kept}  # each chunk's last timing
    assert [s["reference_ms"] for s in got] == [last[c] for c in kept for _ in (0, 1)]


def test_transfer_times_the_designed_models_saves_and_resumes_after_an_interruption(
    tmp_path, synthetic, monkeypatch
) -> None:
    import edgeopt.hardware.transfer_design as design_module

    rng = np.random.default_rng(7)
    specs = [sample_arch(rng, "resnet") for _ in range(8)]
    asked: list[bool] = []
    monkeypatch.setattr(design_module, "designed_specs", lambda _, seed, by_kernels: asked.append(by_kernels) or specs)

    def exported(spec, *args):  # the real kernels, no runtime file; the runtime rejects the second design
        if spec == specs[1]:
            raise EdgeoptError("rejected")
        return {"spec": spec, "kernels": [kernel_to_json(k) for k in kernels_of_model(arch_model(spec))], "macs": 0}

    monkeypatch.setattr(calibrate_module, "export_arch", exported)
    timed: list[int] = []

    def ratios(runtime, paths, *args, **kwargs):  # the second chunk is interrupted, the first time
        timed.append(len(paths))
        if len(timed) == 2:
            raise KeyboardInterrupt
        return [calibrate_module.RatioTiming(1.0, 0.1, 0.1 * (i + 1), 0.1, 0.1) for i in range(len(paths))]

    monkeypatch.setattr(calibrate_module, "measured_ratios", ratios)
    monkeypatch.setattr(calibrate_module, "kernel_times", lambda *args: None)
    monkeypatch.setattr(os, "cpu_count", lambda: 1)  # chunks of two models, exported in this process
    base, out = _profile(synthetic), tmp_path / "two_threads.json"
    with pytest.raises(KeyboardInterrupt):
        calibrate_module.transfer(base, "onnxruntime", 2, measurements=6, out=out)
    journal = tmp_path / "two_threads.json.samples.jsonl"
    assert not out.exists() and len(journal.read_text().splitlines()) == 1 + 1  # the header, the first design
    moved = calibrate_module.transfer(base, "onnxruntime", 2, measurements=6, out=out)
    # resumed: five more timed, the seventh design standing in for the rejected one, the eighth never timed
    assert timed == [1, 2, 1, 2, 2] and [s["spec"] for s in moved.samples] == [specs[0], *specs[2:7]]
    assert load_profile(out).transferred_from["threads"] == 1 and not journal.exists()
    assert asked == [False, False]  # the same kernel library: the design on the base predictor's view


def test_calibration_times_again_the_models_furthest_above_prediction_and_keeps_the_faster(
    tmp_path, monkeypatch
) -> None:
    # the pure parts: which models are picked (only those measured above prediction), and which timing is kept
    assert calibrate_module.slowest_against_prediction(np.array([1.0, 1.5, 0.5, 1.2]), np.ones(4), 0.5) == [1, 3]
    assert calibrate_module.slowest_against_prediction(np.array([0.9, 0.8]), np.ones(2), 1.0) == []
    a, b, c = ({"spec": {"n": i}, "kernels": [], "latency_ms": 1.0, "reference_ms": 0.1} for i in range(3))
    a["elapsed_s"] = 5.0  # on the calibration's clock; its second timing's, 1.0 s, is the re-timing's
    faster = {**a, "latency_ms": 0.8, "reference_ms": 0.1, "elapsed_s": 1.0}
    slower = {**b, "latency_ms": 1.0, "reference_ms": 0.08}
    within = {**c, "latency_ms": 0.97}  # faster, but within RETIME_MARGIN: noise, the first timing stays
    kept = calibrate_module.keep_faster([a, b, c], [faster, slower, within])  # b's second: a slower machine
    assert kept == [{**faster, "elapsed_s": 5.0, "timings": 2, "first_latency_ms": 1.0}, {**b, "timings": 2},
                    {**c, "timings": 2}]  # fmt: skip

    rng = np.random.default_rng(3)
    specs = [sample_arch(rng, "mlp") for _ in range(40)]
    kernels = [kernels_of_model(arch_model(spec)) for spec in specs]
    paths: dict[str, dict] = {}

    def exported(spec, runtime, path):  # the real kernels (none for the references), no runtime file
        paths[str(path)] = spec
        own = kernels[specs.index(spec)] if spec in specs else []
        return {"spec": spec, "kernels": [kernel_to_json(k) for k in own], "macs": 0}

    def true_ms(spec) -> float:  # an additive truth the predictor can learn
        return 0.01 + 0.005 * len(spec["widths"]) + 1e-7 * sum(k.macs for k in kernels[specs.index(spec)])

    timed: list[dict] = []

    def ratios(runtime, model_paths, *args, **kwargs):  # spec 7, the first time: a slow phase no reference saw
        out = []
        for path in model_paths:
            spec = paths[str(path)]
            ms = true_ms(spec) * (1.6 if spec == specs[7] and spec not in timed else 1.0)
            timed.append(spec)
            out.append(calibrate_module.RatioTiming(ms / 0.1, 0.1, ms, ms, 0.05))
        return out

    monkeypatch.setattr(calibrate_module, "export_arch", exported)
    monkeypatch.setattr(calibrate_module, "measured_ratios", ratios)
    monkeypatch.setattr(calibrate_module, "kernel_times", lambda *args: None)
    drawn = iter(specs)
    monkeypatch.setattr(calibrate_module, "sample_arch", lambda rng: next(drawn))
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    out = tmp_path / "ort.json"
    profile = calibrate_module.calibrate("onnxruntime", minutes=15, out=out, max_models=40)
    assert timed[:40] == specs and specs[7] in timed[40:]  # two (5% of 40) timed again, spec 7 among them
    retimed = [s for s in profile.samples if s.get("timings") == 2]
    assert len(retimed) == 2 and len(timed) == 42
    assert next(s for s in profile.samples if s["spec"] == specs[7])["latency_ms"] == pytest.approx(true_ms(specs[7]))
    assert len(profile.predictor.cv["cv_ms"]) == 40  # refitted on the kept times
    first, again = calibrate_module.fit_retimed(profile.samples, "onnxruntime", 1)  # nothing slow left: no refit
    assert again.predictor is first.predictor and len(timed) == 44
    calibrate_module.fit_retimed(profile.samples, "onnxruntime", 1, deadline=time.monotonic())
    assert len(timed) == 44  # no time left before the deadline: nothing timed again
    assert out.exists() and not list(tmp_path.glob("*.jsonl"))  # both journals gone once the profile is saved
    # resumed from a journal that took the whole budget: its time counts, so nothing is timed again
    resumed = tmp_path / "resumed.json"
    head = {"runtime": "onnxruntime", "threads": 1, "fingerprint": machine_fingerprint("onnxruntime")}
    lines = [head, *({**s, "elapsed_s": 15 * 60.0} for s in profile.samples)]
    (tmp_path / "resumed.json.samples.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    again = calibrate_module.calibrate("onnxruntime", minutes=15, out=resumed, max_models=40)
    assert len(timed) == 44 and again.calibration_seconds >= 15 * 60


def test_transfer_across_kernel_libraries_fits_the_new_runtimes_own_kernels(synthetic) -> None:
    base = _profile(synthetic)  # ONNX Runtime: MLAS kernels
    profiled = [{**s, "kernel_us": [1e3 * s["latency_ms"] / len(s["kernels"])] * len(s["kernels"])}
                for s in base.samples[:20]]  # fmt: skip
    moved = calibrate_module.transfer(base, "executorch", samples=profiled)  # XNNPACK kernels
    assert moved.predictor.cv["transfer_form"] == "own_kernels" and moved.predictor.kernel_model is not None
    assert moved.transferred_from["runtime"] == "onnxruntime"
    from edgeopt.hardware.predict import error_band_meaning

    assert "20 models timed for this transfer" in error_band_meaning(moved)  # its band: leave-one-out of the 20
    assert "calibration models" in error_band_meaning(base)
    # too few models profiled (under half): the base's kernel costs re-scaled by group
    few = [*profiled[:9], *base.samples[9:20]]
    assert calibrate_module.transfer(base, "executorch", samples=few).predictor.cv["transfer_form"] == "group_stage"
    assert calibrate_module.other_library("onnxruntime", "litert")
    assert not calibrate_module.other_library("litert", "executorch")
    assert not calibrate_module.other_library("onnxruntime", "onnxruntime")


def test_predict_cli_runtime_profile_and_mcu_preset(tmp_path, synthetic, capfd) -> None:
    prof = _profile(synthetic, {**machine_fingerprint("onnxruntime"), "cpu_model": "Cortex-A76"})
    prof.save(tmp_path / "p.json")
    code, out, err = run_cli(capfd, ["hw", "predict", "zoo:lenet5", "--profile", str(tmp_path / "p.json"), "--json"])
    assert code == 0, err
    r = json.loads(out)
    lo, hi = r["latency_ms_band"]
    assert lo < r["latency_ms"] < hi
    assert r["macs"] > 0 and r["params"] > 0 and r["flash_bytes"] > r["params"]  # float weights: 4 B each
    assert r["arena_bytes"] > 0 and r["arena_source"]
    assert r["energy_mj_estimate"] > 0 and "Horowitz" in r["energy"]["source"]
    assert "recalibrate" in err and "Cortex-A76" in err  # calibrated elsewhere: warned, with the command
    code, out, err = run_cli(capfd, ["hw", "predict", "zoo:mobilenetv2", "--profile", "mcu:nrf52840", "--json"])
    assert code == 0, err
    r = json.loads(out)
    assert r["latency_is_estimate"] and isinstance(r["fits"], bool)
    code, _, err = run_cli(capfd, ["hw", "predict", "zoo:lenet5", "--profile", "mcu:nosuchboard"])
    assert code == 2 and "nosuchboard" in err


def test_transfer_cli_warns_before_timing_across_kernel_libraries(tmp_path, synthetic, capfd, monkeypatch) -> None:
    prof = _profile(synthetic)  # an ONNX Runtime profile
    prof.save(tmp_path / "p.json")
    calls: list[tuple[str, int]] = []

    def fake_transfer(base, runtime, threads=1, measurements=20, out=None):  # no timing: what was asked
        calls.append((runtime, threads))
        moved = replace(prof.predictor, cv={"transfer_loo_within_10pct": 0.85})
        return DeviceProfile(runtime, threads, prof.fingerprint, moved, prof.samples[:measurements])

    monkeypatch.setattr(calibrate_module, "transfer", fake_transfer)
    monkeypatch.setattr(environment, "usable_cores", lambda: 8)
    args = ["hw", "transfer", "--profile", str(tmp_path / "p.json"), "--out", str(tmp_path / "t.json"), "--json"]
    code, out, err = run_cli(capfd, [*args, "--runtime", "executorch"])
    assert code == 0, err
    assert "MLAS" in err and "XNNPACK" in err and "hw calibrate --runtime executorch" in err
    assert "hw calibrate --runtime executorch" in json.loads(out)["warning"]
    assert json.loads(out)["fit_within_10pct"] == 0.85  # the leave-one-out share of its own timings
    code, out, err = run_cli(capfd, [*args, "--runtime", "onnxruntime", "--threads", "2"])  # one library: trusted
    assert code == 0 and "warning" not in json.loads(out) and "warning" not in err
    assert calls == [("executorch", 1), ("onnxruntime", 2)]
    assert calibrate_module.transfer_warning("litert", "executorch") is None
    monkeypatch.setattr(environment, "usable_cores", lambda: 2)  # every core timed: said before timing
    code, out, err = run_cli(capfd, [*args, "--runtime", "onnxruntime", "--threads", "2"])
    assert code == 0 and "2 threads on 2 usable cores" in err and "warning" not in json.loads(out)


def test_threads_warning_only_when_every_core_runs_the_model() -> None:
    assert calibrate_module.threads_warning(1, 2) is None and calibrate_module.threads_warning(2, 4) is None
    assert "±10%" in calibrate_module.threads_warning(2, 2) and calibrate_module.threads_warning(4, 2)
    assert 1 <= (environment.usable_cores() or 0) <= (os.cpu_count() or 1)


def test_latency_search_asks_the_profile_and_confirms_by_timing_once(synthetic, tmp_path, monkeypatch) -> None:
    import edgeopt.compress.prune.netadapt as netadapt
    from edgeopt.compress.prune.netadapt import latency_source, runtime_latency
    from edgeopt.compress.workflows import TuneSettings, prune_model
    from edgeopt.data import load_dataset
    from edgeopt.hardware.kernels import kernels_of_model
    from edgeopt.models import create_model

    _, source = latency_source("onnxruntime", 1)  # no profile calibrated on this (isolated) machine
    assert source == {"latency": "measured"}
    prof = _profile(synthetic)
    prof.save(tmp_path / "p.json")
    with pytest.raises(EdgeoptError, match="one --profile per --runtime"):
        latency_source("onnxruntime,executorch", 1, str(tmp_path / "p.json"))
    with pytest.raises(EdgeoptError, match="not executorch"):
        latency_source("executorch", 1, str(tmp_path / "p.json"))

    torch.manual_seed(0)
    model = create_model("resnet8", input_shape=(1, 8, 8))
    data = load_dataset("digits").take(128)
    # the synthetic profile's units are not this machine's milliseconds: the input model, timed once, rescales them
    timed = runtime_latency("onnxruntime")([model])[0]
    target = 0.9 * timed
    # the input model keeps this timing when the search times it again (its anchor): two timings of one model
    # on a shared VM can differ by more than the 10% the target leaves
    real_timer = netadapt.runtime_latency
    as_input = kernels_of_model(model)

    def same_clock(runtime, threads=1, *args, **kwargs):
        timer = real_timer(runtime, threads, *args, **kwargs)
        return lambda models: [timed if kernels_of_model(x) == as_input else timer([x])[0] for x in models]

    monkeypatch.setattr(netadapt, "runtime_latency", same_clock)
    # the landing model's confirmation timing, made to agree with the scaled profile (a tiny model's real time
    # is mostly fixed overhead, which the synthetic profile lacks; tests/test_prune_channel.py covers a miss)
    beside: list[float] = []

    def timed_beside(anchor, anchor_ms, runtime, threads=1):
        scale = anchor_ms / prof.predict_ms(kernels_of_model(anchor))
        beside.append(scale)
        return lambda models: [scale * prof.predict_ms(kernels_of_model(x)) for x in models]

    monkeypatch.setattr(netadapt, "timed_beside", timed_beside)
    res = prune_model(model, data, target_latency_ms=target, profile=str(tmp_path / "p.json"),
                      settings=TuneSettings(epochs=0), reconstruct=False)  # fmt: skip
    m = res.metrics
    assert m["latency_source"]["latency"] == "predicted"
    anchor = m["latency_source"]["anchor"]  # the input model timed once, its prediction scaled to that
    assert anchor["scale"] == pytest.approx(anchor["measured_ms"] / prof.predict_ms(kernels_of_model(model)))
    assert m["latency_search"]["start_ms"] == pytest.approx(anchor["measured_ms"])
    assert m["latency_search"]["final_ms"] <= target * 1.05  # the scaled prediction met the target
    assert beside and len(m["latency_search"]["confirmations"]) == 1  # timed once where the search landed
    check = m["latency_check"]
    assert check["predicted_ms"] == pytest.approx(anchor["scale"] * prof.predict_ms(kernels_of_model(res.model)))
    assert check["measured_ms"] > 0 and check["error_pct"] == pytest.approx(
        (check["predicted_ms"] / check["measured_ms"] - 1) * 100
    )
