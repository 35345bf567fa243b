"""Shared fixtures. Hardware is faked only at the lowest boundary (the time source,
/proc files, vendor modules); everything above runs for real."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_SITE = Path(__file__).resolve().parent / "fixtures" / "plugin_site"


def pytest_configure(config: pytest.Config) -> None:
    """The session's cache directory; and each pytest-xdist worker gets a temporary
    directory of its own (``TMPDIR``, which the runs it starts inherit): tests that check
    that a run left no ``dlh-*`` scratch directory behind must not see another worker's."""
    import os
    import tempfile

    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        # one cache (docs/cache.md) for the session, shared by its xdist workers and the
        # runs they start, never the user's ~/.cache: no test depends on an earlier session
        if "DL_HARNESS_CACHE_DIR" not in os.environ:
            cache = Path(tempfile.mkdtemp(prefix="pytest-dlh-cache-"))
            os.environ["DL_HARNESS_CACHE_DIR"] = str(cache)
            config._dlh_cache = cache  # type: ignore[attr-defined]
        return
    own = Path(tempfile.gettempdir()) / f"pytest-dlh-{worker}-{os.getpid()}"
    own.mkdir(parents=True, exist_ok=True)
    os.environ["TMPDIR"] = str(own)
    tempfile.tempdir = None  # re-read TMPDIR
    config._dlh_tmpdir = own  # type: ignore[attr-defined]


def pytest_unconfigure(config: pytest.Config) -> None:
    import shutil

    for attr in ("_dlh_tmpdir", "_dlh_cache"):
        own = getattr(config, attr, None)
        if own is not None:
            shutil.rmtree(own, ignore_errors=True)


class FakeTime:
    """A seeded fake time source: ``now()`` is the lowest boundary of HostClock.

    Each ``now()`` read costs ``read_cost_s`` (like a real timer call); ``advance``
    is called by fake steps to spend time.
    """

    def __init__(self, read_cost_s: float = 0.0) -> None:
        self.t = 1000.0
        self.read_cost_s = read_cost_s

    def now(self) -> float:
        self.t += self.read_cost_s
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def plugin_site(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Put the third-party test plugin package (with its own dist-info) on the path
    of this process and of the worker processes it starts."""
    monkeypatch.syspath_prepend(str(PLUGIN_SITE))
    import os

    old = os.environ.get("PYTHONPATH", "")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(PLUGIN_SITE), old) if p))
    return PLUGIN_SITE


def run_cli(args: list[str], env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``python -m harness ARGS`` as a user would; returns the completed process."""
    import os

    e = dict(os.environ)
    if env:
        e.update(env)
    return subprocess.run(
        [sys.executable, "-m", "harness", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(ROOT),
        env=e,
    )


@pytest.fixture
def cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    return run_cli


def only_result(out_dir: Path) -> dict[str, Any]:
    files = [p for p in out_dir.glob("*.json")]
    assert len(files) == 1, files
    return json.loads(files[0].read_text())


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One real end-to-end `harness run --suite smoke --report` shared by several tests."""
    out = tmp_path_factory.mktemp("smoke")
    proc = run_cli(["run", "--suite", "smoke", "--out", str(out), "--no-progress", "--report", "--tag", "e2e"])
    files = sorted(out.glob("*.json"))
    return {"proc": proc, "out": out, "files": files, "doc": json.loads(files[0].read_text()) if files else None}


def pids_with_env(marker: str) -> list[int]:
    """Live processes whose environment contains ``marker`` (e.g. ``DLH_TEST_MARK=<uuid>``
    set for one test's ``harness run``: its workers, torchrun and their children inherit
    it). Zombies have an empty environ and do not count."""
    import os

    pids = []
    for env in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker.encode() in env.read_bytes() and int(env.parent.name) != os.getpid():
                pids.append(int(env.parent.name))
        except (OSError, ValueError):
            continue
    return pids


def interruptible() -> None:
    """``preexec_fn`` for a run a test interrupts with SIGINT: Ctrl-C's default action,
    which Python turns into KeyboardInterrupt. A test session started in the background
    by a non-interactive shell (``pytest &``, some CI runners) inherits SIGINT *ignored*,
    as POSIX specifies for asynchronous commands, and passes that on to the run."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
