"""Number formatting shared by the HTML, Markdown and terminal reports.

Every helper takes a value that may be ``None`` and returns ``None`` for it, so the
caller decides how to show a missing number ("n/a" with its reason) instead of a
helper silently printing zero. Units are part of the returned text unless the
function name says otherwise (``*_number``).
"""

from __future__ import annotations

import math
from typing import Any

MIB = 1024**2
GIB = 1024**3


def is_number(x: Any) -> bool:
    """True for a finite int/float (bools are not numbers here)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def sig(x: float | None, digits: int = 3) -> str | None:
    """``x`` with ``digits`` significant digits, without scientific notation for the
    ordinary range (1e-4 .. 1e15); values >= 10**digits keep all integer digits
    (1234.5 -> "1,235") because dropping them to zeros would look like precision."""
    if not is_number(x):
        return None
    if x == 0:
        return "0"
    ax = abs(x)
    if ax < 1e-4 or ax >= 1e15:
        return f"{x:.{digits - 1}e}"
    mag = math.floor(math.log10(ax))
    decimals = max(0, digits - 1 - mag)
    text = f"{x:,.{decimals}f}"
    # rounding can carry into a new digit (9.996 -> "10.00"): recompute once
    if decimals > 0 and len(text.replace("-", "").replace(",", "").replace(".", "").lstrip("0")) > digits:
        text = f"{x:,.{decimals - 1}f}"
    return text


def ms(x: float | None) -> str | None:
    """Milliseconds, 3 significant digits, no unit (the column header carries it)."""
    return sig(x, 3)


def ms_with_unit(x: float | None) -> str | None:
    """Milliseconds with the unit: ``"1.23 ms"``."""
    s = sig(x, 3)
    return None if s is None else f"{s} ms"


def ci(lo: float | None, hi: float | None) -> str | None:
    """A confidence interval in brackets: ``"[1.20, 1.26]"`` (same unit as its value)."""
    a, b = sig(lo, 3), sig(hi, 3)
    if a is None or b is None:
        return None
    return f"[{a}, {b}]"


def mib_number(n: float | None) -> str | None:
    """Bytes as a MiB number with one decimal, no unit: ``412000000 -> "392.9"``."""
    if not is_number(n):
        return None
    return f"{n / MIB:,.1f}"


def bytes_human(n: float | None) -> str | None:
    """Bytes as MiB below 1 GiB and GiB above, unit included (binary prefixes)."""
    if not is_number(n):
        return None
    if abs(n) >= GIB:
        return f"{n / GIB:,.2f} GiB"
    if abs(n) >= MIB:
        return f"{n / MIB:,.1f} MiB"
    if abs(n) >= 1024:
        return f"{n / 1024:,.1f} KiB"
    return f"{int(n):,} B"


def throughput(x: float | None) -> str | None:
    """Throughput number (per second) without unit: 3 significant digits, thousands
    separated (``51234.0 -> "51,234"``, ``12.345 -> "12.3"``)."""
    return sig(x, 3)


def count(n: float | None) -> str | None:
    """An integer count with thousands separators (parameters, samples)."""
    if not is_number(n):
        return None
    return f"{int(round(n)):,}"


def si(x: float | None, unit: str = "") -> str | None:
    """A value with an SI prefix (k, M, G, T, P): ``2.03e8, "FLOP" -> "203 MFLOP"``."""
    if not is_number(x):
        return None
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= factor:
            return f"{sig(x / factor, 3)} {prefix}{unit}".rstrip()
    return f"{sig(x, 3)} {unit}".rstrip()


def percent(ratio: float | None, digits: int = 0) -> str | None:
    """A ratio as a percentage: ``0.142 -> "14%"``."""
    if not is_number(ratio):
        return None
    return f"{ratio * 100:.{digits}f}%"


def shorten(text: Any, limit: int = 80) -> str:
    """First line of ``text``, cut to ``limit`` characters with an ellipsis."""
    s = "" if text is None else str(text)
    lines = [ln.strip() for ln in s.strip().splitlines() if ln.strip()]
    first = lines[0] if lines else ""
    cut = len(lines) > 1
    if len(first) > limit:
        first = first[: max(1, limit - 1)].rstrip()
        cut = True
    return first + "\u2026" if cut else first


def metric_value(key: str, value: Any) -> str | None:
    """Format a metric by the unit in its name (``*_ms``, ``*_bytes``, ``*_j``,
    ``*_w``, ``*_per_s``, ``*_s``, ``flops*``); other numbers get 3 significant
    digits. Returns None for a missing/non-numeric value."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if not is_number(value):
        return None
    k = key.lower()
    if k.endswith("_ms"):
        return ms_with_unit(value)
    if k.endswith("_bytes"):
        return bytes_human(value)
    if k.endswith("_per_s"):
        return f"{throughput(value)} /s"
    if k.endswith("_j"):
        return f"{sig(value)} J"
    if k.endswith("_w"):
        return f"{sig(value)} W"
    if k.endswith("_s"):
        return f"{sig(value)} s"
    if "flops" in k or k.endswith("_flop"):
        return si(value, "FLOP")
    if isinstance(value, int) and abs(value) >= 1000:
        return count(value)
    return sig(value)


def metric_interval(key: str, lo: float, hi: float) -> str | None:
    """An interval metric (e.g. ``throughput_ci95_per_s``) as ``"[lo, hi] unit"``."""
    a, b = metric_value(key, lo), metric_value(key, hi)
    if a is None or b is None:
        return None
    unit_a, unit_b = a.rpartition(" ")[2], b.rpartition(" ")[2]
    if " " in a and " " in b and unit_a == unit_b and not unit_a[0].isdigit():
        return f"[{a.rpartition(' ')[0]}, {b.rpartition(' ')[0]}] {unit_a}"
    return f"[{a}, {b}]"
