"""Microcontroller presets and a fits / latency *estimate* for running a model on one of them.

Each preset is data: clock, the SRAM a tensor arena can use, flash, and a throughput in MACs per
cycle derived from a published measurement: ``macs / (latency * clock)``. Sources:

* MLPerf Tiny image classification (ResNet-8, CIFAR-10, 12.5 M MACs: 12,501,632 counted from the
  reference architecture below), closed-division results in github.com/mlcommons:
  tiny_results_v1.0/closed/plumerai/README.md (Plumerai inference engine: STM32F746 64.8 ms,
  STM32L4R5 173.2 ms) and tiny_results_v1.1/closed/Krai/results/README.md (X-CUBE-AI 8.0 on
  NUCLEO-H7A3ZI-Q: 18.215 inferences/s).
* TFLite Micro's person-detection example (MobileNet v1 0.25, 96x96x1: 7,157,888 MACs counted below):
  github.com/espressif/esp-tflite-micro README (ESP32-S3 at 240 MHz: 54 ms with ESP-NN, 2300 ms
  without) and Eben Upton's tinyML talk, 2021, as reported by hocdirect.co.uk (Raspberry Pi Pico,
  RP2040: 2,200 ms).
* github.com/mit-han-lab/tinyengine README, measured on STM32H743 at 480 MHz: TF-Lite Micro with its
  portable reference kernels runs mcunet-vww2 in 5,310 ms and with CMSIS-NN in 478 ms. 55.8 M MACs:
  the MCUNet model zoo's largest VWW model, mcunet-320kB-vww (github.com/mit-han-lab/mcunet README),
  taken to be the README's vww2 (the three VWW models' latencies scale with the zoo's 6.0/11.6/55.8 M).

MACs per cycle depend on the engine and the layer mix, not only on the core: on the same STM32H743
the TinyEngine README measures 0.24 MACs/cycle for TFLite Micro + CMSIS-NN on MobileNet-style nets,
against 0.81 for X-CUBE-AI on ResNet-8 (H7A3) here; the optimized engines above are 2-3x faster than
stock TFLite Micro + CMSIS-NN (MLPerf Tiny v1.1: microTVM + CMSIS-NN ran ResNet-8 in 390 ms on the
L4R5 where Plumerai took 173 ms). The latency is therefore an estimate for a well-optimized int8
engine, good to a factor of about 2-3.

Float models: CMSIS-NN and ESP-NN implement int8/int16 kernels only, so TFLite Micro runs a float
model through its portable reference kernels; ``float_macs_per_cycle`` is the measured
reference-kernel rate (int8 reference kernels, taken as the float rate on a core with an FPU). A core
without an FPU (RP2040's Cortex-M0+) emulates floats in software: no published figure, no latency.

Memory: ``fits`` needs the tensor arena plus the runtime's own RAM within ``sram_bytes``, and the model
plus the runtime's code within ``flash_bytes``. The runtime reserve (TFLite Micro) is:

* flash, ``RUNTIME_FLASH_RESERVE_BYTES`` = 64 KiB: TFLite Micro's documentation gives 16 KB for the
  core runtime on a Cortex-M3 and 22 KB with the operators of its speech keyword model
  (tensorflow.org/lite/microcontrollers/overview); a CNN needs more kernels (CMSIS-NN convolution,
  depthwise, fully connected, add, pooling, softmax), so 64 KiB is reserved. An assumption, not a
  measurement: pass ``runtime_flash_bytes`` to change it.
* SRAM, ``RUNTIME_SRAM_RESERVE_BYTES`` = 8 KiB: the interpreter's persistent allocations measured by
  tflite-micro's memory_arena_threshold_test.cc (x86-64) are 1,928 B for its 13-tensor conv model and
  about 4 KB for its 54-tensor keyword model (14,264 B less 10,240 B of SVDF state); 8 KiB covers that
  and a stack margin. Pass ``runtime_sram_bytes`` to change it.

KB in the messages is 1024 bytes, as in the datasheets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgeopt.errors import EdgeoptError

KIB = 1024
RUNTIME_FLASH_RESERVE_BYTES = 64 * KIB
RUNTIME_SRAM_RESERVE_BYTES = 8 * KIB

RUNTIME_SOURCE = (
    "runtime reserve: TFLite Micro docs (core runtime 16 KB on Cortex-M3, 22 KB with the keyword model's ops; "
    "64 KiB reserved for a CNN op set, assumption) and tflite-micro memory_arena_threshold_test.cc "
    "(persistent allocations 1.9-4 KB; 8 KiB reserved)"
)


def _conv_macs(out_hw: int, kernel: int, cin: int, cout: int) -> int:
    """MACs of a square convolution with ``out_hw`` x ``out_hw`` outputs (groups = 1)."""
    return out_hw * out_hw * kernel * kernel * cin * cout


def _depthwise_macs(out_hw: int, kernel: int, channels: int) -> int:
    """MACs of a square depthwise convolution with ``out_hw`` x ``out_hw`` outputs."""
    return out_hw * out_hw * kernel * kernel * channels


def resnet8_macs() -> int:
    """MACs of the MLPerf Tiny ResNet-8 (32x32x3 input; 16/32/64 channels; 1x1 projection shortcuts).

    Architecture: github.com/mlcommons/tiny, benchmark/training/image_classification (resnet_v1_eembc).
    """
    stem = _conv_macs(32, 3, 3, 16)
    stack1 = 2 * _conv_macs(32, 3, 16, 16)
    stack2 = _conv_macs(16, 3, 16, 32) + _conv_macs(16, 3, 32, 32) + _conv_macs(16, 1, 16, 32)
    stack3 = _conv_macs(8, 3, 32, 64) + _conv_macs(8, 3, 64, 64) + _conv_macs(8, 1, 32, 64)
    classifier = 64 * 10
    return stem + stack1 + stack2 + stack3 + classifier


def person_detection_macs() -> int:
    """MACs of TFLite Micro's person-detection model: MobileNet v1, width 0.25, 96x96x1 input, 2 classes.

    Architecture: tflite-micro examples/person_detection (trained with slim ``mobilenet_v1_025``,
    ``--train_image_size=96 --use_grayscale=True``); layer list from Howard et al. 2017, Table 1.
    """
    total = _conv_macs(48, 3, 1, 8)  # stride-2 stem
    # (output size, input channels, output channels) of the 13 depthwise-separable blocks
    blocks = [(48, 8, 16), (24, 16, 32), (24, 32, 32), (12, 32, 64), (12, 64, 64), (6, 64, 128)]
    blocks += [(6, 128, 128)] * 5 + [(3, 128, 256), (3, 256, 256)]
    for out_hw, cin, cout in blocks:
        total += _depthwise_macs(out_hw, 3, cin) + _conv_macs(out_hw, 1, cin, cout)
    return total + 256 * 2


def macs_per_cycle(macs: int, latency_ms: float, clock_mhz: float) -> float:
    """Throughput implied by a measurement: ``macs / (latency * clock)``."""
    return macs / (latency_ms * 1e-3 * clock_mhz * 1e6)


@dataclass(frozen=True)
class McuPreset:
    """A microcontroller as data. ``float_macs_per_cycle`` is None on a core without an FPU."""

    name: str
    core: str
    clock_mhz: float
    sram_bytes: int
    flash_bytes: int
    int8_macs_per_cycle: float
    float_macs_per_cycle: float | None
    source: str

    @property
    def has_fpu(self) -> bool:
        """Whether the core has a hardware floating-point unit."""
        return self.float_macs_per_cycle is not None


_RESNET8 = resnet8_macs()
_PERSON = person_detection_macs()

# Cortex-M7 with TFLite Micro's reference kernels (STM32H743, TinyEngine README): mcunet-320kB-vww,
# 55.8 M MACs in 5,310 ms at 480 MHz.
_M7_REFERENCE_KERNELS = macs_per_cycle(55_800_000, 5310.0, 480.0)

_PRESETS: tuple[McuPreset, ...] = (
    McuPreset(
        name="stm32f746",
        core="Arm Cortex-M7 (single-precision FPU)",
        clock_mhz=216.0,
        sram_bytes=320 * KIB,
        flash_bytes=1024 * KIB,
        int8_macs_per_cycle=macs_per_cycle(_RESNET8, 64.8, 216.0),
        float_macs_per_cycle=_M7_REFERENCE_KERNELS,
        source=(
            "ST STM32F746 (DISCO-F746NG, the MCUNet/TinyEngine board): 216 MHz, 320 KB SRAM (incl. 64 KB DTCM, "
            "contiguous), 1 MB flash. int8: derived from MLPerf Tiny v1.0 closed, Plumerai, ResNet-8 64.8 ms at "
            "216 MHz (12.5 M MACs). float: derived, TFLite Micro reference kernels on the same core (STM32H743, "
            "TinyEngine README: 55.8 M MACs in 5,310 ms at 480 MHz)"
        ),
    ),
    McuPreset(
        name="stm32h743",
        core="Arm Cortex-M7 (double-precision FPU)",
        clock_mhz=480.0,
        sram_bytes=512 * KIB,
        flash_bytes=2048 * KIB,
        int8_macs_per_cycle=macs_per_cycle(_RESNET8, 1000.0 / 18.215, 280.0),
        float_macs_per_cycle=_M7_REFERENCE_KERNELS,
        source=(
            "ST STM32H743: 480 MHz, 2 MB flash; SRAM counted = the 512 KB AXI SRAM, the largest contiguous region "
            "for a tensor arena (of ~1 MB total: 128 KB DTCM, 64 KB ITCM, 288 KB SRAM1-3, 64 KB SRAM4; TinyEngine "
            "profiles this chip with a 512 KB limit). int8: derived from MLPerf Tiny v1.1 closed, Krai, X-CUBE-AI "
            "8.0 on NUCLEO-H7A3ZI-Q (Cortex-M7, 280 MHz): ResNet-8 at 18.215 inferences/s. float: TFLite Micro "
            "reference kernels measured on this chip (TinyEngine README: 55.8 M MACs in 5,310 ms at 480 MHz)"
        ),
    ),
    McuPreset(
        name="nrf52840",
        core="Arm Cortex-M4F (single-precision FPU)",
        clock_mhz=64.0,
        sram_bytes=256 * KIB,
        flash_bytes=1024 * KIB,
        int8_macs_per_cycle=macs_per_cycle(_RESNET8, 173.2, 120.0),
        float_macs_per_cycle=_M7_REFERENCE_KERNELS,
        source=(
            "Nordic nRF52840 (Arduino Nano 33 BLE): 64 MHz, 256 KB RAM, 1 MB flash. int8: derived from another "
            "Cortex-M4F, MLPerf Tiny v1.0 closed, Plumerai, STM32L4R5 at 120 MHz: ResNet-8 173.2 ms (no published "
            "nRF52840 result). float: derived, the Cortex-M7 TFLite Micro reference-kernel rate (TinyEngine README, "
            "STM32H743); the M4 is likely slower"
        ),
    ),
    McuPreset(
        name="rp2040",
        core="Arm Cortex-M0+ x2 (no FPU)",
        clock_mhz=133.0,
        sram_bytes=264 * KIB,
        flash_bytes=2048 * KIB,
        int8_macs_per_cycle=macs_per_cycle(_PERSON, 2200.0, 125.0),
        float_macs_per_cycle=None,
        source=(
            "Raspberry Pi RP2040 (Pico): 133 MHz max, 264 KB SRAM, flash external (2 MB on the Pico). int8: derived "
            "from TFLite Micro person detection (MobileNet v1 0.25, 96x96x1, 7.16 M MACs) in 2,200 ms, Eben Upton's "
            "tinyML talk 2021, one core, assumed at the SDK's default 125 MHz. No FPU: float runs in software"
        ),
    ),
    McuPreset(
        name="esp32s3",
        core="Xtensa LX7 x2 (single-precision FPU, vector instructions)",
        clock_mhz=240.0,
        sram_bytes=512 * KIB,
        flash_bytes=8192 * KIB,
        int8_macs_per_cycle=macs_per_cycle(_PERSON, 54.0, 240.0),
        float_macs_per_cycle=macs_per_cycle(_PERSON, 2300.0, 240.0),
        source=(
            "Espressif ESP32-S3: 240 MHz, 512 KB internal SRAM (shared with code and the radio stacks: less is "
            "free for an arena), flash external (8 MB on ESP32-S3-DevKitC-1 N8). int8: derived from esp-tflite-micro "
            "README, person detection (MobileNet v1 0.25, 96x96x1, 7.16 M MACs) 54 ms with ESP-NN at 240 MHz. "
            "float: derived, the same model with TFLite Micro's reference kernels (no ESP-NN): 2,300 ms"
        ),
    ),
)

_BY_NAME = {preset.name: preset for preset in _PRESETS}


def _normalize(name: str) -> str:
    return name.strip().lower().replace("-", "").replace("_", "").replace(" ", "")


def list_presets() -> list[McuPreset]:
    """All microcontroller presets, in a fixed order (Cortex-M7s, Cortex-M4F, Cortex-M0+, Xtensa)."""
    return list(_PRESETS)


def get_preset(name: str) -> McuPreset:
    """The preset called ``name`` (case, '-' and '_' ignored); EdgeoptError listing the choices otherwise."""
    key = _normalize(name)
    for preset in _PRESETS:
        if _normalize(preset.name) == key:
            return preset
    raise EdgeoptError(
        f"unknown microcontroller preset {name!r}", f"choose one of: {', '.join(p.name for p in _PRESETS)}"
    )


def _kb(n_bytes: int) -> str:
    """``410 KB``, ``410.5 KB``, or exact bytes where one decimal would hide the remainder."""
    if n_bytes % KIB == 0:
        return f"{n_bytes // KIB} KB"
    text = f"{n_bytes / KIB:.1f}"
    return f"{n_bytes:,} B" if text.endswith(".0") else f"{text} KB"


def mcu_estimate(
    preset: McuPreset | str,
    macs: int,
    arena_bytes: int,
    flash_bytes: int,
    int8: bool,
    *,
    runtime_flash_bytes: int = RUNTIME_FLASH_RESERVE_BYTES,
    runtime_sram_bytes: int = RUNTIME_SRAM_RESERVE_BYTES,
) -> dict[str, Any]:
    """Whether a model fits a microcontroller, and its estimated latency there.

    ``macs``: MACs per inference. ``arena_bytes``: the tensor arena (peak activation memory).
    ``flash_bytes``: the model's stored size (weights and graph). ``int8``: a full-integer model (else
    float). ``fits`` requires arena + runtime RAM <= SRAM and model + runtime code <= flash; ``reasons``
    names each limit missed with its numbers; ``warnings`` flags a float model (no FPU: software floats,
    no latency; with an FPU: no int8 SIMD kernels). Latency = MACs / (MACs per cycle x clock). Pure.
    """
    spec = get_preset(preset) if isinstance(preset, str) else preset
    for label, value in (
        ("macs", macs),
        ("arena_bytes", arena_bytes),
        ("flash_bytes", flash_bytes),
        ("runtime_flash_bytes", runtime_flash_bytes),
        ("runtime_sram_bytes", runtime_sram_bytes),
    ):
        if value < 0:
            raise EdgeoptError(f"{label} is negative ({value})", "pass a count of zero or more")

    sram_needed = arena_bytes + runtime_sram_bytes
    flash_needed = flash_bytes + runtime_flash_bytes
    reasons: list[str] = []
    if sram_needed > spec.sram_bytes:
        reasons.append(
            f"arena {_kb(arena_bytes)} + runtime {_kb(runtime_sram_bytes)} = {_kb(sram_needed)} "
            f"> SRAM {_kb(spec.sram_bytes)}"
        )
    if flash_needed > spec.flash_bytes:
        reasons.append(
            f"model {_kb(flash_bytes)} + runtime {_kb(runtime_flash_bytes)} = {_kb(flash_needed)} "
            f"> flash {_kb(spec.flash_bytes)}"
        )

    warnings: list[str] = []
    rate = spec.int8_macs_per_cycle if int8 else spec.float_macs_per_cycle
    if not int8:
        if spec.has_fpu:
            warnings.append(
                f"float model: {spec.name}'s optimized kernels are int8-only; float runs on reference kernels "
                "(quantize to int8 to use them)"
            )
        else:
            warnings.append(
                f"float model on {spec.name} ({spec.core}): no FPU, floats are emulated in software; "
                "no published throughput, quantize to int8"
            )
    latency_ms = None if rate is None else macs / (rate * spec.clock_mhz * 1e6) * 1e3

    return {
        "preset": spec.name,
        "fits": not reasons,
        "reasons": reasons,
        "warnings": warnings,
        "latency_ms_estimate": latency_ms,
        "macs_per_cycle": rate,
        "clock_mhz": spec.clock_mhz,
        "sram_bytes": spec.sram_bytes,
        "flash_bytes": spec.flash_bytes,
        "arena_bytes": arena_bytes,
        "model_flash_bytes": flash_bytes,
        "sram_needed_bytes": sram_needed,
        "flash_needed_bytes": flash_needed,
        "runtime_sram_bytes": runtime_sram_bytes,
        "runtime_flash_bytes": runtime_flash_bytes,
        "int8": int8,
        "estimate": True,
        "source": f"{spec.source}; {RUNTIME_SOURCE}",
    }
