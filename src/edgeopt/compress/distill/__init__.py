"""Knowledge distillation: a teacher's soft targets (and features) as the student's training loss.

* ``kd_loss``: Hinton et al. (2015) soft-target loss,
  ``alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y)``.
* ``attention_loss``: feature / hint distillation by attention transfer (Zagoruyko & Komodakis
  2017): the L2 distance between normalised spatial attention maps ``sum_c f^2`` of paired
  layers. It needs no adapter weights, so it also pairs a pruned student (fewer channels)
  with its unpruned teacher. ``feature_loss`` is the plain MSE hint for equal shapes.
* ``Distiller`` turns these into the ``loss_fn(logits, y, x)`` hook of ``edgeopt.train.fit``:
  it runs the teacher on the same batch (converting the input when teacher and student expect
  different layouts or value ranges) and captures paired features with forward hooks.
* ``distill(student, teacher, data)`` trains with it; the same hook is the recovery loss after
  pruning and can be passed to any ``fit`` call (QAT included).

Cost: every training step adds one teacher forward pass (no backward).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edgeopt.checks import check_numbers
from edgeopt.compress.common import as_logits
from edgeopt.data import ImageDataset
from edgeopt.data.classes import show_names
from edgeopt.errors import EdgeoptError
from edgeopt.model import EdgeModel, InputSpec, refuse_multi_output

__all__ = [
    "DistillConfig", "Distiller", "attention_loss", "attention_map", "auto_hint_pairs", "distill",
    "feature_loss", "input_converter", "kd_loss",
]  # fmt: skip


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor | None = None,
    temperature: float = 4.0,
    alpha: float = 0.9,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Soft-target distillation loss (scaled by T^2 so gradients keep their size as T changes).

    ``alpha`` weighs the soft term; ``1 - alpha`` the cross-entropy with ``labels`` (skipped when
    None or alpha == 1). Pure; cost O(batch x classes).
    """
    t = float(temperature)
    log_p_s = F.log_softmax(student_logits / t, dim=1)
    log_p_t = F.log_softmax(teacher_logits.detach() / t, dim=1)
    soft = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * (t * t)
    if labels is None or alpha >= 1.0:
        return soft
    hard = F.cross_entropy(student_logits, labels, label_smoothing=label_smoothing)
    return alpha * soft + (1.0 - alpha) * hard


def attention_map(feature: torch.Tensor) -> torch.Tensor:
    """Normalised spatial attention of an (N, C, H, W) feature map: ``sum_c f^2``, flattened, unit L2 norm."""
    a = feature.pow(2).mean(1).flatten(1)
    return F.normalize(a, dim=1)


def attention_loss(student_feature: torch.Tensor, teacher_feature: torch.Tensor) -> torch.Tensor:
    """Attention-transfer hint loss; channel counts may differ, spatial sizes are matched by pooling."""
    s, t = student_feature, teacher_feature.detach()
    if s.shape[-2:] != t.shape[-2:]:
        t = F.adaptive_avg_pool2d(t, s.shape[-2:])
    return (attention_map(s) - attention_map(t)).pow(2).mean()


def feature_loss(student_feature: torch.Tensor, teacher_feature: torch.Tensor) -> torch.Tensor:
    """FitNets-style MSE hint for features of identical shape."""
    if student_feature.shape != teacher_feature.shape:
        raise EdgeoptError(
            f"feature hint shapes differ ({tuple(student_feature.shape)} vs {tuple(teacher_feature.shape)})",
            "use the attention hint, which needs only equal spatial sizes",
        )
    return F.mse_loss(student_feature, teacher_feature.detach())


def input_converter(src: InputSpec, dst: InputSpec) -> Callable[[torch.Tensor], torch.Tensor]:
    """Map a batch in ``src``'s layout / range / normalisation to what a ``dst`` model expects."""
    if src == dst:
        return lambda x: x
    if not (src.is_image and dst.is_image):
        same = src.shape == dst.shape and src.layout == dst.layout and (src.mean, src.std) == (dst.mean, dst.std)
        if not same:
            raise EdgeoptError(
                f"teacher and student take different inputs ({dst.layout} {dst.describe()} vs"
                f" {src.layout} {src.describe()})",
                "distil between models of the same input shape and normalisation",
            )
        return lambda x: x
    if src.image_shape != dst.image_shape:
        raise EdgeoptError(
            f"teacher and student take different image shapes ({dst.image_shape} vs {src.image_shape})",
            "distil between models of the same input size",
        )

    def stats(spec: InputSpec) -> tuple[torch.Tensor, torch.Tensor]:
        c = spec.image_shape[2]
        mean = torch.tensor(spec.mean if spec.mean is not None else [0.0] * c)
        std = torch.tensor(spec.std if spec.std is not None else [1.0] * c)
        return mean, std

    sm, ss = stats(src)
    dm, ds = stats(dst)
    (slo, shi), (dlo, dhi) = src.value_range, dst.value_range

    def convert(x: torch.Tensor) -> torch.Tensor:
        nhwc = x.permute(0, 2, 3, 1) if src.layout == "NCHW" else x
        raw = ((nhwc * ss + sm) - slo) / (shi - slo)  # back to 0..1 pixels
        y = raw * (dhi - dlo) + dlo
        y = (y - dm) / ds
        y = y.permute(0, 3, 1, 2) if dst.layout == "NCHW" else y
        return y.contiguous()

    return convert


@dataclass
class DistillConfig:
    """Distillation settings: soft targets (temperature, alpha) and optional attention hints."""

    temperature: float = 4.0
    alpha: float = 0.9
    label_smoothing: float = 0.0
    hint_weight: float = 0.0  # weight of the attention-transfer term (0: logits only)
    hints: list[tuple[str, str]] | None = None  # (student layer, teacher layer); None: auto when hint_weight > 0

    def __post_init__(self) -> None:
        check_numbers(self.__dict__)


def _conv_outputs(module: nn.Module, example: torch.Tensor) -> list[tuple[str, tuple[int, ...]]]:
    shapes: list[tuple[str, tuple[int, ...]]] = []
    hooks = []
    for name, m in module.named_modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(lambda _m, _i, o, n=name: shapes.append((n, tuple(o.shape)))))
    try:
        with torch.no_grad():
            module.eval()(example)
    finally:
        for h in hooks:
            h.remove()
    return shapes


def auto_hint_pairs(student: EdgeModel, teacher: EdgeModel) -> list[tuple[str, str]]:
    """Pair the last conv of each spatial resolution in student and teacher (same names first).

    For a pruned student the layer names match its teacher's; for different architectures the
    k-th resolution stage of one is paired with the k-th of the other.
    """

    def last_per_res(model: EdgeModel) -> dict[tuple[int, int], str]:
        out: dict[tuple[int, int], str] = {}
        for name, shape in _conv_outputs(model.module, model.example_input(1)):
            out[shape[-2:]] = name
        return out

    s, t = last_per_res(student), last_per_res(teacher)
    return [(s[res], t[res]) for res in s if res in t]


class Distiller:
    """The ``loss_fn(logits, y, x)`` for ``fit``: KD against ``teacher`` plus optional attention hints.

    Use as a context manager (or call ``close``) so the feature hooks are removed afterwards.
    """

    def __init__(self, student: EdgeModel, teacher: EdgeModel, config: DistillConfig | None = None) -> None:
        self.cfg = config or DistillConfig()
        if teacher.meta.task != student.meta.task:
            raise EdgeoptError(
                f"teacher is a {teacher.meta.task} model, student a {student.meta.task} model",
                "distil between models of the same task",
            )
        self.task = student.meta.task
        if self.task != "classification":  # regression / reconstruction: match the teacher's outputs
            from edgeopt.train.tasks import loss_function

            self.task_loss = loss_function(self.task)
        if teacher.meta.num_classes != student.meta.num_classes:
            raise EdgeoptError(
                f"teacher has {teacher.meta.num_classes} classes, student {student.meta.num_classes}",
                "distil between models of the same task",
            )
        self.teacher = teacher.module.eval()
        self._trainable = [p for p in self.teacher.parameters() if p.requires_grad]  # given back by close()
        for p in self._trainable:
            p.requires_grad_(False)
        self.convert = input_converter(student.meta.input, teacher.meta.input)
        self.pairs = list(self.cfg.hints or ([] if self.cfg.hint_weight <= 0 else auto_hint_pairs(student, teacher)))
        self._feats: dict[str, torch.Tensor] = {}
        self._hooks = []
        for s_name, t_name in self.pairs:
            self._hooks.append(self._hook(student.module, s_name, "s:" + s_name))
            self._hooks.append(self._hook(self.teacher, t_name, "t:" + t_name))

    def _hook(self, module: nn.Module, name: str, key: str) -> Any:
        try:
            sub = module.get_submodule(name)
        except AttributeError as e:
            raise EdgeoptError(
                f"no layer '{name}' to take a distillation hint from",
                "DistillConfig.hints names layers as in model.module.named_modules()",
            ) from e

        def save(_m: nn.Module, _i: Any, out: torch.Tensor) -> None:
            self._feats[key] = out

        return sub.register_forward_hook(save)

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        self._follow(x.device)
        with torch.no_grad():
            teacher_out = as_logits(self.teacher(self.convert(x)))
        if self.task == "classification":
            loss = kd_loss(as_logits(logits), teacher_out, labels, self.cfg.temperature, self.cfg.alpha,
                           self.cfg.label_smoothing)  # fmt: skip
        else:  # alpha weighs matching the teacher's outputs (MSE) against the task's own loss
            out = as_logits(logits)
            match = F.mse_loss(out.reshape(teacher_out.shape), teacher_out)
            loss = self.cfg.alpha * match + (1 - self.cfg.alpha) * self.task_loss(out, labels, x)
        if self.pairs and self.cfg.hint_weight > 0:
            hint = sum(attention_loss(self._feats["s:" + s], self._feats["t:" + t]) for s, t in self.pairs)
            loss = loss + self.cfg.hint_weight * hint / len(self.pairs)
        self._feats.clear()
        return loss

    def _follow(self, device: torch.device) -> None:
        """Move the teacher to where the batches are (fit on a GPU); ``close`` moves it back."""
        if next(self.teacher.parameters(), torch.empty(0)).device != device:
            self.teacher.to(device)

    def close(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []
        self.teacher.to("cpu")
        for p in self._trainable:  # the caller's teacher model is trainable again
            p.requires_grad_(True)
        self._trainable = []

    def __enter__(self) -> Distiller:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def distill(
    student: EdgeModel,
    teacher: EdgeModel,
    data: ImageDataset,
    fit_config: Any = None,
    config: DistillConfig | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> tuple[EdgeModel, Any]:
    """Train ``student`` on ``data`` against ``teacher`` (``fit`` with the Distiller loss).

    Returns the student (trained in place, lineage extended) and the fit history.
    Cost: ``fit``'s cost plus one teacher forward per step.
    """
    for m in (student, teacher):
        refuse_multi_output(m, "distill")
    from edgeopt.train import FitConfig, fit

    cfg = config or DistillConfig()
    fc = fit_config or FitConfig()
    names = teacher.meta.class_names
    if names is not None and student.meta.class_names not in (None, names):
        raise EdgeoptError(
            f"the teacher's classes {show_names(names)} are not the student's"
            f" {show_names(student.meta.class_names)}",
            "distill into a student with the teacher's classes",
        )
    if names is not None and student.meta.num_classes == len(names):
        student.meta.class_names = list(names)  # it learns the teacher's outputs, so the teacher's labels
    with Distiller(student, teacher, cfg) as loss_fn:
        student, history = fit(student, data, fc, loss_fn=loss_fn, on_epoch=on_epoch)
    step = {"pass": "distill", "epochs": fc.epochs, "temperature": cfg.temperature, "alpha": cfg.alpha,
            "hint_weight": cfg.hint_weight, "hints": [list(p) for p in loss_fn.pairs]}  # fmt: skip
    return student.with_lineage(step), history

