"""The zygote launcher: every cell still in its own process, without paying the
framework's import per cell.

Why: ``import torch`` costs 2-4 s and ``import tensorflow`` 6-13 s on a 2-core machine,
in every fresh worker (:mod:`harness.launch.process`), while the step measured is often
milliseconds. A *zygote* (fork server) is a long-lived helper process per backend that
imports the harness's measurement code and the backend's framework once -- import
only: it never runs a framework op, so no thread pool, device context or RNG stream
exists yet -- and forks one child per cell.

The child becomes exactly what a fresh worker is before it reads anything: its own
session (so a timeout kills its whole process group), stdin from ``/dev/null``,
stdout/stderr to the cell's ``worker.log`` (whose tail a failed cell keeps), the
environment the runner computed for this cell (:func:`harness.launch.process.cell_environment`:
thread policy, scratch directory, deadline), the runner's working directory, default
signal handlers, RNGs seeded from fresh entropy (Python's, numpy's global and torch's
default generator, as at a fresh process's imports), and the lifeline of
:mod:`harness.core.lifeline` (it dies with the zygote, which dies with the runner, and
keeps its own deadline). It then runs :func:`harness.launch.worker.main` -- the same
measurement code and the same message file as a fresh worker. The zygote reaps it and
reports its exit status (code or signal), which :func:`harness.launch.process.exit_cell`
turns into the cell record exactly as for a fresh worker, so a crash, an OOM kill or a
hang (the runner kills the child's group at the timeout) reads the same.

Isolation: a fork copies the zygote's memory, never the previous cell's -- a cell that
changes thread counts, the default dtype, RNG seeds, TF32 flags, an environment
variable or the working directory leaves the next cell's process untouched
(tests/test_zygote.py checks each of these).

When a fresh process is used instead (recorded as ``runtime.launch.method`` with the
reason, docs/launch.md):

* ``--launch process`` (or ``Settings.launch = "process"``);
* a data-parallel cell (``world_size``): torch's starts torchrun from its worker,
  TensorFlow's must configure its logical devices before the runtime starts;
* a backend whose import leaves threads running (beyond those present before the
  framework was imported, e.g. numpy's OpenBLAS pool, which is fork-safe through its
  ``pthread_atfork`` handlers): a fork copies only the forking thread, and a lock
  another thread held stays locked in the child forever. TensorFlow 2.21 starts one
  such thread on import, so under ``--launch auto`` its cells run in fresh processes
  (the zygote that found out runs the first one itself, so its import is not wasted);
  ``--launch fork`` forks them anyway, at the user's risk;
* a zygote in which the CUDA driver is loaded (a forked child could not use CUDA);
* a zygote that died, could not start or misbehaved: recorded, said once, and the
  backend's cells run in fresh processes from then on; a cell whose zygote died under
  it is run again in a fresh process, so no cell is lost.

The zygote is started lazily for the first cell of its backend. A zygote serves only
cells whose environment equals its own except for the per-cell variables
(:data:`harness.launch.process.PER_CELL_ENV`): variables such as ``OMP_WAIT_POLICY`` are
read when a library loads, i.e. in the zygote, so a cell with another thread policy
gets (at most :data:`MAX_ZYGOTES` kept) a zygote of its own.
"""

from __future__ import annotations

import collections
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path
from typing import IO, Any, Callable

from harness.core.cells import Settings, TaskSpec, write_request
from harness.launch.base import (FRESH_PROCESS, ZYGOTE_FORK, Launcher, finish_wall, os_error_cause, precheck_cell,
                                 set_launch)
from harness.launch.process import (
    PER_CELL_ENV,
    ProcessLauncher,
    cell_environment,
    exit_cell,
    launcher_error_cell,
    timeout_cell,
)

ZYGOTE_MODULE = "harness.launch.zygote"
MAX_ZYGOTES = 3  # zygotes kept at once (LRU); each holds a framework's memory (torch ~0.3 GB)
REPLY_TIMEOUT_S = 300.0  # for the zygote's answer to a fork request
REAP_TIMEOUT_S = 10.0  # for the exit report of a child we killed
POLL_S = 0.5  # the zygote checks its parent this often



#: variables a zygote's environment may differ in from its cell's: the per-cell ones
#: (read at run time by the worker) and pytest's name of the running test (rewritten for
#: every test phase; nothing reads it at import). The child gets the cell's full environment.
_NOT_IN_KEY = frozenset((*PER_CELL_ENV, "PYTEST_CURRENT_TEST"))


class ZygoteError(Exception):
    """The zygote died, could not start or broke the protocol (the message says how)."""


# ----------------------------------------------------------------------------- runner side


class _Zygote:
    """One running zygote process, as the runner sees it."""

    def __init__(self, python: str, backend: str, env: dict[str, str], start_timeout: float) -> None:
        self.backend = backend
        self.log: IO[bytes] = tempfile.TemporaryFile(prefix="dlh-zygote-")  # unlinked: nothing left behind
        rfd, wfd = os.pipe()
        self._rfd: int | None = rfd
        self._buf = b""
        zenv = {k: v for k, v in env.items() if k not in PER_CELL_ENV}
        zenv["DLH_PARENT_PID"] = str(os.getpid())  # the zygote's own lifeline: us
        try:
            self.proc = subprocess.Popen(
                [python, "-m", ZYGOTE_MODULE, backend, str(wfd)],
                stdin=subprocess.PIPE, stdout=self.log, stderr=subprocess.STDOUT, env=zenv, cwd=os.getcwd(),
                pass_fds=(wfd,), start_new_session=True)
        except BaseException:
            os.close(rfd)
            self._rfd = None
            self.log.close()
            raise
        finally:
            os.close(wfd)
        try:
            info = self.recv(start_timeout)
        except BaseException:
            self.close()
            raise
        if info is None:
            self.close()
            raise ZygoteError(f"the {backend} zygote did not finish its imports within {start_timeout:g} s")
        if not info.get("ready"):
            self.close()
            raise ZygoteError(f"the {backend} zygote could not start: {info.get('error') or info}")
        self.info = info
        self.pid = self.proc.pid
        self.unsafe: str | None = info.get("unsafe")

    # -- messages
    def send(self, obj: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps(obj) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError, OSError):
            raise ZygoteError(self.death()) from None

    def recv(self, timeout: float | None) -> dict[str, Any] | None:
        """The next message, or None after ``timeout`` seconds (None: wait forever).
        Raises :class:`ZygoteError` when the zygote is gone."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._buf:
            if self._rfd is None:
                raise ZygoteError(self.death())
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self._rfd], [], [], left)
            if not ready:
                return None
            chunk = os.read(self._rfd, 65536)
            if not chunk:  # EOF: the zygote exited
                os.close(self._rfd)
                self._rfd = None
                raise ZygoteError(self.death())
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        try:
            msg = json.loads(line)
        except ValueError:
            raise ZygoteError(f"the {self.backend} zygote sent an unreadable message: {line[:200]!r}") from None
        if not isinstance(msg, dict):
            raise ZygoteError(f"the {self.backend} zygote sent an unreadable message: {line[:200]!r}")
        return msg

    def wait_exit(self, pid: int, timeout: float | None) -> int | None:
        """The exit status of child ``pid`` (negative: its signal), or None after ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            msg = self.recv(left)
            if msg is None:
                return None
            if msg.get("exited") == pid:
                return int(msg["rc"])

    # -- state
    def alive(self) -> bool:
        return self.proc.poll() is None and self._rfd is not None

    def death(self) -> str:
        """How the zygote ended (exit status and the tail of its output)."""
        try:
            rc = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            rc = None
        how = "stopped answering" if rc is None else _describe_status(rc)
        tail = _file_tail(self.log, 600).strip()
        return f"the {self.backend} zygote (pid {self.proc.pid}) {how}" + (f"; its output ended: {tail}" if tail else "")

    def close(self) -> None:
        """Stop the zygote (and anything it still runs) and release its pipes."""
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()  # EOF: the zygote kills its children and exits
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            _kill_group(self.proc.pid)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL does not hang
                pass
        if self._rfd is not None:
            os.close(self._rfd)
            self._rfd = None
        self.log.close()


def _close_all(zygotes: dict[Any, _Zygote]) -> None:
    for z in list(zygotes.values()):
        z.close()
    zygotes.clear()


ZYGOTE_MIN_CELLS = 3  # auto: a backend's zygote is started only for runs with this many of its cells


class ZygoteLauncher(Launcher):
    """Each cell in its own process, forked from a per-backend zygote where that is safe,
    else a fresh process (see the module doc). ``settings.launch`` chooses:
    ``auto`` (default: fork where safe), ``fork`` (fork also where the framework's
    import left threads running) or ``process`` (always a fresh process). ``say``
    gets one line when a zygote dies or cannot start. Call :meth:`close` when done
    (the runner does; it also happens when the launcher is garbage-collected)."""

    name = "zygote"

    def __init__(self, python: str = sys.executable, say: Callable[[str], None] | None = None,
                 max_zygotes: int = MAX_ZYGOTES) -> None:
        self.python = python
        self.say = say or (lambda line: None)
        self.max_zygotes = max(1, int(max_zygotes))
        self.fresh = ProcessLauncher(python)
        self._zygotes: collections.OrderedDict[tuple[Any, ...], _Zygote] = collections.OrderedDict()
        self._unsafe: dict[str, str] = {}  # backend -> why forking it is unsafe (found by its zygote)
        self._broken: dict[str, str] = {}  # backend -> why its zygotes are not used any more
        self._planned: dict[str, int] | None = None  # backend -> forkable cells this run will launch
        self._preload: dict[str, list[str]] = {}  # backend -> modules the run's model providers want preloaded
        self._finalizer = weakref.finalize(self, _close_all, self._zygotes)

    def close(self) -> None:
        """Stop every zygote (idempotent)."""
        _close_all(self._zygotes)

    def plan(self, specs: Any, rounds: int = 1) -> None:
        """Tell the launcher which cells the run will launch (``rounds`` times each), so
        ``auto`` starts a zygote only for a backend with at least
        ``ZYGOTE_MIN_CELLS`` single-process cells: a zygote imports more than one fresh
        worker does (every built-in plugin's modules), so it pays off from the second or
        third cell on, and a run of one or two cells is faster in fresh processes."""
        counts: dict[str, int] = {}
        preload: dict[str, set[str]] = {}
        for spec in specs:
            if spec.world_size is None:
                counts[spec.backend] = counts.get(spec.backend, 0) + max(1, int(rounds))
                preload.setdefault(spec.backend, set()).update(_provider_preload(spec.workload))
        self._planned = counts
        self._preload = {b: sorted(m) for b, m in preload.items() if m}

    def zygote_pids(self) -> list[int]:
        """The pids of the zygotes running now (for tests and diagnostics)."""
        return [z.pid for z in self._zygotes.values() if z.alive()]

    def launch(self, spec: TaskSpec, settings: Settings) -> dict[str, Any]:
        """Run one cell (see the class doc); never raises except KeyboardInterrupt,
        after killing what it started for the cell."""
        t0 = time.perf_counter()
        skipped = precheck_cell(spec, settings, t0)
        if skipped is not None:
            return skipped
        mode = getattr(settings, "launch", "auto") or "auto"
        why_not = self._why_not_fork(spec, mode)
        if why_not is not None:
            return self.fresh.launch_fresh(spec, settings, why_not, started=t0)
        try:
            cell = self._launch_in_zygote(spec, settings, mode, t0)
        except OSError as e:
            cell = set_launch(launcher_error_cell(spec, e, "fork"), ZYGOTE_FORK, None)
        if cell is None:  # the zygote failed us: recorded in _broken, run it fresh
            return self.fresh.launch_fresh(spec, settings, self._broken.get(spec.backend), started=t0)
        return finish_wall(cell, t0)

    def _why_not_fork(self, spec: TaskSpec, mode: str) -> str | None:
        if mode == "process":
            return "launch setting 'process' (--launch or the suite's settings.launch)"
        if spec.world_size is not None:
            return ("a data-parallel cell starts in a fresh process (torch's worker starts torchrun; TensorFlow "
                    "configures its replica devices before its runtime starts)")
        if spec.backend in self._broken:
            return self._broken[spec.backend]
        if mode == "auto" and spec.backend in self._unsafe:
            return self._unsafe[spec.backend]
        planned = None if self._planned is None else self._planned.get(spec.backend, 0)
        if mode == "auto" and planned is not None and planned < ZYGOTE_MIN_CELLS:
            return (f"auto: {planned} {spec.backend} cell(s) in this run; a zygote pays off from "
                    f"{ZYGOTE_MIN_CELLS} (--launch fork forks anyway)")
        return None

    def _mark_broken(self, backend: str, why: str) -> None:
        reason = f"{why}; {backend} cells start fresh processes from then on"
        self._broken[backend] = reason
        for key in [k for k, z in self._zygotes.items() if z.backend == backend]:
            self._zygotes.pop(key).close()
        self.say(f"warning: {reason}")

    def _zygote(self, backend: str, env: dict[str, str], start_timeout: float) -> _Zygote:
        """The live zygote for ``backend`` and ``env`` (started when there is none)."""
        cwd = os.getcwd()  # a fresh worker's sys.path[0]: a zygote serves the directory it started in
        key = (backend, cwd, tuple(sorted((k, v) for k, v in env.items() if k not in _NOT_IN_KEY)))
        z = self._zygotes.get(key)
        if z is not None:
            if z.alive():
                self._zygotes.move_to_end(key)
                return z
            self._zygotes.pop(key)
            why = z.death()
            z.close()
            raise ZygoteError(f"{why} between cells")
        while len(self._zygotes) >= self.max_zygotes:
            self._zygotes.popitem(last=False)[1].close()
        z = _Zygote(self.python, backend, env, start_timeout)
        self._zygotes[key] = z
        return z

    def _launch_in_zygote(self, spec: TaskSpec, settings: Settings, mode: str, t0: float) -> dict[str, Any] | None:
        """The cell, forked (or, for a zygote that found forking unsafe, run in that
        zygote's own process); None when the zygote failed (recorded in _broken)."""
        with tempfile.TemporaryDirectory(prefix="dlh-cell-", ignore_cleanup_errors=True) as td:
            req, res, log = Path(td, "request.json"), Path(td, "result.json"), Path(td, "worker.log")
            write_request(req, spec, settings)
            log.touch()
            env, policy, limit = cell_environment(spec, settings, td)
            try:
                if self._preload.get(spec.backend):  # part of the zygote's key: another run's set starts another
                    env = {**env, PRELOAD_ENV: ",".join(self._preload[spec.backend])}
                z = self._zygote(spec.backend, env, start_timeout=limit)
            except ZygoteError as e:
                self._mark_broken(spec.backend, str(e))
                return None
            order = {"request": str(req), "result": str(res), "log": str(log), "env": env, "cwd": os.getcwd()}
            if z.unsafe is not None and mode == "auto":
                self._unsafe[spec.backend] = f"fork is unsafe: {z.unsafe}"
                self._zygotes.pop(next(k for k, v in self._zygotes.items() if v is z))
                cell = self._run_in_zygote(z, spec, settings, order, res, log, policy, limit)
                return None if cell is None else set_launch(cell, FRESH_PROCESS, self._unsafe[spec.backend])
            reason = (f"launch setting 'fork' (--launch or the suite's settings.launch): forked although {z.unsafe}"
                      if z.unsafe is not None else None)
            cell = self._fork(z, spec, settings, order, res, log, policy, limit)
            return None if cell is None else set_launch(cell, ZYGOTE_FORK, reason)

    def _fork(self, z: _Zygote, spec: TaskSpec, settings: Settings, order: dict[str, Any], res: Path, log: Path,
              policy: Any, limit: float) -> dict[str, Any] | None:
        t_cell = time.perf_counter()
        pid: int | None = None
        try:
            z.send({"op": "fork", **order})
            msg = z.recv(REPLY_TIMEOUT_S)
            if msg is None or not isinstance(msg.get("started"), int):
                why = "did not answer a fork request" if msg is None else f"could not fork: {msg.get('error') or msg}"
                raise ZygoteError(f"the {z.backend} zygote (pid {z.pid}) {why}")
            pid = int(msg["started"])
            try:
                rc = z.wait_exit(pid, limit)
            except BaseException:
                _kill_group(pid)
                try:
                    z.wait_exit(pid, REAP_TIMEOUT_S)
                except ZygoteError:
                    pass
                raise
            if rc is None:  # the cell's time limit: kill the child's session, as for a fresh worker
                _kill_group(pid)
                try:
                    z.wait_exit(pid, REAP_TIMEOUT_S)
                except ZygoteError:  # it died with its child: the next cell finds out
                    pass
                return timeout_cell(spec, settings, log, t_cell)
            return exit_cell(spec, res, log, rc, policy, t_cell)
        except ZygoteError as e:
            if pid is not None:
                _kill_group(pid)
            during = " while a cell ran (the cell was run again in a fresh process)" if pid is not None else ""
            self._mark_broken(spec.backend, f"{e}{during}")
            return None

    def _run_in_zygote(self, z: _Zygote, spec: TaskSpec, settings: Settings, order: dict[str, Any], res: Path,
                       log: Path, policy: Any, limit: float) -> dict[str, Any] | None:
        """The zygote becomes this cell's worker (it imported what a fresh worker would
        import, and nothing more) and exits: a fresh process whose import is not wasted.
        None when the zygote was gone before it got the cell (recorded in _broken)."""
        t_cell = time.perf_counter()
        try:
            try:
                z.send({"op": "run", **order})
            except ZygoteError as e:
                self._mark_broken(spec.backend, str(e))
                return None
            try:
                rc = z.proc.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                _kill_group(z.pid)
                return timeout_cell(spec, settings, log, t_cell)
            except BaseException:
                _kill_group(z.pid)
                raise
            return exit_cell(spec, res, log, rc, policy, t_cell)
        finally:
            z.close()


def _kill_group(pid: int) -> None:
    """SIGKILL the process group (session) led by ``pid``, and ``pid`` itself (a child
    killed before its ``setsid``)."""
    for kill, target in ((os.killpg, pid), (os.kill, pid)):
        try:
            kill(target, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _describe_status(rc: int) -> str:
    if rc < 0:
        try:
            return f"died with {signal.Signals(-rc).name}"
        except ValueError:
            return f"died with signal {-rc}"
    return f"exited with status {rc}"


def _file_tail(f: IO[bytes], chars: int) -> str:
    """The end of an open file, read without moving its offset (the zygote appends to it)."""
    try:
        size = os.fstat(f.fileno()).st_size
        return os.pread(f.fileno(), chars, max(0, size - chars)).decode("utf-8", "replace")
    except (OSError, ValueError):
        return ""


# ----------------------------------------------------------------------------- zygote side


def _os_threads() -> int:
    """The threads of this process, as the kernel sees them (numpy's OpenBLAS pool included)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        import threading

        return threading.active_count()


def _cuda_driver_loaded() -> bool:
    """Whether the CUDA driver library is mapped into this process (a CUDA context may exist)."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            return any("libcuda.so" in line for line in f)
    except OSError:
        return False


#: Imported before the thread count that the framework's import is compared with:
#: numpy and scipy bring their OpenBLAS pools, whose threads shut down around a fork
#: (``pthread_atfork``) and restart in the child when used -- fork-safe by design.
BASELINE_IMPORTS: tuple[str, ...] = ("numpy", "scipy.linalg")
#: Modules the measurement code imports lazily (after the timed loop), which a fresh
#: worker pays for in every cell, by the framework package they belong to ("" for every
#: backend). WARM_IMPORTS are needed by every measured cell and imported with the
#: framework: torch's FLOP counter (``FlopCounterMode`` imports ``torch._dynamo``, ~5 s).
#: LATER_IMPORTS are needed by some cells -- the quality track's digits data
#: (scikit-learn, ~4 s) and its torch reference model (torch, ~4 s, also for TensorFlow
#: cells), ONNX for torch's int8 variants (~1.5 s), LiteRT for TensorFlow's -- and are
#: imported by the zygote too, before it reports ready: a child that imported them itself
#: would lose them when it exits (a zygote is started only for a backend with
#: ZYGOTE_MIN_CELLS cells in the run). Import only; the zygote checks that none of them
#: started a thread.
WARM_IMPORTS: dict[str, tuple[str, ...]] = {
    "torch": ("torch.utils.flop_counter", "torch._dynamo"),
}
LATER_IMPORTS: dict[str, tuple[str, ...]] = {
    "": ("sklearn.datasets", "torch", "harness.core.quality", "harness.core.flops",
         "harness.core.frameworks.torch_utils"),
    # not onnxruntime: its import starts a thread (~0.1 s in each int8 cell instead)
    "torch": ("onnx", "onnx.numpy_helper", "torch.onnx", "harness.variants._torch_utils"),
    "tensorflow": ("ai_edge_litert.interpreter", "harness.variants._tf_utils", "harness.core.frameworks.keras_utils"),
}


def _import_all(names: tuple[str, ...] | list[str], problems: list[str]) -> list[str]:
    import importlib

    done = []
    for name in names:
        try:
            importlib.import_module(name)
            done.append(name)
        except Exception as e:  # noqa: BLE001 - a cell that needs it reports it, as a fresh worker would
            problems.append(f"{name}: {type(e).__name__}: {e}")
    return done


def _preload(backend: str) -> tuple[list[str], list[str], int]:
    """Import what every cell of ``backend`` imports first: the harness's measurement
    code, the backend's plugin module and framework, the collectors, workloads and
    variants -- modules only, nothing run. Returns (framework packages imported,
    problems, the thread count before the framework was imported)."""
    problems: list[str] = []
    import harness.launch.worker  # noqa: F401 - measurement, data-parallel decisions, messages
    from harness.core import registry

    _import_all(("harness.core.analyses", "harness.core.stats", "harness.core.contention", *BASELINE_IMPORTS),
                problems)
    base_threads = _os_threads()
    bcls = registry.load("backend", backend)
    packages = [pkg.replace("-", "_") for pkg in (getattr(bcls, "framework_packages", ()) or ())]
    imported = _import_all(packages, problems)
    for pkg in imported:
        _import_all(WARM_IMPORTS.get(pkg, ()), problems)
    for kind in ("collector", "workload", "variant"):
        for name in registry.names(kind):
            try:
                registry.load(kind, name)
            except Exception as e:  # noqa: BLE001
                problems.append(f"{kind} {name}: {e}")
    return imported, problems, base_threads


#: modules the run's model providers want in the zygote (:meth:`harness.api.WorkloadProvider.preload`),
#: comma-separated; checked for threads like every other import
PRELOAD_ENV = "DLH_ZYGOTE_PRELOAD"


def _provider_preload(workload: str) -> list[str]:
    """The modules a ``SCHEME:REF`` workload's provider asks a zygote to import (none for
    a plain workload, or when the provider cannot be loaded: the cell reports that)."""
    from harness.core import registry

    scheme = registry.provider_scheme(workload)
    if scheme is None:
        return []
    try:
        provider = registry.load_provider(scheme)
        return [str(m) for m in provider.preload(workload[len(scheme) + 1:])]
    except Exception:  # noqa: BLE001 - an optimisation only
        return []


def _later_imports(imported: list[str]) -> list[str]:
    """:data:`LATER_IMPORTS` for the frameworks ``imported``."""
    return [*LATER_IMPORTS[""], *(m for pkg in imported for m in LATER_IMPORTS.get(pkg, ()))]


class _Children:
    """The zygote's running children: pid -> (pidfd or None, the cell's scratch directory)."""

    def __init__(self) -> None:
        self.items: dict[int, tuple[int | None, str | None]] = {}

    def add(self, pid: int, scratch: str | None) -> None:
        fd = None
        if hasattr(os, "pidfd_open"):
            try:
                fd = os.pidfd_open(pid)
            except OSError:
                fd = None
        self.items[pid] = (fd, scratch)

    def fds(self) -> list[int]:
        return [fd for fd, _ in self.items.values() if fd is not None]

    def all_have_fds(self) -> bool:
        return all(fd is not None for fd, _ in self.items.values())

    def reap(self) -> list[tuple[int, int]]:
        """(pid, exit status as subprocess reports it) of every child that ended."""
        done = []
        for pid in list(self.items):
            try:
                wpid, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                wpid, status = pid, 255 << 8
            if wpid:
                fd, _ = self.items.pop(pid)
                if fd is not None:
                    os.close(fd)
                done.append((pid, os.waitstatus_to_exitcode(status)))
        return done

    def kill_all(self) -> None:
        import shutil

        for pid, (_, scratch) in list(self.items.items()):
            _kill_group(pid)
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
            if scratch:
                shutil.rmtree(scratch, ignore_errors=True)
        self.items.clear()


def _reply(fd: int, obj: dict[str, Any]) -> None:
    data = (json.dumps(obj) + "\n").encode()
    while data:
        data = data[os.write(fd, data):]


def _become_worker(order: dict[str, Any], parent_pid: int, close_fds: list[int]) -> int:
    """Turn this process into the cell's worker (see the module doc) and run it;
    returns the worker's exit code."""
    for fd in close_fds:
        try:
            os.close(fd)
        except OSError:
            pass
    out = os.open(order["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(out)
    nul = os.open(os.devnull, os.O_RDONLY)
    os.dup2(nul, 0)
    os.close(nul)
    env = {str(k): str(v) for k, v in order["env"].items()}
    env["DLH_PARENT_PID"] = str(parent_pid)  # the lifeline's parent: the process that made us
    os.environ.clear()
    os.environ.update(env)
    os.chdir(order["cwd"])
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    _reseed()
    from harness.launch import worker

    return int(worker.main([order["request"], order["result"]]) or 0)


def _reseed() -> None:
    """Give this process the fresh-entropy RNG streams a fresh worker starts with: the
    generators seeded from the OS at import (Python's ``random``, numpy's global
    RandomState, torch's default generator) would otherwise repeat the zygote's
    stream in every child. Seeds a cell sets itself are unaffected (they come later)."""
    import random

    random.seed()
    np = sys.modules.get("numpy")
    if np is not None:
        np.random.seed()
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "seed"):
        torch.seed()  # a CUDA generator, if CUDA is ever initialised, is seeded lazily from it


def _fork_child(order: dict[str, Any], close_fds: list[int]) -> int:
    """Fork one cell; returns the child's pid (in the zygote). The child never returns."""
    sys.stdout.flush()
    sys.stderr.flush()
    zygote = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        os.setsid()  # its own session: the runner kills the whole group at the timeout
        code = _become_worker(order, zygote, close_fds)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:  # noqa: BLE001 - report it in the cell's log; the exit status says the rest
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        try:
            import atexit

            atexit._run_exitfuncs()  # what the interpreter runs at a fresh worker's exit
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def main(argv: list[str] | None = None) -> int:
    """The zygote: ``python -m harness.launch.zygote BACKEND REPLY_FD`` (started by
    :class:`ZygoteLauncher`; requests on stdin, replies on REPLY_FD, one JSON object a line)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print(f"usage: python -m {ZYGOTE_MODULE} BACKEND REPLY_FD", file=sys.stderr)
        return 2
    backend, reply = args[0], int(args[1])
    from harness.core.lifeline import set_parent_death_signal

    try:
        parent = int(os.environ["DLH_PARENT_PID"])
    except (KeyError, ValueError):
        parent = os.getppid()
    children = _Children()

    def die(code: int) -> None:
        children.kill_all()
        os._exit(code)

    signal.signal(signal.SIGTERM, lambda signum, frame: die(143))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the runner decides; it is in another session anyway
    set_parent_death_signal(signal.SIGTERM)
    if os.getppid() != parent:
        return 143
    t0 = time.perf_counter()
    try:
        imported, problems, base_threads = _preload(backend)
        # what some cells need, once here rather than in each child that needs it (the
        # runner starts a zygote only for a backend with ZYGOTE_MIN_CELLS cells to run)
        _import_all(_later_imports(imported), problems)
        # what the run's model providers asked for (e.g. transformers for hf: models)
        _import_all([m for m in os.environ.get(PRELOAD_ENV, "").split(",") if m], problems)
    except Exception as e:  # noqa: BLE001 - the runner falls back to fresh processes
        _reply(reply, {"ready": False, "error": f"{type(e).__name__}: {e}"})
        return 1
    threads = _os_threads()
    unsafe = None
    if threads > base_threads:
        unsafe = (f"importing {', '.join(imported) or backend} left {threads - base_threads} more thread(s) "
                  f"running ({threads} in all); forking a process with running threads can deadlock the child")
    elif _cuda_driver_loaded():
        unsafe = "the CUDA driver library is loaded in the zygote; a forked child could not use CUDA"
    _reply(reply, {"ready": True, "pid": os.getpid(), "import_s": round(time.perf_counter() - t0, 3),
                   "threads": threads, "threads_before_framework": base_threads, "unsafe": unsafe,
                   "imported": imported, "problems": problems[:20]})
    try:
        return _serve(reply, parent, children, die)
    except OSError:  # our reply pipe broke: the runner is gone
        die(143)
    return 143  # pragma: no cover - die() does not return


def _serve(reply: int, parent: int, children: _Children, die: Callable[[int], None]) -> int:
    """The zygote's loop: fork a child per request, report every child's exit."""
    buf = b""
    while True:
        if os.getppid() != parent:
            die(143)
        timeout = POLL_S if children.all_have_fds() else 0.02
        try:
            ready, _, _ = select.select([0, *children.fds()], [], [], timeout)
        except InterruptedError:  # pragma: no cover - PEP 475 retries
            continue
        for pid, rc in children.reap():
            _reply(reply, {"exited": pid, "rc": rc})
        if 0 not in ready:
            continue
        data = os.read(0, 65536)
        if not data:  # the runner closed our stdin (or died): stop
            die(0)
        buf += data
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            order = json.loads(line)
            op = order.get("op")
            if op == "fork":
                try:
                    pid = _fork_child(order, [reply, *children.fds()])
                except OSError as e:
                    _reply(reply, {"error": f"fork failed: {os_error_cause(e)}"})
                    continue
                children.add(pid, (order.get("env") or {}).get("DLH_CELL_DIR"))
                _reply(reply, {"started": pid})
            elif op == "run":  # become this cell's worker, in this process, and exit
                children.kill_all()
                return _become_worker(order, parent, [reply])
            else:
                die(0)


if __name__ == "__main__":
    sys.stdout.flush()
    raise SystemExit(main())
