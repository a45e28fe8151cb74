"""How reports write numbers (pure): thousands separators, three significant digits, "—" for missing.

Every figure a report shows goes through one of these, so no page prints ``None``, ``nan`` or
``0.14904699999999999``. ``fmt_field`` picks the format from a metric's name (``*accuracy`` as a
percentage, ``*_bytes`` in KiB/MiB, ``*_ms`` in milliseconds, ``*macs*`` with K/M/G), so a value
reads the same wherever it appears. Cost: microseconds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

MISSING = "—"


def number(x: Any) -> float | None:
    """``x`` as a finite float, or ``None`` (missing, non-numeric, NaN, bool)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(x) else None


def fmt_num(v: Any, digits: int = 3) -> str:
    """A number for people: ``0.14904699999999999`` -> ``"0.149"``, ``1234567`` -> ``"1,234,567"``.

    Integers (and integral floats) keep every digit, with separators; other values get at most
    ``digits`` significant digits (never fewer than their integer part; ``0.5``, not ``0.500``),
    tiny ones scientific notation. Measured quantities with units (ms, %, KiB) keep their
    trailing zeros so columns line up; see the other formatters.
    """
    x = number(v)
    if x is None:
        return MISSING
    if x.is_integer() and abs(x) < 1e15:
        return f"{int(x):,}"
    ax = abs(x)
    if ax < 1e-3:
        return f"{x:.{digits - 1}e}"
    decimals = max(0, digits - 1 - math.floor(math.log10(ax)))
    text = f"{x:,.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def fmt_count(v: Any) -> str:
    """``78666`` -> ``"78,666"``."""
    x = number(v)
    return MISSING if x is None else f"{x:,.0f}"


def fmt_si(v: Any) -> str:
    """``12501632`` -> ``"12.5 M"`` (K, M, G; three significant digits)."""
    x = number(v)
    if x is None:
        return MISSING
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(x) >= div:
            return f"{_sig(x / div)} {unit}"
    return fmt_num(x)


def fmt_bytes(v: Any) -> str:
    """``314664`` -> ``"307 KiB"`` (three significant digits)."""
    x = number(v)
    if x is None:
        return MISSING
    for div, unit in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if abs(x) >= div:
            return f"{_sig(x / div)} {unit}"
    return f"{x:,.0f} B"


def _sig(x: float, digits: int = 3) -> str:
    """``x`` with ``digits`` significant digits, trailing zeros kept (``1.50``), separators."""
    if x == 0:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(x))))
    return f"{x:,.{decimals}f}"


def fmt_pct(v: Any) -> str:
    """A fraction as a percentage with three significant digits: ``0.9712`` -> ``"97.1 %"``."""
    x = number(v)
    if x is None:
        return MISSING
    return f"{100 * x:.1f} %" if abs(x) >= 0.1 else f"{_sig(100 * x)} %"


def fmt_points(v: Any) -> str:
    """A change of accuracy in percentage points: ``-0.0028`` -> ``"−0.28 pt"``."""
    x = number(v)
    return MISSING if x is None else f"{100 * x:+.2f} pt".replace("-", "−")


def fmt_ms(v: Any) -> str:
    """Milliseconds, three significant digits: ``0.05123`` -> ``"0.0512 ms"``."""
    x = number(v)
    return MISSING if x is None else f"{_sig(x)} ms" if abs(x) < 1000 else f"{x:,.0f} ms"


def fmt_seconds(v: Any) -> str:
    """A duration: ``12.34`` -> ``"12.3 s"``, ``185`` -> ``"3 min 5 s"``, ``0.02`` -> ``"20 ms"``."""
    x = number(v)
    if x is None:
        return MISSING
    if x >= 120:
        return f"{int(x // 60)} min {x % 60:.0f} s"
    return f"{_sig(x)} s" if x >= 1 else f"{x * 1000:.0f} ms"


def fmt_sci(v: Any) -> str:
    """``1.234e-07`` -> ``"1.2e-07"``."""
    x = number(v)
    return MISSING if x is None else f"{x:.1e}"


def fmt_ratio(v: Any) -> str:
    """``2.4712`` -> ``"2.47×"``."""
    x = number(v)
    return MISSING if x is None else f"{_sig(x)}×"


def fmt_any(v: Any) -> str:
    """Any value, compactly: numbers as ``fmt_num``, containers as ``key: value`` lists."""
    if v is None:
        return MISSING
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, float)):
        return fmt_num(v)
    if isinstance(v, str):
        return v or MISSING
    if isinstance(v, Mapping):
        return ", ".join(f"{k}: {fmt_field(str(k), x)}" for k, x in v.items()) or MISSING
    if isinstance(v, (list, tuple)):
        return ", ".join(fmt_any(x) for x in v) or MISSING
    return json.dumps(v, ensure_ascii=False, default=str)


def fmt_field(key: str, v: Any) -> str:
    """``v`` formatted by what its name says it is (accuracy, bytes, ms, seconds, MACs, counts)."""
    if isinstance(v, (Mapping, list, tuple)) or isinstance(v, bool) or number(v) is None:
        return fmt_any(v)
    k = key.lower()
    if k.endswith("accuracy") or k.endswith("agreement") or k in ("acc", "top1", "sparsity"):
        return fmt_pct(v)
    if k.endswith("bytes"):
        return fmt_bytes(v)
    if k.endswith("_ms") or k == "ms":
        return fmt_ms(v)
    if k.endswith("seconds"):
        return fmt_seconds(v)
    if "macs" in k:
        return fmt_si(v)
    if k in ("params", "trainable_params", "numel") or k.endswith("_params"):
        return fmt_count(v)
    return fmt_num(v)
