"""Fast bias correction: NNCF's ``FastBiasCorrection`` (its PTQ default), reproduced for PT2E programs.

edgeopt's default bias correction (``ptq.correct_biases``) is empirical: each layer's bias absorbs
the mean shift between the quantized program's output and the float model's, measured on the
calibration images running through the (partly corrected) quantized prefix. NNCF does something
cheaper and different, layer by layer and independently:

- on the float model, record each conv/linear layer's per-channel input mean ``ē`` and per-channel
  output mean ``ȳ`` over the calibration images (and all positions);
- feed one *constant* input — ``ē`` at every position, the layer's input shape — through that layer
  alone with its quantized weights; the shift is ``ȳ - mean(layer_q(ē))`` per output channel;
- add the shift to the bias unless ``max |shift / bias| ≥ threshold`` (2; a layer with a zero bias
  entry is skipped).

Because the input is a constant, the shift holds more than the weights' rounding error: it also holds
``mean over positions of W·x`` minus ``W·ē``, which differs wherever the kernel taps see the input
unevenly (stride-2 convolutions, borders). That part changes the *float* model too, so its effect is
not quantization accuracy: measure ``float_model(q)`` (the float model with these biases) beside the
int8 model. (On the MLPerf ResNet-8 with JPEG CIFAR-10 it is the whole of NNCF's +1.6 pt over float:
docs/quantization.md.)

Zero padding: NNCF's ONNX convolutions pad inside the op, so the constant input is zero in the
padding. Here a zero pad may be a separate op before the conv; positions of the conv's input that
are exactly zero for every calibration image (all channels) are taken as padding: the constant
input is zero there, and ``ē`` is the mean over the other positions. A batch norm after a conv
(kept as a pure bias after folding) is the carrier: the reference is its output, its bias is shifted.

Cost: one float pass over the calibration images with hooks, then one single-sample pass per layer.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

FAST_BIAS_THRESHOLD = 2.0  # NNCF's FAST_BIAS_CORRECTION_THRESHOLD
_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Linear)


def fast_bias_shifts(
    module: nn.Module,
    x: torch.Tensor,
    quantized_weights: dict[str, torch.Tensor],
    carriers: dict[str, nn.Module] | None = None,
    threshold: float = FAST_BIAS_THRESHOLD,
) -> dict[str, torch.Tensor]:
    """Per-layer bias shifts of NNCF's fast bias correction (see the module doc); ``module`` is not changed.

    ``quantized_weights``: layer path -> the weights its program runs with (fake-quantized, float
    dtype); only these layers are corrected. ``carriers``: layer path -> the module whose output is
    the reference and whose bias is shifted (a batch norm following the layer; default the layer).
    Returns layer path -> shift (one value per output channel) for the layers that pass the threshold.
    Cost: one pass of ``x`` through ``module`` plus one single-sample pass per layer.
    """
    mods = dict(module.named_modules())
    carriers = dict(carriers or {})
    names = [n for n in quantized_weights if isinstance(mods.get(n), _LAYERS)]
    names = [n for n in names if getattr(carriers.get(n, mods[n]), "bias", None) is not None]
    in_sum: dict[str, torch.Tensor] = {}
    in_abs: dict[str, torch.Tensor] = {}
    in_shape: dict[str, tuple[int, ...]] = {}
    out_sum: dict[str, torch.Tensor] = {}
    out_count: dict[str, int] = {}
    count: dict[str, int] = dict.fromkeys(names, 0)

    def pre(name: str) -> Any:
        def hook(_m: nn.Module, args: tuple[Any, ...]) -> None:
            a = args[0].detach().double()
            in_sum[name] = in_sum.get(name, 0) + a.sum(0)  # [C, *positions]
            if a.ndim > 2:  # per position, over samples and channels: exactly 0 only where it is padding
                in_abs[name] = in_abs.get(name, 0) + a.abs().sum(dim=(0, 1))
            in_shape[name] = tuple(a.shape[1:])
            count[name] += a.shape[0]

        return hook

    def post(name: str) -> Any:
        def hook(_m: nn.Module, _i: Any, out: torch.Tensor) -> None:
            dims = [i for i in range(out.ndim) if i != 1]
            out_sum[name] = out_sum.get(name, 0) + out.detach().double().sum(dim=dims)
            out_count[name] = out_count.get(name, 0) + out.numel() // out.shape[1]

        return hook

    hooks = [mods[n].register_forward_pre_hook(pre(n)) for n in names]
    hooks += [carriers.get(n, mods[n]).register_forward_hook(post(n)) for n in names]
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            for i in range(0, x.shape[0], 128):
                module(x[i : i + 128])
    finally:
        for h in hooks:
            h.remove()
        module.train(was_training)
    shifts: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for n in names:
            if not count[n]:
                continue
            blob = _constant_input(in_sum[n] / count[n], in_abs.get(n), in_shape[n])
            layer, carrier = mods[n], carriers.get(n, mods[n])
            y = torch.func.functional_call(layer, {"weight": quantized_weights[n].to(layer.weight.dtype)}, (blob,))
            if carrier is not layer:
                y = carrier(y)
            dims = [i for i in range(y.ndim) if i != 1]
            shift = out_sum[n] / out_count[n] - y.double().mean(dim=dims)
            bias = carrier.bias.detach().double()
            if bool((bias == 0).any()):
                continue  # NNCF: a zero bias entry makes the magnitude infinite
            if float((shift / bias).abs().max()) < threshold:
                shifts[n] = shift.to(carrier.bias.dtype)
    return shifts


def _constant_input(mean: torch.Tensor, abs_sum: Any, shape: tuple[int, ...]) -> torch.Tensor:
    """One sample of ``shape``: each channel's mean at every position that was ever non-zero, 0 elsewhere."""
    if len(shape) == 1:
        return mean.float().reshape(1, -1)
    live = (torch.as_tensor(abs_sum) > 0).reshape(1, *shape[1:]).double()
    per_channel = (mean.reshape(shape[0], -1) * live.reshape(1, -1)).sum(1) / live.sum().clamp(min=1)
    return (per_channel.reshape(-1, *([1] * (len(shape) - 1))) * live).float().unsqueeze(0)


def apply_fast_bias_correction(
    module: nn.Module,
    x: torch.Tensor,
    quantized_weights: dict[str, torch.Tensor],
    carriers: dict[str, nn.Module] | None = None,
    threshold: float = FAST_BIAS_THRESHOLD,
) -> dict[str, float]:
    """``fast_bias_shifts`` added to the biases of ``module`` in place. Returns layer -> max |shift|."""
    mods = dict(module.named_modules())
    carriers = carriers or {}
    shifts = fast_bias_shifts(module, x, quantized_weights, carriers, threshold)
    with torch.no_grad():
        for n, s in shifts.items():
            carriers.get(n, mods[n]).bias.add_(s)
    return {n: float(s.abs().max()) for n, s in shifts.items()}
