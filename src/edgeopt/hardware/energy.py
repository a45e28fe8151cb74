"""Energy per inference from published per-operation energies: an order-of-magnitude *estimate*.

Source of every figure: M. Horowitz, "Computing's energy problem (and what we can do about it)",
ISSCC 2014, keynote table of energy per operation in a 45 nm process at 0.9 V. The figures used here
(checked against two reproductions of the table: the per-operation energy table of the article
PMC8934428 Table 3, and a public transcription of the keynote's table, gist.github.com/V0XNIHILI/
2b6fa61edd4c06d9ffce5551065124c1):

========================  ===========  ===========================================
operation                 energy (pJ)  used for
========================  ===========  ===========================================
8-bit integer multiply    0.2          int8 MAC (multiply)
32-bit integer add        0.1          int8 MAC (accumulate: int8 MACs sum in int32)
32-bit integer multiply   3.1          int32 MAC
16-bit float multiply     1.1          float16 MAC
16-bit float add          0.4          float16 MAC
32-bit float multiply     3.7          float32 MAC
32-bit float add          0.9          float32 MAC
SRAM read, 8 KB, 64-bit   10           on-chip memory: 10 pJ / 8 B = 1.25 pJ per byte
DRAM access, 64-bit       1300-2600    off-chip memory: low end, 1300 pJ / 8 B = 162.5 pJ per byte
========================  ===========  ===========================================

(The 8-bit integer add, 0.03 pJ, is in the same table; it is not used because an int8 MAC
accumulates in 32 bits.)

Model: a MAC is one multiply and one add of the given precision (int8: 8-bit multiply + 32-bit add).
Memory traffic per inference: every weight byte read once, every activation byte written once and
read once (the writes are charged at the read energy: the table gives reads only). ``memory="sram"``
charges all of it at the 8 KB SRAM figure, the cheapest on-chip array in the table (its 32 KB and
1 MB arrays cost 20 and 100 pJ per 64 bits), so it is a lower bound for larger on-chip buffers;
``memory="dram"`` charges it at the low end of the DRAM range.

What this is not: a whole-chip figure. It counts arithmetic and data movement only, not clocks,
control, leakage or idle power. On a microcontroller those dominate: MLPerf Tiny v1.1 (Krai, X-CUBE-AI
8.0) measured 17.3 mJ per ResNet-8 inference on a NUCLEO-L4R5ZI, where this model gives a few µJ.
And 45 nm is old: a modern phone SoC (5-7 nm) spends several times less energy per operation.
Use the result to compare models (int8 against float, fewer MACs, less traffic), not as a battery figure.
"""

from __future__ import annotations

from typing import Any, Literal

from edgeopt.errors import EdgeoptError

Precision = Literal["int8", "int32", "float16", "float32"]
Memory = Literal["sram", "dram"]

# Horowitz, ISSCC 2014, 45 nm, 0.9 V: energy per operation in picojoules.
INT8_MULT_PJ = 0.2
INT8_ADD_PJ = 0.03
INT32_ADD_PJ = 0.1
INT32_MULT_PJ = 3.1
FP16_MULT_PJ = 1.1
FP16_ADD_PJ = 0.4
FP32_MULT_PJ = 3.7
FP32_ADD_PJ = 0.9
SRAM_8KB_READ_64BIT_PJ = 10.0
DRAM_READ_64BIT_PJ_LOW = 1300.0
DRAM_READ_64BIT_PJ_HIGH = 2600.0

SOURCE = (
    "Horowitz, 'Computing's energy problem (and what we can do about it)', ISSCC 2014: "
    "energy per operation, 45 nm, 0.9 V"
)

# (multiply, add) per MAC; int8 accumulates in int32.
_MAC_PARTS_PJ: dict[str, tuple[float, float]] = {
    "int8": (INT8_MULT_PJ, INT32_ADD_PJ),
    "int32": (INT32_MULT_PJ, INT32_ADD_PJ),
    "float16": (FP16_MULT_PJ, FP16_ADD_PJ),
    "float32": (FP32_MULT_PJ, FP32_ADD_PJ),
}

_PJ_PER_BYTE: dict[str, float] = {
    "sram": SRAM_8KB_READ_64BIT_PJ / 8,
    "dram": DRAM_READ_64BIT_PJ_LOW / 8,
}

_PJ_PER_MJ = 1e9


def mac_energy_pj(precision: Precision = "float32") -> float:
    """Energy of one multiply-accumulate in pJ (Horowitz ISSCC 2014, 45 nm): multiply + add."""
    if precision not in _MAC_PARTS_PJ:
        raise EdgeoptError(f"unknown precision {precision!r}", f"use one of {', '.join(sorted(_MAC_PARTS_PJ))}")
    mult, add = _MAC_PARTS_PJ[precision]
    return mult + add


def memory_energy_pj_per_byte(memory: Memory = "sram") -> float:
    """Energy of moving one byte in pJ: 8 KB SRAM (10 pJ / 64 bit) or DRAM (1.3 nJ / 64 bit, low end)."""
    if memory not in _PJ_PER_BYTE:
        raise EdgeoptError(f"unknown memory {memory!r}", f"use one of {', '.join(sorted(_PJ_PER_BYTE))}")
    return _PJ_PER_BYTE[memory]


def energy_estimate(
    macs: int,
    activation_bytes: int,
    weight_bytes: int,
    precision: Precision = "float32",
    memory: Memory = "sram",
) -> dict[str, Any]:
    """Estimated energy of one inference in millijoules, from Horowitz's 45 nm per-operation energies.

    ``macs``: multiply-accumulates per inference. ``activation_bytes``: bytes of all intermediate
    activations one inference produces (each is written once and read once, so 2x this moves).
    ``weight_bytes``: stored weight bytes (each read once). ``precision``: the arithmetic of the MACs
    (``int8`` = 8-bit multiply + 32-bit accumulate). ``memory``: where the traffic goes (``sram`` or
    ``dram``). Returns ``energy_mj_estimate`` with its compute / weight / activation parts, the per-op
    figures used, ``estimate: True``, ``source`` and ``assumptions``. Pure arithmetic; see the module
    docstring for the table and what the figure leaves out.
    """
    for name, value in (("macs", macs), ("activation_bytes", activation_bytes), ("weight_bytes", weight_bytes)):
        if value < 0:
            raise EdgeoptError(f"{name} is negative ({value})", "pass a count of zero or more")
    pj_mac = mac_energy_pj(precision)
    pj_byte = memory_energy_pj_per_byte(memory)
    compute_pj = macs * pj_mac
    weight_pj = weight_bytes * pj_byte
    activation_pj = 2 * activation_bytes * pj_byte
    total_pj = compute_pj + weight_pj + activation_pj
    mult, add = _MAC_PARTS_PJ[precision]
    memory_text = (
        "on-chip SRAM, 8 KB-array figure 10 pJ per 64-bit read (a lower bound for larger arrays)"
        if memory == "sram"
        else "off-chip DRAM, low end of 1.3-2.6 nJ per 64-bit access"
    )
    return {
        "energy_mj_estimate": total_pj / _PJ_PER_MJ,
        "compute_mj": compute_pj / _PJ_PER_MJ,
        "weight_mj": weight_pj / _PJ_PER_MJ,
        "activation_mj": activation_pj / _PJ_PER_MJ,
        "pj_per_mac": round(pj_mac, 6),  # 0.2 + 0.1 prints as 0.30000000000000004
        "pj_per_byte": pj_byte,
        "precision": precision,
        "memory": memory,
        "estimate": True,
        "source": SOURCE,
        "assumptions": (
            f"45 nm process figures; a modern phone SoC (5-7 nm) spends several times less per operation. "
            f"One MAC = {precision} multiply ({mult} pJ) + "
            f"{'32-bit integer' if precision == 'int8' else precision} add ({add} pJ). "
            f"Weights read once, activations written once and read once, all in {memory_text}; "
            "writes charged as reads. Arithmetic and data movement only: no clock, control, leakage "
            "or idle power, which dominate a microcontroller's measured energy."
        ),
    }
