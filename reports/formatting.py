"""Number formatting shared by the HTML, Markdown and terminal reports.

Units of metrics come from the declared table (:mod:`harness.core.metrics`); see
:func:`metric_value`.

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


def _declared(key: str) -> Any:
    """The declared metric (:mod:`harness.core.metrics`) for ``key``, or None."""
    from harness.core.metrics import lookup  # light: a table of dataclasses

    return lookup(key)


def metric_unit(key: str) -> str | None:
    """The declared unit of metric ``key`` (``""`` for a dimensionless ratio), None when
    the metric is not in the table."""
    m = _declared(key)
    return m.unit if m is not None else None


def value_in_unit(value: float, unit: str) -> str | None:
    """``value`` written in the declared ``unit``: ms and s as they are, bytes as
    KiB/MiB/GiB, FLOP and FLOP/s with an SI prefix (``"10.4 GFLOP/s"``), counts with
    thousands separators, percentages with ``%``, a ratio (``""``) as a bare number."""
    if not is_number(value):
        return None
    if unit == "ms":
        return ms_with_unit(value)
    if unit == "bytes":
        return bytes_human(value)
    if unit in ("FLOP", "FLOP/s", "B/s"):
        return si(value, unit)
    if unit == "samples/s":
        return f"{throughput(value)} samples/s"
    if unit == "count":
        return count(value) if float(value).is_integer() else sig(value)
    if unit == "%":
        return f"{sig(value)}%"
    if unit == "":
        return sig(value)
    return f"{sig(value)} {unit}"


RATE_UNITS = frozenset({"FLOP/s", "samples/s", "B/s", "tokens/s", "/s"})
"""Units of rates: what they format to always ends in ``/s``."""

# the last word of an undeclared name that makes it a ratio (no unit); checked before
# any unit rule: "flops_analytic_ratio" is a ratio of FLOP counts, not a FLOP count
_RATIO_SUFFIXES = ("_ratio", "_fraction", "_efficiency", "_share", "_speedup", "_utilization", "_utilisation")


def guessed_unit(key: str) -> str:
    """The unit of an **undeclared** metric from its name (an imported benchmark's or a
    plugin's own value): ratios first (``*_ratio``, ``*_efficiency``, ``*_x_over_y``,
    ``mfu``: no unit), then rates (``*flops_per_s`` -> FLOP/s, other ``*_per_s`` -> /s),
    then ``*_ms``, ``*_bytes``, ``*_j``, ``*_w``, ``*_s``, ``*flops``/``*_flop``; ``""``
    when nothing matches. Never used for a declared metric."""
    k = key.lower().rsplit(".", 1)[-1]
    if k.endswith(_RATIO_SUFFIXES) or k in ("mfu", "ratio", "speedup") or "_over_" in k:
        return ""
    if k.endswith("_per_s"):
        return "FLOP/s" if "flop" in k else "/s"
    for suffix, unit in (("_ms", "ms"), ("_bytes", "bytes"), ("_j", "J"), ("_w", "W"), ("_s", "s")):
        if k.endswith(suffix):
            return unit
    if "flops" in k or k.endswith("_flop"):
        return "FLOP"
    return ""


def unit_of(key: str) -> str:
    """The unit a report shows for metric ``key``: the declared one
    (:mod:`harness.core.metrics`), else :func:`guessed_unit`. ``""``: no unit (a ratio
    or a plain number). The one place a report chooses a metric's unit."""
    declared = metric_unit(key)
    return declared if declared is not None else guessed_unit(key)


def metric_value(key: str, value: Any) -> str | None:
    """Format a metric in its declared unit (see :func:`value_in_unit`; ``key`` is the
    dotted name in :mod:`harness.core.metrics` or its unambiguous last component).

    The unit is :func:`unit_of`: declared, else guessed from the name of an undeclared
    metric, ratios before units (the old suffix-only rule made
    ``flops_analytic_ratio`` "1.00 FLOP" and ``achieved_flops_per_s`` "10.4 GFLOP").
    Returns None for a missing/non-numeric value."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if not is_number(value):
        return None
    unit = unit_of(key)
    if unit == "" and metric_unit(key) is None and isinstance(value, int) and abs(value) >= 1000:
        return count(value)  # an undeclared plain integer (a count)
    return value_in_unit(value, unit)


def increase_means(key: str) -> str:
    """What a positive relative change of metric ``key`` means, from its declared
    direction and unit: ``"+ is slower"`` (latency), ``"+ is faster"`` (throughput),
    ``"+ is worse"``/``"+ is better"``, or ``"+ is higher"`` without a direction."""
    m = _declared(key)
    if m is None or m.direction is None:
        return "+ is higher"
    timed = m.unit in ("ms", "s")
    rate = m.unit in ("samples/s", "FLOP/s")
    if m.direction == "lower":
        return "+ is slower" if timed else "+ is worse"
    return "+ is faster" if rate else "+ is better"


def metric_interval(key: str, lo: float, hi: float) -> str | None:
    """An interval metric (e.g. ``throughput_ci95_per_s``) as ``"[lo, hi] unit"``."""
    a, b = metric_value(key, lo), metric_value(key, hi)
    if a is None or b is None:
        return None
    unit_a, unit_b = a.rpartition(" ")[2], b.rpartition(" ")[2]
    if " " in a and " " in b and unit_a == unit_b and not unit_a[0].isdigit():
        return f"[{a.rpartition(' ')[0]}, {b.rpartition(' ')[0]}] {unit_a}"
    return f"[{a}, {b}]"


def process_spread(spread: dict[str, Any] | None, short: bool = False) -> str | None:
    """The run-to-run spread of a ``--repeats`` cell (:func:`harness.reports.cells.repeat_spread`):
    ``"3 processes: p50 1.10–1.32 ms (CV 8.5%)"``, or ``"3: 1.10–1.32 ms, CV 8%"`` with
    ``short``. None for a cell measured in one process."""
    if not spread:
        return None
    n, ok = spread["processes"], spread["ok"]
    count_txt = f"{n}" if short else f"{n} processes"
    if ok < n:
        count_txt += f" ({ok} ok)"
    lo, hi, cv = spread.get("low"), spread.get("high"), spread.get("cv")
    if lo is None or hi is None:
        return count_txt
    rng = f"{sig(lo)}\u2013{sig(hi)} ms"
    cv_txt = percent(cv, 0 if short else 1) if cv is not None else None
    if short:
        return f"{count_txt}: {rng}" + (f", CV {cv_txt}" if cv_txt else "")
    return f"{count_txt}: p50 {rng}" + (f" (CV {cv_txt})" if cv_txt else "")
