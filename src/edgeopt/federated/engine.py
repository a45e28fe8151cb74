"""The in-process engine (default): many simulated clients on one machine, deterministic, resumable.

One module object does every client's training (weights swapped in and out as flat
vectors), each client's data is converted to tensors once, and a checkpoint
(``checkpoint.npz``: weights, server optimizer moments, SCAFFOLD controls, error-feedback
residuals, history; read back with ``allow_pickle=False``) is written atomically after every
round, so ``resume=True`` continues a killed run from its last finished round and ends
with exactly the weights an uninterrupted run reaches.
Cost per round: ``per_round`` client updates (see :func:`client_update`) + one test pass.
"""

from __future__ import annotations

import contextlib
import copy
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeopt.data import ImageDataset
from edgeopt.errors import EdgeoptError
from edgeopt.federated.algorithms import LocalTrainer, ServerState, dp_epsilon, init_state
from edgeopt.federated.algorithms import secagg as sa
from edgeopt.federated.config import FederatedConfig
from edgeopt.federated.partition import label_histogram, partition
from edgeopt.federated.personal_eval import client_accuracies, finetune_heads
from edgeopt.federated.personalize import local_names, split_holdout, with_local
from edgeopt.federated.rounds import (
    ClientFailure,
    ClientState,
    RoundPlan,
    aggregate_round,
    client_config,
    client_seed,
    client_work,
    log,
    plan_round,
    secagg_private_key,
    secagg_public_keys,
    server_opt,
)
from edgeopt.fileio import atomic_path
from edgeopt.model import EdgeModel
from edgeopt.train.tasks import article, batch_targets, loss_function, task_score

CHECKPOINT = "checkpoint.npz"


@dataclass
class FederatedResult:
    """The trained model, one record per round, and the partition's label histogram."""

    model: EdgeModel
    history: list[dict[str, Any]]
    histogram: np.ndarray
    client_sizes: list[int]
    seconds: float = 0.0
    resumed_from: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def evaluate_params(
    module: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1000, task: str = "classification"
) -> tuple[float, float]:
    """(score, mean loss) of ``module`` on tensors ``x``, ``y`` for the model's ``task``.

    The score is :func:`edgeopt.train.tasks.task_score`'s (accuracy, R² or ROC AUC); the loss is the
    task's training loss (cross-entropy, or mean squared error). Cost: one forward pass over ``x``.
    """
    module.eval()
    correct = 0
    loss = 0.0
    outputs = []
    loss_fn = loss_function(task)
    with torch.inference_mode():
        for s in range(0, len(y), batch):
            out = module(x[s : s + batch])
            if task == "classification":
                loss += float(nn.functional.cross_entropy(out, y[s : s + batch], reduction="sum"))
                correct += int((out.argmax(1) == y[s : s + batch]).sum())
            else:
                loss += float(loss_fn(out, y[s : s + batch], x[s : s + batch])) * len(out)
                outputs.append(out.float().numpy())
    if task == "classification":
        return correct / max(1, len(y)), loss / max(1, len(y))
    score = task_score(task, np.concatenate(outputs), x.numpy(), y.numpy()) if outputs else float("nan")
    return score, loss / max(1, len(y))


def task_data(data: ImageDataset, task: str) -> ImageDataset:
    """``data`` as a ``task`` model trains on it, as ``fit`` does: class labels become regression
    targets; an autoencoder trains on the normal samples (label 0) only. Idempotent."""
    data = data.for_task(task)
    if task == "anomaly":
        normal = np.flatnonzero(np.asarray(data.labels) == 0)
        if len(normal) == 0:
            raise EdgeoptError("the anomaly training data has no normal samples", "train on normal windows")
        if len(normal) < len(data):
            data = data.subset(normal)
    return data


def check_task_options(cfg: FederatedConfig, task: str) -> None:
    """Refuse, in one line, the settings that only make sense for classifiers.

    Non-IID partitions split by class label; per-client held-out splits (``--personalize``,
    ``--holdout``) report accuracy (and an autoencoder's training split has no anomalies to rank).
    """
    if task == "classification":
        return
    what = f"{article(task)} {task} model"
    if cfg.partition != "iid":
        raise EdgeoptError(f"--partition {cfg.partition} splits by class label, but this is {what}",
                           "use --partition iid")  # fmt: skip
    if cfg.personalize != "none" or cfg.holdout_fraction > 0:
        raise EdgeoptError(f"--personalize and --holdout measure per-client accuracy, but this is {what}",
                           "drop --personalize and --holdout")  # fmt: skip


def epsilon_after(cfg: FederatedConfig, rounds: int) -> float | None:
    """Client-level ε after ``rounds`` rounds (None without DP noise)."""
    if cfg.dp_clip is None or cfg.dp_noise <= 0:
        return None
    return dp_epsilon(cfg.dp_noise, cfg.per_round / cfg.clients, rounds, cfg.dp_delta)


@dataclass
class _Checkpoint:
    state: ServerState
    client_states: dict[int, ClientState]
    history: list[dict[str, Any]]


def save_checkpoint(path: Path, cfg: FederatedConfig, ck: _Checkpoint) -> None:
    """Write the run's full state atomically as an .npz of plain arrays (no pickles)."""
    arrays: dict[str, np.ndarray] = {
        "params": ck.state.params,
        "round": np.array(ck.state.round, np.int64),
        "config": np.frombuffer(json.dumps(cfg.to_json()).encode(), np.uint8),
        "history": np.frombuffer(json.dumps(ck.history).encode(), np.uint8),
    }
    for name in ("m", "v", "control"):
        if getattr(ck.state, name) is not None:
            arrays[f"server_{name}"] = getattr(ck.state, name)
    for c, st in ck.client_states.items():
        if st.control is not None:
            arrays[f"client{c}_control"] = st.control
        if st.residual is not None:
            arrays[f"client{c}_residual"] = st.residual
        if st.local is not None:
            arrays[f"client{c}_local"] = st.local
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def load_checkpoint(path: Path) -> tuple[FederatedConfig, _Checkpoint]:
    """Read a checkpoint written by :func:`save_checkpoint` (``allow_pickle=False``)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise EdgeoptError(f"{path} is not a readable checkpoint ({e})", "delete it and start without --resume") from e
    cfg = FederatedConfig.from_json(json.loads(data["config"].tobytes()))
    state = ServerState(
        params=data["params"].astype(np.float32),
        round=int(data["round"]),
        m=data.get("server_m"),
        v=data.get("server_v"),
        control=data.get("server_control"),
    )
    clients: dict[int, ClientState] = {}
    for k, v in data.items():
        if k.startswith("client"):
            cid, _, kind = k[len("client") :].partition("_")
            st = clients.setdefault(int(cid), ClientState())
            setattr(st, kind, v.astype(np.float32))
    return cfg, _Checkpoint(state, clients, json.loads(data["history"].tobytes()))


def client_tensors(
    model: EdgeModel, data: ImageDataset, parts: list[np.ndarray]
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each client's samples as (float input tensor in the model's layout, targets), made once.

    Targets are :func:`edgeopt.train.tasks.batch_targets` of the model's task (int64 classes or flags, float targets).
    """
    out = []
    for p in parts:
        x = torch.from_numpy(model.meta.input.to_model_input(data.images[p]))
        out.append((x, batch_targets(model.meta.task, data.labels[p])))
    return out


class RunContext:
    """What every engine prepares the same way: partition, tensors, trainer, server state, resume."""

    def __init__(
        self, model: EdgeModel, train: ImageDataset, test: ImageDataset, cfg: FederatedConfig,
        out_dir: Path | None, resume: bool,
    ) -> None:  # fmt: skip
        self.task = model.meta.task
        check_task_options(cfg, self.task)
        train, test = task_data(train, self.task), test.for_task(self.task)
        if self.task == "classification" and train.num_classes > model.meta.num_classes:
            raise EdgeoptError(
                f"data has {train.num_classes} classes but the model outputs {model.meta.num_classes}",
                "build the model with the data's class count",
            )
        model.meta.input.to_model_input(train.images[:1])  # shape check with a clear message
        self.cfg = cfg
        self.model = model
        try:
            self.parts = partition(train.labels, cfg.clients, cfg.partition, cfg.seed)
        except ValueError as e:
            raise EdgeoptError(str(e), "use fewer clients or another --partition") from e
        self.parts, self.holdout_parts = split_holdout(self.parts, cfg.holdout_fraction, cfg.seed)
        self.sizes = [len(p) for p in self.parts]
        classes = 0 if self.task == "regression" else train.num_classes  # regression targets are not classes
        self.histogram = (
            label_histogram(train.labels, self.parts, classes) if classes else np.zeros((len(self.parts), 0))
        )
        self.module = copy.deepcopy(model.module)
        self.trainer = LocalTrainer(self.module)
        try:
            self.local_names = local_names(self.module, cfg.personalize, self.trainer.layout)
        except ValueError as e:
            raise EdgeoptError(str(e), "use --personalize head, or a model with batch norm") from e
        mask = self.trainer.layout.mask(self.local_names)
        self.local_mask = mask if cfg.personalize in ("head", "bn") else None  # kept on clients during rounds
        self.head_mask = mask if cfg.personalize == "finetune" else None  # adapted after the last round
        self.holdouts = client_tensors(model, train, self.holdout_parts)
        test = test.take(cfg.eval_limit, seed=0)
        self.x_test = torch.from_numpy(model.meta.input.to_model_input(test.images))
        self.y_test = batch_targets(self.task, test.labels)
        self.train = train
        self.ckpt_path = Path(out_dir) / CHECKPOINT if out_dir is not None else None
        self.resumed_from = 0
        init = self.trainer.read()
        self.ck = _Checkpoint(init_state(init, server_opt(cfg), cfg.algo == "scaffold"), {}, [])
        if self.ckpt_path is not None and self.ckpt_path.exists():
            if not resume:
                raise EdgeoptError(
                    f"{self.ckpt_path} already exists", "pass --resume to continue it or pick a new --out"
                )
            old_cfg, ck = load_checkpoint(self.ckpt_path)
            if old_cfg.fingerprint() != cfg.fingerprint():
                raise EdgeoptError("the checkpoint was written with different settings", "rerun with the same flags")
            if len(ck.state.params) != len(init):
                raise EdgeoptError("the checkpoint does not fit this model", "use the same MODEL as the first run")
            self.ck = ck
            self.resumed_from = ck.state.round

    def evaluate(self, params: np.ndarray) -> tuple[float, float]:
        """(score, loss) of ``params`` on the test tensors (score: the task's, e.g. accuracy)."""
        self.trainer.load(params)
        return evaluate_params(self.module, self.x_test, self.y_test, task=self.task)

    def finish_record(self, record: dict[str, Any], params: np.ndarray, seconds: float) -> dict[str, Any]:
        """Add the test score (``test_accuracy``: the task's score)/loss, wall time and ε to a round's record."""
        acc, loss = self.evaluate(params)
        record.update(
            test_accuracy=acc, test_loss=loss, seconds=seconds, epsilon=epsilon_after(self.cfg, record["round"])
        )
        if self.local_mask is not None:  # what clients run: their own part in the shared model
            accs = self.personal_accuracies(params)
            sizes = [len(p) for p, a in zip(self.holdout_parts, accs, strict=True) if a is not None]
            record["personal_accuracy"] = float(np.average([a for a in accs if a is not None], weights=sizes))
        return record

    def client_params(self, params: np.ndarray) -> list[np.ndarray]:
        """Each client's model: ``params`` with its kept part (the server's where it has none yet)."""
        assert self.local_mask is not None
        states = self.ck.client_states
        return [with_local(params, self.local_mask, states[c].local if c in states else None)
                for c in range(self.cfg.clients)]  # fmt: skip

    def personal_accuracies(self, params: np.ndarray) -> list[float | None]:
        """Each client's personalized model's accuracy on its held-out split."""
        return client_accuracies(self.trainer, self.client_params(params), self.holdouts)

    def per_client(self, tensors: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, Any]:
        """Per-client accuracies on the held-out splits: the global model's, and the personalized models'."""
        params = self.ck.state.params
        out: dict[str, Any] = {
            "holdout_sizes": [len(p) for p in self.holdout_parts],
            "global": client_accuracies(self.trainer, [params] * self.cfg.clients, self.holdouts),
            "trained_locally": [c in self.ck.client_states for c in range(self.cfg.clients)],
        }
        if self.local_mask is not None:
            out["personal"] = self.personal_accuracies(params)
        elif self.head_mask is not None:
            cc = replace(client_config(self.cfg, self.task), epochs=self.cfg.finetune_epochs)
            seeds = [client_seed(self.cfg, self.cfg.rounds + 1, c) for c in range(self.cfg.clients)]
            tuned = finetune_heads(self.module, params, self.head_mask, self.local_names, tensors, cc, seeds)
            out["personal"] = client_accuracies(self.trainer, tuned, self.holdouts)
            out["trained_locally"] = [True] * self.cfg.clients
        return out

    def checkpoint(self) -> None:
        """Write the checkpoint (when the run has a directory)."""
        if self.ckpt_path is not None:
            save_checkpoint(self.ckpt_path, self.cfg, self.ck)

    def result(self, seconds: float, tensors: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> FederatedResult:
        """The run's outcome: a copy of the model with the final weights, history, histogram.

        With held-out splits, ``extra["per_client"]`` holds :meth:`per_client` (``tensors``: the clients'
        training tensors, needed by ``finetune``).
        """
        extra: dict[str, Any] = {}
        if any(len(p) for p in self.holdout_parts):
            extra["per_client"] = self.per_client(tensors or [])
        self.trainer.load(self.ck.state.params)
        final = copy.deepcopy(self.module).eval()
        step = {"pass": "federate", "algo": self.cfg.algo, "rounds": self.ck.state.round, "clients": self.cfg.clients}
        if self.cfg.personalize != "none":
            step["personalize"] = self.cfg.personalize
        return FederatedResult(self.model.with_lineage(step, final), self.ck.history, self.histogram, self.sizes,
                               seconds, self.resumed_from, extra)  # fmt: skip


OnRound = Callable[[dict[str, Any]], None]


def run_inprocess(
    model: EdgeModel,
    train: ImageDataset,
    test: ImageDataset,
    cfg: FederatedConfig,
    out_dir: str | Path | None = None,
    resume: bool = False,
    on_round: OnRound | None = None,
    stop_after: int | None = None,
    faulty: Callable[[int, int, np.ndarray], np.ndarray] | None = None,
    threads: int | None = None,
) -> FederatedResult:
    """Run ``cfg.rounds`` rounds of federated training in this process; return the final model.

    ``out_dir`` gets a checkpoint after every round (``resume=True`` continues from it);
    ``on_round`` receives each round's record; ``stop_after`` ends after that many rounds of
    this call (to simulate a kill in tests); ``faulty(round, client, delta) -> delta`` lets a
    test corrupt a client's update before it is sent (NaN, scaled); ``threads`` sets torch's
    intra-op threads for the run (1 is fastest for small models on a busy machine).
    """
    with torch_threads(threads):
        return _run_inprocess(model, train, test, cfg, out_dir, resume, on_round, stop_after, faulty)


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Temporarily set torch's intra-op thread count (no-op for None)."""
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _run_inprocess(
    model: EdgeModel,
    train: ImageDataset,
    test: ImageDataset,
    cfg: FederatedConfig,
    out_dir: str | Path | None,
    resume: bool,
    on_round: OnRound | None,
    stop_after: int | None,
    faulty: Callable[[int, int, np.ndarray], np.ndarray] | None,
) -> FederatedResult:
    ctx = RunContext(model, train, test, cfg, Path(out_dir) if out_dir is not None else None, resume)
    tensors = client_tensors(model, ctx.train, ctx.parts)
    start = time.perf_counter()
    done = 0
    while ctx.ck.state.round < cfg.rounds and (stop_after is None or done < stop_after):
        t0 = time.perf_counter()
        r = ctx.ck.state.round + 1
        plan = plan_round(cfg, r, ctx.sizes, ctx.task)
        keys = secagg_public_keys(cfg, plan) if cfg.secagg else None
        replies = []
        new_states: dict[int, ClientState] = {}
        failed: list[int] = []
        for c in plan.expected_replies:
            st = ctx.ck.client_states.get(c, ClientState())
            x, y = tensors[c]
            try:
                reply, new_st = client_work(
                    ctx.trainer,
                    cfg,
                    plan,
                    c,
                    ctx.ck.state.params,
                    ctx.ck.state.control,
                    st,
                    x,
                    y,
                    keys,
                    corrupt=None if faulty is None else (lambda d, c=c, r=r: faulty(r, c, d)),
                    local_mask=ctx.local_mask,
                )
            except ClientFailure as e:
                log.warning("round %d: %s", r, e)
                failed.append(c)
                continue
            replies.append(reply)
            new_states[c] = new_st
        survivors = [rp.client for rp in replies]
        revealed = _reveal(cfg, plan, keys, survivors) if cfg.secagg else None
        old_params = ctx.ck.state.params
        result = aggregate_round(cfg, plan, ctx.ck.state, replies, revealed)
        rejected = {d["client"] for d in result.record["rejected"]}
        if not result.record["skipped"]:
            ctx.ck.client_states.update({c: s for c, s in new_states.items() if c not in rejected})
        ctx.ck.state = result.state
        if ctx.local_mask is not None:  # the server's copy of the kept part never moves (DP noise included)
            ctx.ck.state = replace(result.state, params=with_local(result.state.params, ctx.local_mask,
                                                                   old_params[ctx.local_mask]))  # fmt: skip
        record = ctx.finish_record(result.record, result.state.params, time.perf_counter() - t0)
        ctx.ck.history.append(record)
        ctx.checkpoint()
        if on_round:
            on_round(record)
        done += 1
    return ctx.result(time.perf_counter() - start, tensors)


def _reveal(
    cfg: FederatedConfig, plan: RoundPlan, keys: dict[int, bytes] | None, survivors: list[int]
) -> dict[int, dict[int, bytes]]:
    """Secure-aggregation recovery: each survivor reveals its seeds with the clients that dropped."""
    assert keys is not None
    dropped = [c for c in plan.selected if c not in survivors]
    if not dropped:
        return {}
    return {c: sa.reveal_seeds(c, secagg_private_key(cfg, plan.round, c), keys, dropped) for c in survivors}
