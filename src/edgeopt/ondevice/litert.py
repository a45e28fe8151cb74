"""A trainable linear head in LiteRT: one .tflite with ``train`` and ``infer`` signatures, trained in ai-edge-litert.

LiteRT has no training runtime of its own, but a train step is just a graph: the ``train`` signature takes a
batch, one-hot labels, the head's weight and bias and the learning rate, runs the frozen backbone forward,
and returns the loss, the updated weight and bias and their gradients (written by hand: softmax cross-entropy
through a linear layer, so nothing needs autograd at conversion time). ``infer`` takes a batch and the head's
weights and returns logits. The app keeps the weights between calls (passed in and out).

Only a linear head trains: litert-torch cannot lower convolution backward (``aten.convolution_backward``), so
any scope that trains a conv (or anything before the head) is refused with one line.
"""

from __future__ import annotations

import copy
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeopt.errors import EdgeoptError
from edgeopt.model import EdgeModel
from edgeopt.ondevice.scopes import Scope, head_name
from edgeopt.runtimes.base import quiet_output


class _Backbone(nn.Module):
    """The model with its head replaced by identity: returns the head's input features."""

    def __init__(self, module: nn.Module, head: str) -> None:
        super().__init__()
        self.net = copy.deepcopy(module).eval()
        parent_name, _, attr = head.rpartition(".")
        parent = self.net.get_submodule(parent_name) if parent_name else self.net
        setattr(parent, attr, nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.net(x), 1)


class TrainStep(nn.Module):
    """``(x, onehot, w, b, lr) -> (loss, w', b', dw, db)``: one hand-written SGD step of the linear head."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor, onehot: torch.Tensor, w: torch.Tensor, b: torch.Tensor, lr: torch.Tensor):
        f = self.backbone(x)
        logits = f @ w.t() + b
        logp = torch.log_softmax(logits, dim=1)
        n = x.shape[0]
        loss = -(onehot * logp).sum() / n
        g = (torch.exp(logp) - onehot) / n
        dw = g.t() @ f
        db = g.sum(0)
        return loss, w - lr * dw, b - lr * db, dw, db


class Infer(nn.Module):
    """``(x, w, b) -> logits`` with the head's weights as inputs."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.backbone(x) @ w.t() + b


def check_litert_scope(model: EdgeModel, scope: Scope) -> nn.Linear:
    """The head LiteRT can train under ``scope``, or one clear ``EdgeoptError`` for what it cannot lower."""
    if not (scope.kind == "head" or (scope.kind == "lastk" and scope.k == 1)):
        raise EdgeoptError(
            f"LiteRT cannot train scope '{scope.name}': litert-torch does not lower convolution backward "
            "(aten.convolution_backward), so only a linear head trains in a .tflite",
            "use --scope head with --runtime litert, or --runtime executorch for this scope",
        )
    head = model.module.get_submodule(head_name(model.module))
    if not isinstance(head, nn.Linear):
        raise EdgeoptError(f"LiteRT trains a linear head only; this model's head is {type(head).__name__}",
                           "use --runtime executorch")  # fmt: skip
    return head


def export_trainable_head(model: EdgeModel, batch_size: int, out: str | Path) -> Path:
    """Write a .tflite with ``train`` and ``infer`` signatures (module doc) for ``batch_size``-image batches.

    Cost: two litert-torch conversions of the model (seconds each).
    """
    head = check_litert_scope(model, Scope("head"))
    backbone = _Backbone(model.module, head_name(model.module))
    x = model.example_input(batch_size)
    w, b = head.weight.detach().clone(), head.bias.detach().clone() if head.bias is not None else None
    if b is None:
        raise EdgeoptError("LiteRT head training needs a head with a bias", "use --runtime executorch")
    onehot = torch.zeros(batch_size, w.shape[0])
    lr = torch.tensor(0.01)
    with quiet_output() as said:
        import litert_torch

        try:
            edge = (litert_torch.signature("train", TrainStep(backbone).eval(), (x, onehot, w, b, lr))
                    .signature("infer", Infer(backbone).eval(), (x, w, b)).convert())  # fmt: skip
        except Exception as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
            raise EdgeoptError(f"litert-torch cannot convert the trainable head ({first})",
                               "use --runtime executorch") from e  # fmt: skip
    del said
    out = Path(out)
    from edgeopt.fileio import atomic_path

    with atomic_path(out) as tmp:
        edge.export(str(tmp))
    return out


class LiteRTHead:
    """A trainable-head .tflite loaded in ai-edge-litert; holds the head's weights between steps."""

    def __init__(self, path: str | Path, w: np.ndarray, b: np.ndarray, threads: int = 1) -> None:
        from ai_edge_litert.interpreter import Interpreter

        with quiet_output():
            self.interp = Interpreter(model_path=str(path), num_threads=threads)
        self.train_fn = self.interp.get_signature_runner("train")
        self.infer_fn = self.interp.get_signature_runner("infer")
        self.w = np.ascontiguousarray(w, np.float32)
        self.b = np.ascontiguousarray(b, np.float32)
        self.batch_size = int(self.infer_fn.get_input_details()["args_0"]["shape"][0])

    def step(self, x: np.ndarray, y: np.ndarray, lr: float, update: bool = True) -> dict[str, Any]:
        """One train-signature call: ``loss``, gradients ``dw``/``db``; the weights move unless ``update`` is False."""
        onehot = np.eye(self.w.shape[0], dtype=np.float32)[y]
        out = self.train_fn(args_0=np.ascontiguousarray(x, np.float32), args_1=onehot, args_2=self.w, args_3=self.b,
                            args_4=np.array(lr, np.float32))  # fmt: skip
        vals = [out[k] for k in sorted(out, key=lambda k: int(k.rsplit("_", 1)[-1]))]
        loss, w, b, dw, db = vals
        if update:
            self.w, self.b = np.array(w, np.float32), np.array(b, np.float32)
        return {"loss": float(loss), "dw": np.array(dw), "db": np.array(db)}

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Logits of a batch of exactly ``batch_size`` inputs."""
        out = self.infer_fn(args_0=np.ascontiguousarray(x, np.float32), args_1=self.w, args_2=self.b)
        return np.array(next(iter(out.values())))


def litert_adapt(model: EdgeModel, scope: Scope, batches: list, test: Any, cfg: Any, start: float) -> Any:
    """``adapt`` with ``--runtime litert``: train the head in the .tflite's ``train`` signature; see :func:`adapt`.

    Accuracy before and after is measured with the ``infer`` signature. Cost: two conversions and the steps.
    """
    from edgeopt.ondevice.adapt import AdaptResult
    from edgeopt.ondevice.memory import MemoryFigures, analytic_memory
    from edgeopt.ondevice.scopes import prepare_scope

    head = check_litert_scope(model, scope)
    batch = int(batches[0][0].shape[0])
    with tempfile.TemporaryDirectory() as tmp:
        path = export_trainable_head(model, batch, Path(tmp) / "head.tflite")
        size = path.stat().st_size
        runner = LiteRTHead(path, head.weight.detach().numpy(), head.bias.detach().numpy(), cfg.threads)
        before = litert_accuracy(runner, test, model) if test is not None else None
        losses, times = [], []
        for x, y in batches:
            t0 = time.perf_counter()
            losses.append(runner.step(x.numpy(), y.numpy(), cfg.lr)["loss"])
            times.append(time.perf_counter() - t0)
        after = litert_accuracy(runner, test, model) if test is not None else None
    out = EdgeModel(copy.deepcopy(model.module).eval(), model.meta)
    trained = out.module.get_submodule(head_name(out.module))
    with torch.no_grad():
        trained.weight.copy_(torch.from_numpy(runner.w))
        trained.bias.copy_(torch.from_numpy(runner.b))
    out = out.with_lineage({"pass": "adapt", "scope": scope.name, "runtime": "litert", "steps": len(batches),
                            "lr": cfg.lr, "batch_size": batch})  # fmt: skip
    work, _ = prepare_scope(model.module, scope)
    parts = analytic_memory(work, batches[0][0], batches[0][1])
    return AdaptResult(out, before, after, "litert", scope.name, len(batches), time.perf_counter() - start,
                       MemoryFigures(parts["total"], None, None, parts), losses,
                       float(np.median(times) * 1e3), size,
                       {"accuracy_measured_in": "litert infer signature"})  # fmt: skip


def litert_accuracy(runner: LiteRTHead, data: Any, model: EdgeModel) -> float:
    """Top-1 accuracy through the ``infer`` signature (static batch: the last batch is padded)."""
    n_batch = runner.batch_size
    correct = 0
    for s in range(0, len(data), n_batch):
        idx = np.arange(s, min(s + n_batch, len(data)))
        n = len(idx)
        if n < n_batch:
            idx = np.concatenate([idx, np.full(n_batch - n, idx[-1])])
        pred = runner.logits(model.meta.input.to_model_input(data.images[idx])).argmax(1)
        correct += int((pred[:n] == data.labels[idx[:n]]).sum())
    return correct / len(data)
