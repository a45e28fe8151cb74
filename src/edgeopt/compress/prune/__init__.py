"""Pruning: structured channel pruning on a dependency graph, unstructured and N:M sparsity.

* ``prune_channels(model, ratio=0.5)`` -- physically smaller model at a MAC target
  (:mod:`.channel`, dependency graph in :mod:`.depgraph`); ``allocation="latency"`` spends
  the budget where measured latency falls most, in one runtime or several (``runtime_latency``).
* ``prune_to_latency(model, target_ms, eval_data, runtime=...)`` -- NetAdapt-style search
  on measured latency (:mod:`.netadapt`).
* ``magnitude_masks`` / ``nm_masks`` / ``GradualPruner`` -- sparsity masks and the
  polynomial schedule (:mod:`.sparse`); dense runtimes get no speed from these.
"""

from edgeopt.compress.prune.channel import (
    ChannelPruneReport,
    apply_channel_plan,
    calibration_inputs,
    channel_macs,
    channel_scores,
    group_sizes,
    mac_model,
    prune_channels,
    pruned_model,
    sample_batches,
    select_channels,
)
from edgeopt.compress.prune.depgraph import ChannelGroup, DepGraph, build_dependency_graph
from edgeopt.compress.prune.netadapt import LatencyPruneReport, prune_to_latency, runtime_latency
from edgeopt.compress.prune.reconstruct import reconstruct
from edgeopt.compress.prune.sparse import (
    GradualPruner,
    apply_masks,
    check_nm,
    magnitude_masks,
    nm_masks,
    polynomial_sparsity,
    sparsity_of,
)

__all__ = [
    "ChannelGroup", "ChannelPruneReport", "DepGraph", "GradualPruner", "LatencyPruneReport", "apply_channel_plan",
    "apply_masks", "build_dependency_graph", "calibration_inputs", "channel_macs", "channel_scores", "check_nm",
    "group_sizes", "mac_model", "magnitude_masks", "nm_masks", "polynomial_sparsity", "prune_channels",
    "prune_to_latency", "pruned_model", "reconstruct", "runtime_latency", "sample_batches", "select_channels",
    "sparsity_of",
]  # fmt: skip
