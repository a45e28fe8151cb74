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
    Cost: ``rounds * per_round`` client updates plus one test pass per round.
    """
    from edgeopt.errors import EdgeoptError

    if engine == "inprocess":
        from edgeopt.federated.engine import run_inprocess

        return run_inprocess(model, train, test, cfg, out_dir, resume, on_round, threads=threads, **engine_options)
    if engine not in ENGINES:
        raise EdgeoptError(f"unknown engine '{engine}'", f"use one of {', '.join(ENGINES)}")
    if data_spec is None:
        raise EdgeoptError("the Flower engines need the dataset spec", "pass data_spec='digits' (or the --data value)")
    from edgeopt.federated import flower_engine

    if engine == "flower-sim":
        return flower_engine.run_flower_simulation(
            model, train, test, cfg, data_spec, out_dir, resume, on_round, threads=threads, **engine_options
        )
    if out_dir is None:
        raise EdgeoptError("the flower engine needs an output directory", "pass --out DIR")
    return flower_engine.run_flower_deployment(
        model, train, test, cfg, data_spec, out_dir, resume, on_round, threads=threads, **engine_options
    )
