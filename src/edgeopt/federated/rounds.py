"""One federated round, split the way Flower splits it: plan (server), client work, aggregate (server).

Every engine calls these three functions, so the in-process simulator, Flower's simulation
engine and a real SuperLink/SuperNode deployment run the same algorithm code:

- :func:`plan_round` (pure): which clients are sampled, which fail (dropouts), which miss the
  deadline (stragglers, from their simulated speed), the client config.
- :func:`client_work`: a sampled client's local update, DP clipping, compression and (with
  secure aggregation) masking; returns a :class:`ClientReply` and the client's new state.
- :func:`aggregate_round` (pure): decode, screen (NaN / scaled updates rejected), DP noise,
  secure-aggregation unmasking, aggregation rule, server optimizer; returns the next server
  state and the round's record.

Randomness is derived from (seed, round, client), never from a running generator, so a
resumed run is bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from edgeopt.federated.algorithms import (
    ClientConfig,
    LocalTrainer,
    ServerOptConfig,
    ServerState,
    aggregate,
    client_update,
    clip_by_norm,
    compress,
    decompress,
    noisy_mean,
    payload_bytes,
    sample_clients,
    screen_updates,
    server_update,
)
from edgeopt.federated.algorithms import secagg as sa
from edgeopt.federated.config import FederatedConfig
from edgeopt.federated.personalize import with_local

log = logging.getLogger("edgeopt.federated")


@dataclass(frozen=True)
class RoundPlan:
    """Who takes part in a round and who will fail."""

    round: int  # 1-based
    selected: tuple[int, ...]
    dropouts: tuple[int, ...]  # fail before replying
    stragglers: tuple[int, ...]  # miss the deadline
    client_config: ClientConfig

    @property
    def expected_replies(self) -> tuple[int, ...]:
        gone = set(self.dropouts) | set(self.stragglers)
        return tuple(c for c in self.selected if c not in gone)


@dataclass
class ClientState:
    """What a client keeps between rounds: SCAFFOLD control, top-k residual, personalized (never uploaded) part."""

    control: np.ndarray | None = None
    residual: np.ndarray | None = None
    local: np.ndarray | None = None  # the entries under the personalization mask, in flat order


@dataclass
class ClientReply:
    """One client's answer: encoded update (or its masked upload), sample count, loss, SCAFFOLD Δc."""

    client: int
    payload: dict[str, np.ndarray]
    num_samples: int
    train_loss: float
    control_delta: np.ndarray | None = None
    masked: np.ndarray | None = None  # secure aggregation: the masked upload replaces payload

    @property
    def upload_bytes(self) -> int:
        if self.masked is not None:
            return int(self.masked.nbytes)
        return payload_bytes(self.payload)


@dataclass
class RoundResult:
    """The server state after a round and the round's record."""

    state: ServerState
    record: dict[str, Any] = field(default_factory=dict)
    client_states: dict[int, ClientState] = field(default_factory=dict)


class ClientFailure(Exception):
    """A client that cannot send a valid update this round (it behaves as a dropout)."""


def client_config(cfg: FederatedConfig, task: str = "classification") -> ClientConfig:
    """The local-training settings the server sends for ``cfg.algo`` and the model's ``task``."""
    return ClientConfig(
        epochs=cfg.local_epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        mu=cfg.mu if cfg.algo == "fedprox" else 0.0,
        scaffold=cfg.algo == "scaffold",
        task=task,
    )


def server_opt(cfg: FederatedConfig) -> ServerOptConfig:
    """The server optimizer settings for ``cfg.algo``."""
    return ServerOptConfig(cfg.server_optimizer, cfg.server_lr, cfg.beta1, cfg.beta2, cfg.tau)


def client_speeds(cfg: FederatedConfig) -> np.ndarray:
    """Each client's relative device speed (log-normal, median 1), fixed for the run."""
    return np.exp(np.random.default_rng([cfg.seed, 7]).normal(0.0, cfg.speed_spread, cfg.clients))


def plan_round(
    cfg: FederatedConfig, round_index: int, client_sizes: list[int], task: str = "classification"
) -> RoundPlan:
    """Sample the round's clients and decide (deterministically) who drops out or straggles."""
    selected = sample_clients(cfg.clients, cfg.per_round, round_index, cfg.seed)
    rng = np.random.default_rng([cfg.seed, round_index, 0xD0])
    fails = rng.random(len(selected)) < cfg.dropout
    dropouts = tuple(int(c) for c, f in zip(selected, fails, strict=True) if f)
    stragglers: tuple[int, ...] = ()
    if cfg.deadline is not None:
        speeds = client_speeds(cfg)
        ccfg = client_config(cfg)
        seconds = {int(c): ccfg.epochs * client_sizes[c] / (cfg.device_samples_per_s * speeds[c]) for c in selected}
        stragglers = tuple(c for c, s in seconds.items() if s > cfg.deadline and c not in dropouts)
    return RoundPlan(round_index, tuple(int(c) for c in selected), dropouts, stragglers, client_config(cfg, task))


def secagg_private_key(cfg: FederatedConfig, round_index: int, client: int) -> bytes:
    """A simulated client's X25519 private key for a round (a real device would use os.urandom)."""
    return sa.private_key(f"{cfg.seed}/{round_index}/{client}".encode())


def secagg_public_keys(cfg: FederatedConfig, plan: RoundPlan) -> dict[int, bytes]:
    """The advertised public keys of every selected client (step 1, before anyone drops)."""
    return {c: sa.public_key(secagg_private_key(cfg, plan.round, c)) for c in plan.selected}


def client_seed(cfg: FederatedConfig, round_index: int, client: int) -> int:
    """The seed of a client's minibatch order in a round (depends only on seed, round, client)."""
    return int(np.random.default_rng([cfg.seed, round_index, client, 0xC1]).integers(2**31))


def client_work(
    trainer: LocalTrainer,
    cfg: FederatedConfig,
    plan: RoundPlan,
    client: int,
    global_params: np.ndarray,
    global_control: np.ndarray | None,
    state: ClientState,
    x: torch.Tensor,
    y: torch.Tensor,
    public_keys: dict[int, bytes] | None = None,
    corrupt: Callable[[np.ndarray], np.ndarray] | None = None,
    local_mask: np.ndarray | None = None,
) -> tuple[ClientReply, ClientState]:
    """Run one client's round: local update, DP clip, compression, secure-aggregation mask.

    ``corrupt`` (tests, benchmarks) replaces the trained delta, as a broken or malicious client would.
    ``local_mask`` (personalization) marks the entries the client keeps: it trains from its own copy
    of them (``state.local``, the global entries on its first round), keeps the result and uploads a
    zero change there. Raises :class:`ClientFailure` when the client withholds its update.
    """
    local = None
    if local_mask is not None:
        global_params = with_local(global_params, local_mask, state.local)
    ccfg = plan.client_config
    control = None
    if ccfg.scaffold:
        c_i = state.control if state.control is not None else np.zeros_like(global_params)
        control = (global_control if global_control is not None else np.zeros_like(global_params), c_i)
    res = client_update(trainer, global_params, x, y, ccfg, client_seed(cfg, plan.round, client), control)
    delta = res.delta if corrupt is None else np.asarray(corrupt(res.delta), np.float32)
    if local_mask is not None:
        local = (global_params + res.delta)[local_mask]
        delta = np.where(local_mask, np.float32(0), delta).astype(np.float32)
    if cfg.dp_clip is not None and np.isfinite(delta).all():
        delta, _ = clip_by_norm(delta, cfg.dp_clip)
    payload, residual = compress(delta, cfg.compress, state.residual)
    new_state = ClientState(
        control=(control[1] + res.control_delta) if control is not None and res.control_delta is not None else None,
        residual=residual,
        local=local,
    )
    masked = None
    if cfg.secagg:
        assert public_keys is not None
        if not np.isfinite(delta).all():
            # under secure aggregation the server cannot inspect single updates, so the client
            # checks its own and withholds a broken one (the server then recovers it as a dropout)
            raise ClientFailure(f"client {client}: non-finite update withheld")
        weight = secure_weight(cfg, res.num_samples)
        masked = sa.masked_input(client, decompress(payload, len(delta)) * weight,
                                 secagg_private_key(cfg, plan.round, client), public_keys)  # fmt: skip
        payload = {}
    reply = ClientReply(client, payload, res.num_samples, res.train_loss, res.control_delta, masked)
    return reply, new_state


def aggregate_round(
    cfg: FederatedConfig,
    plan: RoundPlan,
    state: ServerState,
    replies: list[ClientReply],
    revealed: dict[int, dict[int, bytes]] | None = None,
) -> RoundResult:
    """Combine the replies that arrived into the next server state and a record of the round.

    ``revealed`` holds the survivors' pair seeds with dropped clients (secure aggregation only).
    A round with fewer than ``min_completion`` of the sampled clients keeps the old weights.
    """
    n = len(state.params)
    arrived = sorted(replies, key=lambda r: r.client)
    record: dict[str, Any] = {
        "round": plan.round,
        "selected": len(plan.selected),
        "dropouts": list(plan.dropouts),
        "stragglers": list(plan.stragglers),
        "upload_bytes": sum(r.upload_bytes for r in arrived),
        "upload_bytes_dense": 4 * n * len(arrived),
        "download_bytes": 4 * n * len(plan.selected),
        "train_loss": float(np.mean([r.train_loss for r in arrived])) if arrived else None,
        "rejected": [],
    }
    if cfg.secagg:
        return _aggregate_secure(cfg, plan, state, arrived, revealed or {}, record)
    deltas = np.stack([decompress(r.payload, n) for r in arrived]) if arrived else np.zeros((0, n), np.float32)
    screening = screen_updates(deltas, cfg.reject_norm_ratio)
    for r, reason in zip(arrived, screening.reasons, strict=True):
        if reason:
            record["rejected"].append({"client": r.client, "reason": reason})
            log.warning("round %d: rejected the update of client %d (%s)", plan.round, r.client, reason)
    keep = [r for r, ok in zip(arrived, screening.accepted, strict=True) if ok]
    deltas = deltas[screening.accepted]
    record["completed"] = len(keep)
    if len(keep) < cfg.min_completion * len(plan.selected) or not keep:
        record["skipped"] = True
        log.warning("round %d: only %d of %d clients completed; weights unchanged", plan.round, len(keep),
                    len(plan.selected))  # fmt: skip
        return RoundResult(ServerState(state.params, state.round + 1, state.m, state.v, state.control), record)
    record["skipped"] = False
    if cfg.dp_clip is not None:
        rng = np.random.default_rng([cfg.seed, plan.round, 0xD9])
        agg = noisy_mean(deltas.sum(axis=0), cfg.per_round, cfg.dp_clip, cfg.dp_noise, rng)
    else:
        weights = np.array([r.num_samples for r in keep], np.float64)
        agg = aggregate(deltas, weights, cfg.aggregator)
    control_delta = None
    if cfg.algo == "scaffold":
        control_delta = np.mean(np.stack([r.control_delta for r in keep]), axis=0)
    new = server_update(state, agg, server_opt(cfg), control_delta, len(keep) / cfg.clients)
    return RoundResult(new, record)


def _aggregate_secure(
    cfg: FederatedConfig,
    plan: RoundPlan,
    state: ServerState,
    arrived: list[ClientReply],
    revealed: dict[int, dict[int, bytes]],
    record: dict[str, Any],
) -> RoundResult:
    record["completed"] = len(arrived)
    if len(arrived) < cfg.min_completion * len(plan.selected) or not arrived:
        return _skip(state, record)
    total = sa.unmask_sum({r.client: r.masked for r in arrived if r.masked is not None}, revealed)
    control_delta = None
    if cfg.algo == "scaffold":
        control_delta = np.mean(np.stack([r.control_delta for r in arrived]), axis=0)
    return _apply_secure_total(cfg, state, total, sum(r.num_samples for r in arrived), len(arrived), control_delta,
                               record)  # fmt: skip


def _skip(state: ServerState, record: dict[str, Any]) -> RoundResult:
    record["skipped"] = True
    return RoundResult(ServerState(state.params, state.round + 1, state.m, state.v, state.control), record)


def _apply_secure_total(
    cfg: FederatedConfig, state: ServerState, total: np.ndarray, samples: int, survivors: int,
    control_delta: np.ndarray | None, record: dict[str, Any],
) -> RoundResult:  # fmt: skip
    """Server step from the securely aggregated sum (weighted by samples; by 1 under DP)."""
    if not np.isfinite(total).all():
        return _skip(state, record)
    record["skipped"] = False
    if cfg.dp_clip is not None:
        rng = np.random.default_rng([cfg.seed, record["round"], 0xD9])
        agg = noisy_mean(total, cfg.per_round, cfg.dp_clip, cfg.dp_noise, rng)
    else:
        agg = (np.asarray(total, np.float64) / samples).astype(np.float32)
    new = server_update(state, agg, server_opt(cfg), control_delta, survivors / cfg.clients)
    return RoundResult(new, record)


def secure_weight(cfg: FederatedConfig, num_samples: int) -> float:
    """A client's weight inside secure aggregation: its sample count (FedAvg), 1 under DP (sum of clipped)."""
    return 1.0 if cfg.dp_clip is not None else float(num_samples)


def aggregate_secure_mean(
    cfg: FederatedConfig,
    plan: RoundPlan,
    state: ServerState,
    mean: np.ndarray | None,
    survivors: dict[int, tuple[int, float]],
    upload_bytes: int,
) -> RoundResult:
    """The round from a secure aggregation that returns the weighted mean (Flower's SecAgg+).

    ``mean`` is ``Σ w_i Δ_i / Σ w_i`` with ``w_i`` = :func:`secure_weight` over the survivors
    (None when the protocol halted: the round is skipped); ``survivors`` maps each client whose
    masked update was aggregated to (samples, train loss); ``upload_bytes`` is what the clients
    sent over the whole protocol. Same server step as the in-process engine's secure path.
    """
    n = len(state.params)
    record: dict[str, Any] = {
        "round": plan.round,
        "selected": len(plan.selected),
        "dropouts": list(plan.dropouts),
        "stragglers": list(plan.stragglers),
        "upload_bytes": int(upload_bytes),
        "upload_bytes_dense": 4 * n * len(survivors),
        "download_bytes": 4 * n * len(plan.selected),
        "train_loss": float(np.mean([t for _, t in survivors.values()])) if survivors else None,
        "rejected": [],
        "completed": len(survivors),
    }
    if mean is None or not survivors or len(survivors) < cfg.min_completion * len(plan.selected):
        return _skip(state, record)
    weights = sum(secure_weight(cfg, ns) for ns, _ in survivors.values())
    total = np.asarray(mean, np.float64) * weights
    samples = sum(ns for ns, _ in survivors.values())
    return _apply_secure_total(cfg, state, total, samples, len(survivors), None, record)
