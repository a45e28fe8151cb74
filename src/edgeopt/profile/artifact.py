"""Profile of a runtime artifact on its own (``.pte``, ``.tflite``, ``.onnx``, nothing beside it).

What the file says about itself: its size, its input interface (``runtimes.interface``: embedded by
edgeopt, an old sidecar, or read from the file; flags override), the memory plan of
``runtimes.memory_plan`` (ExecuTorch's own plan, or edgeopt's liveness over the artifact's graph),
and, for the graphs edgeopt imports (float ``.onnx``/``.tflite``), the parameter and MAC counts of
``profile_model`` on the imported module. An ExecuTorch program or an integer ``.tflite`` has no
PyTorch module to count; ``counts_note`` says so instead of failing.

Cost: opening the artifact in its runtime (one run on zeros when nothing describes it), parsing
its plan, and for float graphs an import plus one ``torch.export``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeopt.errors import EdgeoptError
from edgeopt.runtimes.interface import InterfaceFlags
from edgeopt.runtimes.memory_plan import MemoryPlan

ARTIFACT_SUFFIXES = (".pte", ".tflite", ".onnx")


@dataclass
class ArtifactProfile:
    """An artifact's size, input interface, memory plan and (when it imports) counts."""

    file_bytes: int
    interface: dict[str, Any]
    plan: MemoryPlan
    counts: dict[str, Any] = field(default_factory=dict)
    counts_note: str | None = None

    def fields(self) -> dict[str, Any]:
        """Counts, interface and size as flat output fields (the plan is formatted by the caller)."""
        out = {**self.counts, **self.interface, "file_bytes": self.file_bytes}
        if self.counts_note:
            out["counts_note"] = self.counts_note
        return out


def profile_artifact(path: str | Path, flags: InterfaceFlags | None = None) -> ArtifactProfile:
    """Profile the artifact at ``path`` alone; ``flags`` override its stated input interface."""
    from edgeopt.runtimes.memory_plan import memory_plan
    from edgeopt.runtimes.resolve import open_model

    path = Path(path)
    if path.suffix.lower() not in ARTIFACT_SUFFIXES:
        raise EdgeoptError(f"{path.name} is not a runtime artifact", f"give a {', '.join(ARTIFACT_SUFFIXES)} file")
    flags = flags or InterfaceFlags()
    opened = open_model(str(path), None, 1, flags.input_range, flags.layout, flags.classes)
    opened.runner.close()
    spec = opened.meta.input
    interface = {
        "input_shape": list(spec.shape),
        "layout": spec.layout,
        "input_range": list(spec.value_range),
        "num_classes": opened.meta.num_classes,
        "class_names": opened.meta.class_names,
        "input_source": opened.meta_source,
    }
    counts, note = _counts(path)
    return ArtifactProfile(path.stat().st_size, interface, memory_plan(path), counts, note)


def _counts(path: Path) -> tuple[dict[str, Any], str | None]:
    if path.suffix.lower() == ".pte":
        return {}, "an ExecuTorch program is not counted: profile the model it was exported from for params/MACs"
    from edgeopt.model import load_model
    from edgeopt.profile import profile_model

    try:
        model = load_model(path)
    except EdgeoptError as e:  # integer .tflite and ops the importer does not translate: the runtime still runs it
        return {}, f"params/MACs not counted: {e.problem}"
    return profile_model(model).to_json(), None
