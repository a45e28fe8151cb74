"""Quantization-aware training: LSQ fake quantization with a straight-through estimator.

``quantize_qat(model, data, recipe, QATConfig(epochs=2))``:

1. folds batch norms' scale into the convs (as PTQ does) on a copy of the float model, then wraps
   every conv/linear with fake quantizers: per-channel symmetric weights with a *learnable step*
   (LSQ, Esser et al. 2020, initialised from the MSE-optimal scale) and a per-tensor affine int8
   quantizer on the layer's input, its step learnable too (initialised from calibration);
   rounding passes gradients straight through (STE), LSQ's gradient scale ``1/√(n·qmax)``;
2. fine-tunes with ``fit`` (its ``loss_fn`` hook adds distillation from the float model as teacher:
   ``α·T²·KL(teacher/T ‖ student/T) + (1-α)·CE``), Adam at 1e-4. Folded batch norms (now
   identity-scale biases) stay in eval mode throughout; unfolded ones (``fold_bn=False``) train and
   are frozen after ``freeze_bn_fraction`` of the epochs;
3. removes the wrappers and runs the PTQ path on the fine-tuned float weights with each layer's
   learned weight steps pinned in the PT2E weight observers, so the integer program uses what was
   learned. Activation ranges are re-calibrated by the recipe's observers on the trained weights.

Models whose output is a softmax (e.g. imported TFLite classifiers) are trained on the log of their
probabilities. Cost: ``epochs`` passes over ``data`` with fake quantization (~1.5x a float epoch) + PTQ.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edgeopt.compress.quantize import calibration as cal
from edgeopt.compress.quantize.ptq import QuantRecipe, calibration_batch, quantize_ptq, run_batches, with_float_layers
from edgeopt.data import ImageDataset
from edgeopt.model import EdgeModel


@dataclass
class QATConfig:
    epochs: int = 2
    # fine-tuning: at Adam's 1e-3 a 2-epoch digits ResNet-8 lost up to 13 pt in one QAT epoch (Adam moves every weight
    # and every learned step by ~lr per update, whatever its size); 1e-4 kept or gained accuracy (2026-12-02)
    lr: float = 1e-4
    optimizer: str = "adam"
    batch_size: int = 128
    distill: bool = True
    temperature: float = 4.0
    alpha: float = 0.7
    freeze_bn_fraction: float = 0.5
    seed: int = 0


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """round(x) forward, identity gradient backward (straight-through estimator)."""
    return (x.round() - x).detach() + x


def grad_scale(x: torch.Tensor, g: float) -> torch.Tensor:
    """x forward, gradient multiplied by ``g`` backward (LSQ's step-size gradient scaling)."""
    return (x - x * g).detach() + x * g


def lsq_fake_quant(x: torch.Tensor, step: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int,
                   g: float) -> torch.Tensor:  # fmt: skip
    """LSQ fake quantization: ``(clamp(round(x/s) + z, qmin, qmax) - z) * s`` with STE and scaled step grads."""
    s = grad_scale(step, g)
    q = torch.clamp(round_ste(x / s) + zero_point, qmin, qmax)
    return (q - zero_point) * s


class LSQWrapper(nn.Module):
    """A conv/linear whose input (int8 affine, learnable step) and weight (per-channel symmetric,
    learnable steps) are fake-quantized."""

    def __init__(self, layer: nn.Module, weight_bits: int, act_range: tuple[float, float], weight_method: str) -> None:
        super().__init__()
        self.layer = layer
        self.qmax_w = 2 ** (weight_bits - 1) - 1
        w = layer.weight.detach().numpy()
        self.w_step = nn.Parameter(torch.from_numpy(cal.weight_scales(w, weight_bits, weight_method)).float())
        scale, zp = cal.qparams_from_range(*act_range)
        self.a_step = nn.Parameter(torch.tensor(scale, dtype=torch.float32))
        self.register_buffer("a_zp", torch.tensor(float(zp)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xq = lsq_fake_quant(x, self.a_step.abs() + 1e-9, self.a_zp, -128, 127, 1.0 / math.sqrt(x[0].numel() * 127))
        w = self.layer.weight
        shape = (-1,) + (1,) * (w.ndim - 1)
        g = 1.0 / math.sqrt(w[0].numel() * self.qmax_w)
        wq = lsq_fake_quant(w, (self.w_step.abs() + 1e-9).reshape(shape), torch.zeros(()), -self.qmax_w, self.qmax_w, g)
        if isinstance(self.layer, nn.Conv2d):
            lay = self.layer
            return F.conv2d(xq, wq, lay.bias, lay.stride, lay.padding, lay.dilation, lay.groups)
        return F.linear(xq, wq, self.layer.bias)


def _set(module: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(module.get_submodule(parent) if parent else module, leaf, new)


def _input_ranges(module: nn.Module, names: list[str], x: torch.Tensor, method: str) -> dict[str, tuple[float, float]]:
    mods = dict(module.named_modules())
    hists: dict[str, cal.Histogram | None] = dict.fromkeys(names)

    def hook(name: str):
        def f(_m: nn.Module, inp: tuple[torch.Tensor, ...]) -> None:
            hists[name] = cal.merge_into(hists[name], inp[0].detach().numpy())

        return f

    hs = [mods[n].register_forward_pre_hook(hook(n)) for n in names]
    try:
        run_batches(module, x)
    finally:
        for h in hs:
            h.remove()
    return {n: cal.choose_range(h, method) if h is not None else (0.0, 1.0) for n, h in hists.items()}


def _is_probability_output(module: nn.Module, x: torch.Tensor) -> bool:
    with torch.no_grad():
        y = module(x[:8])
    return bool((y >= 0).all() and torch.allclose(y.sum(1), torch.ones(len(y)), atol=1e-3))


def quantize_qat(model: EdgeModel, data: ImageDataset, recipe: QuantRecipe, cfg: QATConfig | None = None) -> EdgeModel:
    """QAT fine-tuning then the PTQ path with learned weight steps pinned. See module doc."""
    from edgeopt.compress.quantize.transforms import fold_batchnorm
    from edgeopt.train import FitConfig, fit

    cfg = cfg or QATConfig()
    recipe = with_float_layers(copy.deepcopy(recipe), model)  # layers kept float get no fake quantization
    student = copy.deepcopy(model.module).eval()
    teacher = copy.deepcopy(model.module).eval()
    x_calib = calibration_batch(model, data, recipe.calib_samples, recipe.seed)
    # a folded BN is a per-channel bias with identity statistics: in train mode it would normalize by the batch's
    # statistics again (and drift its running ones), undoing the fold; it stays in eval mode throughout
    folded = fold_batchnorm(student, x_calib[:1]) if recipe.fold_bn else 0
    names = [n for n, m in student.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    ranges = _input_ranges(student, names, x_calib, recipe.calib)
    for n in names:
        bits = recipe.layer_bits.get(n, recipe.weight_bits)
        if bits == 0:
            continue
        method = "mse" if bits == 4 else recipe.weight_method
        _set(student, n, LSQWrapper(student.get_submodule(n), bits, ranges[n], method))
    probs = _is_probability_output(teacher, x_calib)
    ce = nn.CrossEntropyLoss()

    def logits_of(y: torch.Tensor) -> torch.Tensor:
        return torch.log(y.clamp_min(1e-8)) if probs else y

    def loss_fn(out: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        z = logits_of(out)
        loss = ce(z, y)
        if cfg.distill:
            with torch.no_grad():
                zt = logits_of(teacher(x.contiguous()))
            t = cfg.temperature
            kd = F.kl_div(F.log_softmax(z / t, 1), F.log_softmax(zt / t, 1), log_target=True, reduction="batchmean")
            loss = cfg.alpha * t * t * kd + (1 - cfg.alpha) * loss
        return loss

    freeze_at = max(1, int(round(cfg.epochs * cfg.freeze_bn_fraction)))

    def on_epoch(record: dict[str, Any]) -> None:
        if record["epoch"] >= freeze_at:
            for m in student.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()  # freeze running statistics for the remaining epochs

    wrapped = EdgeModel(student, model.meta)
    fit_cfg = FitConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, optimizer=cfg.optimizer, lr=cfg.lr,
                        weight_decay=0.0, label_smoothing=0.0, warmup_epochs=0.0, seed=cfg.seed,
                        freeze_bn=folded > 0)  # fmt: skip
    _, history = fit(wrapped, data, fit_cfg, loss_fn=loss_fn, on_epoch=on_epoch)
    learned: dict[str, list[float]] = {}
    for n in names:
        w = student.get_submodule(n)
        if isinstance(w, LSQWrapper):
            learned[n] = [float(s) for s in w.w_step.detach().abs()]
            _set(student, n, w.layer)
    trained = EdgeModel(student.eval(), model.meta)
    recipe.fold_bn = False  # already folded
    recipe.method = "qat"
    q = quantize_ptq(trained, data, recipe, weight_steps=learned)
    q.meta.lineage[-1]["metrics"]["qat_history"] = history.epochs
    q.meta.lineage[-1]["metrics"]["qat_seconds"] = round(history.seconds, 2)
    q.meta.lineage = list(model.meta.lineage) + [q.meta.lineage[-1]]
    return q
