"""Flower engines: the same round functions behind a Flower ServerApp and ClientApp (flwr 1.42 Message API).

- :func:`make_client_app` — a ``ClientApp`` whose ``train`` handler runs :func:`rounds.client_work`
  on the partition of the (virtual) client named in the message.
- :func:`make_server_app` — a ``ServerApp`` whose ``main(grid, context)`` loop plans each round
  with :func:`rounds.plan_round`, pushes one ``train`` message per replying client through the
  ``Grid`` and pulls the replies until all are in, the round timeout passes, or the stragglers'
  grace after a quorum ends (:func:`collect_replies`; nodes that die are simply absent), and
  applies :func:`rounds.aggregate_round`; it checkpoints every round, so a
  restarted server resumes. Without a ``setup`` argument it reads its setup from the run config key
  ``setup`` (a JSON file path) — that is what ``flwr run`` passes in a deployment.
- :func:`run_flower_simulation` — Flower's simulation runtime (``flwr.simulation.run_simulation``,
  Ray backend) with ``min(clients, max_nodes)`` virtual SuperNodes.
- :func:`run_flower_deployment` — a real SuperLink and SuperNodes as separate processes on
  127.0.0.1 (see :mod:`edgeopt.federated.deploy`), the run submitted with ``flwr run``.

Virtual clients: a message names the logical client (its partition); client ``c`` is routed to
node ``c mod n_nodes`` among the live nodes. Client state that must outlive a round (SCAFFOLD's
``c_i``, top-k error-feedback residuals) is kept by the server and shipped with the message, as
a simulator of stateless phones would; a device deployment would keep it on the device.
With ``--secagg`` each round is one run of Flower's own ``SecAggPlusWorkflow`` (legacy workflow
API, :func:`secure_round`) and the ClientApp's ``train`` handler carries ``secaggplus_mod``
(:func:`secaggplus_when_asked`); the client update and the server step are the same round
functions (:func:`handle_secure_fit`, :func:`rounds.aggregate_secure_mean`). One SuperNode per
sampled client; SCAFFOLD is refused with it (only the masked update survives the mod).
Cost: the client work of the in-process engine plus Flower's messaging (serialisation, gRPC/HTTP).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgeopt.data import ImageDataset, load_dataset
from edgeopt.errors import EdgeoptError
from edgeopt.federated.algorithms import LocalTrainer
from edgeopt.federated.client_model import build_client_module
from edgeopt.federated.config import FederatedConfig
from edgeopt.federated.engine import FederatedResult, OnRound, RunContext, client_tensors, task_data
from edgeopt.federated.partition import partition
from edgeopt.federated.rounds import (
    ClientReply,
    ClientState,
    RoundPlan,
    aggregate_round,
    client_config,
    client_work,
    plan_round,
)
from edgeopt.fileio import write_json_atomic
from edgeopt.model import EdgeModel, ModelMeta

log = logging.getLogger("edgeopt.federated")
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

SETUP_FILE = "flower_setup.json"
INIT_FILE = "initial_weights.npz"


def write_setup(
    out_dir: Path, model: EdgeModel, cfg: FederatedConfig, data_spec: str, resume: bool, threads: int | None,
    round_timeout: float, min_nodes: int,
) -> Path:  # fmt: skip
    """Write what a ServerApp and its ClientApps need to rebuild the run: settings, model, data spec."""
    from edgeopt.federated.algorithms import get_flat

    out_dir.mkdir(parents=True, exist_ok=True)
    init = out_dir / INIT_FILE
    tmp = init.with_name(".init.tmp.npz")
    np.savez(tmp, params=get_flat(model.module))
    os.replace(tmp, init)
    setup = {
        "config": cfg.to_json(),
        "data": data_spec,
        "model_meta": model.meta.to_json(),
        "out_dir": str(out_dir.resolve()),
        "init": str(init.resolve()),
        "resume": resume,
        "threads": threads,
        "round_timeout": round_timeout,
        "min_nodes": min_nodes,
    }
    return write_json_atomic(out_dir / SETUP_FILE, setup)


def _model_from_setup(setup: dict[str, Any]) -> EdgeModel:
    from edgeopt.federated.algorithms import set_flat

    meta = ModelMeta.from_json(setup["model_meta"])
    module = build_client_module(meta, FederatedConfig.from_json(setup["config"]).client_model)
    with np.load(setup["init"], allow_pickle=False) as z:
        set_flat(module, z["params"])
    return EdgeModel(module.eval(), meta)


# ----------------------------------------------------------------------------- client side


class _ClientSide:
    """Per-process cache: the model (one trainer for every virtual client) and the partition."""

    def __init__(self, setup_json: str) -> None:
        setup = json.loads(setup_json)
        self.cfg = FederatedConfig.from_json(setup["config"])
        if setup.get("threads"):
            torch.set_num_threads(int(setup["threads"]))
        meta = ModelMeta.from_json(setup["model_meta"])
        self.model = EdgeModel(build_client_module(meta, self.cfg.client_model), meta)
        self.trainer = LocalTrainer(self.model.module)
        self.train: ImageDataset = task_data(load_dataset(setup["data"], "train"), meta.task)
        self.parts = partition(self.train.labels, self.cfg.clients, self.cfg.partition, self.cfg.seed)
        self._tensors: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def tensors(self, client: int) -> tuple[torch.Tensor, torch.Tensor]:
        if client not in self._tensors:
            self._tensors[client] = client_tensors(self.model, self.train, [self.parts[client]])[0]
        return self._tensors[client]


_CLIENT_CACHE: dict[str, _ClientSide] = {}


def _client_side(setup_json: str) -> _ClientSide:
    if setup_json not in _CLIENT_CACHE:
        _CLIENT_CACHE.clear()
        _CLIENT_CACHE[setup_json] = _ClientSide(setup_json)
    return _CLIENT_CACHE[setup_json]


def handle_train(msg: Any, context: Any) -> Any:
    """The ClientApp ``train`` handler: one virtual client's round, replies with its encoded update.

    A message in Flower's legacy FitIns form comes from the SecAgg+ workflow (through
    ``secaggplus_mod``): see :func:`handle_secure_fit`.
    """
    from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

    if "config" not in msg.content:
        return handle_secure_fit(msg, context)
    conf = msg.content["config"]
    side = _client_side(str(conf["setup"]))
    rnd, client = int(conf["round"]), int(conf["client"])
    arrays = {k: v.numpy() for k, v in msg.content["arrays"].items()}
    plan = RoundPlan(rnd, (client,), (), (), client_config(side.cfg, side.model.meta.task))
    state = ClientState(arrays.get("client_control"), arrays.get("residual"))
    x, y = side.tensors(client)
    reply, new_state = client_work(
        side.trainer, side.cfg, plan, client, arrays["params"], arrays.get("control"), state, x, y
    )
    out = {f"payload.{k}": Array(np.ascontiguousarray(v)) for k, v in reply.payload.items()}
    if reply.control_delta is not None:
        out["control_delta"] = Array(reply.control_delta)
    if new_state.control is not None:
        out["new_client_control"] = Array(new_state.control)
    if new_state.residual is not None:
        out["new_residual"] = Array(new_state.residual)
    content = RecordDict(
        {
            "update": ArrayRecord(out),
            "metrics": MetricRecord({"num_samples": reply.num_samples, "train_loss": reply.train_loss}),
            "meta": ConfigRecord({"client": client, "pid": os.getpid()}),
        }
    )
    return Message(content, reply_to=msg)


def handle_secure_fit(msg: Any, context: Any) -> Any:
    """A client's update for Flower's SecAgg+ (legacy FitIns in, FitRes out; the mod masks it).

    The update is the same as on every engine (:func:`rounds.client_work`: local training, DP
    clipping, the int8 compression round trip); the FitRes carries the decoded delta and, as
    ``num_examples``, the client's weight (:func:`rounds.secure_weight`), which SecAgg+ folds into
    the masked vector. A client planned to drop out or straggle this round (``withhold``), or one
    whose update is not finite, raises: after the key exchange, so SecAgg+ must recover its masks.
    """
    from flwr.app import Message
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.compat.common import recorddict_compat as compat

    from edgeopt.federated.algorithms import decompress
    from edgeopt.federated.rounds import ClientFailure, secure_weight

    fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
    conf = fitins.config
    side = _client_side(str(conf["setup"]))
    rnd, client = int(conf["round"]), int(conf["client"])
    if bool(conf.get("withhold", False)):
        raise ClientFailure(f"client {client}: dropped out of round {rnd} after the SecAgg+ key exchange")
    params = parameters_to_ndarrays(fitins.parameters)[0].astype(np.float32)
    plan = RoundPlan(rnd, (client,), (), (), client_config(side.cfg, side.model.meta.task))
    x, y = side.tensors(client)
    plain = dataclasses.replace(side.cfg, secagg=False)  # masking is SecAgg+'s job here
    reply, _ = client_work(side.trainer, plain, plan, client, params, None, ClientState(), x, y)
    delta = decompress(reply.payload, len(params))
    if not np.isfinite(delta).all():
        raise ClientFailure(f"client {client}: non-finite update withheld")
    weight = int(secure_weight(side.cfg, reply.num_samples))
    metrics = {"client": client, "num_samples": reply.num_samples, "train_loss": reply.train_loss}
    fitres = FitRes(Status(Code.OK, "ok"), ndarrays_to_parameters([delta]), weight, metrics)
    return Message(compat.fitres_to_recorddict(fitres, keep_input=False), reply_to=msg)


def secaggplus_when_asked(msg: Any, context: Any, call_next: Any) -> Any:
    """ClientApp mod: Flower's ``secaggplus_mod`` for SecAgg+ messages, a pass-through for the others."""
    from flwr.client.mod import secaggplus_mod
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

    if RECORD_KEY_CONFIGS in msg.content.config_records:
        return secaggplus_mod(msg, context, call_next)
    return call_next(msg, context)


def make_client_app() -> Any:
    """A Flower ``ClientApp`` running edgeopt's client update (with SecAgg+ when the server runs it)."""
    from flwr.clientapp import ClientApp

    app = ClientApp()
    app.train(mods=[secaggplus_when_asked])(handle_train)
    return app


# ----------------------------------------------------------------------------- server side


def _wait_for_nodes(grid: Any, minimum: int, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        nodes = sorted(int(n) for n in grid.get_node_ids())
        if len(nodes) >= minimum or time.monotonic() > deadline:
            if not nodes:
                raise EdgeoptError("no Flower SuperNode connected", "start SuperNodes that point at this SuperLink")
            return nodes
        time.sleep(0.5)


def collect_replies(
    grid: Any, messages: list[Any], timeout: float | None, quorum: int, grace_factor: float = 1.0,
    min_grace: float = 5.0, poll: float = 0.25,
) -> list[Any]:  # fmt: skip
    """Push ``messages`` and pull replies until all arrived, ``timeout`` passed, or the quorum's grace ended.

    Once ``quorum`` replies are in (after ``t_q`` seconds), the stragglers get
    ``max(min_grace, grace_factor * t_q)`` more seconds: a dead node then costs a round about twice
    its normal length instead of the whole ``timeout``. (``Grid.send_and_receive`` waits for all
    replies or the timeout, polling every 3 s on the HTTP grid.)
    """
    pending = set(grid.push_messages(messages))
    start = time.monotonic()
    got: list[Any] = []
    quorum_at: float | None = None
    while pending:
        elapsed = time.monotonic() - start
        if timeout is not None and elapsed > timeout:
            break
        if quorum_at is not None and elapsed > quorum_at + max(min_grace, grace_factor * quorum_at):
            break
        replies = list(grid.pull_messages(pending))
        got.extend(replies)
        pending.difference_update(m.metadata.reply_to_message_id for m in replies)
        if quorum_at is None and len(got) >= quorum:
            quorum_at = time.monotonic() - start
        if pending:
            time.sleep(poll)
    return got


def _to_reply(msg: Any) -> tuple[ClientReply, ClientState] | None:
    if msg.has_error():
        log.warning("a client replied with an error: %s", msg.error.reason)
        return None
    upd = {k: v.numpy() for k, v in msg.content["update"].items()}
    metrics = msg.content["metrics"]
    client = int(msg.content["meta"]["client"])
    payload = {k[len("payload.") :]: v for k, v in upd.items() if k.startswith("payload.")}
    reply = ClientReply(client, payload, int(metrics["num_samples"]), float(metrics["train_loss"]),
                        upd.get("control_delta"))  # fmt: skip
    return reply, ClientState(upd.get("new_client_control"), upd.get("new_residual"))


def server_loop(
    grid: Any, setup: dict[str, Any], on_round: OnRound | None = None, context: Any = None
) -> FederatedResult:
    """The ServerApp body: plan, send, collect within the round timeout, aggregate, checkpoint.

    With ``cfg.secagg`` each round is one run of Flower's SecAgg+ workflow (:func:`secure_round`);
    ``context`` is the ServerApp's Flower context (the workflow keeps its round state in it).
    """
    from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict

    cfg = FederatedConfig.from_json(setup["config"])
    model = _model_from_setup(setup)
    train = load_dataset(setup["data"], "train")
    test = load_dataset(setup["data"], "test")
    # a (re)started server always continues from the checkpoint in out_dir
    ctx = RunContext(model, train, test, cfg, Path(setup["out_dir"]), resume=True)
    setup_json = json.dumps(setup, sort_keys=True)
    start = time.perf_counter()
    min_nodes = int(setup.get("min_nodes") or 1)
    while ctx.ck.state.round < cfg.rounds:
        t0 = time.perf_counter()
        r = ctx.ck.state.round + 1
        plan = plan_round(cfg, r, ctx.sizes, ctx.task)
        nodes = _wait_for_nodes(grid, min_nodes if r == 1 else 1, 120.0)
        timeout = float(setup.get("round_timeout") or 0) or None
        if cfg.secagg:
            result, lost = secure_round(grid, context, cfg, plan, ctx.ck.state, nodes, setup_json, timeout,
                                        max(ctx.sizes))  # fmt: skip
        else:
            msgs = []
            for c in plan.expected_replies:
                st = ctx.ck.client_states.get(c, ClientState())
                arrays = {"params": Array(ctx.ck.state.params)}
                if ctx.ck.state.control is not None:
                    arrays["control"] = Array(ctx.ck.state.control)
                if st.control is not None:
                    arrays["client_control"] = Array(st.control)
                if st.residual is not None:
                    arrays["residual"] = Array(st.residual)
                config = ConfigRecord({"setup": setup_json, "round": r, "client": c})
                content = RecordDict({"arrays": ArrayRecord(arrays), "config": config})
                msgs.append(Message(content, dst_node_id=nodes[c % len(nodes)], message_type="train", group_id=str(r)))
            quorum = max(1, math.ceil(cfg.min_completion * len(plan.selected)))
            arrived = collect_replies(grid, msgs, timeout, quorum, float(setup.get("grace_factor", 1.0)))
            parsed = [p for p in (_to_reply(m) for m in arrived) if p is not None]
            replies = [p[0] for p in parsed]
            new_states = {p[0].client: p[1] for p in parsed}
            result = aggregate_round(cfg, plan, ctx.ck.state, replies)
            lost = sorted(set(plan.expected_replies) - {rp.client for rp in replies})
            if lost:
                log.warning("round %d: no reply from clients %s within the round timeout", r, lost)
            rejected = {d["client"] for d in result.record["rejected"]}
            if not result.record["skipped"]:
                ctx.ck.client_states.update({c: s for c, s in new_states.items() if c not in rejected})
        ctx.ck.state = result.state
        record = ctx.finish_record(result.record, result.state.params, time.perf_counter() - t0)
        record.update(lost=lost, nodes=len(nodes))
        ctx.ck.history.append(record)
        ctx.checkpoint()
        if on_round:
            on_round(record)
    return ctx.result(time.perf_counter() - start)


class _NodeProxy:
    """What the SecAgg+ workflow needs of a legacy ``ClientProxy``: the node id."""

    def __init__(self, node_id: int) -> None:
        self.node_id = node_id
        self.cid = str(node_id)


class _SecureRoundStrategy:
    """The two legacy ``Strategy`` calls the SecAgg+ workflow makes: whom to train, and the unmasked mean."""

    def __init__(self, fitins: dict[int, Any]) -> None:
        self.fitins = fitins  # node id -> FitIns
        self.mean: np.ndarray | None = None
        self.survivors: dict[int, tuple[int, float]] = {}

    def configure_fit(self, server_round: int, parameters: Any, client_manager: Any) -> list[tuple[Any, Any]]:
        return [(_NodeProxy(nid), ins) for nid, ins in self.fitins.items()]

    def aggregate_fit(
        self, server_round: int, results: list[tuple[Any, Any]], failures: list[Any]
    ) -> tuple[None, dict[str, Any]]:
        from flwr.common import parameters_to_ndarrays

        for _, res in results:  # every result carries the same (securely aggregated) parameters
            self.mean = parameters_to_ndarrays(res.parameters)[0].astype(np.float64)
            m = res.metrics
            self.survivors[int(m["client"])] = (int(m["num_samples"]), float(m["train_loss"]))
        return None, {}


class _MeteredGrid:
    """A Grid that counts the bytes of what clients send back in the SecAgg+ protocol (keys, shares, masked vectors)."""

    def __init__(self, grid: Any) -> None:
        self._grid = grid
        self.upload_bytes = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> Any:
        from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        for m in replies:
            if m.has_error() or RECORD_KEY_CONFIGS not in m.content.config_records:
                continue
            for v in m.content.config_records[RECORD_KEY_CONFIGS].values():
                items = v if isinstance(v, list) else [v]
                self.upload_bytes += sum(len(x) if isinstance(x, bytes) else 8 for x in items)
        return replies


SECAGG_CLIPPING_RANGE = 8.0  # |weighted delta entry| bound before SecAgg+'s quantization
SECAGG_QUANTIZATION_RANGE = 2**22  # SecAgg+'s default: steps of 2 * 8 / 2**22 ≈ 3.8e-6


def secure_round(
    grid: Any, context: Any, cfg: FederatedConfig, plan: RoundPlan, state: Any, nodes: list[int], setup_json: str,
    timeout: float | None, max_samples: int,
) -> tuple[Any, list[int]]:  # fmt: skip
    """One round through Flower's ``SecAggPlusWorkflow``; returns (RoundResult, clients lost).

    Every sampled client gets its own SuperNode (SecAgg+ masks per node): ``len(plan.selected)``
    must not exceed the live nodes. Clients planned to drop out or straggle take part in the key
    exchange and then fail before uploading, so SecAgg+ recovers their pairwise masks from the
    survivors' Shamir shares (threshold: half the shares, at least 2). SecAgg+ returns the mean
    weighted by ``num_examples`` (samples; 1 under DP, ``max_weight`` set so every ratio is <= 1),
    which :func:`rounds.aggregate_secure_mean` turns into the same server step as in-process.
    Cost: 4 message exchanges per round (keys, shares, masked vectors, unmasking).
    """
    from flwr.app import ConfigRecord, Context, RecordDict
    from flwr.common import FitIns, ndarrays_to_parameters
    from flwr.compat.common import recorddict_compat as compat
    from flwr.server.compat.legacy_context import LegacyContext
    from flwr.server.workflow import SecAggPlusWorkflow
    from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
    from flwr.server.workflow.constant import Key as WorkflowKey

    from edgeopt.federated.rounds import aggregate_secure_mean

    if len(plan.selected) > len(nodes):
        raise EdgeoptError(
            f"SecAgg+ masks per SuperNode: {len(plan.selected)} clients per round need as many SuperNodes "
            f"({len(nodes)} connected)", "lower --per-round or start more SuperNodes",
        )  # fmt: skip
    if context is None:
        context = Context(run_id=0, node_id=0, node_config={}, state=RecordDict(), run_config={})
    withhold = set(plan.dropouts) | set(plan.stragglers)
    params = ndarrays_to_parameters([state.params])
    fitins = {
        nodes[i]: FitIns(params, {"setup": setup_json, "round": plan.round, "client": c, "withhold": c in withhold})
        for i, c in enumerate(plan.selected)
    }
    strategy = _SecureRoundStrategy(fitins)
    legacy = LegacyContext(context, strategy=strategy)  # type: ignore[arg-type]
    legacy.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({WorkflowKey.CURRENT_ROUND: plan.round})
    legacy.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(params, keep_input=True)
    max_weight = 1.0 if cfg.dp_clip is not None else float(max_samples)
    workflow = SecAggPlusWorkflow(num_shares=1.0, reconstruction_threshold=0.5, max_weight=max_weight,
                                  clipping_range=SECAGG_CLIPPING_RANGE,
                                  quantization_range=SECAGG_QUANTIZATION_RANGE, timeout=timeout)  # fmt: skip
    metered = _MeteredGrid(grid)
    workflow(metered, legacy)
    result = aggregate_secure_mean(cfg, plan, state, strategy.mean, strategy.survivors, metered.upload_bytes)
    lost = sorted(set(plan.selected) - withhold - set(strategy.survivors))
    if lost:
        log.warning("round %d: clients %s did not complete SecAgg+", plan.round, lost)
    return result, lost


def make_server_app(setup: dict[str, Any] | None = None, on_round: OnRound | None = None,
                    results: list[FederatedResult] | None = None) -> Any:  # fmt: skip
    """A Flower ``ServerApp`` running :func:`server_loop`.

    ``setup`` (as written by :func:`write_setup`) defaults to the JSON file named by the run
    config key ``setup``; the final result is appended to ``results`` when given.
    """
    from flwr.serverapp import ServerApp

    app = ServerApp()

    @app.main()
    def main(grid: Any, context: Any) -> None:
        s = setup
        if s is None:
            path = context.run_config.get("setup")
            if not path:
                raise EdgeoptError("the run config has no 'setup' path", "submit the run with edgeopt federate")
            s = json.loads(Path(str(path)).read_text())
        res = server_loop(grid, s, on_round, context)
        if results is not None:
            results.append(res)

    return app


# ----------------------------------------------------------------------------- engines


def _check(cfg: FederatedConfig) -> None:
    if cfg.secagg and cfg.algo == "scaffold":
        raise EdgeoptError(
            "SCAFFOLD's control variates cannot travel with Flower's SecAgg+ (it clears every array but the "
            "masked update)", "use --engine inprocess for SCAFFOLD with --secagg, or another --algo",
        )  # fmt: skip


def run_flower_simulation(
    model: EdgeModel,
    train: ImageDataset,
    test: ImageDataset,
    cfg: FederatedConfig,
    data_spec: str,
    out_dir: str | Path | None = None,
    resume: bool = False,
    on_round: OnRound | None = None,
    threads: int | None = None,
    max_nodes: int = 10,
    num_cpus: int | None = None,
) -> FederatedResult:
    """Run the federation on Flower's simulation runtime (Ray) with ``min(clients, max_nodes)`` SuperNodes."""
    import tempfile

    from flwr.simulation import run_simulation

    _check(cfg)
    tmp = None
    if out_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="edgeopt-flower-sim-")
        out_dir = tmp.name
    out = Path(out_dir)
    if (out / "checkpoint.npz").exists() and not resume:
        raise EdgeoptError(f"{out / 'checkpoint.npz'} already exists", "pass --resume or pick a new --out")
    setup_path = write_setup(out, model, cfg, data_spec, resume, threads or 1, 0.0, min(cfg.clients, max_nodes))
    setup = json.loads(setup_path.read_text())
    results: list[FederatedResult] = []
    cpus = num_cpus or os.cpu_count() or 1
    backend = {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {"num_cpus": cpus, "num_gpus": 0, "include_dashboard": False, "log_to_driver": False},
    }
    try:
        for attempt in range(RAY_START_ATTEMPTS):
            try:
                run_simulation(
                    make_server_app(setup, on_round, results),
                    make_client_app(),
                    num_supernodes=min(cfg.clients, max_nodes),
                    backend_config=backend,
                )
                break
            except RuntimeError as e:
                if results or attempt + 1 == RAY_START_ATTEMPTS or not _ray_did_not_start(e):
                    raise
                log.warning("Ray's node did not start in its 30 s (a busy machine?): retrying")
                _shutdown_ray()
    finally:
        if tmp is not None:
            results_copy = list(results)
            tmp.cleanup()
            results = results_copy
    if not results:
        raise EdgeoptError("the Flower simulation ended without a result", "rerun with --debug and read Flower's log")
    return results[0]


# Ray gives its node a fixed 30 s to register with its GCS (ray._private.node, not configurable); on an
# overloaded machine it misses that before any round has run, and starting again is all there is to do
RAY_START_ATTEMPTS = 3


def _ray_did_not_start(exc: BaseException | None) -> bool:
    """Whether ``exc`` or an exception it was raised from is Ray's node start-up timeout."""
    while exc is not None:
        if "timed out during startup" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _shutdown_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


def run_flower_deployment(
    model: EdgeModel,
    train: ImageDataset,
    test: ImageDataset,
    cfg: FederatedConfig,
    data_spec: str,
    out_dir: str | Path,
    resume: bool = False,
    on_round: OnRound | None = None,
    threads: int | None = None,
    nodes: int = 3,
    round_timeout: float = 120.0,
    timeout: float = 1800.0,
) -> FederatedResult:
    """Start a SuperLink and ``nodes`` SuperNodes on 127.0.0.1, run the federation with ``flwr run``, stop them."""
    from edgeopt.federated.deploy import LocalFederation, wait_for_rounds

    _check(cfg)
    out = Path(out_dir)
    if (out / "checkpoint.npz").exists() and not resume:
        raise EdgeoptError(f"{out / 'checkpoint.npz'} already exists", "pass --resume or pick a new --out")
    write_setup(out, model, cfg, data_spec, resume, threads or 1, round_timeout, min(nodes, cfg.clients))
    start = time.perf_counter()
    with LocalFederation(out, nodes=nodes) as fed:
        fed.submit()
        wait_for_rounds(out, cfg.rounds, timeout, on_round, fed)
    from edgeopt.federated.engine import load_checkpoint

    saved_cfg, ck = load_checkpoint(out / "checkpoint.npz")
    ctx = RunContext(model, train, test, saved_cfg, None, False)
    ctx.ck = ck
    return ctx.result(time.perf_counter() - start)
