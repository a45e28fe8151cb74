"""``edgeopt federate``: federated training across simulated (or real Flower) clients."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from edgeopt.cli.app import (
    DataOpt,
    JsonOpt,
    ModelArg,
    OldThreadsOpt,
    TrainThreadsOpt,
    app,
    emit,
    model_for_data,
    quiet,
    torch_threads,
    warn_at_chance,
)
from edgeopt.errors import EdgeoptError


class _RoundBar:
    """A progress bar over rounds on stderr (only on a terminal, never with --json)."""

    def __init__(self, total: int, done: int, metric: str = "acc") -> None:
        from edgeopt.progress import ProgressBar

        self._bar = ProgressBar("federated rounds", total, completed=done, transient=False)
        self._metric = metric

    def __call__(self, record: dict[str, Any]) -> None:
        acc = record.get("test_accuracy")  # the task's score
        text = f"round {record['round']}"
        self._bar.advance(f"{text} {self._metric} {acc:.3f}" if acc is not None else text)

    def close(self) -> None:
        self._bar.close()


@app.command()
def federate(
    model: ModelArg,
    out: Annotated[Path, typer.Option("--out", help="run directory: checkpoint, curves.json, report.html, model")],
    data: DataOpt = "digits",
    clients: Annotated[int, typer.Option("--clients", min=1, help="number of clients K")] = 10,
    per_round: Annotated[
        int | None, typer.Option("--per-round", min=1, help="clients sampled per round M (default: all K)")
    ] = None,
    rounds: Annotated[int, typer.Option("--rounds", min=1)] = 10,
    partition: Annotated[str, typer.Option(help="iid, dirichlet:ALPHA or shards:K")] = "iid",
    algo: Annotated[str, typer.Option(help="fedavg, fedprox, fedadam, fedyogi or scaffold")] = "fedavg",
    local_epochs: Annotated[int, typer.Option("--local-epochs", min=1)] = 1,
    batch_size: Annotated[int, typer.Option("--batch-size", min=0, help="0 = full batch (FedSGD)")] = 32,
    lr: Annotated[float, typer.Option(help="client learning rate")] = 0.05,
    momentum: Annotated[float, typer.Option(help="client SGD momentum")] = 0.0,
    mu: Annotated[float, typer.Option(help="FedProx proximal strength")] = 0.01,
    server_lr: Annotated[float | None, typer.Option("--server-lr", help="default 1.0; 0.01 for fedadam/yogi")] = None,
    aggregator: Annotated[str, typer.Option(help="mean, median, trimmed:BETA or krum:F")] = "mean",
    compress: Annotated[str, typer.Option(help="none, int8 or topk:F (with error feedback)")] = "none",
    client_model: Annotated[
        str, typer.Option("--client-model", help="what clients train: float, qat-int8 or pruned:R (R of MACs cut)")
    ] = "float",
    personalize: Annotated[
        str,
        typer.Option(help="none, head (FedPer: head kept on clients), bn (FedBN) or finetune (head tuned locally)"),
    ] = "none",
    holdout: Annotated[
        float | None, typer.Option(help="fraction of each client's data held out for its accuracy (0.2 personalizing)")
    ] = None,
    finetune_epochs: Annotated[int, typer.Option("--finetune-epochs", min=1, help="local epochs of finetune")] = 5,
    dp_clip: Annotated[float | None, typer.Option("--dp-clip", help="DP-FedAvg L2 clip norm")] = None,
    dp_noise: Annotated[float, typer.Option("--dp-noise", help="DP-FedAvg noise multiplier σ")] = 0.0,
    secagg: Annotated[bool, typer.Option("--secagg", help="secure aggregation with pairwise masks")] = False,
    dropout: Annotated[float, typer.Option(help="chance a sampled client fails each round")] = 0.0,
    deadline: Annotated[float | None, typer.Option(help="round deadline in simulated seconds")] = None,
    min_completion: Annotated[float, typer.Option("--min-completion", help="fraction needed to apply a round")] = 0.5,
    engine: Annotated[str, typer.Option(help="inprocess, flower-sim or flower")] = "inprocess",
    resume: Annotated[bool, typer.Option(help="continue the run in --out from its last checkpoint")] = False,
    seed: int = 0,
    train_threads: TrainThreadsOpt = None,
    threads: OldThreadsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Federated training of MODEL on DATA split across K clients; writes curves and a report to --out.

    Classifiers, regression models and autoencoders (anomaly data: trained on normal samples, scored
    by ROC AUC); the JSON's ``final_accuracy`` is the task's score, named by ``score_metric`` for the
    last two. Regression and anomaly runs take --partition iid and no --personalize / --holdout.
    """
    quiet(as_json)
    from edgeopt.data import load_dataset
    from edgeopt.federated import run_federated
    from edgeopt.federated.config import ENGINES, FederatedConfig
    from edgeopt.federated.report import AT_CHANCE_ADVICE, build_curves, write_outputs
    from edgeopt.model import save_model
    from edgeopt.report.environment import machine_info, now_iso, versions
    from edgeopt.train import seed_everything
    from edgeopt.train.tasks import SCORE_NAMES

    if engine not in ENGINES:
        raise EdgeoptError(f"unknown --engine '{engine}'", f"use one of {', '.join(ENGINES)}")
    if server_lr is None:
        server_lr = 0.01 if algo in ("fedadam", "fedyogi") else 1.0
    cfg = FederatedConfig(
        clients=clients, per_round=per_round or clients, rounds=rounds, partition=partition, algo=algo,
        local_epochs=local_epochs, batch_size=batch_size, lr=lr, momentum=momentum, mu=mu, server_lr=server_lr,
        aggregator=aggregator, compress=compress, dp_clip=dp_clip, dp_noise=dp_noise, secagg=secagg,
        dropout=dropout, deadline=deadline, min_completion=min_completion, client_model=client_model, seed=seed,
        personalize=personalize, holdout=holdout, finetune_epochs=finetune_epochs,
    )  # fmt: skip
    seed_everything(seed)
    m, train = model_for_data(model, data)
    test = load_dataset(data, "test")
    bar = _RoundBar(rounds, 0, "acc" if m.meta.task == "classification" else SCORE_NAMES[m.meta.task])
    try:
        res = run_federated(m, train, test, cfg, engine=engine, out_dir=out, resume=resume, on_round=bar,
                            threads=torch_threads(train_threads, threads), data_spec=data)  # fmt: skip
    finally:
        bar.close()
    settings = {"model": model, "data": data, "engine": engine, "task": m.meta.task, **cfg.to_json()}
    info = {"machine": machine_info(), "versions": versions(["flwr", "opacus"]), "date": now_iso()}
    curves = build_curves(res.history, settings, res.histogram, res.client_sizes, info)
    if "personalization" in res.extra:
        curves["personalization"] = res.extra["personalization"]
    curves_path, html_path = write_outputs(out, curves)
    model_path = save_model(res.model, Path(out) / "model")
    s = curves["summary"]
    extra: dict[str, Any] = {}
    if "client_model" in res.extra:
        extra["client_model"] = dict(res.extra["client_model"])
        extra["client_model"].pop("input_ranges", None)
        if cfg.client_model == "qat-int8":  # the int8 artifact, measured inside its runtime
            from edgeopt.federated.client_model import runtime_accuracy

            extra["int8_artifact"] = runtime_accuracy(res.model, test.take(cfg.eval_limit, seed=0), out)
    result = {
        "final_accuracy": s["final_accuracy"],
        "rounds": s["rounds"],
        "upload_bytes_total": s["upload_bytes_total"],
        "upload_compression": s["upload_compression"],
        "epsilon": s["epsilon"],
        "rejected_updates": s["rejected_updates"],
        "resumed_from": res.resumed_from,
        "seconds": round(res.seconds, 2),
        "curves": str(curves_path),
        "report": str(html_path),
        "model": str(model_path),
        **extra,
    }
    if "personalization" in res.extra:  # head/bn: final_accuracy is the server's model (initial kept part)
        result["final_personal_accuracy"] = s["final_personal_accuracy"]
        result["personalization"] = res.extra["personalization"]
    advice = f"{AT_CHANCE_ADVICE}; see {html_path}"
    best = s["best_personal_accuracy"] if s.get("best_personal_accuracy") is not None else s["best_accuracy"]
    warn_at_chance(result, res.model.meta, majority=s["chance_accuracy"], advice=advice, best_accuracy=best)
    emit(result, as_json, "federate")
