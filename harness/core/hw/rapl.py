"""RAPL energy counters under ``/sys/class/powercap`` (Intel, and AMD since Linux 5.8).

Layout (the lowest boundary; tests pass ``root`` pointing at a fake tree)::

    /sys/class/powercap/intel-rapl:0/name                 "package-0"
    /sys/class/powercap/intel-rapl:0/energy_uj            cumulative microjoules
    /sys/class/powercap/intel-rapl:0/max_energy_range_uj  the counter wraps to 0 after this
    /sys/class/powercap/intel-rapl:0:0/name               "core" | "uncore" | "dram"

Only ``package-N`` zones and their ``dram`` sub-zones are read: ``core`` and
``uncore`` are parts of the package and would be counted twice. ``psys`` (whole SoC,
some laptops) is skipped for the same reason.

Since Linux 5.10 (CVE-2020-8694) ``energy_uj`` is readable by root only; the reason
then says so and how to grant access.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_ROOT = "/sys/class/powercap"
_ZONE_RE = re.compile(r"^intel-rapl:(\d+)(?::(\d+))?$")


@dataclass(frozen=True)
class RaplDomain:
    """One RAPL zone: ``label`` is e.g. ``package-0`` or ``dram-0`` (package index)."""

    label: str
    path: Path
    max_energy_range_uj: int


@dataclass
class RaplReader:
    """Reads the chosen zones and accumulates energy across counter wrap-arounds.

    ``read()`` returns cumulative joules per zone since the reader was created; call it
    at least once per wrap period (``max_energy_range_uj`` / power: tens of minutes at
    100 W) so no wrap is missed.
    """

    domains: list[RaplDomain]
    _last_uj: dict[str, int] = field(default_factory=dict)
    _total_uj: dict[str, int] = field(default_factory=dict)
    wraps: int = 0

    available = True
    reason = ""

    def __post_init__(self) -> None:
        for d in self.domains:
            self._last_uj[d.label] = _read_int(d.path / "energy_uj")
            self._total_uj[d.label] = 0

    def read(self) -> dict[str, float]:
        """Cumulative joules per zone (monotonic; wrap-arounds handled)."""
        out: dict[str, float] = {}
        for d in self.domains:
            cur = _read_int(d.path / "energy_uj")
            prev = self._last_uj[d.label]
            if cur >= prev:
                delta = cur - prev
            else:  # the counter wrapped past max_energy_range_uj back to 0
                delta = d.max_energy_range_uj - prev + cur
                self.wraps += 1
            self._total_uj[d.label] += delta
            self._last_uj[d.label] = cur
            out[d.label] = self._total_uj[d.label] / 1e6
        return out


@dataclass
class NullRapl:
    """RAPL is not usable here; ``reason`` says why."""

    reason: str
    available: bool = False
    domains: list[RaplDomain] = field(default_factory=list)


def _read_int(path: Path) -> int:
    return int(path.read_text().strip())


def discover(root: str | Path = DEFAULT_ROOT) -> list[RaplDomain] | str:
    """Package and DRAM zones under ``root`` that can be read, or the reason none can."""
    base = Path(root)
    if not base.is_dir():
        return f"no RAPL: {base} does not exist (not Linux, no powercap driver, or a VM/container without it)"
    zones = sorted(p for p in base.iterdir() if _ZONE_RE.match(p.name))
    if not zones:
        return f"no RAPL: {base} has no intel-rapl:N zones (CPU or kernel without RAPL support)"
    domains: list[RaplDomain] = []
    denied: list[str] = []
    for z in zones:
        m = _ZONE_RE.match(z.name)
        assert m is not None
        try:
            name = (z / "name").read_text().strip()
        except OSError:
            continue
        pkg = m.group(1)
        if m.group(2) is None and name.startswith("package"):
            label = name if "-" in name else f"package-{pkg}"
        elif m.group(2) is not None and name == "dram":
            label = f"dram-{pkg}"
        else:
            continue  # core/uncore are inside the package; psys overlaps everything
        try:
            _read_int(z / "energy_uj")
            rng = _read_int(z / "max_energy_range_uj")
        except PermissionError:
            denied.append(str(z / "energy_uj"))
            continue
        except (OSError, ValueError):
            continue
        domains.append(RaplDomain(label=label, path=z, max_energy_range_uj=rng))
    if domains:
        return domains
    if denied:
        return (
            f"RAPL present but not readable ({denied[0]}: permission denied; root-only since Linux 5.10, "
            "grant with e.g. `sudo chmod o+r /sys/class/powercap/intel-rapl:*/energy_uj`)"
        )
    return f"no readable RAPL package/dram zones under {base}"


def open_rapl(root: str | Path = DEFAULT_ROOT) -> RaplReader | NullRapl:
    """A reader over the package and DRAM zones, or a null object with the reason."""
    found = discover(root)
    if isinstance(found, str):
        return NullRapl(found)
    try:
        return RaplReader(found)
    except (OSError, ValueError) as e:
        return NullRapl(f"RAPL read failed: {e}")
