"""The settings of one federated run, shared by every engine (and stored in checkpoints)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from edgeopt.checks import check_numbers
from edgeopt.errors import EdgeoptError

ALGORITHMS = ("fedavg", "fedprox", "fedadam", "fedyogi", "scaffold")
ENGINES = ("inprocess", "flower-sim", "flower")


@dataclass(frozen=True)
class FederatedConfig:
    """One federated run.

    ``algo`` picks the client term and server optimizer: fedavg (SGD server step ``server_lr``),
    fedprox (+ ``mu``), fedadam / fedyogi (adaptive server step; ``server_lr`` around 0.01-0.1,
    the CLI defaults to 0.01 for them), scaffold (control variates). ``batch_size=0`` is full batch.
    Faults: ``dropout`` is the chance a sampled client fails in a round; ``deadline`` (simulated
    seconds at ``device_samples_per_s``, clients' speeds log-normal with ``speed_spread``) drops
    stragglers; a round whose completed fraction is below ``min_completion`` is skipped.
    ``reject_norm_ratio`` rejects updates longer than that multiple of the median norm.
    ``client_model`` is what clients train: ``float``, ``qat-int8`` (fake-quantized, int8-deployable
    global model) or ``pruned:R`` (R of the MACs channel-pruned once before round 1); see
    :mod:`edgeopt.federated.client_model`.
    ``personalize`` keeps part of the model on each client: ``head`` (FedPer), ``bn`` (FedBN), or
    ``finetune`` (the head fine-tuned locally for ``finetune_epochs`` after the last round); see
    :mod:`edgeopt.federated.personalize`. ``holdout`` is the fraction of each client's data held out
    for its own accuracy (None: 0.2 when personalizing, else 0).
    """

    clients: int = 10
    per_round: int = 10
    rounds: int = 10
    partition: str = "iid"
    algo: str = "fedavg"
    local_epochs: int = 1
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.0
    weight_decay: float = 0.0
    mu: float = 0.01
    server_lr: float = 1.0
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3
    aggregator: str = "mean"
    compress: str = "none"
    dp_clip: float | None = None
    dp_noise: float = 0.0
    dp_delta: float = 1e-5
    secagg: bool = False
    dropout: float = 0.0
    deadline: float | None = None
    device_samples_per_s: float = 200.0
    speed_spread: float = 0.5
    min_completion: float = 0.5
    reject_norm_ratio: float = 100.0
    client_model: str = "float"
    personalize: str = "none"
    holdout: float | None = None
    finetune_epochs: int = 5
    eval_limit: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        check_numbers(self.__dict__, skip=("batch_size",))  # lr > 0, fractions in range, ...
        if self.batch_size < 0:
            raise EdgeoptError(f"batch_size must be >= 0 (got {self.batch_size})", "0 means full batch (FedSGD)")
        problems = []
        if self.algo not in ALGORITHMS:
            problems.append((f"unknown --algo '{self.algo}'", f"use one of {', '.join(ALGORITHMS)}"))
        if self.clients < 1 or not 1 <= self.per_round <= self.clients:
            problems.append((f"--per-round {self.per_round} with --clients {self.clients}", "need 1 <= M <= K"))
        if self.rounds < 1 or self.local_epochs < 1:
            problems.append(("--rounds and local epochs must be >= 1", "raise them"))
        if not 0 <= self.dropout < 1 or not 0 < self.min_completion <= 1:
            problems.append(("dropout must be in [0, 1) and min_completion in (0, 1]", "fix the fractions"))
        if self.dp_clip is not None and self.dp_clip <= 0:
            problems.append(("--dp-clip must be > 0", "give the L2 clipping norm, e.g. --dp-clip 1.0"))
        if self.dp_noise > 0 and self.dp_clip is None:
            problems.append(("--dp-noise needs --dp-clip", "add --dp-clip C"))
        if self.secagg and self.aggregator != "mean":
            problems.append(("secure aggregation hides single updates", "use --aggregator mean with --secagg"))
        if self.holdout is not None and not 0 <= self.holdout < 1:
            problems.append((f"holdout must be in [0, 1) (got {self.holdout})", "e.g. 0.2"))
        if self.personalize in ("head", "bn") and self.algo == "scaffold":
            problems.append(("SCAFFOLD's control variates assume one shared model", "use --personalize with fedavg"))
        if self.personalize != "none" and self.client_model.startswith("qat"):
            problems.append(("--personalize with --client-model qat-int8 is not supported", "use float or pruned:R"))
        if self.finetune_epochs < 1:
            problems.append(("finetune_epochs must be >= 1", "raise it"))
        if self.secagg and self.compress.startswith("topk"):
            problems.append(("top-k payloads from different clients do not add up under masks", "use int8 or none"))
        try:
            from edgeopt.federated.algorithms.compression import parse_compression
            from edgeopt.federated.algorithms.server import parse_aggregator
            from edgeopt.federated.client_model import parse_client_model
            from edgeopt.federated.partition import parse_partition
            from edgeopt.federated.personalize import parse_personalize

            parse_partition(self.partition)
            parse_compression(self.compress)
            parse_aggregator(self.aggregator)
            parse_client_model(self.client_model)
            parse_personalize(self.personalize)
        except ValueError as e:
            problems.append((str(e), "see edgeopt federate --help"))
        if problems:
            raise EdgeoptError(*problems[0])

    @property
    def server_optimizer(self) -> str:
        """``sgd``, ``adam`` or ``yogi``, from ``algo``."""
        return {"fedadam": "adam", "fedyogi": "yogi"}.get(self.algo, "sgd")

    @property
    def holdout_fraction(self) -> float:
        """The fraction of each client's data held out for per-client accuracy."""
        if self.holdout is not None:
            return self.holdout
        from edgeopt.federated.personalize import DEFAULT_HOLDOUT

        return DEFAULT_HOLDOUT if self.personalize != "none" else 0.0

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> FederatedConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def fingerprint(self) -> str:
        """Everything but ``rounds`` (a resumed run may extend the number of rounds)."""
        d = self.to_json()
        d.pop("rounds")
        return json.dumps(d, sort_keys=True)
