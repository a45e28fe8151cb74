"""The training loops: the same batches and plain SGD, inside ExecuTorch's training runtime or in PyTorch eager.

:func:`make_batches` fixes the data order (seeded shuffles, static batch, last partial batch dropped) so
that every runtime sees the same steps. :class:`ExecuTorchTrainer` loads a training program
(:mod:`edgeopt.ondevice.program`), runs ``forward_backward`` and ExecuTorch's own SGD, measures accuracy
with the program's prediction output, and reads the trained weights back. :func:`torch_train` is the eager
reference (same initial weights, same batches, same SGD).

Both clip the gradients' global L2 norm (:func:`clip_gradients`, default 1.0) before the update: with batch
norm frozen in eval mode, a shifted domain gives the convolutions large gradients (norm ~30 on ResNet-8 at
the first step) and full fine-tuning diverged to NaN at lr 0.01-0.02 unclipped. In ExecuTorch the clipping is
host code between ``forward_backward`` and the runtime's SGD step, as an app would write it (ExecuTorch's
SGD has no clipping of its own).

Gradient accumulation (``micro_batch``): the program's static batch may be a divisor of the training batch;
each batch then runs as micro-batches whose gradients are averaged on the host before the one clipped update.
Same data, same optimizer steps, same update (up to float rounding); the program's activations shrink with
the micro-batch, at the cost of one gradient-sized accumulator and more calls per step.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from edgeopt.data import ImageDataset
from edgeopt.errors import EdgeoptError
from edgeopt.model import InputSpec
from edgeopt.progress import ProgressBar
from edgeopt.runtimes.base import quiet_output


def make_batches(
    data: ImageDataset, spec: InputSpec, batch_size: int, steps: int, seed: int = 0
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``steps`` batches of ``batch_size`` (model input, int64 labels), reshuffled every epoch with ``seed``."""
    rng = np.random.default_rng(seed)
    per_epoch = max(1, len(data) // batch_size)
    order = rng.permutation(len(data))
    done = 0
    while done < steps:
        slot = done % per_epoch
        if slot == 0 and done:
            order = rng.permutation(len(data))
        idx = np.sort(order[slot * batch_size : (slot + 1) * batch_size])
        x = torch.from_numpy(spec.to_model_input(data.images[idx]))
        yield x, torch.from_numpy(data.labels[idx])
        done += 1


DEFAULT_CLIP_NORM = 1.0


def clip_gradients(grads: list[torch.Tensor], max_norm: float | None) -> float:
    """Scale ``grads`` in place so that their global L2 norm is at most ``max_norm`` (``None``: leave them); the
    norm before clipping. The same arithmetic as ``torch.nn.utils.clip_grad_norm_``, on bare tensors."""
    total = float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0
    if max_norm is not None and grads:
        scale = min(1.0, max_norm / (total + 1e-6))
        if scale < 1.0:
            for g in grads:
                g.mul_(scale)
    return total


@dataclass
class LoopResult:
    """Per-step losses and median step time of one training run."""

    losses: list[float] = field(default_factory=list)
    step_ms: float = 0.0
    seconds: float = 0.0


def _progress(description: str, steps: int) -> ProgressBar:
    return ProgressBar(description, steps)


class HostSGD:
    """Plain SGD (``p -= lr * g``) applied on the host to a float64 training program's parameters, in the runtime's
    own memory (``TrainingModule.named_parameters`` aliases it, as ExecuTorch's SGD relies on).

    Hand-written because ExecuTorch 1.5.1's SGD (``extension/training/optimizer/sgd.cpp``) reads parameters and
    gradients as float32 whatever their dtype: on float64 ones its step writes garbage. Only float64 programs,
    which exist to check the runtime's arithmetic (:mod:`edgeopt.ondevice.program`), use it. No momentum."""

    def __init__(self, params: dict[str, torch.Tensor], lr: float, momentum: float = 0.0) -> None:
        if momentum:
            raise EdgeoptError("float64 training programs update with plain SGD only", "use momentum 0")
        self.params, self.lr = params, lr

    def step(self, grads: dict[str, torch.Tensor]) -> None:
        """One update in place; ``grads`` keyed like the parameters."""
        for k, g in grads.items():
            self.params[k].add_(g, alpha=-self.lr)


class ExecuTorchTrainer:
    """A loaded ExecuTorch training program: train with its SGD, predict with its forward, read weights back.

    ``threads`` sizes ExecuTorch's process-wide threadpool before the program loads (the delegated frozen
    part runs on it; the portable kernels run on the calling thread)."""

    def __init__(
        self,
        buffer: bytes,
        lr: float,
        momentum: float = 0.0,
        clip_norm: float | None = DEFAULT_CLIP_NORM,
        threads: int = 1,
        micro_batch: int | None = None,
    ) -> None:
        from edgeopt.runtimes.executorch_runner import size_threadpool

        with quiet_output():
            from executorch.extension.training import _load_for_executorch_for_training_from_buffer

            size_threadpool(threads)  # before the load: XNNPACK's frozen part runs on this pool
            self.module = _load_for_executorch_for_training_from_buffer(buffer)
        self.lr = lr
        self.momentum = momentum
        self.clip_norm = clip_norm
        self.micro_batch = micro_batch
        self.optimizer = None

    def _forward_backward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One call of the program's joint method: the loss and predicted classes (gradients stay in the module)."""
        if self.optimizer is not None:
            loss, pred = self.module.forward_backward("forward", (x, y))[:2]
            return loss, pred
        failed: RuntimeError | None = None  # the first call initialises the runtime's kernels, which log to stderr
        with quiet_output() as said:
            try:
                loss, pred = self.module.forward_backward("forward", (x, y))[:2]
            except RuntimeError as e:
                failed = e
        if failed is not None:
            missing = [ln.split("kernel ", 1)[1].split(" not found")[0] for ln in said.text.splitlines()
                       if "not found" in ln and "kernel " in ln]  # fmt: skip
            why = f"it lacks the kernel {missing[0]}" if missing else str(failed).strip().splitlines()[0]
            raise EdgeoptError(f"ExecuTorch cannot run this training program: {why}",
                               "choose a scope that does not train through that op (e.g. head)") from failed
        from executorch.extension.training import get_sgd_optimizer

        params = self.module.named_parameters()
        if any(p.dtype == torch.float64 for p in params.values()):
            self.optimizer = HostSGD(params, self.lr, self.momentum)
        else:
            self.optimizer = get_sgd_optimizer(params, self.lr, self.momentum, 0, 0, False)
        return loss, pred

    def step(self, x: torch.Tensor, y: torch.Tensor, update: bool = True) -> tuple[float, torch.Tensor]:
        """One optimizer step on the batch ``(x, y)`` (none if ``update`` is False): its loss and predicted classes.

        With ``micro_batch`` smaller than the batch, the batch runs as equal micro-batches through the program
        (whose static batch is ``micro_batch``) and their gradients are averaged on the host before the one
        clipped SGD update: the same mean loss and gradient as the whole batch at once, with the program's
        activations sized for a micro-batch (gradient accumulation; one more gradient-sized buffer).
        """
        n = int(x.shape[0])
        mb = self.micro_batch or n
        if n % mb:
            raise EdgeoptError(f"a batch of {n} does not split into micro-batches of {mb}",
                               "make the batch size a multiple of the micro-batch size")  # fmt: skip
        parts = n // mb
        total = 0.0
        preds: list[torch.Tensor] = []
        acc: dict[str, torch.Tensor] | None = None
        for i in range(parts):
            loss, pred = self._forward_backward(x[i * mb : (i + 1) * mb], y[i * mb : (i + 1) * mb])
            total += float(loss)
            preds.append(pred)
            if update:
                grads = self.module.named_gradients()  # fresh copies every call (TrainingModule clones them)
                if acc is None:
                    acc = grads
                else:
                    for k, g in grads.items():
                        acc[k].add_(g)
        if update and acc is not None:
            if parts > 1:
                for g in acc.values():
                    g.div_(parts)
            clip_gradients(list(acc.values()), self.clip_norm)
            self.optimizer.step(acc)  # type: ignore[union-attr]
        return total / parts, preds[0] if parts == 1 else torch.cat(preds)

    def train(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> LoopResult:
        """Train over ``batches``; losses per step and median step time."""
        return _timed_steps("training in ExecuTorch", batches, lambda x, y: self.step(x, y)[0])

    def accuracy(self, data: ImageDataset, spec: InputSpec, batch_size: int) -> float:
        """Top-1 accuracy measured with the program's own prediction output (no update; last batch padded)."""
        correct = 0
        for s in range(0, len(data), batch_size):
            idx = np.arange(s, min(s + batch_size, len(data)))
            n = len(idx)
            idx = np.concatenate([idx, np.full(batch_size - n, idx[-1])]) if n < batch_size else idx
            x = torch.from_numpy(spec.to_model_input(data.images[idx]))
            y = torch.from_numpy(data.labels[idx])
            _, pred = self.step(x, y, update=False)
            correct += int((pred[:n].numpy() == data.labels[idx[:n]]).sum())
        return correct / len(data)

    def parameters(self) -> dict[str, torch.Tensor]:
        """The trained parameters as the runtime holds them (names without the program's ``net.`` prefix)."""
        return {k.removeprefix("net."): v.clone() for k, v in self.module.named_parameters().items()}


def torch_train(
    work: nn.Module,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    lr: float,
    momentum: float = 0.0,
    clip_norm: float | None = DEFAULT_CLIP_NORM,
) -> LoopResult:
    """The eager reference: SGD on ``work``'s trainable parameters (batch norm in eval mode, gradients clipped
    as in ExecuTorch), in place."""
    params = [p for p in work.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum)
    work.eval()

    def step(x: torch.Tensor, y: torch.Tensor) -> float:
        loss = nn.functional.cross_entropy(work(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        clip_gradients([p.grad for p in params if p.grad is not None], clip_norm)
        opt.step()
        return float(loss.detach())

    return _timed_steps("training in PyTorch", batches, step)


def _timed_steps(
    label: str, batches: list[tuple[torch.Tensor, torch.Tensor]], step: Callable[[torch.Tensor, torch.Tensor], float]
) -> LoopResult:
    """Run ``step`` (returning the loss) on each batch under a progress bar; losses and median step time."""
    res = LoopResult()
    times = []
    bar = _progress(label, len(batches))
    start = time.perf_counter()
    try:
        for x, y in batches:
            t0 = time.perf_counter()
            res.losses.append(step(x, y))
            times.append(time.perf_counter() - t0)
            bar.advance(status=f"loss {res.losses[-1]:.4f}")
    finally:
        bar.close()
    res.seconds = time.perf_counter() - start
    res.step_ms = float(np.median(times) * 1e3) if times else 0.0
    return res
