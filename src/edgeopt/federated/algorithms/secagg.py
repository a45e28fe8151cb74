"""Secure aggregation with pairwise masks that survives client dropout (pure functions).

The pairwise-mask layer of Bonawitz et al. 2017 ("Practical Secure Aggregation for
Privacy-Preserving Machine Learning"):

1. every client has an X25519 key pair and publishes its public key;
2. clients ``i`` and ``j`` derive a shared seed ``s_ij`` by Diffie-Hellman; its PRG stream is
   the mask ``m_ij``;
3. client ``i`` uploads ``y_i = enc(x_i) + Σ_{j>i} m_ij − Σ_{j<i} m_ij`` in the ring Z_2^64,
   where ``enc`` is fixed point (scale 2^24, two's complement), so a single ``y_i`` looks
   uniformly random to the server;
4. the masks cancel in ``Σ y_i`` over all clients. When clients drop after step 1, each
   survivor reveals its seeds with the dropped clients only (never its own ``x_i``) and the
   server removes those unmatched masks.

Left out here (present in full SecAgg and in Flower's SecAgg+, which the Flower engine
uses in deployment): the self mask and Shamir secret sharing that protect against a server
that lies about who dropped. This module is the in-process engine's implementation.
Cost: per client O(P · (n−1)) PRG words; server O(P · n_survivors · n_dropped).
"""

from __future__ import annotations

import hashlib

import numpy as np

FIXED_POINT_SCALE = float(2**24)


def encode_fixed(x: np.ndarray) -> np.ndarray:
    """float -> uint64 fixed point (two's complement for negatives)."""
    return np.rint(np.asarray(x, np.float64) * FIXED_POINT_SCALE).astype(np.int64).view(np.uint64)


def decode_fixed(u: np.ndarray) -> np.ndarray:
    """uint64 fixed point -> float64."""
    return np.asarray(u, np.uint64).view(np.int64).astype(np.float64) / FIXED_POINT_SCALE


def private_key(seed_material: bytes) -> bytes:
    """A raw X25519 private key derived from ``seed_material`` (32 bytes)."""
    return hashlib.sha256(b"edgeopt-secagg-key" + seed_material).digest()


def public_key(private: bytes) -> bytes:
    """The raw X25519 public key of ``private``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    return (
        X25519PrivateKey.from_private_bytes(private)
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )


def pair_seed(private: bytes, other_public: bytes) -> bytes:
    """The seed two clients share: SHA-256 of their X25519 shared secret (symmetric)."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

    shared = X25519PrivateKey.from_private_bytes(private).exchange(X25519PublicKey.from_public_bytes(other_public))
    return hashlib.sha256(b"edgeopt-secagg-pair" + shared).digest()


def prg_mask(seed: bytes, n: int) -> np.ndarray:
    """``n`` pseudo-random uint64 words from ``seed``."""
    rng = np.random.default_rng(int.from_bytes(seed, "little"))
    return rng.integers(0, np.iinfo(np.uint64).max, size=n, dtype=np.uint64, endpoint=True)


def masked_input(client: int, x: np.ndarray, private: bytes, public_keys: dict[int, bytes]) -> np.ndarray:
    """What client ``client`` uploads: its encoded ``x`` plus its pairwise masks with every other key holder."""
    y = encode_fixed(x)
    for j, pk in public_keys.items():
        if j == client:
            continue
        m = prg_mask(pair_seed(private, pk), len(y))
        y = y + m if client < j else y - m
    return y


def reveal_seeds(client: int, private: bytes, public_keys: dict[int, bytes], dropped: list[int]) -> dict[int, bytes]:
    """A survivor's answer in the recovery step: its pair seeds with the dropped clients only."""
    return {j: pair_seed(private, public_keys[j]) for j in dropped if j != client}


def unmask_sum(masked: dict[int, np.ndarray], revealed: dict[int, dict[int, bytes]]) -> np.ndarray:
    """Σ x_i over the survivors (float64) from their masked inputs and the revealed seeds.

    ``revealed[i][j]`` is survivor ``i``'s seed with dropped client ``j``.
    """
    if not masked:
        raise ValueError("no masked inputs to aggregate")
    n = len(next(iter(masked.values())))
    total = np.zeros(n, np.uint64)
    for y in masked.values():
        total = total + y
    for i, seeds in revealed.items():
        for j, seed in seeds.items():
            m = prg_mask(seed, n)
            total = total - m if i < j else total + m
    return decode_fixed(total)
