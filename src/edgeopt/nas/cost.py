"""What a candidate architecture costs, and how far it is from the device budget.

``architecture_cost`` prices an untrained model with one ``torch.export``: MACs, parameters, int8
flash (one byte per stored value, as ``hw predict --profile mcu:NAME`` counts it), the int8 tensor
arena from edgeopt's liveness plan (an estimate: activations at one byte, elementwise ops fused;
``arena_bytes_int8_tflite`` adds the PAD and input TRANSPOSE copies a .tflite export runs, and an
arena budget is checked against the larger of the two),
latency per runtime from that runtime's calibrated device profile (``edgeopt.hardware``), and a
microcontroller preset's fit and latency estimate. A runtime without a profile gets no predicted
latency here; the search then times the model in the runtime (``measured_latency``) or ranks by MACs.

``violations`` turns costs and a :class:`Budget` into Optuna constraint values: ``value/limit - 1``
per limit, feasible when every value is <= 0. Pure.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from edgeopt.errors import EdgeoptError
from edgeopt.model import EdgeModel

KIB = 1024


@dataclass(frozen=True)
class Budget:
    """Limits a found architecture must meet; None means unconstrained."""

    latency_ms: float | None = None  # per runtime searched (each runtime must meet it)
    arena_kb: float | None = None  # int8 tensor arena (SRAM), KiB
    flash_kb: float | None = None  # int8 weights (flash), KiB
    macs: int | None = None
    params: int | None = None
    mcu: str | None = None  # a microcontroller preset (hardware.mcu): it must fit (arena and flash)

    def __post_init__(self) -> None:
        for name, v in asdict(self).items():
            if name != "mcu" and v is not None and not float(v) > 0:
                raise EdgeoptError(f"budget {name} must be positive, not {v}", "give a positive limit")
        if self.mcu is not None:
            from edgeopt.hardware.mcu import get_preset

            get_preset(self.mcu.removeprefix("mcu:"))  # one-line error for an unknown preset

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class LatencySource:
    """How latency is known during the search, per runtime: a device profile, or none (timed or MACs)."""

    profiles: dict[str, Any] = field(default_factory=dict)  # runtime -> DeviceProfile
    paths: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def describe(self, runtimes: list[str], measure: bool) -> dict[str, str]:
        out = {}
        for r in runtimes:
            if r in self.profiles:
                out[r] = f"predicted (profile {self.paths[r]})"
            elif measure:
                out[r] = "measured in the runtime (no calibrated profile)"
            else:
                out[r] = "not known during the search: MACs rank candidates (no calibrated profile)"
        return out


def resolve_profiles(runtimes: list[str], profile: str | None = None, threads: int = 1) -> LatencySource:
    """Device profiles per runtime: ``profile`` (comma-separated, one per runtime), else this machine's
    calibrated default (``edgeopt hw calibrate``) when it exists and was made here."""
    from edgeopt.hardware.profile import default_profile_path, load_profile

    given = [p.strip() for p in profile.split(",") if p.strip()] if profile else []
    if given and len(given) != len(runtimes):
        raise EdgeoptError(
            f"{len(given)} profile(s) for {len(runtimes)} runtime(s)", "give one --profile per --runtime"
        )
    src = LatencySource()
    for i, runtime in enumerate(runtimes):
        path = Path(given[i]) if given else default_profile_path(runtime, threads)
        if not given and not path.is_file():
            continue
        prof = load_profile(path)
        if prof.runtime != runtime:
            raise EdgeoptError(f"profile {path} is for {prof.runtime}, not {runtime}",
                               "give the profiles in the order of --runtime")  # fmt: skip
        if prof.mismatch():
            note = f"profile {path} was calibrated elsewhere ({'; '.join(prof.mismatch())})"
            if not given:
                src.notes.append(note + ": not used")
                continue
            src.notes.append(note + f": used anyway; recalibrate with `{prof.recalibrate_hint(path)}`")
        src.profiles[runtime] = prof
        src.paths[runtime] = str(path)
    return src


def architecture_cost(model: EdgeModel, source: LatencySource | None = None, mcu: str | None = None) -> dict[str, Any]:
    """MACs, params, int8 flash and arena estimates, predicted latency per profiled runtime, MCU fit."""
    from edgeopt.hardware.kernels import kernels_of_graph
    from edgeopt.profile import activation_memory, count_macs, count_params, export_for_profile
    from edgeopt.profile.memory import activation_timeline

    ep = export_for_profile(model)
    params = count_params(model.module)
    out: dict[str, Any] = {
        "macs": count_macs(ep.graph),
        "params": params,
        "flash_bytes_int8": params,
        "arena_bytes_int8": activation_memory(ep, fuse_elementwise=True).peak_bytes // 4,
        "arena_bytes_int8_tflite": activation_timeline(*tflite_arena_records(ep)).peak_bytes // 4,
        "arena_source": "edgeopt_liveness_int8_estimate",
        "latency_ms": {},
    }
    if source is not None and source.profiles:
        kernels = kernels_of_graph(ep)
        out["latency_ms"] = {r: float(p.predict_ms(kernels)) for r, p in source.profiles.items()}
        out["latency_source"] = {r: "predicted" for r in source.profiles}
    if mcu:
        from edgeopt.hardware.mcu import mcu_estimate

        est = mcu_estimate(mcu.removeprefix("mcu:"), out["macs"], out["arena_bytes_int8"], params, int8=True)
        out["mcu"] = {
            k: est[k]
            for k in (
                "preset",
                "fits",
                "reasons",
                "latency_ms_estimate",
                "sram_bytes",
                "flash_bytes",
                "sram_needed_bytes",
                "flash_needed_bytes",
            )
        }
    return out


def tflite_arena_records(ep: Any) -> tuple[list[Any], list[str]]:
    """The int8 schedule of ``ep`` as a .tflite export runs it: edgeopt's liveness records (element-wise
    ops fused) plus the two copies the LiteRT converter writes that the torch graph does not have.

    * A strided convolution with padding becomes ``PAD`` + a VALID ``CONV_2D`` (PyTorch pads both
      sides alike, TFLite's SAME pads the far side for even inputs): the padded copy of the input is
      live beside the input itself. A Conv1d (a 1-D ``nas_dscnn``) is counted the same way.
    * An NCHW (NCL) model's input is ``TRANSPOSE``-d to NHWC (NLC) first: one more input-sized tensor.

    Pure over the exported program; bytes are the graph's (float32) sizes, as the liveness walk counts them.
    """
    from edgeopt.profile.counts import op_name
    from edgeopt.profile.memory import TensorRecord, records_from_graph

    records, outputs = records_from_graph(ep, fuse_elementwise=True)
    padded: dict[str, tuple[str, int]] = {}  # conv node -> (its input, bytes of the padded copy)
    for node in ep.graph.nodes:
        if op_name(node) not in ("conv1d", "conv2d", "convolution") or not isinstance(node.args[0], torch.fx.Node):
            continue
        stride = list(node.args[3]) if len(node.args) > 3 else [1]
        pad = list(node.args[4]) if len(node.args) > 4 else [0]
        shape = getattr(node.args[0].meta.get("val"), "shape", None)
        if shape is None or len(shape) not in (3, 4) or max(stride) <= 1 or not any(pad):
            continue
        spatial = [int(v) for v in shape[2:]]  # (L,) of a sequence (N, C, L), (H, W) of an image
        pad = pad * len(spatial) if len(pad) == 1 else pad
        nbytes = 4 * int(shape[0]) * int(shape[1])
        for size, p in zip(spatial, pad, strict=True):
            nbytes *= size + 2 * int(p)
        padded[node.name] = (node.args[0].name, nbytes)
    inputs = {r.name for r in records if not r.inputs}
    out: list[Any] = []
    for r in records:
        reads = tuple(f"{n}__nhwc" if n in inputs else n for n in r.inputs)
        if r.name in padded:
            src, nbytes = padded[r.name]
            src = f"{src}__nhwc" if src in inputs else src
            out.append(TensorRecord(f"{r.name}__pad", nbytes, (src,)))
            reads = tuple(f"{r.name}__pad" if n == src else n for n in reads)
        out.append(TensorRecord(r.name, r.nbytes, reads, r.is_view))
        if r.name in inputs:
            out.append(TensorRecord(f"{r.name}__nhwc", r.nbytes, (r.name,)))
    return out, outputs


def measured_latency(model: EdgeModel, runtime: str, threads: int = 1, runs: int = 50) -> float:
    """Batch-1 p50 (ms) of ``model`` exported to ``runtime`` (parity-checked) and timed there."""
    from edgeopt.runtimes import benchmark

    return float(benchmark(runtime, model, threads=threads, warmup=5, runs=runs).p50_ms)


def violations(cost: dict[str, Any], budget: Budget, runtimes: list[str]) -> dict[str, float]:
    """Constraint values (``<= 0`` is within budget) for every limit ``budget`` sets. Pure.

    A latency limit is checked for each runtime whose latency ``cost`` knows (predicted or
    measured); a runtime with no figure is left to the final measurement.
    """
    out: dict[str, float] = {}
    if budget.latency_ms is not None:
        for r in runtimes:
            ms = cost.get("latency_ms", {}).get(r)
            if ms is not None:
                out[f"latency_ms.{r}"] = ms / budget.latency_ms - 1
    if budget.arena_kb is not None:  # the larger of the torch-graph and the .tflite-schedule estimates
        arena = max(cost["arena_bytes_int8"], cost.get("arena_bytes_int8_tflite", 0))
        out["arena_kb"] = arena / (budget.arena_kb * KIB) - 1
    if budget.flash_kb is not None:
        out["flash_kb"] = cost["flash_bytes_int8"] / (budget.flash_kb * KIB) - 1
    if budget.macs is not None:
        out["macs"] = cost["macs"] / budget.macs - 1
    if budget.params is not None:
        out["params"] = cost["params"] / budget.params - 1
    if budget.mcu is not None and "mcu" in cost:
        m = cost["mcu"]  # arena + runtime RAM within SRAM, model + runtime code within flash
        out["mcu"] = max(m["sram_needed_bytes"] / m["sram_bytes"], m["flash_needed_bytes"] / m["flash_bytes"]) - 1
    return out


def feasible(cons: dict[str, float]) -> bool:
    return all(v <= 0 for v in cons.values())
