"""Hardware model: device profiles, latency prediction, memory, energy and microcontroller estimates.

- ``kernels``: the fused kernels a runtime executes, found in a model's exported graph;
- ``predictor``: per-kernel costs summed (nn-Meter style), fitted on whole-model timings;
- ``archs``: varied architectures of the zoo families to calibrate on;
- ``calibrate``: measure them in a runtime and fit a ``DeviceProfile`` (``profile``);
- ``fingerprint``: the machine and runtime a profile belongs to;
- ``predict``: a model's latency, flash, arena, MACs and energy on a profile or MCU preset;
- ``energy`` and ``mcu``: published per-operation energies and microcontroller presets (estimates).
"""

from edgeopt.hardware.profile import DeviceProfile, load_profile

__all__ = ["DeviceProfile", "load_profile"]
