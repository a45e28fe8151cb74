"""Per-kernel times from the runtimes' profilers, their attribution to kernels, and the per-kernel model."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest

from edgeopt.hardware.calibrate import export_arch, kernel_times
from edgeopt.hardware.kernels import Kernel, kernel_from_json
from edgeopt.hardware.op_timings import OpTime, attribute, graph_compute_shapes, ort_op, xnnpack_op
from edgeopt.hardware.predictor import KERNEL_GROUPS, KERNEL_TERMS, LatencyPredictor, ensemble_selection, sped_up


def _conv(cin: int, cout: int, k: int, hw: int, kind: str = "conv") -> Kernel:
    macs = hw * cout * (1 if kind == "dwconv" else cin) * k
    return Kernel(kind, macs, 4 * hw * cin, 4 * hw * cout, 4 * cout * cin * k, cin, cout, k, 1, hw)


# a residual stage: stem, body conv 1, body conv 2, shortcut 1×1, add, pool, linear
STAGE = [_conv(3, 16, 9, 64), _conv(16, 32, 9, 16), _conv(32, 32, 9, 16), _conv(16, 32, 1, 16),
         Kernel("add", 0, 4096, 2048, 0), Kernel("pool", 0, 2048, 128, 0),
         Kernel("linear", 320, 128, 40, 1320, 32, 10, 1, 1, 1)]  # fmt: skip


def test_runtime_operators_are_named_by_the_kernel_kind_they_run() -> None:
    dw = ort_op("Conv", [[1, 32, 8, 8], [32, 1, 3, 3], [32]], [[1, 32, 8, 8]], 5.0)
    assert (dw.kind, dw.shape) == ("dwconv", (9, 64))
    assert ort_op("Conv", [[1, 16, 8, 8], [32, 16, 1, 1]], [[1, 32, 4, 4]], 1.0) == OpTime("conv", 1.0, (1, 16))
    assert ort_op("ReorderInput", [[1, 20, 8, 8]], [[1, 32, 8, 8]], 2.0).kind == "glue"
    assert ort_op("Gemm", [[1, 32], [10, 32]], [[1, 10]], 1.0).kind == "linear"
    assert xnnpack_op("Convolution (NHWC, F32) DWConv #1", 3.0, (9, 64)) == OpTime("compute", 3.0, (9, 64))
    assert xnnpack_op("Fully Connected (NC, F32) GEMM #1", 3.0).kind == "compute"
    assert xnnpack_op("Clamp (NC) #1", 1.0).kind == "glue"
    assert xnnpack_op("Add (ND) #1", 1.0).kind == "add"


def test_attribution_pairs_convolutions_by_shape_and_hands_glue_to_the_kernel_before() -> None:
    # ONNX Runtime's order: the shortcut before the body's second conv, the add folded into that conv,
    # a layout reorder after it
    ops = [OpTime("glue", 1.0), OpTime("conv", 10.0, (9, 64)), OpTime("conv", 20.0, (9, 16)),
           OpTime("conv", 3.0, (1, 16)), OpTime("conv", 25.0, (9, 16)), OpTime("glue", 2.0),
           OpTime("pool", 1.5), OpTime("linear", 0.5)]  # fmt: skip
    assert attribute(STAGE, ops) == [11.0, 20.0, 27.0, 3.0, 0.0, 1.5, 0.5]
    # XNNPACK: convolutions and matmuls are one kind, told apart by the serialised graph's shapes; here
    # the shortcut runs before the body, as a matmul, and a clamp follows the add
    ops = [xnnpack_op("Convolution (NHWC, F32) IGEMM #1", 10.0, (9, 64)),
           xnnpack_op("Fully Connected (NC, F32) GEMM #1", 3.0, (1, 16)),
           xnnpack_op("Convolution (NHWC, F32) IGEMM #2", 20.0, (9, 16)),
           xnnpack_op("Convolution (NHWC, F32) IGEMM #3", 25.0, (9, 16)), xnnpack_op("Add (ND) #1", 1.0),
           xnnpack_op("Clamp (NC) #1", 0.5), xnnpack_op("Mean (ND) Reduce2 #1", 1.5),
           xnnpack_op("Fully Connected (NC, F32) GEMM #2", 0.5, (1, 1))]  # fmt: skip
    assert attribute(STAGE, ops) == [10.0, 20.0, 25.0, 3.0, 1.5, 1.5, 0.5]


def test_attribution_refuses_operators_that_do_not_line_up() -> None:
    good = [OpTime("conv", 10.0, (9, 64)), OpTime("conv", 20.0, (9, 16)), OpTime("conv", 25.0, (9, 16)),
            OpTime("conv", 3.0, (1, 16)), OpTime("pool", 1.5), OpTime("linear", 0.5)]  # fmt: skip
    assert attribute(STAGE, good) is not None
    assert attribute(STAGE, [*good, OpTime("conv", 1.0, (9, 64))]) is None  # a convolution no kernel takes
    assert attribute(STAGE, good[1:]) is None  # a kernel no operator ran
    assert attribute(STAGE, [good[0], good[1], OpTime("conv", 3.0, (1, 99)), *good[2:]]) is None  # wrong shape
    xnn = [xnnpack_op("Convolution", 1.0, shape) for shape in ((9, 64), (9, 16), (9, 16), (1, 16))]
    fc = xnnpack_op("Fully Connected", 1.0, (1, 1))
    assert attribute(STAGE, [*xnn, OpTime("pool", 1.0), fc]) is not None
    assert attribute(STAGE, [*xnn[:3], replace(xnn[3], shape=(1, 64)), OpTime("pool", 1.0), fc]) is None


def test_xnnpack_graph_gives_convolution_and_matmul_shapes_in_node_order() -> None:
    def value(i: int, dims: list[int]) -> dict:
        return {"xvalue_union_type": "XNNTensorValue", "xvalue_union": {"id_out": i, "dims": dims}}

    def conv(kind: str, k: int, out: int) -> dict:
        return {"xnode_union_type": kind, "xnode_union": {"kernel_height": k, "kernel_width": k, "output_id": out}}

    graph = {
        "xvalues": [value(0, [1, 8, 8, 3]), value(1, [1, 8, 8, 16]), value(2, [1, 4, 4, 32]), value(3, [1, 4, 4, 32]),
                    value(4, [1, 32]), value(5, [1, 10])],
        "xnodes": [conv("XNNDepthwiseConv2d", 3, 1), conv("XNNConv2d", 5, 2),
                   {"xnode_union_type": "XNNClamp", "xnode_union": {"output_id": 3}},
                   {"xnode_union_type": "XNNFullyConnected", "xnode_union": {"output_id": 5}}],
    }  # fmt: skip
    assert graph_compute_shapes(graph) == [(9, 64), (25, 16), (1, 1)]


@pytest.mark.parametrize("runtime", ["onnxruntime", "executorch", "litert"])
def test_profiled_kernel_times_of_a_real_model_line_up_and_add_up(runtime, tmp_path, monkeypatch) -> None:
    from edgeopt.hardware.calibrate import measured_ratios

    # NHWC input and explicit padding: XNNPACK then runs each block's shortcut before its body
    spec = {"family": "resnet", "input_shape": [1, 16, 16], "num_classes": 10, "stem": 8, "widths": [16, 32],
            "depths": [1, 1], "kernels": [5, 5], "strides": [1, 2], "nhwc": True, "explicit_pad": True}  # fmt: skip
    path = tmp_path / {"onnxruntime": "m.onnx", "executorch": "m.pte", "litert": "m.tflite"}[runtime]
    feats = export_arch(spec, runtime, path)
    times = kernel_times(runtime, path, feats["kernels"], 1)
    assert times is not None and len(times) == len(feats["kernels"])
    kernels = [kernel_from_json(k) for k in feats["kernels"]]
    assert min(t for t, k in zip(times, kernels, strict=True) if k.type == "conv" and k.k > 1) > 0
    # whichever order the runtime ran them in, each block's 1×1 shortcut (body conv 1, body conv 2,
    # shortcut in edgeopt's kernels) took far less than its body's convolutions
    shortcuts = [i for i, k in enumerate(kernels) if k.type == "conv" and k.k == 1]
    assert len(shortcuts) == 2
    assert all(times[i] < min(times[i - 2], times[i - 1]) / 3 for i in shortcuts)
    # the profiled kernels account for the model's time, give or take the profilers' per-operator cost
    (timing,) = measured_ratios(runtime, [path], path, rounds=2)
    assert 0.3 < sum(times) / 1e3 / timing.model_ms < 3.0
    if runtime == "litert":  # a LiteRT whose profiler's layout was not read: no kernel times, no misread memory
        from edgeopt.hardware import litert_profiler

        monkeypatch.setattr(litert_profiler, "SUPPORTED_VERSIONS", ("0.0.0",))
        assert kernel_times(runtime, path, feats["kernels"], 1) is None
    if runtime == "executorch":  # a delegate graph that cannot be read costs the kernel times, not the sample
        import subprocess

        from executorch.exir._serialize import _flatbuffer

        def broken(*args, **kwargs):
            raise subprocess.CalledProcessError(1, "flatc")

        monkeypatch.setattr(_flatbuffer, "_flatc_decompile", broken)
        assert kernel_times(runtime, path, feats["kernels"], 1) is None


def _kernel_world(n: int, seed: int) -> tuple[list[list[Kernel]], list[list[float]], np.ndarray]:
    """Models whose kernels cost what no sum of linear terms can say: a convolution's speed rises with
    its output channels along a curve, and is halved when the kernel before it is a depthwise one."""
    rng = np.random.default_rng(seed)
    models, times = [], []
    for _ in range(n):
        ks: list[Kernel] = []
        for _ in range(int(rng.integers(3, 10))):
            kind = "dwconv" if rng.random() < 0.3 else "conv"
            cout = int(rng.choice([8, 12, 16, 24, 32, 48, 64, 96]))
            cin = cout if kind == "dwconv" else int(rng.choice([8, 16, 32, 64]))
            ks.append(_conv(cin, cout, int(rng.choice([1, 9])), int(rng.choice([16, 64, 256])), kind))
        us = []
        for i, k in enumerate(ks):
            speed = 1.0 / (1.0 + math.exp(-(k.cout - 32) / 8))  # 0..1 GMAC/s
            slow = 2.0 if i and ks[i - 1].type == "dwconv" else 1.0
            us.append(slow * k.macs / 1e3 / (0.2 + speed) + 1.0)
        models.append(ks)
        times.append(us)
    latency = np.array([sum(t) / 1e3 + 0.002 for t in times])
    return models, times, latency


def test_predictor_chooses_the_per_kernel_model_when_kernel_times_explain_latency() -> None:
    models, times, y = _kernel_world(120, 0)
    p = LatencyPredictor.fit(models[:100], y[:100], kernel_us=times[:100], correction=False, ensemble=False)
    cands = p.cv["candidates"]
    assert p.cv["chosen"] in cands and p.cv["chosen"].startswith("kernel") and p.kernel_model is not None
    assert {"kernel_by_share", "kernel_by_share_tuned"} <= set(cands)  # kernels weighted by their time share
    assert cands["kernel"]["within_10pct"] > cands["additive"]["within_10pct"] + 0.2
    pred = p.predict_many(models[100:])
    assert np.median(np.abs(pred / y[100:] - 1)) < 0.05  # unseen models
    again = LatencyPredictor.from_json(json.loads(json.dumps(p.to_json())))
    assert np.array_equal(again.predict_many(models[100:]), pred)
    # per-kernel shares plus the count and constant terms make the prediction
    w = dict(zip(p.terms, p.weights, strict=True))
    ks = models[100]
    assert sum(p.kernel_ms(ks)) + w["kernels.n"] * len(ks) + w["model.n"] == pytest.approx(p.predict(ks), rel=1e-9)
    # a transferred profile keeps the per-kernel model and only maps its output
    t = p.transferred(models[100:], 2 * y[100:])
    assert t.kernel_model == p.kernel_model
    assert np.median(np.abs(t.predict_many(models[100:]) / (2 * y[100:]) - 1)) < 0.05
    # a sibling runtime on the same kernels (LiteRT beside ExecuTorch): kernels 30% slower, 10 µs more
    # per operator and 50 µs per call, which no map of the total alone follows
    sibling = np.array([1.3 * sum(t) / 1e3 + 0.01 * len(t) + 0.05 for t in times])
    t = p.transferred(models[100:], sibling[100:])
    assert t.cv["transfer_form"] == "group_stage" and t.kernel_model == p.kernel_model
    assert np.median(np.abs(t.predict_many(models[:100]) / sibling[:100] - 1)) < 0.05
    # calibrated there without kernel times, the given per-kernel model prices the kernels
    s = LatencyPredictor.fit(models[:100], sibling[:100], correction=False, kernel_model=p.kernel_model)
    assert set(s.cv["ensemble"]) <= {"kernel", "kernel_tuned"} and s.cv["kernel_model_given"]
    assert "kernel_by_share" not in s.cv["candidates"]  # a lent model is fitted already
    assert s.lendable_kernel_model() == p.kernel_model
    assert np.median(np.abs(s.predict_many(models[100:]) / sibling[100:] - 1)) < 0.05
    # a sibling whose 1×1 convolutions run at half the speed: the lent model misprices them, and tuning
    # it to the sibling's whole-model times (no kernel times there) learns which kernels differ
    slow_1x1 = np.array([sum(u * (2.0 if k.k == 1 else 1.0) for u, k in zip(t, m, strict=True)) / 1e3 + 0.002
                         for t, m in zip(times, models, strict=True)])  # fmt: skip
    d = LatencyPredictor.fit(models[:100], slow_1x1[:100], correction=False, kernel_model=p.kernel_model)
    cands = d.cv["candidates"]
    assert d.cv["chosen"] == "kernel_tuned" and d.kernel_tuning is not None
    assert cands["kernel_tuned"]["median_abs_pct"] < cands["kernel"]["median_abs_pct"] / 2
    assert np.median(np.abs(d.predict_many(models[100:]) / slow_1x1[100:] - 1)) < 0.05
    assert LatencyPredictor.from_json(json.loads(json.dumps(d.to_json()))).kernel_tuning == d.kernel_tuning
    # the same from 20 timings, transferred: the group stage scales the 1×1 convolutions apart
    g = p.transferred(models[100:120], slow_1x1[100:120])
    scales = dict(zip(KERNEL_GROUPS, g.group_stage, strict=False))
    assert scales["conv1x1"] > 1.5 * scales["conv"]
    assert np.median(np.abs(g.predict_many(models[:100]) / slow_1x1[:100] - 1)) < 0.05
    *_, per_kernel, constant = g.group_stage  # kernels' shares, scaled by group, plus count and constant
    ks = models[0]
    assert sum(g.kernel_ms(ks)) + per_kernel * len(ks) + constant == pytest.approx(g.predict(ks), rel=1e-9)
    again = LatencyPredictor.from_json(json.loads(json.dumps(g.to_json())))
    assert np.array_equal(again.predict_many(models[:100]), g.predict_many(models[:100]))
    # another thread count: large kernels run twice as fast, microsecond ones no faster. The transfer
    # blends the refitted linear stage with the per-kernel speedup form (offered for thread counts only)
    two = np.array([sped_up(np.array(t) / 1e3, 0.002, (2.0, 0.5, 1.0, 0.0)) for t in times])  # half-way at 0.5 ms
    t = p.transferred(models[100:], two[100:], other_threads=True)
    stage, sped = t.members
    assert t.cv["transfer_form"] == "kernel_blend" and t.member_weights == [0.5, 0.5]
    assert stage.terms == KERNEL_TERMS and stage.kernel_speedup is None and sped.kernel_speedup is not None
    blend = np.sqrt(stage.predict_many(models[:100]) * sped.predict_many(models[:100]))
    assert np.allclose(t.predict_many(models[:100]), blend, rtol=1e-12)
    assert np.median(np.abs(sped.predict_many(models[:100]) / two[:100] - 1)) < 0.05  # the speedup form follows
    assert np.median(np.abs(blend / two[:100] - 1)) < 0.05
    js = t.to_json()  # the two members share the per-kernel model's text, stored once
    assert js["kernel_models"] == [p.kernel_model] and [m["kernel_model"] for m in js["members"]] == [0, 0]
    again = LatencyPredictor.from_json(json.loads(json.dumps(js)))
    assert np.array_equal(again.predict_many(models[:100]), t.predict_many(models[:100]))
    assert again.lendable_kernel_model() == p.kernel_model
    # each kernel's share is sped up as the prediction speeds it: a big kernel's share shrinks, a tiny one's not
    speedup, half_ms, factor, _ = sped.kernel_speedup
    before, after = np.array(p.kernel_ms(ks)), np.array(sped.kernel_ms(ks))
    assert sum(after) == pytest.approx(sped_up(before, 0.0, (speedup, half_ms, factor, 0.0)), rel=1e-9)
    big, tiny = int(np.argmax(before)), int(np.argmin(np.where(before > 0, before, np.inf)))
    assert after[big] / before[big] < after[tiny] / before[tiny]
    assert "kernel_speedup" not in p.transferred(models[100:], two[100:]).cv["transfer_loo_median_pct"]
    # without kernel times (or too few) only the additive terms are candidates
    q = LatencyPredictor.fit(models[:100], y[:100], kernel_us=[None] * 70 + times[70:100], correction=False)
    assert q.kernel_model is None and set(q.cv["candidates"]) == {"additive"}


def test_share_weights_follow_each_kernels_share_of_its_model() -> None:
    from edgeopt.hardware.kernel_model import share_weights

    w = share_weights([[90.0, 10.0], [1.0, 1.0, 1.0, 1.0], [0.0]])
    expected = [0.9**0.5 + 0.02, 0.1**0.5 + 0.02, 0.52, 0.52, 0.52, 0.52, 0.02]
    assert w == pytest.approx(expected)  # a fused-away kernel (0 µs) keeps the floor


def test_consistent_kernel_times_keep_the_profilers_shares_and_the_timings_totals() -> None:
    from edgeopt.hardware.kernel_model import consistent_kernel_us

    rng = np.random.default_rng(0)
    true = [np.exp(rng.uniform(math.log(0.5), math.log(200.0), int(rng.integers(2, 40)))) for _ in range(60)]
    true[0][0] = 0.0  # a kernel fused away
    latency = np.array([t.sum() / 1e3 + 0.004 for t in true])  # 4 µs a call besides the kernels
    drift = rng.uniform(0.95, 1.05, 60)  # the profiled pass ran at another speed than the timed one
    profiled = [d * t + 3.0 * (t > 0) for d, t in zip(drift, true, strict=True)]  # +3 µs an operator timed
    fixed = consistent_kernel_us(profiled, latency)
    assert fixed[0][0] == 0.0
    for f, t in zip(fixed, true, strict=True):
        assert f == pytest.approx(t, rel=0.06, abs=0.5)  # each kernel's own time, drift and overhead gone
    assert consistent_kernel_us(true, latency)[5] == pytest.approx(true[5], rel=1e-3)  # consistent already


def test_kernel_rows_featurised_once_price_like_the_models_themselves() -> None:
    from edgeopt.hardware.kernel_model import KernelRows, fit_kernel_model, predict_kernel_us

    models, times, latency = _kernel_world(12, 1)
    text = fit_kernel_model(models, times, latency)
    models = [*models, []]  # a model with no kernels (an empty graph) prices to nothing
    rows = KernelRows.of(models)
    assert KernelRows.of(rows) is rows
    by_rows = predict_kernel_us(text, rows.take([12, 3, 0]))
    by_models = predict_kernel_us(text, [models[12], models[3], models[0]])
    assert [len(p) for p in by_rows] == [0, len(models[3]), len(models[0])]
    assert all(np.array_equal(a, b) for a, b in zip(by_rows, by_models, strict=True))
    assert fit_kernel_model(rows.take(range(12)), times, latency) == text  # the same fit from rows


def test_a_calibrations_kernel_model_bags_small_trees_robust_to_a_padding_profiler_and_a_transfers_larger() -> None:
    from edgeopt.hardware.kernel_model import BAGGED_FROM, HUBER_FROM_EXCESS, fit_kernel_model, profile_excess

    models, times, latency = _kernel_world(BAGGED_FROM, 2)
    calibration = fit_kernel_model(models, times, latency)  # a calibration's 100 or more models: small bagged trees
    assert "[num_leaves: 15]" in calibration and "[bagging_fraction: 0.8]" in calibration
    assert "[objective: regression]" in calibration  # profiles that sum to the timings: a squared loss
    padded = [[1.3 * t for t in ts] for ts in times]  # a profiler's times summing to 1.3x the call: a robust loss
    assert profile_excess(padded, latency) > HUBER_FROM_EXCESS >= profile_excess(times, latency)
    robust = fit_kernel_model(models, padded, latency)
    assert "[objective: huber]" in robust and "[alpha: 0.1]" in robust and "[num_leaves: 15]" in robust
    transfer = fit_kernel_model(models[:20], padded[:20], latency[:20])  # a transfer's 20: too few kernels to bag
    assert "[num_leaves: 31]" in transfer and "[bagging_fraction: 1]" in transfer
    assert "[objective: regression]" in transfer


def test_ensemble_selection_averages_candidates_that_err_in_opposite_directions() -> None:
    y = np.linspace(0.01, 1.0, 50)
    pred = {"high": y * 1.12, "low": y * 0.89, "noisy": y * np.exp(np.random.default_rng(0).normal(0, 0.3, 50))}
    picked = ensemble_selection(pred, y)
    # alone, "high" and "low" are off by 11-12% and "noisy" (picked first) within 10% a quarter of the time;
    # together, mostly "high" and "low", all fifty are within 10%
    assert picked["high"] >= 3 and picked["low"] >= 3 and picked.get("noisy", 0) <= 1
    mean = np.exp(sum(c * np.log(pred[n]) for n, c in picked.items()) / sum(picked.values()))
    assert np.all(np.abs(mean / y - 1) <= 0.10)


def test_an_ensemble_predicts_its_members_weighted_geometric_mean_round_trips_and_transfers() -> None:
    models, times, y = _kernel_world(120, 1)
    p = LatencyPredictor.fit(models[:100], y[:100], kernel_us=times[:100])  # picks 3 of its 10 candidates
    assert p.cv["chosen"] == "ensemble" and p.cv["chosen_stats"]["within_10pct"] >= max(
        c["within_10pct"] for c in p.cv["candidates"].values()
    )
    assert sum(p.member_weights) == pytest.approx(1.0) and len(p.members) >= 2
    pred = p.predict_many(models[100:])
    logs = sum(w * np.log(m.predict_many(models[100:])) for m, w in zip(p.members, p.member_weights, strict=True))
    assert np.allclose(pred, np.exp(logs), rtol=1e-12)
    assert p.lendable_kernel_model() is not None
    js = p.to_json()  # members' per-kernel models stored once each, named by index
    texts = js["kernel_models"]
    assert len(set(texts)) == len(texts) < sum(m.kernel_model is not None for m in p.members)
    assert all(m["kernel_model"] is None or isinstance(m["kernel_model"], int) for m in js["members"])
    again = LatencyPredictor.from_json(json.loads(json.dumps(js)))
    assert np.array_equal(again.predict_many(models[100:]), pred)
    inline = {**js, "members": [{**m, "kernel_model": None if m["kernel_model"] is None else texts[m["kernel_model"]]}
                                for m in js["members"]]}  # fmt: skip
    del inline["kernel_models"]  # a profile written before: each member's text inline
    assert np.array_equal(LatencyPredictor.from_json(inline).predict_many(models[100:]), pred)
    t = p.transferred(models[100:110], 2 * y[100:110])
    assert t.cv["transfer_form"].startswith("ensemble of") and len(t.members) == len(p.members)
    assert np.median(np.abs(t.predict_many(models[110:]) / (2 * y[110:]) - 1)) < 0.05


def test_a_transfer_across_kernel_libraries_fits_the_targets_own_kernel_times() -> None:
    models, times, y = _kernel_world(140, 0)
    p = LatencyPredictor.fit(models[:100], y[:100], kernel_us=times[:100], correction=False, ensemble=False)
    # another kernel library: every kernel at one efficiency, where the base's rises with its output channels,
    # so that no scale per kernel group maps the base's costs to these
    foreign_us = [[k.macs / 1e3 / 0.6 + 1.0 for k in ks] for ks in models]
    foreign = np.array([sum(t) / 1e3 + 0.002 for t in foreign_us])
    own = LatencyPredictor.from_kernel_times(models[100:120], foreign[100:120], foreign_us[100:120])
    assert own.cv["transfer_form"] == "own_kernels" and own.terms == KERNEL_TERMS and own.kernel_model is not None
    assert len(own.cv["transfer_loo_ms"]) == 20 and own.band_pct > 0
    loo_err = np.abs(np.array(own.cv["transfer_loo_ms"]) / foreign[100:120] - 1)
    assert own.cv["transfer_loo_within_10pct"] == np.mean(loo_err <= 0.10)
    assert own.band_pct == pytest.approx(np.percentile(loo_err, 90) * 100)

    def err(q: LatencyPredictor) -> float:
        return float(np.median(np.abs(q.predict_many(models[:100]) / foreign[:100] - 1)))

    scaled = p.transferred(models[100:120], foreign[100:120])
    assert scaled.cv["transfer_form"] == "group_stage"
    assert err(own) < 0.05 and err(own) < err(scaled) / 2
    again = LatencyPredictor.from_json(json.loads(json.dumps(own.to_json())))
    assert np.array_equal(again.predict_many(models[:100]), own.predict_many(models[:100]))
    # a model its profiler missed still counts in the linear stage; more than twenty: twenty folds
    partial = LatencyPredictor.from_kernel_times(models[100:140], foreign[100:140], [None] * 4 + foreign_us[104:140])
    assert len(partial.cv["transfer_loo_ms"]) == 40 and err(partial) < 0.05
