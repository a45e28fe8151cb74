"""Federated learning: pure algorithms, partitioners, and engines (in-process, Flower).

``run_federated(model, train, test, FederatedConfig(...), engine="inprocess")`` is the entry
point; ``engine`` is ``inprocess`` (default: fast, deterministic), ``flower-sim`` (Flower's
simulation engine) or ``flower`` (a local SuperLink + SuperNodes on 127.0.0.1). All engines
run the same round functions (:mod:`edgeopt.federated.rounds`) over the same pure
algorithms (:mod:`edgeopt.federated.algorithms`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeopt.federated.config import ALGORITHMS, ENGINES, FederatedConfig

if TYPE_CHECKING:
    from edgeopt.data import ImageDataset
    from edgeopt.federated.engine import FederatedResult, OnRound
    from edgeopt.model import EdgeModel

__all__ = ["ALGORITHMS", "ENGINES", "FederatedConfig", "run_federated"]


def run_federated(
    model: EdgeModel,
    train: ImageDataset,
    test: ImageDataset,
    cfg: FederatedConfig,
    engine: str = "inprocess",
    out_dir: str | Path | None = None,
    resume: bool = False,
    on_round: OnRound | None = None,
    threads: int | None = None,
    data_spec: str | None = None,
    **engine_options: Any,
) -> FederatedResult:
    """Train ``model`` federatedly with ``engine``; see :func:`edgeopt.federated.engine.run_inprocess`.

    The Flower engines need ``data_spec`` (clients load their own partition by name).
    The model's task (``model.meta.task``) sets the clients' loss and the per-round test score
    (history key ``test_accuracy``): accuracy for classifiers, R² for regression, ROC AUC for an
    autoencoder (``anomaly``: trained on the normal samples only). Regression and anomaly runs take
    the ``iid`` partition and no per-client held-out splits.
    ``cfg.client_model`` other than ``float`` first turns ``model`` into the compressed model the
    clients train (:mod:`edgeopt.federated.client_model`); for ``qat-int8`` the returned model is
    the int8 conversion of the trained fake-quantized model and ``result.extra["client_model"]``
    holds both accuracies (fake-quant and int8, PyTorch) on the test split
    (``result.extra["fake_quant_model"]`` is the trained fake-quantized model).
    Cost: ``rounds * per_round`` client updates plus one test pass per round.
    """
    from edgeopt.errors import EdgeoptError
    from edgeopt.model import refuse_multi_output

    refuse_multi_output(model, "federate")

    if engine not in ENGINES:
        raise EdgeoptError(f"unknown engine '{engine}'", f"use one of {', '.join(ENGINES)}")
    if engine != "inprocess" and data_spec is None:
        raise EdgeoptError("the Flower engines need the dataset spec", "pass data_spec='digits' (or the --data value)")
    if engine == "flower" and out_dir is None:
        raise EdgeoptError("the flower engine needs an output directory", "pass --out DIR")
    if engine != "inprocess" and (cfg.personalize != "none" or cfg.holdout_fraction > 0):
        raise EdgeoptError("--personalize and per-client held-out splits run on the in-process engine only",
                           "use --engine inprocess")  # fmt: skip
    from edgeopt.federated.engine import check_task_options

    check_task_options(cfg, model.meta.task)
    train, test = _match_classes(model, train, test)
    model, prepared = _prepare_client_model(model, train, cfg)
    res = _run_engine(model, train, test, cfg, engine, out_dir, resume, on_round, threads, data_spec, engine_options)
    if cfg.personalize != "none":
        res.extra["personalization"] = _personalization(model, train, test, cfg, out_dir, resume, threads, res)
    if prepared is not None:
        res.extra["client_model"] = prepared
        if prepared["client_model"] == "qat-int8":
            _finish_qat(res, train, test, cfg)
    return res


def _personalization(
    model: EdgeModel, train: ImageDataset, test: ImageDataset, cfg: FederatedConfig, out_dir: str | Path | None,
    resume: bool, threads: int | None, res: FederatedResult,
) -> dict[str, Any]:  # fmt: skip
    """Per-client accuracy before (the global model) and after personalization, mean gain, worst client.

    ``head``/``bn`` runs have no trained global model of their own (the kept parts never reach the
    server), so "before" is a plain run with the same settings and splits (in ``out_dir/reference``,
    resumable like the main run). ``finetune`` compares its own global model before and after.
    """
    from dataclasses import replace

    from edgeopt.federated.engine import run_inprocess
    from edgeopt.federated.personalize import summarize

    pc = res.extra["per_client"]
    if cfg.personalize in ("head", "bn"):
        ref_cfg = replace(cfg, personalize="none", holdout=cfg.holdout_fraction)
        ref_dir = Path(out_dir) / "reference" if out_dir is not None else None
        ref = run_inprocess(model, train, test, ref_cfg, ref_dir, resume, threads=threads)
        before, global_test = ref.extra["per_client"]["global"], ref.history[-1]["test_accuracy"]
        reference = "a run without personalization, same settings and splits"
    else:
        before, global_test = pc["global"], res.history[-1]["test_accuracy"]
        reference = "this run's global model"
    out = summarize(cfg.personalize, before, pc["personal"], pc["holdout_sizes"])
    for row in out["per_client"]:
        row["trained_locally"] = pc["trained_locally"][row["client"]]
    out.update(reference=reference, global_test_accuracy=global_test, holdout=cfg.holdout_fraction)
    return out


def _match_classes(model: EdgeModel, train: ImageDataset, test: ImageDataset) -> tuple[ImageDataset, ImageDataset]:
    """Both splits with labels in the model's class order (data with other classes is refused);
    for a regression or anomaly model, the splits as its task trains and scores on them.

    A model without class names records the data's, as ``fit`` does. Flower clients load their own
    partitions by spec, so there the data's class order must already be the model's.
    """
    from edgeopt.data.classes import check_trainable, match_classes
    from edgeopt.federated.engine import task_data
    from edgeopt.train.tasks import check_model_data

    meta = model.meta
    if meta.task != "classification":  # targets, or normal/anomaly flags: no classes to match
        check_model_data(meta.task, train.task)
        return task_data(train, meta.task), test.for_task(meta.task)
    check_trainable(train)
    train, _ = match_classes(meta.class_names, meta.num_classes, train)
    test, _ = match_classes(meta.class_names, meta.num_classes, test)
    if meta.class_names is None and train.num_classes == meta.num_classes:
        meta.class_names = list(train.class_names)
    return train, test


def _prepare_client_model(
    model: EdgeModel, train: ImageDataset, cfg: FederatedConfig
) -> tuple[EdgeModel, dict[str, Any] | None]:
    """The model clients train for ``cfg.client_model`` (the given one for ``float``)."""
    from edgeopt.federated.client_model import parse_client_model, prepare_client_model

    if parse_client_model(cfg.client_model)[0] == "float":
        return model, None
    inputs = None
    if parse_client_model(cfg.client_model)[0] == "qat-int8":
        from edgeopt.federated.engine import client_tensors
        from edgeopt.federated.partition import partition

        parts = partition(train.labels, cfg.clients, cfg.partition, cfg.seed)
        inputs = [x for x, _ in client_tensors(model, train, parts)]
    return prepare_client_model(model, cfg.client_model, inputs)


def _finish_qat(res: FederatedResult, train: ImageDataset, test: ImageDataset, cfg: FederatedConfig) -> None:
    """Replace the fake-quantized result by its int8 model; record both accuracies (PyTorch)."""
    from edgeopt.federated.client_model import to_int8
    from edgeopt.train import evaluate

    test = test.take(cfg.eval_limit, seed=0)
    fake = evaluate(res.model, test).accuracy
    res.extra["fake_quant_model"] = res.model
    res.model = to_int8(res.model, train, seed=cfg.seed)
    res.extra["client_model"].update(fake_quant_accuracy=fake, int8_accuracy=evaluate(res.model, test).accuracy)


def _run_engine(
    model: EdgeModel, train: ImageDataset, test: ImageDataset, cfg: FederatedConfig, engine: str,
    out_dir: str | Path | None, resume: bool, on_round: OnRound | None, threads: int | None, data_spec: str | None,
    engine_options: dict[str, Any],
) -> FederatedResult:  # fmt: skip
    if engine == "inprocess":
        from edgeopt.federated.engine import run_inprocess

        return run_inprocess(model, train, test, cfg, out_dir, resume, on_round, threads=threads, **engine_options)
    from edgeopt.federated import flower_engine

    assert data_spec is not None
    if engine == "flower-sim":
        return flower_engine.run_flower_simulation(
            model, train, test, cfg, data_spec, out_dir, resume, on_round, threads=threads, **engine_options
        )
    assert out_dir is not None
    return flower_engine.run_flower_deployment(
        model, train, test, cfg, data_spec, out_dir, resume, on_round, threads=threads, **engine_options
    )
