"""The quality-vs-speed Pareto frontier (moved from the report package)."""

from __future__ import annotations

import math
from typing import Any


def pareto_frontier(points: list[tuple[float, float, Any]]) -> list[tuple[float, float, Any]]:
    """Points ``(latency, accuracy, payload)`` not dominated (lower latency AND higher
    accuracy is better), by latency."""
    out, best = [], -math.inf
    for p in sorted(points, key=lambda p: (p[0], -p[1])):
        if p[1] > best:
            out.append(p)
            best = p[1]
    return out
