"""Federated algorithms as pure functions (the Flower "strategy" half; engines live elsewhere).

- :mod:`.params`: model state <-> flat float32 vector.
- :mod:`.client`: local update (FedAvg/FedSGD, FedProx, SCAFFOLD).
- :mod:`.server`: aggregation (weighted mean, median, trimmed mean, Krum), screening,
  server optimizers (SGD, FedAdam, FedYogi), SCAFFOLD control, client sampling.
- :mod:`.compression`: int8 deltas, top-k with error feedback, bytes on the wire.
- :mod:`.privacy`: DP-FedAvg clipping/noise and the RDP accountant.
- :mod:`.secagg`: pairwise-mask secure aggregation with dropout recovery.
"""

from edgeopt.federated.algorithms.client import ClientConfig, ClientResult, LocalTrainer, client_update
from edgeopt.federated.algorithms.compression import compress, decompress, parse_compression, payload_bytes
from edgeopt.federated.algorithms.params import ParamLayout, get_flat, layout_of, set_flat
from edgeopt.federated.algorithms.privacy import clip_by_norm, dp_epsilon, noisy_mean
from edgeopt.federated.algorithms.server import (
    ServerOptConfig,
    ServerState,
    aggregate,
    coordinate_median,
    init_state,
    krum,
    sample_clients,
    screen_updates,
    server_update,
    trimmed_mean,
    weighted_mean,
)

__all__ = [
    "ClientConfig", "ClientResult", "LocalTrainer", "ParamLayout", "ServerOptConfig", "ServerState", "aggregate",
    "client_update", "clip_by_norm", "compress", "coordinate_median", "decompress", "dp_epsilon", "get_flat",
    "init_state", "krum", "layout_of", "noisy_mean", "parse_compression", "payload_bytes", "sample_clients",
    "screen_updates", "server_update", "set_flat", "trimmed_mean", "weighted_mean",
]  # fmt: skip
