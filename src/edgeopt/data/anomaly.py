"""``anomaly:`` — a reproducible synthetic anomaly-detection set shaped like MLPerf Tiny's.

MLPerf Tiny's anomaly detection (ToyADMOS / DCASE 2020 task 2) feeds an autoencoder 640
features: 5 consecutive frames of 128 log-mel bins of a machine's sound. This set imitates
that shape with a generated machine: each *normal* window is a hum with fundamental
``f0`` (bins 10..13, drifting slightly between frames) and 4 harmonics of decaying strength over
a sloped noise floor, with amplitude jitter and noise. *Abnormal* windows are the same machine
with one fault, of a random severity: the fundamental off its normal range (a worn bearing
turning faster or slower), an extra non-harmonic tone (a rattle), or a broadband burst in one
frame (a knock). Values are standardised log energies (roughly -2..4).

Splits: ``train`` holds only normal windows (an autoencoder learns normality); ``test`` holds
equal numbers of normal and abnormal windows, labelled 0/1 for ROC AUC. ``anomaly:N`` gives
N training windows (default 4,000) and N/4 + N/4 test windows. A fixed seed per split makes
every load identical. Cost: ~0.1 ms a window.
"""

from __future__ import annotations

import numpy as np

from edgeopt.data.dataset import ImageDataset
from edgeopt.errors import EdgeoptError

FRAMES, BINS = 5, 128
FEATURES = FRAMES * BINS  # 640, the MLPerf Tiny AD input
DEFAULT_TRAIN = 4000
SEEDS = {"train": 1401, "test": 1402}
FAULTS = ("shift", "tone", "burst")


def _spectra(f0: np.ndarray, amp: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(n, FRAMES, BINS) log energies of harmonic hums with fundamental ``f0`` (n, FRAMES) bins."""
    n = len(f0)
    bins = np.arange(BINS, dtype=np.float32)
    floor = 1.2 - 1.6 * bins / BINS  # sloped noise floor
    x = np.broadcast_to(floor, (n, FRAMES, BINS)).copy()
    for k in range(1, 6):
        centre = (f0 * k)[..., None]
        strength = (amp / k)[:, None, None] * rng.uniform(0.85, 1.15, (n, FRAMES, 1))
        x += strength * np.exp(-0.5 * ((bins - centre) / (0.8 + 0.15 * k)) ** 2)
    return x


def generate(n_normal: int, n_abnormal: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n_normal`` then ``n_abnormal`` windows (float32 (N, 640)) and their 0/1 labels, shuffled by ``seed``."""
    rng = np.random.default_rng(seed)
    n = n_normal + n_abnormal
    f0 = rng.uniform(10.0, 13.0, n)[:, None] + rng.normal(0, 0.15, (n, FRAMES))
    amp = rng.uniform(1.6, 2.4, n)
    abnormal = np.zeros(n, bool)
    abnormal[n_normal:] = True
    fault = rng.integers(0, len(FAULTS), n)
    severity = rng.uniform(0.3, 1.0, n)
    shift = abnormal & (fault == 0)
    sign = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    f0[shift] += (sign * (1.0 + 2.5 * severity))[shift, None]  # off the normal 10..13 range
    x = _spectra(f0, amp, rng)
    bins = np.arange(BINS, dtype=np.float32)
    for i in np.flatnonzero(abnormal & (fault == 1)):  # a rattle: a tone between the harmonics
        centre = rng.uniform(20, 100)
        x[i] += (0.4 + 1.2 * severity[i]) * np.exp(-0.5 * ((bins - centre) / 1.0) ** 2)
    for i in np.flatnonzero(abnormal & (fault == 2)):  # a knock: broadband energy in one frame
        x[i, rng.integers(0, FRAMES)] += 0.25 + 0.6 * severity[i]
    x += rng.normal(0, 0.25, x.shape)
    order = rng.permutation(n)
    return x.reshape(n, FEATURES)[order].astype(np.float32), abnormal[order].astype(np.int64)


def load_anomaly(split: str, n_train: int = DEFAULT_TRAIN) -> ImageDataset:
    """One split of the synthetic set: train (normal only) or test (half abnormal), labels 0/1."""
    if n_train < 8:
        raise EdgeoptError(f"anomaly:{n_train} is too few windows", "give at least 8 (default 4000)")
    if split == "train":
        x, y = generate(n_train, 0, SEEDS["train"])
    else:
        x, y = generate(n_train // 4, n_train // 4, SEEDS["test"])
    return ImageDataset(x, y, ["normal", "anomaly"], f"anomaly:{split}", task="anomaly")
