"""Profile a model: parameters, MACs, weight size and peak activation memory.

``profile_model`` exports the module once with ``torch.export`` at batch 1 and reads
everything from the graph's shapes and the stored tensors; no data is run. Cost: the
export, about 0.1 s for LeNet-5 and 0.8 s for MobileNetV2 on 2 cores, plus about 1.5 s of
one-off torch.export warm-up in a fresh process. Conventions are in ``profile.counts`` (params, MACs, size)
and ``profile.memory`` (peak activation / tensor arena).

A quantized model (``QuantizedModule``) is counted on its integer program, the tensors that its
artifacts store: int8 weights at one byte each (4-bit weights too: no runtime stores a static-int8
convolution's int4 weights packed, so they occupy int8 storage), biases, scales and zero points.
``weight_values_by_bits`` says how many weight values have 8, 4 or 32 (float) bits.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from edgeopt.errors import EdgeoptError
from edgeopt.model import EdgeModel, refuse_multi_input
from edgeopt.profile.counts import (
    conv_macs,
    count_macs,
    count_params,
    count_trainable_params,
    linear_macs,
    weight_bytes,
    weight_values_by_bits,
)
from edgeopt.profile.memory import (
    LIVENESS_SOURCE,
    ActivationMemory,
    TensorRecord,
    activation_memory,
    activation_timeline,
    peak_activation_bytes,
    records_from_graph,
)

__all__ = [
    "LIVENESS_SOURCE",
    "ActivationMemory",
    "Profile",
    "TensorRecord",
    "activation_memory",
    "activation_timeline",
    "conv_macs",
    "count_macs",
    "count_params",
    "count_trainable_params",
    "export_for_profile",
    "linear_macs",
    "peak_activation_bytes",
    "profile_model",
    "records_from_graph",
    "stored_module",
    "weight_bytes",
    "weight_values_by_bits",
]


@dataclass(frozen=True)
class Profile:
    """Static cost figures of a model for one input (batch 1)."""

    params: int  # every stored value (Keras count, BN statistics included)
    trainable_params: int
    macs: int  # multiply-accumulates of convs and matrix products, one input
    size_bytes: int  # serialized weight bytes (sum of stored tensor nbytes; int8 weights one byte each)
    peak_activation_bytes: int  # tensor arena: peak of live activations, input included
    input_shape: list[int]  # without batch, in the model's own layout
    weight_values_by_bits: dict[str, int] | None = None  # quantized models: {"8": n, "4": n, "32": n}
    # whose figure peak_activation_bytes is: edgeopt's liveness walk on the torch.export graph (an
    # estimate, not a runtime's plan; see runtimes.memory_plan for the artifacts' own plans)
    peak_activation_source: str = LIVENESS_SOURCE

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _set_mode(module: torch.nn.Module, training: bool) -> None:
    try:
        module.train(training)
    except NotImplementedError:  # modules from torch.export / PT2E refuse: their graph fixed the mode
        pass


def export_for_profile(model: EdgeModel) -> torch.export.ExportedProgram:
    """``torch.export`` the module in eval mode at batch 1; its training flag is restored after."""
    module = model.module
    was_training = module.training
    _set_mode(module, False)
    try:
        return torch.export.export(module, model.example_args(1))  # one tensor per input
    except Exception as e:  # torch raises many types (Unsupported, UserError, RuntimeError...)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise EdgeoptError(
            f"cannot trace the model for profiling with torch.export ({first[:200]})",
            "make forward() free of data-dependent Python control flow, as export to any runtime requires",
        ) from e
    finally:
        _set_mode(module, was_training)


def stored_module(model: EdgeModel) -> torch.nn.Module:
    """What ``model``'s artifacts store: a quantized model's integer program, else the module itself."""
    module = model.module
    program = getattr(module, "program", None)
    if getattr(module, "quantized", False) and callable(program):
        return program(True)
    return module


def profile_model(model: EdgeModel) -> Profile:
    """Parameters, MACs, weight bytes and peak activation bytes of ``model`` for one input.

    Quantized models are counted on their integer program (see the module doc). Cost: one export.
    """
    refuse_multi_input(model, "profile")
    ep = export_for_profile(model)
    stored = stored_module(model)
    quantized = stored is not model.module
    return Profile(
        params=count_params(stored),
        trainable_params=count_trainable_params(model.module),
        macs=count_macs(ep.graph),
        size_bytes=weight_bytes(stored),
        peak_activation_bytes=activation_memory(ep).peak_bytes,
        input_shape=[int(s) for s in model.meta.input.shape],
        weight_values_by_bits=weight_values_by_bits(stored) if quantized else None,
    )
