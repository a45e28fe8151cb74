"""A guard against a oneDNN defect on x86 CPUs without AVX-512.

On a CPU whose best instruction set PyTorch reports as AVX2 (no AVX-512), PyTorch 2.13's oneDNN
convolution backward corrupts the heap when it runs on one intra-op thread: glibc aborts with
"corrupted double-linked list" (SIGABRT) or the process segfaults later. Seen 2026-12-02 on a 2-vCPU
AMD EPYC that exposed AVX2 only: `edgeopt distill` of a 4-channel ResNet-8 on digits with
`torch.set_num_threads(1)` crashed every time; the same run with oneDNN disabled, with 2 threads, or on
the AVX-512 machines of earlier sessions did not (docs/NOTES.md, fourth session of 2026-12-02). There,
edgeopt uses PyTorch's native convolutions instead; nothing else changes (exports and runtimes do not
use oneDNN). A global switch because the crash comes long after the call that caused it.
"""

from __future__ import annotations

import torch


def avoid_onednn_without_avx512() -> bool:
    """Disable PyTorch's oneDNN (mkldnn) backend on an AVX2-only CPU; returns whether it did."""
    if torch.backends.cpu.get_cpu_capability() != "AVX2" or not torch.backends.mkldnn.enabled:
        return False
    torch.backends.mkldnn.enabled = False
    return True
