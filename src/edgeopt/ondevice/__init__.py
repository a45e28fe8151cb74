"""On-device learning: fine-tune inside ExecuTorch's training runtime (or a LiteRT train signature) under a
memory budget, with the trainable scope chosen for the budget and training memory measured three ways.

``adapt`` (:mod:`edgeopt.ondevice.adapt`) is the entry point; ``scopes`` decides what trains, ``program``
builds the ExecuTorch training program, ``loops`` runs it, ``memory`` takes the figures, ``litert`` builds
and trains a .tflite head, ``lora`` holds the low-rank adapters. See docs/ondevice.md.
"""

from edgeopt.ondevice.adapt import AdaptConfig, AdaptResult, adapt, candidate_scopes, choose_scope
from edgeopt.ondevice.memory import MemoryFigures
from edgeopt.ondevice.scopes import Scope, parse_scope, prepare_scope

__all__ = [
    "AdaptConfig", "AdaptResult", "MemoryFigures", "Scope", "adapt", "candidate_scopes", "choose_scope",
    "parse_scope", "prepare_scope",
]  # fmt: skip
