"""Training loop: ``fit(model, data, epochs=...)`` returns the trained model and its history.

SGD (Nesterov) or Adam with a cosine schedule and linear warm-up, label smoothing, crop and
flip augmentation for images, channels-last memory format for conv models. Deterministic on
the CPU: one seed fixes data order and augmentation (a seeded generator), dropout (torch's RNG),
and the run holds a fixed intra-op thread count and torch's deterministic kernels. ``loss_fn``
is the hook for distillation and other losses: it receives the logits, the labels and the input
batch and returns the scalar loss.

Cost: epochs x len(data) forward+backward passes (ResNet-8 on 2 cores: ~45 s per
CIFAR-10 epoch). ``device="cuda"`` trains on a GPU when one is present (the teacher of a
``Distiller`` follows the batches there); the model always comes back on the CPU.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from edgeopt.checks import check_numbers
from edgeopt.data import ImageDataset
from edgeopt.data.classes import check_trainable, match_classes
from edgeopt.errors import EdgeoptError
from edgeopt.model import EdgeModel, check_finite, model_args
from edgeopt.progress import ProgressBar, epoch_label
from edgeopt.train import multi
from edgeopt.train.augment import random_crop_flip
from edgeopt.train.tasks import batch_targets, check_model_data, loss_function

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class FitConfig:
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"  # sgd | adam
    lr: float | None = None  # default: 0.05 for SGD, 2e-3 for Adam, times the zoo model's lr_scale (``default_lr``)
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    augment: bool = True
    warmup_epochs: float = 0.5
    seed: int = 0
    device: str = "cpu"  # cpu | cuda | auto (cuda when present); the model comes back on the CPU
    threads: int | None = None  # intra-op threads while training (None: torch's current count, held fixed)
    # batch norms keep their running statistics (eval mode) while the rest trains: for BNs that are no longer
    # normalizers, e.g. folded into their convs (then identity-scale biases) before quantization-aware training
    freeze_bn: bool = False

    def __post_init__(self) -> None:
        check_numbers(self.__dict__)  # lr > 0, epochs >= 0, batch_size >= 1, ... (one-line errors)


@dataclass
class FitHistory:
    epochs: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextlib.contextmanager
def deterministic_cpu(threads: int | None, enabled: bool = True) -> Iterator[None]:
    """Hold torch's intra-op thread count and deterministic kernels for a training run; restored after.

    Together with seeded data order, augmentation and initialisation this makes a CPU training run
    bit-for-bit repeatable. ``enabled=False`` only fixes the thread count (GPU runs: CUDA's
    deterministic kernels need an environment variable set before start-up).
    """
    threads_before = torch.get_num_threads()
    det_before = torch.are_deterministic_algorithms_enabled()
    warn_before = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(threads or threads_before)
    if enabled:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(det_before, warn_only=warn_before)
        torch.set_num_threads(threads_before)


DEFAULT_LR = {"sgd": 0.05, "adam": 2e-3}  # peak learning rates without --lr, before the model's lr_scale


def default_lr(model: EdgeModel, optimizer: str) -> float:
    """The peak learning rate without ``--lr``: the optimizer's default, times the zoo model's ``lr_scale``
    for a classifier (the scales were measured on classification; a regression MLP diverges with SGD at 0.3)."""
    if optimizer not in DEFAULT_LR:
        raise EdgeoptError(f"unknown optimizer '{optimizer}'", "use sgd or adam")
    from edgeopt.models.registry import lr_scale_of

    scale = lr_scale_of(model.meta.arch) if model.meta.task == "classification" else 1.0
    return DEFAULT_LR[optimizer] * scale


def _uses_conv(module: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in module.modules())


def training_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` (an error when absent) or ``auto`` (cuda when present)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name not in ("cpu", "cuda"):
        raise EdgeoptError(f"unknown training device '{name}'", "use cpu, cuda or auto")
    if name == "cuda" and not torch.cuda.is_available():
        raise EdgeoptError("no CUDA device is available", "train with --device cpu")
    return torch.device(name)


def _to_tensor(model: EdgeModel, images: np.ndarray, channels_last: bool, device: torch.device) -> torch.Tensor:
    x = torch.from_numpy(model.meta.input.to_model_input(images)).to(device)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _to_args(model: EdgeModel, samples: np.ndarray, device: torch.device) -> tuple[torch.Tensor, ...]:
    """A multi-input model's batch: one tensor per input (:class:`edgeopt.model.InputSet`)."""
    return tuple(t.to(device) for t in model_args(model.meta.input.to_model_input(samples)))


def fit(
    model: EdgeModel,
    data: ImageDataset,
    config: FitConfig | None = None,
    loss_fn: LossFn | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    extra_optimizer: torch.optim.Optimizer | None = None,
) -> tuple[EdgeModel, FitHistory]:
    """Train ``model`` on ``data`` in place and return it with per-epoch loss (and accuracy).

    The loss is the model's task's (:mod:`edgeopt.train.tasks`): cross-entropy for classifiers,
    MSE to the targets for regression, MSE to the input for an autoencoder, which trains on the
    data's normal samples only (anomaly labels 0); a multi-output model's is the weighted sum of its
    heads' losses (:mod:`edgeopt.train.multi`), on data with one label array per head. Crop/flip
    augmentation applies to images only.
    Classification labels follow class names (see :func:`edgeopt.data.classes.match_classes`); a model without
    names records the data's. Data with fewer than two classes is refused.

    ``extra_optimizer`` steps parameters that live outside the model alongside it (architecture
    gates that ``loss_fn`` reads, for instance), with its own learning rate and no schedule.
    """
    cfg = config or FitConfig()
    task = model.meta.task
    heads = model.meta.outputs  # a multi-output model: the weighted sum of its heads' losses (train.multi)
    if heads is not None:
        check_model_data(task, data.task)
        multi.check_heads(heads, data.outputs)
    elif task == "classification":
        check_model_data(task, data.task)
        check_trainable(data)
        data, _ = match_classes(model.meta.class_names, model.meta.num_classes, data)  # labels in the model's order
    else:
        check_model_data(task, data.task)
        if task == "anomaly":  # an autoencoder learns what normal looks like
            normal = np.flatnonzero(data.labels == 0)
            if len(normal) == 0:
                raise EdgeoptError("the anomaly training data has no normal samples", "train on normal windows")
            if len(normal) < len(data):
                data = data.subset(normal)
    model.meta.input.to_model_input(data.images[:1])  # shape check with a clear message
    seed_everything(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    device = training_device(cfg.device)
    module = model.module.train().to(device)
    if cfg.freeze_bn:
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
    layout_4d = model.meta.input.layout == "NCHW"
    channels_last = layout_4d and _uses_conv(module)
    if channels_last:
        module.to(memory_format=torch.channels_last)
    augment = cfg.augment and data.is_image  # crop and flip are image augmentations
    if heads is not None and any(h.task != "classification" for h in heads):
        augment = False  # a shift changes what a regression target measures of the image (a multi-output model's)
    if augment:
        h, _, c = data.image_shape
        pad = 4 if h >= 24 else 1
        flip = c == 3  # mirroring digits or letters changes their meaning; natural images survive it
    params = [p for p in module.parameters() if p.requires_grad]
    lr = cfg.lr or default_lr(model, cfg.optimizer)
    if cfg.optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(
            params, lr=lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay
        )
    else:
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, math.ceil(len(data) / cfg.batch_size))
    total = cfg.epochs * steps_per_epoch
    warmup = int(cfg.warmup_epochs * steps_per_epoch)

    def lr_factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    if loss_fn is None and heads is not None:
        loss_fn = multi.loss(heads, cfg.label_smoothing)
    loss_fn = loss_fn or loss_function(task, cfg.label_smoothing)
    classify = task == "classification"
    history = FitHistory()
    start = time.perf_counter()
    bar = ProgressBar("training", cfg.epochs * steps_per_epoch, transient=False)
    held = contextlib.ExitStack()
    held.enter_context(deterministic_cpu(cfg.threads, enabled=device.type == "cpu"))
    try:
        for epoch in range(cfg.epochs):
            order = rng.permutation(len(data))
            seen = correct = 0
            loss_sum = 0.0
            for s in range(steps_per_epoch):
                idx = order[s * cfg.batch_size : (s + 1) * cfg.batch_size]
                imgs = data.images[idx]
                if augment:
                    imgs = random_crop_flip(imgs, rng, pad, flip)
                if model.meta.is_multi_input:  # one tensor per input; no layout change (inputs differ)
                    args = _to_args(model, imgs, device)
                    x = args[0]
                else:
                    x = _to_tensor(model, imgs, channels_last, device)
                    args = (x,)
                if heads is not None:
                    y = multi.batch_targets(heads, data.labels[idx], device)
                else:
                    y = batch_targets(task, data.labels[idx]).to(device)
                logits = module(*args)
                loss = loss_fn(logits, y, x)
                if not torch.isfinite(loss):
                    raise EdgeoptError(f"training diverged (loss is {loss.item()}) in epoch {epoch + 1}", "lower --lr")
                opt.zero_grad(set_to_none=True)
                if extra_optimizer is not None:
                    extra_optimizer.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if extra_optimizer is not None:
                    extra_optimizer.step()
                sched.step()
                seen += len(idx)
                if classify:
                    correct += int((logits.argmax(1) == y).sum())
                loss_sum += float(loss.detach()) * len(idx)
                acc_text = f" acc {correct / seen:.3f}" if classify else ""
                bar.advance(epoch_label(epoch + 1, cfg.epochs), f"loss {loss_sum / seen:.3f}{acc_text}")
            record = {"epoch": epoch + 1, "loss": loss_sum / seen}
            if classify:
                record["train_accuracy"] = correct / seen
            history.epochs.append(record)
            if on_epoch:
                on_epoch(record)
    finally:
        held.close()
        bar.close()
        module.eval().to("cpu")
        if channels_last:
            module.to(memory_format=torch.contiguous_format)
    history.seconds = time.perf_counter() - start
    check_finite(module)
    if classify and model.meta.class_names is None and data.num_classes == model.meta.num_classes:
        model.meta.class_names = list(data.class_names)
    return model, history
