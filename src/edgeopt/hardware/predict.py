"""What a model will cost on a device, before it is deployed: latency, flash, arena, energy, MCU fit.

``predict_cost(model, "profile.json")`` answers for a calibrated runtime profile: latency from the
predictor (with its error band), flash and arena from the artifact the runtime would load (exported
once; the arena from the runtime's own memory plan where it has one, edgeopt's liveness plan
labelled as such where it has not), MACs and parameters, and an energy *estimate*.
``predict_cost(model, "mcu:stm32f746")`` answers for a microcontroller preset: int8 flash and arena,
whether they fit, and a latency estimate from published throughput figures.

Cost: one ``torch.export`` for the kernels (~0.2–1 s), plus one export to the runtime's format for
flash and arena (1–10 s) unless ``artifact=False``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from edgeopt.errors import EdgeoptError
from edgeopt.hardware.energy import energy_estimate
from edgeopt.hardware.kernels import Kernel, kernels_of_model
from edgeopt.hardware.mcu import get_preset, mcu_estimate
from edgeopt.hardware.profile import DeviceProfile, load_profile
from edgeopt.model import EdgeModel

MCU_PREFIX = "mcu:"


def is_quantized(model: EdgeModel) -> bool:
    return bool(getattr(model.module, "quantized", False))


def predict_latency(model: EdgeModel, profile: DeviceProfile, kernels: list[Kernel] | None = None) -> dict[str, Any]:
    """Predicted latency (ms) of a float model with the profile's error band. Pure given the kernels."""
    if is_quantized(model):
        raise EdgeoptError(
            "latency profiles are calibrated on float models; this model is quantized",
            "predict the float model before quantizing it, and measure the int8 artifact with `edgeopt bench`",
        )
    kernels = kernels if kernels is not None else kernels_of_model(model)
    ms = profile.predict_ms(kernels)
    band = profile.predictor.band_pct / 100
    return {
        "latency_ms": ms,
        "latency_ms_band": [ms / (1 + band), ms * (1 + band)],
        "error_band_pct": profile.predictor.band_pct,
        "error_band": error_band_meaning(profile),
    }


def error_band_meaning(profile: DeviceProfile) -> str:
    """What ``error_band_pct`` is for this profile: cross-validated over a calibration's models, or left
    out one at a time over a transfer's few. Measured (2-core AMD EPYC, 2026-12-06, docs/hardware.md):
    the calibrations' bands held 85.0–91.0% of 200 held-out models; a transfer's band, over 16 draws of
    20, a mean 83–94%, but on single cross-library draws as few as 50% (its 20 and the scored models
    timed in one run)."""
    if profile.transferred_from is None:
        return "90% of held-out calibration models fell within this relative error (cross-validated)"
    n = profile.transferred_from.get("measurements", len(profile.samples))
    return (
        f"90% of the {n} models timed for this transfer fell within this relative error (each left out in turn); "
        "from so few timings a rough guide: other models can fall further (docs/hardware.md)"
    )


def _runtime_cost(model: EdgeModel, profile: DeviceProfile, artifact: bool) -> dict[str, Any]:
    from edgeopt.profile import profile_model

    kernels = kernels_of_model(model)
    out: dict[str, Any] = {"runtime": profile.runtime, "threads": profile.threads}
    out.update(predict_latency(model, profile, kernels))
    prof = profile_model(model)
    out.update({"macs": prof.macs, "params": prof.params})
    if artifact:
        from edgeopt.interop.export import FORMATS, export_model
        from edgeopt.runtimes import RUNTIME_FORMAT
        from edgeopt.runtimes.memory_plan import memory_plan

        fmt = RUNTIME_FORMAT[profile.runtime]
        with tempfile.TemporaryDirectory(prefix="edgeopt-predict-") as tmp:
            result = export_model(model, fmt, Path(tmp) / f"model{FORMATS[fmt]}")
            plan = memory_plan(result.path)
        # ExecuTorch's plan holds only the delegate's inputs and outputs: XNNPACK keeps the
        # intermediates in a workspace of its own, estimated beside the plan (runtimes.memory_plan)
        arena = plan.detail.get("arena_plus_workspace_bytes_estimate", plan.arena_bytes)
        source = plan.source + ("+xnnpack_workspace_estimate" if arena != plan.arena_bytes else "")
        out.update(
            flash_bytes=result.size_bytes,
            arena_bytes=int(arena),
            planned_arena_bytes=plan.arena_bytes,
            weights_bytes=plan.weights_bytes,
            arena_source=source,
        )
    activations = sum(k.out_bytes for k in kernels)
    energy = energy_estimate(prof.macs, activations, prof.size_bytes, "int8" if is_quantized(model) else "float32")
    out["energy_mj_estimate"] = energy["energy_mj_estimate"]
    out["energy"] = energy
    mismatch = profile.mismatch()
    out["profile"] = {"runtime": profile.runtime, "threads": profile.threads,
                      "cpu_model": profile.fingerprint.get("cpu_model"), "created": profile.created}  # fmt: skip
    out["warnings"] = (
        [f"profile calibrated elsewhere ({'; '.join(mismatch)}): recalibrate with `{profile.recalibrate_hint()}`"]
        if mismatch
        else []
    )
    return out


def _mcu_cost(model: EdgeModel, preset_name: str) -> dict[str, Any]:
    """Int8 deployment on a microcontroller: flash = one byte per weight value plus int32 biases
    (the stored size when the model is already quantized), arena = edgeopt's liveness plan with
    one-byte activations. Both are estimates (TFLite Micro's planner and alignment differ a little)."""
    from edgeopt.profile import activation_memory, export_for_profile, profile_model

    preset = get_preset(preset_name)
    prof = profile_model(model)
    if is_quantized(model):
        flash, arena = prof.size_bytes, prof.peak_activation_bytes
    else:
        flash = prof.params  # int8: one byte per stored value (biases are int32, BN folds away: close)
        arena = activation_memory(export_for_profile(model), fuse_elementwise=True).peak_bytes // 4
    est = mcu_estimate(preset, prof.macs, arena, flash, int8=True)
    energy = energy_estimate(prof.macs, arena, flash, "int8")
    return {
        "mcu": est,
        "fits": est["fits"],
        "reasons": est["reasons"],
        "latency_ms": est["latency_ms_estimate"],
        "latency_is_estimate": True,
        "flash_bytes": flash,
        "arena_bytes": arena,
        "arena_source": "edgeopt_liveness_int8_estimate",
        "macs": prof.macs,
        "params": prof.params,
        "energy_mj_estimate": energy["energy_mj_estimate"],
        "energy": energy,
        "warnings": list(est.get("warnings", [])),
    }


def predict_cost(model: EdgeModel, profile: str | Path | DeviceProfile, artifact: bool = True) -> dict[str, Any]:
    """Latency, flash, arena, MACs, params and energy of ``model`` on a device.

    ``profile`` is a calibrated profile (a ``DeviceProfile`` or its JSON path) or ``mcu:NAME`` for a
    microcontroller preset. ``artifact=False`` skips the export (no flash / arena figures).
    """
    if isinstance(profile, str) and profile.lower().startswith(MCU_PREFIX):
        return _mcu_cost(model, profile[len(MCU_PREFIX) :])
    prof = profile if isinstance(profile, DeviceProfile) else load_profile(profile)
    return _runtime_cost(model, prof, artifact)
