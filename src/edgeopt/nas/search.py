"""Multi-trial architecture search with Optuna: proxy-trained candidates, device budgets as constraints.

Each trial samples a configuration from the space (define-by-run, ``trial.suggest_categorical``),
prices it before training (:mod:`edgeopt.nas.cost`: predicted latency per runtime, int8 arena and
flash, MACs, params, a microcontroller preset), records the budget as Optuna constraints
(``trial.set_constraint``; feasible when all are <= 0), and only then, if it is within budget,
trains it briefly (``epochs`` of the ordinary training loop) and scores it on a validation split
held out of the training data (the test split is kept for the final measurement). Objectives:
validation accuracy (maximise) and the cost axis (minimise): mean predicted or measured latency
over the runtimes when every runtime has a figure, else MACs.

Several processes or machines share one study through ``storage`` (``sqlite:///PATH``,
``postgresql://...``): Optuna's RDB storage with a heartbeat, so a killed worker's RUNNING trial
turns stale and is re-queued (``RetryHeartbeatStaleTrialCallback``) for whichever worker asks next;
rerunning a search with the same storage and study name resumes the study. ``trials`` counts this
worker's trials, as ``Study.optimize(n_trials=...)`` does.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeopt.data import ImageDataset
from edgeopt.errors import EdgeoptError
from edgeopt.model import EdgeModel
from edgeopt.nas.cost import Budget, LatencySource, architecture_cost, feasible, measured_latency, violations
from edgeopt.nas.space import SearchSpace, config_key, sample

SAMPLERS = ("tpe", "nsga2", "random")


@dataclass
class SearchSettings:
    """How to search; the space, data and budget are passed beside it."""

    runtimes: list[str] = field(default_factory=lambda: ["onnxruntime"])
    trials: int | None = 20  # this worker's trials (None: until ``minutes`` run out)
    minutes: float | None = None
    storage: str | None = None  # sqlite:///PATH, postgresql://... (None: in memory)
    study_name: str = "edgeopt-search"
    sampler: str = "tpe"
    epochs: int = 2  # proxy training per candidate
    batch_size: int = 32  # proxy training batch (small data sets need the steps)
    val_fraction: float = 0.2
    seed: int = 0
    threads: int = 1  # runtime threads when a latency is measured
    measure_latency: bool = False  # time candidates in the runtimes that have no profile
    heartbeat_s: int = 60  # shared storage: a RUNNING trial silent for 2x this is retried
    shared: bool = False  # several workers share the study: each salts its sampler seed with its pid
    mode: str = "proxy"  # proxy: train each candidate briefly | supernet: inherit from one trained supernet
    corners: bool = True  # a fresh study first tries the space's cheapest and largest configurations
    proxy_images: int | None = None  # proxy search on a stratified subset of this many training images
    supernet_epochs: int = 5  # sandwich-rule epochs of the supernet (mode supernet)
    device: str = "cpu"  # where candidates and the supernet train: cpu, cuda or auto (not part of the study)

    def __post_init__(self) -> None:
        from edgeopt.train.fit import training_device

        training_device(self.device)  # an unknown or absent device, before any trial
        if self.sampler not in SAMPLERS:
            raise EdgeoptError(f"unknown sampler '{self.sampler}'", f"use one of: {', '.join(SAMPLERS)}")
        if self.trials is None and self.minutes is None:
            raise EdgeoptError("a search needs --trials or --minutes", "give --trials N or --minutes M")
        if self.trials is not None and self.trials < 1:
            raise EdgeoptError(f"--trials must be at least 1, not {self.trials}")
        if self.minutes is not None and not self.minutes > 0:
            raise EdgeoptError(f"--minutes must be positive, not {self.minutes}")
        if not 0 < self.val_fraction < 1:
            raise EdgeoptError(f"validation fraction must be in (0, 1), not {self.val_fraction}")
        if self.epochs < 1:
            raise EdgeoptError(f"proxy training needs at least 1 epoch, not {self.epochs}")
        if self.mode not in ("proxy", "supernet"):
            raise EdgeoptError(f"unknown search mode '{self.mode}'", "use proxy or supernet")
        if self.proxy_images is not None and self.proxy_images < 10:
            raise EdgeoptError(f"the proxy subset needs at least 10 images, not {self.proxy_images}")


def split_train_val(data: ImageDataset, fraction: float, seed: int = 0) -> tuple[ImageDataset, ImageDataset]:
    """A reproducible split of ``data`` into (train, validation), stratified by label. Pure."""
    rng = np.random.default_rng(seed)
    val_idx = []
    for label in np.unique(data.labels):
        idx = np.flatnonzero(data.labels == label)
        val_idx.extend(rng.permutation(idx)[: max(1, int(round(len(idx) * fraction)))])
    mask = np.zeros(len(data), bool)
    mask[np.asarray(val_idx, int)] = True
    if mask.all():
        raise EdgeoptError(f"dataset '{data.name}' is too small to hold out a validation split")

    def part(m: np.ndarray) -> ImageDataset:
        return ImageDataset(data.images[m], data.labels[m], data.class_names, data.name)

    return part(~mask), part(mask)


def stratified_subset(data: ImageDataset, n: int | None, seed: int = 0) -> ImageDataset:
    """``n`` images of ``data`` drawn per class in proportion to its labels (all of ``data`` when ``n`` is
    None or not smaller). Pure; the proxy search's training set when ``proxy_images`` is set."""
    if n is None or n >= len(data):
        return data
    rng = np.random.default_rng(seed)
    idx: list[int] = []
    for label in np.unique(data.labels):
        members = np.flatnonzero(data.labels == label)
        idx.extend(rng.permutation(members)[: max(1, int(round(len(members) * n / len(data))))])
    return data.subset(np.sort(np.asarray(idx, int)))


def candidate_model(
    space: SearchSpace, config: dict[str, Any], data: ImageDataset, seed: int = 0, lineage: dict | None = None
) -> EdgeModel:
    """The zoo model ``config`` describes, sized for ``data``'s samples and classes, initialised from ``seed``.

    Images give a (C, H, W) network; arrays their own sample shape: (C, L) sequences a 1-D network
    (``nas_dscnn`` only; :func:`refuse_unsearchable` says so before a search starts), the record
    stating the value range of the arrays as ``edgeopt train`` does.
    """
    import torch

    from edgeopt.models import create_model

    with torch.random.fork_rng(devices=[]):  # initial weights from ``seed`` alone; the global RNG is left as it was
        torch.manual_seed(seed)
        model = create_model(space.family, input_shape=data.sample_shape, num_classes=data.num_classes, **config)
    if not data.is_image:  # arrays pass as they are: the record states the range they span
        lo, hi = data.value_range()
        model.meta.input.value_range = (lo, hi if hi > lo else lo + 1.0)
    model.meta.class_names = list(data.class_names)
    model.meta.lineage.append(lineage or {"pass": "search", "space": space.name, "config": config})
    return model


# the families that build a 1-D (Conv1d) network for (C, L) sequences (``edgeopt.models.searchable``)
SEQUENCE_FAMILIES = ("nas_dscnn",)


def refuse_unsearchable(space: SearchSpace, data: ImageDataset, spec: str, mode: str = "proxy") -> None:
    """One clear line, before any trial, when ``space`` cannot build a network for ``data``'s samples.

    Images (uint8 H x W x C) fit every space and mode; in the proxy mode (C, H, W) arrays
    (spectrograms) fit every space too, and (C, L) sequences fit ``nas_dscnn`` (a Conv1d network);
    the weight-sharing supernet (``--mode supernet``) is built for ``nas_resnet`` spaces on images only;
    flat vectors fit no space.
    """
    if mode == "supernet" and space.family != "nas_resnet":
        raise EdgeoptError(f"a weight-sharing supernet is built for nas_resnet spaces, not {space.family}",
                           "use --mode proxy (the default) for this space")  # fmt: skip
    if data.is_image:
        return
    shape = data.sample_shape
    text = "x".join(map(str, shape))
    if len(shape) not in (2, 3):
        raise EdgeoptError(
            f"search builds image, spectrogram (C x H x W) or sequence (C x L) networks, but {spec} holds "
            f"flat vectors of shape {text}",
            "for tabular or flat data, train a zoo model (mlp, fc_autoencoder) and prune or quantize it",
        )
    if mode == "supernet":
        raise EdgeoptError(
            f"the weight-sharing supernet trains on images, but {spec} holds arrays of shape {text}",
            "search array data with --mode proxy" + (" --space dscnn" if len(shape) == 2 else ""),
        )
    if len(shape) == 2 and space.family not in SEQUENCE_FAMILIES:
        raise EdgeoptError(
            f"the '{space.name}' space builds image networks (H x W x C inputs), but {spec} holds 1-D sequences "
            f"of shape {text}",
            "search 1-D data with --space dscnn (or a nas_dscnn space file)",
        )


@contextlib.contextmanager
def quiet_progress() -> Iterator[None]:
    """Silence inner progress bars (training, evaluation) under the search's own bar."""
    before = os.environ.get("EDGEOPT_QUIET")
    os.environ["EDGEOPT_QUIET"] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("EDGEOPT_QUIET", None)
        else:
            os.environ["EDGEOPT_QUIET"] = before


def train_and_score(
    model: EdgeModel, train: ImageDataset, val: ImageDataset, epochs: int, seed: int = 0, batch_size: int = 32,
    device: str = "cpu",
) -> tuple[EdgeModel, float]:  # fmt: skip
    """Train ``model`` for ``epochs`` (edgeopt's training loop and recipe, one thread, on ``device``) and
    return its accuracy on ``val``."""
    from edgeopt.train import FitConfig, evaluate, fit

    cfg = FitConfig(epochs=epochs, batch_size=batch_size, seed=seed, threads=1, device=device)
    with quiet_progress():
        model, _ = fit(model, train, cfg)
        return model, float(evaluate(model, val).accuracy)


def inherited_score(supernet: Any, config: dict[str, Any], model: EdgeModel, train: ImageDataset,
                    val: ImageDataset) -> float:  # fmt: skip
    """Validation accuracy of ``config`` with the supernet's weights and re-calibrated batch norm."""
    from edgeopt.nas.supernet import extract, recalibrate_bn
    from edgeopt.train import evaluate

    with quiet_progress():
        model = recalibrate_bn(extract(supernet, config, model), train)
        return float(evaluate(model, val).accuracy)


def cost_axis(cost: dict[str, Any], runtimes: list[str]) -> tuple[str, float]:
    """The second objective: mean latency (ms) over the runtimes if each has one, else MACs (millions)."""
    lat = cost.get("latency_ms", {})
    if runtimes and all(r in lat for r in runtimes):
        return "latency_ms", float(np.mean([lat[r] for r in runtimes]))
    return "mmacs", cost["macs"] / 1e6


def _storage(settings: SearchSettings) -> Any:
    import optuna

    url = settings.storage
    if url is None:
        return None
    if not url.startswith(("sqlite:///", "postgresql://", "postgresql+", "mysql://", "mysql+")):
        raise EdgeoptError(f"unsupported --storage '{url}'", "use sqlite:///PATH or postgresql://USER@HOST/DB")
    # Optuna marks the heartbeat API experimental (stable in use since 2.8): its warning is not for our users
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    from sqlalchemy.exc import IntegrityError, OperationalError

    retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3)
    try:
        for attempt in range(5):
            try:
                return optuna.storages.RDBStorage(
                    url,
                    heartbeat_interval=settings.heartbeat_s,
                    grace_period=2 * settings.heartbeat_s,
                    heartbeat_stale_trial_callback=retry,
                    engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None,
                )
            except (OperationalError, IntegrityError):
                # workers starting together on a fresh SQLite file race to create its tables
                # ("table ... already exists") or to stamp its schema version ("UNIQUE constraint
                # failed: alembic_version"): the loser waits and opens what the winner made
                if attempt == 4:
                    raise
                time.sleep(1.0 + attempt)
        raise AssertionError("unreachable")
    except Exception as e:  # sqlalchemy / driver errors come in many types
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise EdgeoptError(
            f"cannot open study storage {url} ({first[:160]})", "check the URL and that it is reachable"
        ) from e


def make_sampler(name: str, seed: int | None) -> Any:
    """The Optuna sampler a search uses: ``tpe`` (multivariate, 5 random startup trials), ``nsga2``
    (population 10) or ``random``."""
    import optuna

    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=10)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=5, multivariate=True)
    raise EdgeoptError(f"unknown sampler '{name}'", f"use one of: {', '.join(SAMPLERS)}")


def _sampler(settings: SearchSettings) -> Any:
    from edgeopt.nas.sampling import search_sampler

    # workers sharing a study must not draw the same startup configurations: their seed adds the pid
    seed = (settings.seed * 1_000_003 + os.getpid()) % 2**31 if settings.shared else settings.seed
    return search_sampler(settings.sampler, seed)


def open_study(space: SearchSpace, budget: Budget, settings: SearchSettings) -> Any:
    """Create or join the study; a joined study must have been started with the same space and budget."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        storage=_storage(settings),
        sampler=_sampler(settings),
        study_name=settings.study_name,
        directions=["maximize", "minimize"],
        load_if_exists=True,
    )
    mine = {"space": space.to_json(), "budget": budget.to_json(), "runtimes": settings.runtimes}
    claim_study(study, mine, f"study '{settings.study_name}'",
                "use the same --space, budget flags and --runtime, or another --study-name")  # fmt: skip
    if settings.corners:
        from edgeopt.nas.sampling import seed_corners
        from edgeopt.nas.space import corner_params

        seed_corners(study, [corner_params(space, largest=False), corner_params(space, largest=True)])
    return study


def claim_study(study: Any, mine: dict[str, Any], name: str, fix: str) -> None:
    """Record ``mine`` in a new study's user attributes; a joined study must hold the same values."""
    for key, value in mine.items():
        theirs = study.user_attrs.get(key)
        if theirs is None:
            study.set_user_attr(key, value)
        elif theirs != value:
            raise EdgeoptError(f"{name} was started with another {key} ({theirs})", fix)


def make_objective(
    space: SearchSpace,
    budget: Budget,
    settings: SearchSettings,
    train: ImageDataset,
    val: ImageDataset,
    source: LatencySource,
    supernet: Any = None,
) -> Callable[[Any], tuple[float, float]]:
    """Optuna's objective: sample, price, constrain, then (within budget) score: proxy-trained, or with
    weights inherited from ``supernet`` (a trained ``nas.supernet.ResNetSupernet``) and batch norm
    re-calibrated."""

    def objective(trial: Any) -> tuple[float, float]:
        start = time.perf_counter()
        config = sample(space, trial.suggest_categorical)
        model = candidate_model(space, config, train, settings.seed)
        cost = architecture_cost(model, source, budget.mcu)
        if settings.measure_latency:
            for r in settings.runtimes:
                if r not in cost["latency_ms"]:
                    cost["latency_ms"][r] = measured_latency(model, r, settings.threads)
                    cost.setdefault("latency_source", {})[r] = "measured"
        cons = violations(cost, budget, settings.runtimes)
        for name, value in cons.items():
            trial.set_constraint(name, value)
        axis, value = cost_axis(cost, settings.runtimes)
        ok = feasible(cons)
        accuracy = 0.0  # over budget: not trained (the constraints already rank it below every feasible trial)
        if ok and supernet is not None:
            accuracy = inherited_score(supernet, config, model, train, val)
        elif ok:
            _, accuracy = train_and_score(model, train, val, settings.epochs, settings.seed, settings.batch_size,
                                          settings.device)  # fmt: skip
        trial.set_user_attr("config", config)
        trial.set_user_attr("cost", cost)
        trial.set_user_attr("cost_axis", axis)
        trial.set_user_attr("trained", ok)
        trial.set_user_attr("worker", f"{os.uname().nodename}:{os.getpid()}")
        trial.set_user_attr("seconds", round(time.perf_counter() - start, 3))
        return accuracy, value

    return objective


def trial_record(t: Any) -> dict[str, Any]:
    """One trial as JSON: number, state, parameters, configuration, cost, constraints, objectives."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    rec: dict[str, Any] = {
        "number": t.number,
        "state": t.state.name,
        "params": dict(t.params),
        "values": list(t.values) if t.values is not None else None,
        "accuracy_val": t.values[0] if t.values is not None else None,
        "constraints": dict(t.constraints),
        "feasible": t.values is not None and feasible(dict(t.constraints)),
        **{
            k: t.user_attrs[k]
            for k in ("config", "cost", "cost_axis", "trained", "worker", "seconds")
            if k in t.user_attrs
        },
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's "experimental" note
        retried = RetryHeartbeatStaleTrialCallback.retried_trial_number(t)
    if retried is not None:
        rec["retry_of"] = retried
    return rec


def pareto_front(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Feasible, trained, complete trials not dominated in (accuracy up, cost down); one per configuration,
    sorted by cost. Pure."""
    pts = [r for r in records if r["state"] == "COMPLETE" and r["feasible"] and r.get("trained")]
    best: dict[str, dict[str, Any]] = {}
    for r in pts:  # a configuration sampled twice keeps its better score
        key = config_key(r["config"])
        if key not in best or r["values"][0] > best[key]["values"][0]:
            best[key] = r
    pts = list(best.values())
    front = [
        r
        for r in pts
        if not any(
            o["values"][0] >= r["values"][0] and o["values"][1] <= r["values"][1] and o["values"] != r["values"]
            for o in pts
        )
    ]
    return sorted(front, key=lambda r: (r["values"][1], -r["values"][0]))


def spread(front: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """At most ``limit`` points spread along the front (by cost), the most accurate always kept. Pure."""
    if len(front) <= limit:
        return front
    idx = sorted({int(round(i)) for i in np.linspace(0, len(front) - 1, limit)} | {len(front) - 1})
    return [front[i] for i in idx][-limit:]


def hypervolume_2d(points: list[tuple[float, float]], ref_cost: float, ref_acc: float = 0.0) -> float:
    """Area that (accuracy, cost) points dominate (accuracy up, cost down) inside the reference box
    ``[ref_acc, ...] x [..., ref_cost]``: the union of rectangles ``[cost, ref_cost] x [ref_acc, acc]``. Pure."""
    pts = [(c, a) for a, c in points if a > ref_acc and c < ref_cost]
    xs = sorted({c for c, _ in pts} | {ref_cost})
    area = 0.0
    for x0, x1 in zip(xs, xs[1:], strict=False):
        top = max((a for c, a in pts if c <= x0), default=ref_acc)
        area += (x1 - x0) * (top - ref_acc)
    return area
