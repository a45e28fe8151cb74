"""How a runtime looks in every report and plot: one name, one colour, one marker (pure).

The mapping is fixed per runtime name, not by a runtime's position in a report, so ExecuTorch
has the same colour in a recipe report, a federated report and every plot of either. A runtime
not listed here gets a colour from ``_SPARE`` chosen by a stable hash of its name (the same in
every report). Colours are from matplotlib's tab10 (colour-blind-friendly order), none reused.
Cost: a dictionary look-up.
"""

from __future__ import annotations

import re
import zlib

# Runtimes in the order tables and plots show them; others follow alphabetically.
RUNTIME_ORDER = ("executorch", "litert", "onnxruntime", "torch")
# What tables, legends and headlines call each runtime.
RUNTIME_NAMES = {"torch": "PyTorch", "executorch": "ExecuTorch", "litert": "LiteRT", "onnxruntime": "ONNX Runtime"}
RUNTIME_COLOURS = {"executorch": "#1f77b4", "litert": "#ff7f0e", "onnxruntime": "#2ca02c", "torch": "#7f7f7f"}
RUNTIME_MARKERS = {"executorch": "o", "litert": "s", "onnxruntime": "^", "torch": "D"}
# Runtimes that run a deployed artifact (the others, torch, run the PyTorch module itself).
DEVICE_RUNTIMES = ("executorch", "litert", "onnxruntime")
_SPARE = ("#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#d62728")
_SPARE_MARKERS = ("v", "P", "X", "*", "h", "<")


def _spare_index(runtime: str) -> int:
    return zlib.crc32(runtime.encode("utf-8")) % len(_SPARE)


def runtime_colour(runtime: str) -> str:
    """The runtime's colour (``#rrggbb``), the same in every report."""
    return RUNTIME_COLOURS.get(runtime) or _SPARE[_spare_index(runtime)]


def runtime_marker(runtime: str) -> str:
    """The runtime's matplotlib marker, the same in every plot."""
    return RUNTIME_MARKERS.get(runtime) or _SPARE_MARKERS[_spare_index(runtime)]


def runtime_name(runtime: str) -> str:
    """How reports name ``runtime`` (``onnxruntime`` -> ``ONNX Runtime``); unknown names as given."""
    return RUNTIME_NAMES.get(runtime, runtime)


def order_runtimes(runtimes: set[str] | list[str]) -> list[str]:
    """``runtimes`` in ``RUNTIME_ORDER`` (device runtimes first, PyTorch last), others alphabetically."""
    seen = set(runtimes)
    known = [r for r in RUNTIME_ORDER if r in seen]
    return known + sorted(seen - set(known))


def runtime_slug(runtime: str) -> str:
    """``runtime`` as a safe id fragment (``[a-z0-9_]``), for element ids and data attributes."""
    return re.sub(r"[^a-z0-9_]", "_", runtime.lower()) or "_"
