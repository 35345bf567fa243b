"""RAPL adapter against a fake /sys/class/powercap tree (the lowest boundary)."""

from __future__ import annotations

import pathlib
from pathlib import Path

import pytest

from harness.core.hw.rapl import discover, open_rapl

RANGE = 262_143_328_850  # a real package max_energy_range_uj


def zone(root: Path, name: str, label: str, uj: int, rng: int = RANGE) -> Path:
    z = root / name
    z.mkdir(parents=True)
    (z / "name").write_text(label + "\n")
    (z / "energy_uj").write_text(f"{uj}\n")
    (z / "max_energy_range_uj").write_text(f"{rng}\n")
    return z


def set_uj(z: Path, uj: int) -> None:
    (z / "energy_uj").write_text(f"{uj}\n")


@pytest.fixture
def powercap(tmp_path: Path) -> dict[str, Path]:
    root = tmp_path / "powercap"
    return {
        "root": root,
        "pkg0": zone(root, "intel-rapl:0", "package-0", 1_000_000),
        "core0": zone(root, "intel-rapl:0:0", "core", 500_000),
        "dram0": zone(root, "intel-rapl:0:1", "dram", 2_000_000),
        "pkg1": zone(root, "intel-rapl:1", "package-1", 7_000_000),
        "mmio": zone(root, "intel-rapl-mmio:0", "package-0", 5),
    }


def test_discovers_package_and_dram_only(powercap):
    found = discover(powercap["root"])
    assert not isinstance(found, str)
    # core is inside the package and the mmio twin duplicates it: counting either would double-count
    assert sorted(d.label for d in found) == ["dram-0", "package-0", "package-1"]


def test_read_accumulates_joules_per_zone(powercap):
    r = open_rapl(powercap["root"])
    assert r.available
    assert r.read() == {"package-0": 0.0, "dram-0": 0.0, "package-1": 0.0}
    set_uj(powercap["pkg0"], 3_500_000)
    set_uj(powercap["dram0"], 2_250_000)
    set_uj(powercap["core0"], 999_999_999)  # ignored
    out = r.read()
    assert out["package-0"] == pytest.approx(2.5)
    assert out["dram-0"] == pytest.approx(0.25)
    assert out["package-1"] == 0.0


def test_counter_wrap_around_is_handled(powercap):
    z = powercap["pkg0"]
    set_uj(z, RANGE - 1_000_000)  # 1 J before the wrap
    r = open_rapl(powercap["root"])
    set_uj(z, 2_000_000)  # wrapped: 1 J to the top, then 2 J
    assert r.read()["package-0"] == pytest.approx(3.0)
    assert r.wraps == 1
    set_uj(z, 4_000_000)  # no wrap: +2 J
    assert r.read()["package-0"] == pytest.approx(5.0)
    assert r.wraps == 1


def test_missing_tree_gives_the_reason(tmp_path):
    r = open_rapl(tmp_path / "nope")
    assert not r.available
    assert "does not exist" in r.reason


def test_tree_without_zones_gives_the_reason(tmp_path):
    (tmp_path / "powercap").mkdir()
    r = open_rapl(tmp_path / "powercap")
    assert not r.available and "no intel-rapl" in r.reason


def test_root_only_counter_says_how_to_grant_access(powercap, monkeypatch):
    real = pathlib.Path.read_text

    def read_text(self: Path, *a, **k):  # the kernel's 0400 root-only energy_uj (CVE-2020-8694)
        if self.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *a, **k)

    monkeypatch.setattr(pathlib.Path, "read_text", read_text)
    r = open_rapl(powercap["root"])
    assert not r.available
    assert "permission denied" in r.reason and "chmod" in r.reason
