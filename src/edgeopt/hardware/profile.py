"""A device profile: a runtime, a thread count, the machine's fingerprint and a fitted latency predictor.

Saved as plain JSON (the predictor's weights, LightGBM's text model for the correction, and the
measured samples it was fitted on, so it can be refitted or transferred without measuring again).
Loading executes nothing. ``DeviceProfile.mismatch()`` compares the stored fingerprint with this
machine; callers warn with ``recalibrate_hint``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeopt.errors import EdgeoptError
from edgeopt.fileio import write_json_atomic
from edgeopt.hardware.fingerprint import fingerprint_mismatch, machine_fingerprint
from edgeopt.hardware.kernels import Kernel
from edgeopt.hardware.predictor import LatencyPredictor

PROFILE_VERSION = 1


@dataclass
class DeviceProfile:
    """Where latency was measured (runtime, threads, fingerprint) and what predicts it there."""

    runtime: str
    threads: int
    fingerprint: dict[str, Any]
    predictor: LatencyPredictor
    samples: list[dict[str, Any]] = field(default_factory=list)
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%d %H:%M:%S %Z"))
    calibration_seconds: float = 0.0
    transferred_from: dict[str, Any] | None = None
    reference: dict[str, Any] | None = None  # the model timed beside each sample, and its median ms

    def predict_ms(self, kernels: list[Kernel]) -> float:
        """Predicted batch-1 latency (ms) of a model given its kernels."""
        return self.predictor.predict(kernels)

    def mismatch(self) -> list[str]:
        """How this machine differs from the one the profile was calibrated on (empty: same)."""
        return fingerprint_mismatch(self.fingerprint, machine_fingerprint(self.runtime))

    def recalibrate_hint(self, path: str | Path | None = None) -> str:
        out = f" --out {path}" if path else " --out PROFILE.json"
        return f"edgeopt hw calibrate --runtime {self.runtime} --threads {self.threads}{out}"

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": PROFILE_VERSION,
            "kind": "edgeopt-device-profile",
            "runtime": self.runtime,
            "threads": self.threads,
            "fingerprint": self.fingerprint,
            "created": self.created,
            "calibration_seconds": self.calibration_seconds,
            "transferred_from": self.transferred_from,
            "reference": self.reference,
            "predictor": self.predictor.to_json(),
            "samples": self.samples,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> DeviceProfile:
        if d.get("kind") != "edgeopt-device-profile":
            raise EdgeoptError(
                "this JSON file is not an edgeopt device profile", "make one with `edgeopt hw calibrate`"
            )
        try:
            return cls(
                runtime=str(d["runtime"]),
                threads=int(d["threads"]),
                fingerprint=dict(d["fingerprint"]),
                predictor=LatencyPredictor.from_json(d["predictor"]),
                samples=list(d.get("samples", [])),
                created=str(d.get("created", "")),
                calibration_seconds=float(d.get("calibration_seconds", 0.0)),
                transferred_from=d.get("transferred_from"),
                reference=d.get("reference"),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise EdgeoptError(f"device profile is malformed ({e})", "recalibrate with `edgeopt hw calibrate`") from e

    def save(self, path: str | Path) -> Path:
        return write_json_atomic(Path(path), self.to_json())


def default_profile_path(runtime: str, threads: int = 1) -> Path:
    """Where ``edgeopt hw calibrate`` keeps this machine's profile when no ``--out`` is given."""
    import os

    root = Path(os.environ.get("EDGEOPT_CACHE", Path.home() / ".cache" / "edgeopt"))
    return root / "profiles" / f"{runtime}_t{int(threads)}.json"


def load_profile(path: str | Path) -> DeviceProfile:
    """Read a profile written by ``DeviceProfile.save`` (plain JSON; nothing is executed)."""
    p = Path(path)
    if not p.is_file():
        raise EdgeoptError(f"device profile not found: {p}", "make one with `edgeopt hw calibrate --runtime R --out P`")
    try:
        d = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EdgeoptError(f"{p} is not valid JSON ({e})", "recalibrate with `edgeopt hw calibrate`") from e
    if not isinstance(d, dict):
        raise EdgeoptError(f"{p} is not an edgeopt device profile", "make one with `edgeopt hw calibrate`")
    return DeviceProfile.from_json(d)
