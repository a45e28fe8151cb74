"""Energy and microcontroller estimates: hand-computed figures, fit reasons, errors, monotonicity."""

from __future__ import annotations

import math

import pytest

from edgeopt.errors import EdgeoptError
from edgeopt.hardware.energy import energy_estimate, mac_energy_pj, memory_energy_pj_per_byte
from edgeopt.hardware.mcu import (
    RUNTIME_FLASH_RESERVE_BYTES,
    RUNTIME_SRAM_RESERVE_BYTES,
    McuPreset,
    get_preset,
    list_presets,
    macs_per_cycle,
    mcu_estimate,
    person_detection_macs,
    resnet8_macs,
)

KB = 1024


# --- energy -----------------------------------------------------------------------------------


def test_int8_mac_energy_by_hand() -> None:
    # 1e6 int8 MACs: 8-bit multiply 0.2 pJ + 32-bit add 0.1 pJ = 0.3 pJ each -> 3e5 pJ = 3e-4 mJ.
    result = energy_estimate(1_000_000, 0, 0, precision="int8")
    assert result["energy_mj_estimate"] == pytest.approx(3e-4)
    assert result["compute_mj"] == pytest.approx(3e-4)
    assert result["estimate"] is True
    assert "Horowitz" in result["source"] and "45 nm" in result["assumptions"]


def test_float32_mac_and_sram_traffic_by_hand() -> None:
    # 1e6 float32 MACs at 3.7 + 0.9 = 4.6 pJ -> 4.6e6 pJ.
    # 1000 weight bytes read once + 2000 activation bytes written and read: 5000 B x 10/8 pJ = 6250 pJ.
    result = energy_estimate(1_000_000, activation_bytes=2000, weight_bytes=1000, precision="float32")
    assert result["compute_mj"] == pytest.approx(4.6e6 * 1e-9)
    assert result["weight_mj"] == pytest.approx(1250 * 1e-9)
    assert result["activation_mj"] == pytest.approx(5000 * 1e-9)
    assert result["energy_mj_estimate"] == pytest.approx((4.6e6 + 6250) * 1e-9)


def test_dram_costs_130x_sram_per_byte() -> None:
    # DRAM low end 1300 pJ / 64 bit vs 8 KB SRAM 10 pJ / 64 bit.
    assert memory_energy_pj_per_byte("dram") == pytest.approx(162.5)
    assert memory_energy_pj_per_byte("sram") == pytest.approx(1.25)
    sram = energy_estimate(0, 0, 8000, memory="sram")["energy_mj_estimate"]
    dram = energy_estimate(0, 0, 8000, memory="dram")["energy_mj_estimate"]
    assert dram / sram == pytest.approx(130.0)


def test_energy_orderings() -> None:
    assert mac_energy_pj("int8") < mac_energy_pj("float16") < mac_energy_pj("int32") < mac_energy_pj("float32")
    small = energy_estimate(1_000, 100, 100)["energy_mj_estimate"]
    more_macs = energy_estimate(2_000, 100, 100)["energy_mj_estimate"]
    more_bytes = energy_estimate(1_000, 200, 100)["energy_mj_estimate"]
    assert small < more_macs and small < more_bytes
    assert energy_estimate(0, 0, 0)["energy_mj_estimate"] == 0.0


def test_energy_rejects_bad_input() -> None:
    with pytest.raises(EdgeoptError, match="precision"):
        energy_estimate(1, 0, 0, precision="int4")  # type: ignore[arg-type]
    with pytest.raises(EdgeoptError, match="memory"):
        energy_estimate(1, 0, 0, memory="hbm")  # type: ignore[arg-type]
    with pytest.raises(EdgeoptError, match="negative"):
        energy_estimate(-1, 0, 0)


# --- microcontroller presets --------------------------------------------------------------------


def test_reference_model_mac_counts() -> None:
    # MLPerf Tiny quotes ResNet-8 at 12.5 M MACs; MobileNet v1 0.25 on 96x96x1 at ~7.2 M.
    assert resnet8_macs() == 12_501_632
    assert person_detection_macs() == 7_157_888


def test_presets_are_data_with_sources() -> None:
    names = [p.name for p in list_presets()]
    assert names == ["stm32f746", "stm32h743", "nrf52840", "rp2040", "esp32s3"]
    for preset in list_presets():
        assert isinstance(preset, McuPreset)
        assert preset.int8_macs_per_cycle > 0 and preset.clock_mhz > 0
        assert "derived" in preset.source
    f746 = get_preset("stm32f746")
    assert (f746.clock_mhz, f746.sram_bytes, f746.flash_bytes) == (216.0, 320 * KB, 1024 * KB)
    assert not get_preset("rp2040").has_fpu and get_preset("nrf52840").has_fpu


def test_preset_reproduces_its_published_measurement() -> None:
    # STM32F746: ResNet-8 in 64.8 ms at 216 MHz (MLPerf Tiny v1.0, Plumerai) -> the preset gives it back.
    result = mcu_estimate("stm32f746", resnet8_macs(), 100 * KB, 100 * KB, int8=True)
    assert result["latency_ms_estimate"] == pytest.approx(64.8)
    # 12.5 M MACs / (0.0648 s x 216e6 Hz) = 0.893 MACs per cycle
    assert get_preset("stm32f746").int8_macs_per_cycle == pytest.approx(12_501_632 / (0.0648 * 216e6))
    # nRF52840: the L4R5's 173.2 ms at 120 MHz, rescaled to 64 MHz: 173.2 x 120 / 64 = 324.75 ms
    nrf = mcu_estimate("nrf52840", resnet8_macs(), 50 * KB, 100 * KB, int8=True)
    assert nrf["latency_ms_estimate"] == pytest.approx(173.2 * 120 / 64)


def test_macs_per_cycle_by_hand() -> None:
    assert macs_per_cycle(1_000_000, 10.0, 100.0) == pytest.approx(1.0)


def test_fits_with_room() -> None:
    result = mcu_estimate("stm32f746", 12_500_000, 100 * KB, 200 * KB, int8=True)
    assert result["fits"] is True and result["reasons"] == [] and result["warnings"] == []
    assert result["preset"] == "stm32f746" and result["estimate"] is True
    assert result["sram_bytes"] == 320 * KB and result["model_flash_bytes"] == 200 * KB
    assert result["arena_bytes"] == 100 * KB
    assert result["sram_needed_bytes"] == 100 * KB + RUNTIME_SRAM_RESERVE_BYTES
    assert "MLPerf Tiny" in result["source"] and "TFLite Micro" in result["source"]


def test_arena_too_big_names_the_numbers() -> None:
    result = mcu_estimate("stm32f746", 1_000_000, 410 * KB, 100 * KB, int8=True)
    assert result["fits"] is False
    assert result["reasons"] == ["arena 410 KB + runtime 8 KB = 418 KB > SRAM 320 KB"]
    half = mcu_estimate("stm32f746", 1, 410 * KB + 512, 1, int8=True)
    assert half["reasons"] == ["arena 410.5 KB + runtime 8 KB = 418.5 KB > SRAM 320 KB"]


def test_runtime_reserve_can_tip_the_balance() -> None:
    # 316 KB of arena fits 320 KB of SRAM alone, not with the 8 KB runtime reserve.
    assert mcu_estimate("stm32f746", 1, 316 * KB, 1, True)["fits"] is False
    assert mcu_estimate("stm32f746", 1, 316 * KB, 1, True, runtime_sram_bytes=0)["fits"] is True


def test_flash_and_sram_both_missed() -> None:
    model = 1024 * KB - RUNTIME_FLASH_RESERVE_BYTES + 1  # one byte over once the runtime is added
    result = mcu_estimate("nrf52840", 1_000, 300 * KB, model, int8=True)
    assert result["fits"] is False
    assert len(result["reasons"]) == 2
    assert result["reasons"][0].endswith("> SRAM 256 KB")
    # 983,041 B is 960.001 KB: exact bytes where "960.0 KB" would hide the byte that does not fit
    assert result["reasons"][1] == "model 983,041 B + runtime 64 KB = 1,048,577 B > flash 1024 KB"


def test_float_without_fpu_is_flagged() -> None:
    result = mcu_estimate("rp2040", 1_000_000, 10 * KB, 10 * KB, int8=False)
    assert result["latency_ms_estimate"] is None
    assert any("no FPU" in w for w in result["warnings"])
    assert result["fits"] is True  # it fits; it is just slow and unmeasured


def test_float_is_slower_than_int8_with_fpu() -> None:
    for name in ("stm32f746", "stm32h743", "nrf52840", "esp32s3"):
        int8 = mcu_estimate(name, 5_000_000, 10 * KB, 10 * KB, int8=True)
        flt = mcu_estimate(name, 5_000_000, 10 * KB, 10 * KB, int8=False)
        assert flt["latency_ms_estimate"] > int8["latency_ms_estimate"]
        assert flt["warnings"] and not int8["warnings"]


def test_latency_monotone_in_macs_and_linear() -> None:
    for preset in list_presets():
        one = mcu_estimate(preset, 1_000_000, 0, 0, int8=True)["latency_ms_estimate"]
        two = mcu_estimate(preset, 2_000_000, 0, 0, int8=True)["latency_ms_estimate"]
        assert two == pytest.approx(2 * one) and one > 0


def test_preset_speed_ordering() -> None:
    lat = {p.name: mcu_estimate(p, resnet8_macs(), 0, 0, int8=True)["latency_ms_estimate"] for p in list_presets()}
    assert lat["stm32h743"] < lat["stm32f746"] < lat["nrf52840"] < lat["rp2040"]
    assert lat["esp32s3"] < lat["nrf52840"]
    assert all(math.isfinite(v) for v in lat.values())


def test_unknown_preset_lists_choices() -> None:
    with pytest.raises(EdgeoptError) as info:
        get_preset("atmega328")
    message = str(info.value)
    assert "atmega328" in message
    for name in ("stm32f746", "stm32h743", "nrf52840", "rp2040", "esp32s3"):
        assert name in message


def test_preset_names_are_forgiving() -> None:
    assert get_preset("STM32F746") is get_preset("stm32f746")
    assert get_preset("esp32-s3") is get_preset("esp32s3")
    assert get_preset(" RP2040 ").name == "rp2040"


def test_mcu_rejects_negative_sizes() -> None:
    with pytest.raises(EdgeoptError, match="negative"):
        mcu_estimate("stm32f746", 1, -1, 0, int8=True)
