"""edgeopt turns oneDNN off on AVX2-only CPUs, where its convolution backward corrupts the heap on one thread."""

from __future__ import annotations

import torch

import edgeopt  # noqa: F401  (the guard runs on import)
from edgeopt.cpu_guard import avoid_onednn_without_avx512


def test_onednn_is_off_exactly_on_avx2_only_cpus() -> None:
    avx2_only = torch.backends.cpu.get_cpu_capability() == "AVX2"
    assert torch.backends.mkldnn.enabled is not avx2_only
    assert avoid_onednn_without_avx512() is False  # already applied: a second call changes nothing
