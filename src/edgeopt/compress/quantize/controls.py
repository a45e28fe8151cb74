"""Float controls that split a quantized model's accuracy into domain adaptation and quantization.

A PTQ recipe fitted on calibration data can raise accuracy above the float model's, when the
calibration data differs from the training data (here: JPEG CIFAR-10 against a model trained on the
original images). Part of such a gain is not quantization at all: the float model given the same
data-fitted change gets it too. Two such changes, each with its float control:

- activation *ranges*: every int8 activation is clipped to its range. ``clipped_float(qm)`` is the
  float model with each activation clamped to the range of its quantizer (scale and zero point), and
  no rounding anywhere (weights float). ``meanmax`` ranges (NNCF's) clip hard enough that this alone
  moves accuracy.
- statistics alignment (``align``): the float model with the same alignment is
  ``align.align_statistics`` applied to the float model alone.

``quantization gain = int8 accuracy - control accuracy``; ``domain gain = control - float``.
Cost: one ``prepare`` of the float module (an export, ~1 s), then as many forward passes as asked.
"""

from __future__ import annotations

import torch
from torch import nn


class _Clamp(nn.Module):
    """``clamp(x, lo, hi)``: an activation quantizer without its rounding."""

    def __init__(self, lo: float, hi: float) -> None:
        super().__init__()
        self.lo, self.hi = lo, hi

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(self.lo, self.hi)

    def extra_repr(self) -> str:
        return f"lo={self.lo:.4g}, hi={self.hi:.4g}"


def clipped_float(qm: nn.Module) -> nn.Module:
    """The float program of ``qm`` (a ``QuantizedModule``) with every per-tensor activation quantizer
    replaced by a clamp to its range ``[s (qmin - z), s (qmax - z)]`` and every other observer (weights,
    fixed-parameter softmax output) by the identity: the quantized model's clipping without its
    rounding. The weights are ``qm``'s float weights (after BN folding, alignment and bias correction,
    whichever the recipe applied)."""
    from edgeopt.compress.quantize.ptq import observers, pin_qparams, prepare

    prepared = prepare(qm.float_module, qm.example_input(), qm.recipe)
    pin_qparams(prepared, qm.spec["qparams"])
    for name, o in observers(prepared).items():
        if o.is_weight:
            setattr(prepared, name, nn.Identity())
            continue
        scale, zp = (float(v.reshape(-1)[0]) for v in o.calculate_qparams())
        setattr(prepared, name, _Clamp(scale * (o.quant_min - zp), scale * (o.quant_max - zp)))
    for name, m in list(prepared.named_children()):
        if "FixedQParams" in type(m).__name__ or "Observer" in type(m).__name__:
            setattr(prepared, name, nn.Identity())
    prepared.recompile()
    return _Program(prepared)


class _Program(nn.Module):
    """An exported program behind a module that ``.eval()``/``.train()`` leave alone (an exported
    GraphModule refuses them; it is held outside the submodules so they do not recurse into it)."""

    def __init__(self, program: torch.fx.GraphModule) -> None:
        super().__init__()
        object.__setattr__(self, "program", program)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.program(x)
