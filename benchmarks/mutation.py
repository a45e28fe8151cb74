"""Mutation testing of the core algorithm modules (issue 17): run mutmut, write benchmarks/results/mutation.json.

``make mutate`` (or ``python benchmarks/mutation.py``) runs ``mutmut run`` over the functions listed in
``SCOPE`` and summarises ``mutants/**/*.meta`` into ``benchmarks/results/mutation.json``: per module the
mutants, killed, survived, no-tests, timeout and score (killed + timeout over all mutants run), and every
survivor with its file, line, a one-line diff and the reason it lives (``REASONS``; new survivors are marked
"unclassified"). ``--summarise-only`` skips the run and re-reads the last results.

mutmut 3 copies ``src/`` into ``mutants/`` and never edits ``src/``; configuration (files, the fast test
selection each mutant draws its tests from) is ``[tool.mutmut]`` in pyproject.toml. Each mutant runs only the
selected tests that call its function (mutmut's stats pass), in a process forked from one that has already
imported torch, so a mutant costs its tests' time, not an interpreter start. Not part of ``make test``.
"""

from __future__ import annotations

import argparse
import datetime
import difflib
import json
import os
import platform
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "mutation.json"

# module -> mutant-name globs run (mutmut names a function ``module.x_func`` and a method ``module.xǁClassǁmeth``).
# Pure algorithm functions first; what is left out and why: NOT_RUN_REASON, and "not_run" in the result.
SCOPE: dict[str, list[str]] = {
    "edgeopt.federated.algorithms.server": ["edgeopt.federated.algorithms.server.*"],
    "edgeopt.federated.algorithms.privacy": ["edgeopt.federated.algorithms.privacy.*"],
    "edgeopt.federated.algorithms.compression": ["edgeopt.federated.algorithms.compression.*"],
    "edgeopt.federated.algorithms.secagg": ["edgeopt.federated.algorithms.secagg.*"],
    "edgeopt.federated.rounds": [
        "edgeopt.federated.rounds.x_client_config__*",
        "edgeopt.federated.rounds.x_client_speeds__*",
        "edgeopt.federated.rounds.x_plan_round__*",
        "edgeopt.federated.rounds.x_secure_weight__*",
    ],
    "edgeopt.compress.quantize.calibration": [
        "edgeopt.compress.quantize.calibration.x_qparams_from_range__*",
        "edgeopt.compress.quantize.calibration.x_fake_quantize__*",
        "edgeopt.compress.quantize.calibration.x__quantile__*",
        "edgeopt.compress.quantize.calibration.x_percentile_range__*",
        "edgeopt.compress.quantize.calibration.x_kl_divergence__*",
        "edgeopt.compress.quantize.calibration.x_expected_mse__*",
        "edgeopt.compress.quantize.calibration.x_weight_scales__*",
        "edgeopt.compress.quantize.calibration.x_quantize_weight__*",
        "edgeopt.compress.quantize.calibration.x_sqnr_db__*",
    ],
    "edgeopt.compress.quantize.transforms": [
        "edgeopt.compress.quantize.transforms.x_fold_bn_weights__*",
    ],
    "edgeopt.compress.quantize.ptq": [
        "edgeopt.compress.quantize.ptq.x_calibration_indices__*",
        "edgeopt.compress.quantize.ptq.x__chunks__*",
        "edgeopt.compress.quantize.ptq.x__channel_mean__*",
        "edgeopt.compress.quantize.ptq.x_bias_shift__*",
    ],
    "edgeopt.compress.prune.channel": [
        "edgeopt.compress.prune.channel.x_normalised__*",
        "edgeopt.compress.prune.channel.x_saving_rates__*",
        "edgeopt.compress.prune.channel.x_weakest_beyond__*",
        "edgeopt.compress.prune.channel.x__give_back__*",
    ],
    "edgeopt.compress.prune.depgraph": [
        "edgeopt.compress.prune.depgraph.xǁ_UnionFindǁnew__*",
        "edgeopt.compress.prune.depgraph.xǁ_UnionFindǁfind__*",
        "edgeopt.compress.prune.depgraph.xǁ_UnionFindǁunion__*",
        "edgeopt.compress.prune.depgraph.x__make_groups__*",
    ],
    "edgeopt.compress.distill": [
        "edgeopt.compress.distill.x_kd_loss__*",
        "edgeopt.compress.distill.x_attention_map__*",
        "edgeopt.compress.distill.x_attention_loss__*",
        "edgeopt.compress.distill.x_feature_loss__*",
    ],
    "edgeopt.interop.export": ["edgeopt.interop.export.x_compare_outputs__*", "edgeopt.interop.export.xǁParityǁok__*"],
}

# Why the functions of the listed files outside SCOPE are left out (summarise() lists them with their mutant counts).
NOT_RUN_REASON = (
    "time budget: 2 shared cores; these functions need model-level tests (tracing, training, exporting: "
    "seconds per mutant) or are glue around the functions in SCOPE"
)

# why mutants survive (equivalent, or not covered: the test that would kill them) -> those mutants.
REASON_GROUPS: dict[str, list[str]] = {
    "equivalent: F.normalize's default dim is 1": [
        "edgeopt.compress.distill.x_attention_map__mutmut_11",
    ],
    "equivalent: N(0, s^2) noise is symmetric: adding or subtracting it is the same mechanism": [
        "edgeopt.federated.algorithms.privacy.x_noisy_mean__mutmut_12",
    ],
    "equivalent: Opacus' accountant also gives inf for zero noise": [
        "edgeopt.federated.algorithms.privacy.x_dp_epsilon__mutmut_2",
    ],
    "equivalent: a 'none' payload's delta is already float32 (compress casts it)": [
        "edgeopt.federated.algorithms.compression.x_decompress__mutmut_5",
        "edgeopt.federated.algorithms.compression.x_decompress__mutmut_7",
    ],
    "equivalent: a NaN diagonal sorts last like inf, and only the k <= n-2 smallest are summed": [
        "edgeopt.federated.algorithms.server.x_krum_scores__mutmut_34",
    ],
    "equivalent: a centre exactly at qlo adds (c - qlo)^2 = 0 either way": [
        "edgeopt.compress.quantize.calibration.x_expected_mse__mutmut_33",
        "edgeopt.compress.quantize.calibration.x_expected_mse__mutmut_36",
    ],
    (
        "equivalent: a domain-separation label: any constant keeps masks cancelling (interoperating with "
        "another implementation is not a goal)"
    ): [
        "edgeopt.federated.algorithms.secagg.x_pair_seed__mutmut_7",
        "edgeopt.federated.algorithms.secagg.x_pair_seed__mutmut_8",
    ],
    "equivalent: a domain-separation label: any constant keeps the protocol correct": [
        "edgeopt.federated.algorithms.secagg.x_private_key__mutmut_3",
        "edgeopt.federated.algorithms.secagg.x_private_key__mutmut_4",
    ],
    "equivalent: a float32 variance changes k only below float32 precision, and the results are float32": [
        "edgeopt.compress.quantize.transforms.x_fold_bn_weights__mutmut_10",
        "edgeopt.compress.quantize.transforms.x_fold_bn_weights__mutmut_12",
    ],
    "equivalent: a survivor never reveals a seed with itself (i != j), so < and <= agree": [
        "edgeopt.federated.algorithms.secagg.x_unmask_sum__mutmut_22",
    ],
    (
        "equivalent: a tie between clipping factors needs equal errors: only an all-zero channel, where every"
        " factor gives the ACT_EPS floor"
    ): [
        "edgeopt.compress.quantize.calibration.x_weight_scales__mutmut_88",
    ],
    "equivalent: alpha is checked to lie in [0, 1]; at 1 the mix equals the soft term": [
        "edgeopt.compress.distill.x_kd_loss__mutmut_37",
    ],
    "equivalent: an arbitrary stream-separation constant": [
        "edgeopt.federated.rounds.x_client_speeds__mutmut_9",
        "edgeopt.federated.rounds.x_plan_round__mutmut_12",
    ],
    (
        "equivalent: an arbitrary stream-separation constant: any value gives a valid, resumable per-round "
        "stream (only a golden value would pin it)"
    ): [
        "edgeopt.federated.algorithms.server.x_sample_clients__mutmut_8",
    ],
    "equivalent: any negative sentinel fails the 0 < F check alike": [
        "edgeopt.federated.algorithms.compression.x_parse_compression__mutmut_27",
    ],
    "equivalent: astype(None) is float64": [
        "edgeopt.federated.algorithms.secagg.x_decode_fixed__mutmut_2",
    ],
    "equivalent: at alpha = 1 the mix is 1 * soft + 0 * hard, the soft term alone": [
        "edgeopt.compress.distill.x_kd_loss__mutmut_36",
    ],
    "equivalent: at steps=50, linspace's own default count and the value every caller in src uses": [
        "edgeopt.compress.quantize.calibration.x_weight_scales__mutmut_61",
    ],
    "equivalent: branch_groups is then computed but only consulted for width 0": [
        "edgeopt.compress.prune.channel.x_weakest_beyond__mutmut_15",
    ],
    "equivalent: deltas are promoted to float64 by the float64 weights": [
        "edgeopt.federated.algorithms.server.x_weighted_mean__mutmut_3",
        "edgeopt.federated.algorithms.server.x_weighted_mean__mutmut_5",
    ],
    "equivalent: excluding 0 from the mask range is unobservable": [
        "edgeopt.federated.algorithms.secagg.x_prg_mask__mutmut_19",
    ],
    "equivalent: excluding 2^64-1 from the mask range is unobservable": [
        "edgeopt.federated.algorithms.secagg.x_prg_mask__mutmut_13",
        "edgeopt.federated.algorithms.secagg.x_prg_mask__mutmut_18",
        "edgeopt.federated.algorithms.secagg.x_prg_mask__mutmut_21",
    ],
    (
        "equivalent: feature maps are 4-D, so [+2:] is [-2:]; comparing unequal-length shapes only pools a "
        "same-size map, which is the identity"
    ): [
        "edgeopt.compress.distill.x_attention_loss__mutmut_12",
        "edgeopt.compress.distill.x_attention_loss__mutmut_2",
        "edgeopt.compress.distill.x_attention_loss__mutmut_3",
        "edgeopt.compress.distill.x_attention_loss__mutmut_5",
        "edgeopt.compress.distill.x_attention_loss__mutmut_6",
    ],
    "equivalent: float('INF') is inf": [
        "edgeopt.compress.quantize.calibration.x_kl_divergence__mutmut_23",
        "edgeopt.compress.quantize.calibration.x_sqnr_db__mutmut_25",
        "edgeopt.federated.algorithms.privacy.x_dp_epsilon__mutmut_6",
        "edgeopt.interop.export.x_compare_outputs__mutmut_60",
    ],
    (
        "equivalent: float32 weights in float32 arithmetic give the same float32 scales but for double "
        "rounding in the last bit"
    ): [
        "edgeopt.compress.quantize.calibration.x_weight_scales__mutmut_25",
        "edgeopt.compress.quantize.calibration.x_weight_scales__mutmut_27",
    ],
    (
        "equivalent: float64 padding zeros change only the precision of x/s, which rounds to the same "
        "integers except at exact float32 ties (none found)"
    ): [
        "edgeopt.federated.algorithms.compression.x_quantize_int8__mutmut_17",
        "edgeopt.federated.algorithms.compression.x_quantize_int8__mutmut_19",
    ],
    "equivalent: for a point mass (hi == lo) every quantile is that point": [
        "edgeopt.compress.quantize.calibration.x_percentile_range__mutmut_11",
    ],
    "equivalent: for an empty or zero-width batch np.isfinite(d).all(axis=1) is the same all-True vector": [
        "edgeopt.federated.algorithms.server.x_screen_updates__mutmut_6",
    ],
    "equivalent: for no savings the other branch also yields an empty result": [
        "edgeopt.compress.prune.channel.x_saving_rates__mutmut_17",
        "edgeopt.compress.prune.channel.x_saving_rates__mutmut_3",
    ],
    ("equivalent: for the float32 updates the engine passes, casting first or after the scaling rounds alike"): [
        "edgeopt.federated.algorithms.privacy.x_clip_by_norm__mutmut_18",
        "edgeopt.federated.algorithms.privacy.x_clip_by_norm__mutmut_20",
    ],
    "equivalent: init_state sets m and v together (both or neither), so 'and' and 'or' agree": [
        "edgeopt.federated.algorithms.server.x_server_update__mutmut_20",
    ],
    "equivalent: int32 indices index like int64": [
        "edgeopt.federated.algorithms.compression.x_densify__mutmut_10",
        "edgeopt.federated.algorithms.compression.x_densify__mutmut_8",
    ],
    "equivalent: integers(max, endpoint=True) is [0, max], the same range": [
        "edgeopt.federated.algorithms.secagg.x_prg_mask__mutmut_14",
    ],
    "equivalent: j == client is skipped just above, so < and <= agree": [
        "edgeopt.federated.algorithms.secagg.x_masked_input__mutmut_18",
    ],
    "equivalent: log_softmax's implicit dim for 2-D logits is 1": [
        "edgeopt.compress.distill.x_kd_loss__mutmut_10",
        "edgeopt.compress.distill.x_kd_loss__mutmut_15",
        "edgeopt.compress.distill.x_kd_loss__mutmut_17",
        "edgeopt.compress.distill.x_kd_loss__mutmut_8",
    ],
    "equivalent: norms of non-finite updates are never read (only finite ones are compared)": [
        "edgeopt.federated.algorithms.server.x_screen_updates__mutmut_16",
    ],
    "equivalent: np.array of Python bools infers dtype bool": [
        "edgeopt.federated.algorithms.server.x_screen_updates__mutmut_53",
    ],
    "equivalent: np.maximum(savings, 0.0) is float whatever the input dtype": [
        "edgeopt.compress.prune.channel.x_saving_rates__mutmut_11",
        "edgeopt.compress.prune.channel.x_saving_rates__mutmut_13",
    ],
    "equivalent: np.sort's default axis is the last one (1 here)": [
        "edgeopt.federated.algorithms.server.x_krum_scores__mutmut_41",
    ],
    "equivalent: np.zeros_like(None) is an object 0, which broadcasts like the zero bias": [
        "edgeopt.compress.quantize.transforms.x_fold_bn_weights__mutmut_25",
    ],
    "equivalent: numpy accepts any negative size as 'infer' in reshape": [
        "edgeopt.compress.quantize.calibration.x_quantize_weight__mutmut_16",
        "edgeopt.compress.quantize.calibration.x_weight_scales__mutmut_31",
        "edgeopt.compress.quantize.transforms.x_fold_bn_weights__mutmut_16",
        "edgeopt.federated.algorithms.compression.x_dequantize_int8__mutmut_23",
        "edgeopt.federated.algorithms.compression.x_dequantize_int8__mutmut_33",
        "edgeopt.federated.algorithms.compression.x_quantize_int8__mutmut_21",
        "edgeopt.federated.algorithms.compression.x_quantize_int8__mutmut_55",
        "edgeopt.interop.export.x_compare_outputs__mutmut_67",
        "edgeopt.interop.export.x_compare_outputs__mutmut_73",
    ],
    "equivalent: numpy takes the sort kind case-insensitively ('STABLE' is 'stable')": [
        "edgeopt.federated.algorithms.server.x_krum__mutmut_12",
    ],
    "equivalent: p / p.sum() and q / q.sum() are float64 whatever the input dtype": [
        "edgeopt.compress.quantize.calibration.x_kl_divergence__mutmut_10",
        "edgeopt.compress.quantize.calibration.x_kl_divergence__mutmut_3",
        "edgeopt.compress.quantize.calibration.x_kl_divergence__mutmut_5",
        "edgeopt.compress.quantize.calibration.x_kl_divergence__mutmut_8",
    ],
    "equivalent: q is already int8 (made by quantize_int8)": [
        "edgeopt.federated.algorithms.compression.x_dequantize_int8__mutmut_4",
        "edgeopt.federated.algorithms.compression.x_dequantize_int8__mutmut_6",
    ],
    "equivalent: random() equals the dropout rate with probability ~2^-53": [
        "edgeopt.federated.rounds.x_plan_round__mutmut_15",
    ],
    "equivalent: ref is float64, so got - ref is float64 anyway; argmax is dtype-independent": [
        "edgeopt.interop.export.x_compare_outputs__mutmut_10",
        "edgeopt.interop.export.x_compare_outputs__mutmut_8",
    ],
    "equivalent: replace=None is falsy like replace=False": [
        "edgeopt.compress.quantize.ptq.x_calibration_indices__mutmut_17",
        "edgeopt.federated.algorithms.server.x_sample_clients__mutmut_12",
    ],
    "equivalent: scales are promoted to float64 by the float64 weights (exactly)": [
        "edgeopt.compress.quantize.calibration.x_quantize_weight__mutmut_20",
        "edgeopt.compress.quantize.calibration.x_quantize_weight__mutmut_22",
    ],
    "equivalent: scaling by 2^24 is exact in float32 too (before int64 overflow)": [
        "edgeopt.federated.algorithms.secagg.x_encode_fixed__mutmut_6",
        "edgeopt.federated.algorithms.secagg.x_encode_fixed__mutmut_8",
    ],
    "equivalent: selected and fails have the same length by construction": [
        "edgeopt.federated.rounds.x_plan_round__mutmut_21",
        "edgeopt.federated.rounds.x_plan_round__mutmut_24",
        "edgeopt.federated.rounds.x_plan_round__mutmut_25",
    ],
    (
        "equivalent: the MSE search's grid size (50 vs 51 clipping factors) is a resolution default; both "
        "grids are valid searches"
    ): [
        "edgeopt.compress.quantize.calibration.x_weight_scales__mutmut_4",
    ],
    "equivalent: the else branch is taken only for a zero update: 0 * 2 == 0": [
        "edgeopt.federated.algorithms.privacy.x_clip_by_norm__mutmut_14",
    ],
    "equivalent: the fallback divisor only divides all-zero chunks: 0/2 == 0/1": [
        "edgeopt.federated.algorithms.compression.x_quantize_int8__mutmut_39",
    ],
    "equivalent: the float64 sqrt of the variance makes k float64 whatever gamma's dtype": [
        "edgeopt.compress.quantize.transforms.x_fold_bn_weights__mutmut_4",
        "edgeopt.compress.quantize.transforms.x_fold_bn_weights__mutmut_6",
    ],
    "equivalent: the lengths are checked equal just above": [
        "edgeopt.compress.prune.channel.x_weakest_beyond__mutmut_21",
        "edgeopt.compress.prune.channel.x_weakest_beyond__mutmut_24",
        "edgeopt.compress.prune.channel.x_weakest_beyond__mutmut_25",
    ],
    "equivalent: the masked sums are already uint64": [
        "edgeopt.federated.algorithms.secagg.x_decode_fixed__mutmut_5",
        "edgeopt.federated.algorithms.secagg.x_decode_fixed__mutmut_7",
    ],
    (
        "equivalent: the other operand is cast to float64, so differences are float64 anyway; |ref| max is "
        "exact in float32"
    ): [
        "edgeopt.interop.export.x_compare_outputs__mutmut_3",
        "edgeopt.interop.export.x_compare_outputs__mutmut_5",
    ],
    "equivalent: the other operand is float64, so the product is float64 before the float32 cast": [
        "edgeopt.compress.quantize.transforms.x_fold_bn_weights__mutmut_28",
        "edgeopt.compress.quantize.transforms.x_fold_bn_weights__mutmut_30",
        "edgeopt.compress.quantize.transforms.x_fold_bn_weights__mutmut_34",
        "edgeopt.compress.quantize.transforms.x_fold_bn_weights__mutmut_36",
    ],
    "equivalent: the payload's scales are already float32 (quantize_int8 casts them)": [
        "edgeopt.federated.algorithms.compression.x_dequantize_int8__mutmut_27",
        "edgeopt.federated.algorithms.compression.x_dequantize_int8__mutmut_29",
    ],
    "equivalent: the range is widened to include 0, so the zero point always lies in [qmin, qmax]": [
        "edgeopt.compress.quantize.calibration.x_qparams_from_range__mutmut_53",
        "edgeopt.compress.quantize.calibration.x_qparams_from_range__mutmut_54",
    ],
    (
        "equivalent: the seed's byte order only picks another, equally good stream, the same for both clients of a pair"
    ): [
        "edgeopt.federated.algorithms.secagg.x_prg_mask__mutmut_6",
    ],
    "equivalent: the sum is promoted to float64 by the float64 noise": [
        "edgeopt.federated.algorithms.privacy.x_noisy_mean__mutmut_14",
        "edgeopt.federated.algorithms.privacy.x_noisy_mean__mutmut_16",
    ],
    "equivalent: the test signal is promoted to float64 by the float64 reference": [
        "edgeopt.compress.quantize.calibration.x_sqnr_db__mutmut_12",
        "edgeopt.compress.quantize.calibration.x_sqnr_db__mutmut_14",
    ],
    "equivalent: the weights are promoted to float64 by the float64 scales": [
        "edgeopt.compress.quantize.calibration.x_quantize_weight__mutmut_34",
        "edgeopt.compress.quantize.calibration.x_quantize_weight__mutmut_36",
    ],
    "equivalent: u and the densified payload are both float32, so their difference already is": [
        "edgeopt.federated.algorithms.compression.x_compress__mutmut_27",
    ],
    "equivalent: values are stored into a float32 array either way": [
        "edgeopt.federated.algorithms.compression.x_densify__mutmut_14",
        "edgeopt.federated.algorithms.compression.x_densify__mutmut_16",
    ],
    "equivalent: weights are promoted to float64 by the float64 deltas": [
        "edgeopt.federated.algorithms.server.x_weighted_mean__mutmut_12",
        "edgeopt.federated.algorithms.server.x_weighted_mean__mutmut_14",
    ],
    "equivalent: with k == n argpartition returns every index, sorted next: the same as arange": [
        "edgeopt.federated.algorithms.compression.x_topk_sparsify__mutmut_16",
        "edgeopt.federated.algorithms.compression.x_topk_sparsify__mutmut_24",
    ],
    "equivalent: without the early return, p * log(p / 0) is inf as well (with a numpy warning)": [
        "edgeopt.compress.quantize.calibration.x_kl_divergence__mutmut_18",
        "edgeopt.compress.quantize.calibration.x_kl_divergence__mutmut_19",
    ],
    "equivalent: |x / s| <= 127 by construction of s = max|x| / 127: the clip bounds are never reached": [
        "edgeopt.federated.algorithms.compression.x_quantize_int8__mutmut_44",
        "edgeopt.federated.algorithms.compression.x_quantize_int8__mutmut_45",
        "edgeopt.federated.algorithms.compression.x_quantize_int8__mutmut_52",
        "edgeopt.federated.algorithms.compression.x_quantize_int8__mutmut_53",
    ],
    "not analysed (time): a give-back boundary in the MAC-target search; needs a hand-built MacModel case": [
        "edgeopt.compress.prune.channel.x__give_back__mutmut_16",
    ],
    (
        "not covered: a float mask only differs for zero-width updates (shape (n, 0)); add "
        "screen_updates(np.zeros((3, 0)))"
    ): [
        "edgeopt.federated.algorithms.server.x_screen_updates__mutmut_11",
        "edgeopt.federated.algorithms.server.x_screen_updates__mutmut_13",
    ],
    (
        "not covered: error-message text for a graph with a removable residual branch (width 0); add a "
        "weakest_beyond test on a DepGraph with branch groups"
    ): [
        "edgeopt.compress.prune.channel.x_weakest_beyond__mutmut_35",
        "edgeopt.compress.prune.channel.x_weakest_beyond__mutmut_37",
        "edgeopt.compress.prune.channel.x_weakest_beyond__mutmut_38",
    ],
    (
        "not covered: needs a bin centre exactly on the grid's upper end (qhi = (qmax - zp) * scale), which "
        "float rounding makes hard to build"
    ): [
        "edgeopt.compress.quantize.calibration.x_expected_mse__mutmut_20",
    ],
    (
        "not covered: the separator of the group sizes in the message only shows with two or more groups; add"
        " a two-group case"
    ): [
        "edgeopt.compress.prune.channel.x_weakest_beyond__mutmut_10",
    ],
    "not re-run in time against test_make_groups_keep_first_seen_order_not_id_order, which kills it": [
        "edgeopt.compress.prune.depgraph.x__make_groups__mutmut_13",
        "edgeopt.compress.prune.depgraph.x__make_groups__mutmut_15",
    ],
    (
        "not re-run in time against test_normalised_divides_by_the_group_mean (a missing score counts 0), "
        "which kills it"
    ): [
        "edgeopt.compress.prune.channel.x_normalised__mutmut_10",
    ],
    (
        "not run against its killer: the empty-input check was added to test_masks_differ_per_coordinate "
        "after mutmut traced that test (mutmut re-traces only new test names); killed by it when traced "
        "afresh"
    ): [
        "edgeopt.federated.algorithms.secagg.x_unmask_sum__mutmut_2",
        "edgeopt.federated.algorithms.secagg.x_unmask_sum__mutmut_3",
        "edgeopt.federated.algorithms.secagg.x_unmask_sum__mutmut_4",
    ],
}
REASONS: dict[str, str] = {name: reason for reason, names in REASON_GROUPS.items() for name in names}

KILLED = {1, 3}
SURVIVED = {0}
NO_TESTS = {5, 33}
TIMEOUT = {36, -24, 24, 152, 255}


def run_mutmut(patterns: list[str], max_children: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    mutmut = Path(sys.executable).with_name("mutmut")
    start = time.monotonic()
    subprocess.run([str(mutmut), "run", "--max-children", str(max_children), *patterns], cwd=ROOT, env=env, check=False)
    return time.monotonic() - start


def _function_source(mutated: Path, spans: dict[str, list[int]], key: str) -> list[str]:
    lines = mutated.read_text().splitlines()
    a, b = spans[key]
    return lines[a - 1 : b]


def _survivor(src_file: Path, mutated: Path, spans: dict, name: str) -> dict:
    short = name.rpartition(".")[2]
    func = short.partition("__mutmut_")[0]
    orig = _function_source(mutated, spans, f"{func}__mutmut_orig")
    # the mutant's def line differs by its name only (unless a default was mutated): give it the original's
    mut = [ln.replace(f"{short}(", f"{func}__mutmut_orig(") for ln in _function_source(mutated, spans, short)]
    diff = list(difflib.ndiff(orig, mut))
    removed = [ln[2:] for ln in diff if ln.startswith("- ")]
    added = [ln[2:] for ln in diff if ln.startswith("+ ")]
    plain = func.rpartition("ǁ")[2] if "ǁ" in func else func.removeprefix("x_")
    first_removed = (removed[0] if removed else "").replace(f"{func}__mutmut_orig(", f"{plain}(")
    first_added = (added[0] if added else "").replace(f"{func}__mutmut_orig(", f"{plain}(")
    source = src_file.read_text().splitlines()
    # the original body is verbatim in src: find the changed line after the function's def
    start = next((i for i, ln in enumerate(source) if ln.lstrip().startswith(f"def {plain}(")), 0)
    want = first_removed.strip()
    line = next((i + 1 for i in range(start, len(source)) if want and source[i].strip() == want), None)
    return {
        "mutant": name,
        "file": str(src_file.relative_to(ROOT)),
        "line": line,
        "diff": f"{first_removed.strip()}  ->  {first_added.strip()}",
    }


def summarise(patterns_by_module: dict[str, list[str]]) -> dict:
    import fnmatch

    modules: dict[str, dict] = {}
    survivors: list[dict] = []
    not_run: dict[str, Counter] = {}
    for meta in sorted((ROOT / "mutants" / "src").rglob("*.py.meta")):
        data = json.loads(meta.read_text())
        mutated = meta.with_suffix("")
        spans = json.loads(meta.with_suffix(".spans").read_text())["spans"]
        src_file = ROOT / mutated.relative_to(ROOT / "mutants")
        for name, code in sorted(data["exit_code_by_key"].items()):
            module = next(
                (m for m, pats in patterns_by_module.items() if any(fnmatch.fnmatchcase(name, p) for p in pats)), None
            )
            if module is None or code is None:
                mod = name.rpartition(".")[0]
                func = name.rpartition(".")[2].partition("__mutmut_")[0]
                not_run.setdefault(mod, Counter())[func.removeprefix("x_")] += 1
                continue
            c = modules.setdefault(module, Counter())
            c["mutants"] += 1
            if code in KILLED:
                c["killed"] += 1
            elif code in TIMEOUT:
                c["timeout"] += 1
            elif code in SURVIVED or code in NO_TESTS:
                c["survived" if code in SURVIVED else "no_tests"] += 1
                s = _survivor(src_file, mutated, spans, name)
                s["status"] = "survived" if code in SURVIVED else "no tests"
                s["reason"] = REASONS.get(name) or (
                    "not covered: no test in the selection calls this function" if code in NO_TESTS else "unclassified"
                )
                survivors.append(s)
            else:
                c["other"] += 1
    out = {}
    for module, c in sorted(modules.items()):
        total = c["mutants"]
        out[module] = {
            "mutants": total,
            "killed": c["killed"],
            "survived": c["survived"],
            "no_tests": c["no_tests"],
            "timeout": c["timeout"],
            "other": c["other"],
            "score": round((c["killed"] + c["timeout"]) / total, 4) if total else None,
        }
    total = sum(m["mutants"] for m in out.values())
    dead = sum(m["killed"] + m["timeout"] for m in out.values())
    overall = {"mutants": total, "killed_or_timeout": dead, "score": round(dead / total, 4) if total else None}
    skipped = {m: dict(c) for m, c in sorted(not_run.items())}
    return {
        "modules": out,
        "overall": overall,
        "not_run": {"reason": NOT_RUN_REASON, "mutants_by_function": skipped},
        "survivors": survivors,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--summarise-only", action="store_true", help="re-read mutants/ without running mutmut")
    ap.add_argument("--max-children", type=int, default=2)
    ap.add_argument("--module", action="append", help="run only this module of SCOPE (repeatable)")
    ap.add_argument("--note", help="how these figures were produced, stored in the result")
    args = ap.parse_args()
    scope = {m: p for m, p in SCOPE.items() if not args.module or m in args.module}
    wall = None
    if not args.summarise_only:
        wall = run_mutmut([p for pats in scope.values() for p in pats], args.max_children)
    summary = summarise(SCOPE)
    from importlib import metadata

    payload = {
        "benchmark": "mutation",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "versions": {
            "mutmut": metadata.version("mutmut"),
            "pytest": metadata.version("pytest"),
            "python": platform.python_version(),
        },  # fmt: skip
        "command": "make mutate  (= python benchmarks/mutation.py: mutmut run --max-children 2 <SCOPE globs>)",
        "wall_s_last_run": round(wall, 1) if wall is not None else None,
        "note": args.note,
        "scope": SCOPE,
        **summary,
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULT.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    tmp.replace(RESULT)
    print(f"{'module':45s} {'mutants':>7s} {'killed':>6s} {'surv':>5s} {'notest':>6s} {'tmo':>4s} {'score':>6s}")
    for m, r in payload["modules"].items():
        print(f"{m:45s} {r['mutants']:7d} {r['killed']:6d} {r['survived']:5d} {r['no_tests']:6d} {r['timeout']:4d}"
              f" {r['score']:6.1%}")  # fmt: skip
    o = payload["overall"]
    print(f"overall: {o['killed_or_timeout']}/{o['mutants']} = {o['score']:.1%}  -> {RESULT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
