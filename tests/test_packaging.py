"""The wheel installs one top-level import name, ``harness``.

The repository keeps ``workloads/``, ``backends/`` and ``reports/`` as top-level folders;
pyproject.toml maps them to ``harness.workloads`` / ``harness.backends`` /
``harness.reports`` (setuptools ``package-dir``), so an installed dl-harness never collides
with a user's own ``reports`` package. This test builds the real wheel from a copy of the
source tree, installs it into a fresh virtual environment and checks what landed there.
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TREES = {"harness": "harness", "workloads": "harness/workloads", "backends": "harness/backends",
         "reports": "harness/reports"}  # repository folder -> its place in the installed package
pytestmark = pytest.mark.slow


def _source_files() -> dict[str, Path]:
    """Every file the wheel must carry, keyed by its path inside site-packages."""
    want: dict[str, Path] = {}
    for folder, target in TREES.items():
        for path in (ROOT / folder).rglob("*"):
            rel = path.relative_to(ROOT / folder)
            if path.is_dir() or "__pycache__" in rel.parts or path.suffix in (".pyc", ".tmp"):
                continue
            if folder == "harness" and rel.parts[0] in ("workloads", "backends", "reports"):
                continue  # not in a source checkout (only in an installed wheel)
            want[f"{target}/{rel.as_posix()}"] = path
    return want


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for folder in TREES:
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(work / "dist"), str(src)],
        capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    wheels = list((work / "dist").glob("dl_harness-*.whl"))
    assert len(wheels) == 1, wheels
    env_dir = work / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)  # fresh and empty: no pip, no deps
    py = env_dir / "bin" / "python"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "--quiet", "--no-deps",
         "--no-index", str(wheels[0])], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-3000:]
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    return {"wheel": wheels[0], "python": py, "site": Path(purelib)}


def test_the_wheel_adds_exactly_one_top_level_name(installed: dict[str, Path]) -> None:
    with zipfile.ZipFile(installed["wheel"]) as whl:
        names = whl.namelist()
    tops = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith((".dist-info", ".data"))}
    assert tops == {"harness"}, f"top-level names installed by the wheel: {sorted(tops)}"
    site_tops = {p.name for p in installed["site"].iterdir()
                 if not p.name.endswith(".dist-info") and p.name not in ("__pycache__", "_distutils_hack")
                 and not p.name.endswith(".pth")}
    assert site_tops == {"harness"}, f"site-packages of a fresh venv after installing the wheel: {sorted(site_tops)}"


def test_every_source_file_and_package_data_file_is_in_the_wheel(installed: dict[str, Path]) -> None:
    """A package or data folder missing from pyproject.toml would silently drop files from
    the wheel (the editable install would hide it); compare against the source tree."""
    with zipfile.ZipFile(installed["wheel"]) as whl:
        names = set(whl.namelist())
    missing = sorted(rel for rel in _source_files() if rel not in names)
    assert not missing, f"not in the wheel (add the package or data pattern to pyproject.toml): {missing}"


def test_entry_points_name_modules_that_the_wheel_installs(installed: dict[str, Path]) -> None:
    (dist,) = installed["site"].glob("dl_harness-*.dist-info")
    eps = configparser.ConfigParser(delimiters=("=",))
    eps.optionxform = str  # keep names as written
    eps.read(dist / "entry_points.txt")
    groups = [g for g in eps.sections() if g.startswith("dl_harness.")]
    assert {"dl_harness.workloads", "dl_harness.backends", "dl_harness.variants",
            "dl_harness.collectors"} <= set(groups)
    for group in groups + ["console_scripts"]:
        for name, target in eps.items(group):
            module = target.split(":")[0].strip()
            base = installed["site"].joinpath(*module.split("."))
            assert base.with_suffix(".py").is_file() or (base / "__init__.py").is_file(), \
                f"entry point {group}:{name} -> {module}: no such module in the wheel"
            assert module.split(".")[0] == "harness", f"entry point {group}:{name} is outside harness: {module}"


def test_the_installed_package_imports_its_plugins_from_inside_harness(installed: dict[str, Path]) -> None:
    """In the fresh venv (its own files first; third-party dependencies borrowed from the
    test environment, after it), the built-in plugins and reports import as
    harness.workloads/backends/reports from the wheel's files, and no bare
    ``workloads``/``backends``/``reports`` module exists there."""
    deps = sysconfig.get_path("purelib")
    code = (
        "import importlib.util, sys\n"
        "import harness, harness.workloads.mlp, harness.backends.torch_backend, harness.reports, harness.cli\n"
        "site = sys.argv[1]\n"
        "for m in (harness, harness.workloads.mlp, harness.backends.torch_backend, harness.reports, harness.cli):\n"
        "    assert m.__file__.startswith(site), (m.__name__, m.__file__)\n"
        "for bare in ('workloads', 'backends', 'reports'):\n"
        "    spec = importlib.util.find_spec(bare)\n"
        "    assert spec is None, (bare, spec)\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONPATH"] = deps
    env["PYTHONNOUSERSITE"] = "1"
    proc = subprocess.run([str(installed["python"]), "-c", code, str(installed["site"])],
                          capture_output=True, text=True, timeout=120, env=env, cwd=str(installed["site"].parent))
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]
