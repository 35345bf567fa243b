"""Contention: was the machine busy while a cell was measured, and how to run torch so
that a busy machine hurts it less.

Why: on a 2-core machine with other processes running, a torch cell with the default
thread count (one OpenMP thread per core, spin-waiting at every barrier) became up to
600x slower, and nothing in the result said so. A number measured on a contended
machine must say so, from evidence that does not depend on the cell being slow.

:class:`ContentionProbe` takes a snapshot at each of the timing loop's marks
(``warmup_start``, ``loop_start``, ``loop_end``; see :func:`harness.core.timing.measure`)
and judges three windows: ``pre`` (warm-up), ``loop`` (the timed loop) and ``cell``
(both). Evidence per window, all read outside the timed region:

* **CPU time of other processes**, in cores: busy jiffies of the CPUs this process
  may run on (the union of its threads' affinity masks; per-CPU lines of
  ``/proc/stat``: user, nice, system, irq, softirq) minus the CPU time of this process
  and its descendants (``/proc/<pid>/stat`` utime + stime of every thread, plus the
  reaped children's cutime + cstime), divided by the window's wall time. **Decisive.**
* **Steal time** share of those CPUs (``/proc/stat`` steal): the hypervisor ran
  someone else on our virtual CPUs. **Decisive.**
* **Other processes on the GPU** (NVML compute, graphics and MPS process lists, minus
  this process's family) for CUDA cells. **Decisive.**
* **CPU pressure** (``/proc/pressure/cpu`` "some" total, microseconds): share of the
  window in which some runnable task waited for a CPU. System-wide and including the
  cell's own threads, so it decides only together with other processes' CPU (below).
* **1-minute load average** (``/proc/loadavg``) against the cores and the cell's own
  threads. It lags by about a minute, counts the cell's own runnable threads and every
  CPU of the machine (not only ours), so it is **supporting** evidence only; it decides
  only where ``/proc/stat`` cannot be read.
* The **top other processes** by CPU in the cell window (pid, name, cores) so a user
  sees *who* it was.

The rule (thresholds are constructor arguments; defaults in :data:`DEFAULTS`): a window
is contended when other processes used more than ``free + margin + resolution`` cores,
where ``free = max(0, ncpu - threads)`` (the cores the cell leaves free: those can
absorb other work without touching the cell), ``margin = 0.25`` cores (background
daemons, the parent runner's progress bar) and ``resolution = (2*sqrt(ncpu) + 2) *
tick / window`` (jiffies are 10 ms: each per-CPU counter and our own counter can be a
tick off; the per-CPU errors are independent, hence sqrt); or when they used more than
``free + resolution`` while tasks waited for a CPU more than half the window (two hogs
against a 1-thread cell on 2 cores get only 1.33 cores by fair sharing, inside the
margin). Steal is contended above ``5% + resolution/ncpu``. A window whose resolution
is worse than 0.5 cores (shorter than about 0.1 s on 2 CPUs) decides nothing: it is
reported as not measurable, never as contended, so a short cell cannot raise a false
alarm from rounding. The cell is contended when any measurable window is, or another
process is on its GPU.

:func:`thread_policy` is the mitigation the runner applies to every worker (with
:func:`sample_other_cpu` taken just before the worker starts): the environment
variables to set before the framework is imported and the record of the policy for the
cell. See docs/contention.md for the measurements behind it.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

# Thresholds of the rule (see the module doc for why each value).
DEFAULTS: dict[str, float] = {
    "margin_cores": 0.25,  # other CPU tolerated above the cores the cell leaves free
    "steal_share": 0.05,  # steal above this share of the CPUs' time is contention
    "max_resolution_cores": 0.5,  # a coarser window decides nothing (one hog must show)
    "load_margin": 1.0,  # loadavg (supporting / fallback): runnable tasks above expected
    "psi_share": 0.10,  # CPU pressure "some" share: mentioned as supporting evidence
    "psi_intrusion_share": 0.50,  # ... decisive above this when others also used > free cores
}
MAX_SCAN_PIDS = 5000  # above this many processes the per-process scan is skipped
TOP_OTHERS = 5  # processes named in the evidence
MARKS = ("warmup_start", "loop_start", "loop_end")
WINDOWS = {"pre": ("warmup_start", "loop_start"), "loop": ("loop_start", "loop_end"),
           "cell": ("warmup_start", "loop_end")}


@dataclass
class _Proc:
    ppid: int
    comm: str
    ticks: int  # utime + stime: the process's own threads
    child_ticks: int  # cutime + cstime: children it has reaped (their whole lives)
    start: int  # starttime, ticks since boot


@dataclass
class _Snapshot:
    t: float
    busy: int | None = None  # summed over the counted CPUs, ticks
    total: int | None = None
    steal: int | None = None
    own: int | None = None  # this process + live descendants, ticks
    family: set[int] = field(default_factory=set)
    procs: dict[int, _Proc] | None = None
    load1: float | None = None
    psi_some_us: int | None = None
    gpu_pids: dict[int, int | None] | None = None  # pid -> used GPU memory (bytes)
    errors: dict[str, str] = field(default_factory=dict)


def _read(path: Path, limit: int = 1 << 20) -> str:
    with open(path, "rb") as f:
        return f.read(limit).decode("utf-8", "replace")


def parse_proc_stat(text: str, cpus: Iterable[int] | None) -> tuple[int, int, int, str]:
    """(busy, total, steal) ticks summed over the per-CPU lines of ``cpus`` in a
    ``/proc/stat`` text, and which lines were used. busy = user + nice + system + irq
    + softirq (guest time is already inside user); total adds idle, iowait and steal.
    Falls back to the aggregate ``cpu`` line when none of ``cpus`` has a line."""
    want = None if cpus is None else {f"cpu{c}" for c in cpus}
    rows: dict[str, list[int]] = {}
    for line in text.splitlines():
        if not line.startswith("cpu"):
            continue
        parts = line.split()
        try:
            vals = [int(v) for v in parts[1:11]]
        except ValueError:
            continue
        rows[parts[0]] = vals + [0] * (10 - len(vals))
    picked = [v for k, v in rows.items() if k != "cpu" and (want is None or k in want)]
    scope = "per-CPU lines of the affinity mask"
    if not picked:
        if "cpu" not in rows:
            raise ValueError("no cpu lines in /proc/stat")
        picked, scope = [rows["cpu"]], "aggregate cpu line (no per-CPU line for the affinity mask)"
    busy = total = steal = 0
    for user, nice, system, idle, iowait, irq, softirq, st, _guest, _gnice in picked:
        b = user + nice + system + irq + softirq
        busy += b
        steal += st
        total += b + idle + iowait + st
    return busy, total, steal, scope


def parse_pid_stat(text: str) -> _Proc:
    """ppid, name, CPU ticks (utime + stime; cutime + cstime apart) and start time from
    a ``/proc/<pid>/stat`` line (the name may contain spaces and parentheses)."""
    lpar, rpar = text.index("("), text.rindex(")")
    comm = text[lpar + 1 : rpar][:64]
    rest = text[rpar + 2 :].split()
    # rest[0] is field 3 (state): field n is rest[n - 3]
    ppid = int(rest[1])
    utime, stime, cutime, cstime = (int(rest[i]) for i in (11, 12, 13, 14))
    return _Proc(ppid=ppid, comm=comm, ticks=utime + stime, child_ticks=max(cutime, 0) + max(cstime, 0),
                 start=int(rest[19]))


def _family_ticks(p: _Proc) -> int:
    # a family member's reaped children belong to the family: when one of them exits
    # inside a window its time moves from its own line into its parent's cutime, so
    # the family's sum stays continuous (counting cutime for *other* processes would
    # instead add a reaped child's whole life to the window it was reaped in)
    return p.ticks + p.child_ticks


class ContentionProbe:
    """Evidence that other work competed with the cell (see the module doc).

    ``threads``: the cell's compute threads (None: assume every core). ``device``: the
    cell's device ("cpu", "cuda:0", ...). Everything the probe reads is injectable:
    ``proc_root`` (a fake /proc tree in tests), ``clock`` (window wall time, seconds),
    ``nvml`` (an adapter from :mod:`harness.core.hw.nvml`; None opens NVML for a CUDA cell),
    ``pid``, ``cpus`` (default: the affinity mask), ``clk_tck`` (ticks per second),
    ``exclude_pids`` (processes that belong to the cell), ``siblings`` (count the
    processes sharing our parent as the cell's: torchrun's other local ranks; then
    ``threads`` is the threads of all local ranks together).
    ``mark`` never raises and :meth:`result` never raises: a probe that cannot read its
    sources says so in the evidence and detects nothing from them.
    """

    def __init__(
        self,
        threads: int | None,
        device: str = "cpu",
        proc_root: Path | str = Path("/proc"),
        nvml: Any = None,
        clock: Callable[[], float] = time.monotonic,
        *,
        pid: int | None = None,
        cpus: Iterable[int] | None = None,
        clk_tck: int | None = None,
        exclude_pids: Iterable[int] = (),
        env: Mapping[str, str] | None = None,
        cuda_uuid: str | None = None,
        scan_processes: bool = True,
        siblings: bool = False,
        **thresholds: float,
    ) -> None:
        unknown = set(thresholds) - set(DEFAULTS)
        if unknown:
            raise ValueError(f"unknown contention thresholds {sorted(unknown)}; allowed: {sorted(DEFAULTS)}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1 or None, got {threads}")
        self.th = {**DEFAULTS, **thresholds}
        self.device = str(device)
        self.proc = Path(proc_root)
        self.clock = clock
        self.pid = os.getpid() if pid is None else int(pid)
        if cpus is None:
            cpus = process_cpus(self.proc, self.pid)
        self.cpus = sorted(set(cpus))
        self.ncpu = max(1, len(self.cpus))
        self.threads = threads
        self.tick_s = 1.0 / (clk_tck or _clk_tck())
        self.exclude = {int(p) for p in exclude_pids}
        self.scan = scan_processes
        self.siblings = siblings
        self._env = env
        self._cuda_uuid = cuda_uuid
        self._nvml = nvml
        self._nvml_owned = False
        self._gpu_handle: Any = None
        self._gpu_reason: str | None = ("NVML not opened (no warmup_start mark)" if self.device.startswith("cuda")
                                        else "not a CUDA cell")
        self._gpu_how: str | None = None
        self._cpu_scope: str | None = None
        self.snaps: dict[str, _Snapshot] = {}

    # -- sampling ------------------------------------------------------------------
    def mark(self, event: str) -> None:
        """Snapshot the counters at ``event`` (one of :data:`MARKS`); never raises."""
        try:
            if event == "warmup_start" and self.device.startswith("cuda"):
                self._open_gpu()
            self.snaps[event] = self._snapshot()
        except Exception as e:  # noqa: BLE001 - evidence is best effort, never fatal
            self.snaps[event] = _Snapshot(t=self.clock(), errors={"snapshot": f"{type(e).__name__}: {e}"})
        if event == "loop_end":
            self._close_gpu()

    def _snapshot(self) -> _Snapshot:
        s = _Snapshot(t=self.clock())
        try:
            s.busy, s.total, s.steal, self._cpu_scope = parse_proc_stat(_read(self.proc / "stat"), self.cpus)
        except (OSError, ValueError) as e:
            s.errors["proc_stat"] = f"{type(e).__name__}: {e}"
        procs = self._scan() if self.scan else None
        s.procs = procs
        try:
            if procs is not None and self.pid in procs:
                roots = {self.pid} | (self.exclude & procs.keys())
                if self.siblings:  # e.g. torchrun's other local ranks: children of our parent
                    parent = procs[self.pid].ppid
                    roots |= {p for p, q in procs.items() if q.ppid == parent and parent > 1}
                fam = roots.union(*(_descendants(procs, r) for r in roots))
                s.family = fam
                s.own = sum(_family_ticks(procs[p]) for p in fam)
            else:
                s.own = _family_ticks(parse_pid_stat(_read(self.proc / str(self.pid) / "stat")))
                s.family = {self.pid}
                for p in self.exclude:
                    try:
                        s.own += _family_ticks(parse_pid_stat(_read(self.proc / str(p) / "stat")))
                        s.family.add(p)
                    except (OSError, ValueError, IndexError):
                        pass
        except (OSError, ValueError, IndexError) as e:
            s.errors["own_stat"] = f"{type(e).__name__}: {e}"
        try:
            s.load1 = float(_read(self.proc / "loadavg").split()[0])
        except (OSError, ValueError, IndexError) as e:
            s.errors["loadavg"] = f"{type(e).__name__}: {e}"
        try:
            for line in _read(self.proc / "pressure" / "cpu").splitlines():
                if line.startswith("some"):
                    s.psi_some_us = int(line.rsplit("total=", 1)[1].split()[0])
        except (OSError, ValueError, IndexError) as e:
            s.errors["pressure"] = f"{type(e).__name__}: {e}"
        if self._gpu_handle is not None:
            try:
                s.gpu_pids = self._gpu_processes()
            except Exception as e:  # noqa: BLE001 - NVMLError_*: recorded
                s.errors["nvml_processes"] = f"{type(e).__name__}: {e}"
        return s

    def _scan(self) -> dict[int, _Proc] | None:
        """Every process's stat (for this process's descendants and the top others),
        or None when there are more than :data:`MAX_SCAN_PIDS`."""
        try:
            names = [n for n in os.listdir(self.proc) if n.isdigit()]
        except OSError:
            return None
        if len(names) > MAX_SCAN_PIDS:
            return None
        out: dict[int, _Proc] = {}
        for n in names:
            try:
                out[int(n)] = parse_pid_stat(_read(self.proc / n / "stat", 4096))
            except (OSError, ValueError, IndexError):
                continue  # exited between listdir and read, or unreadable
        return out

    # -- GPU -----------------------------------------------------------------------
    def _open_gpu(self) -> None:
        if self._gpu_handle is not None:
            return
        from harness.core.hw.nvml import framework_cuda_uuid, open_cuda_device, resolve_cuda_device

        idx = int(self.device.split(":")[1]) if ":" in self.device else 0
        env = os.environ if self._env is None else self._env
        uuid = self._cuda_uuid or framework_cuda_uuid(idx)  # one reader of the CUDA UUID
        if self._nvml is None:
            opened = open_cuda_device(idx, env, uuid)
            if isinstance(opened, str):
                self._gpu_reason = opened
                return
            self._nvml, self._gpu_handle, self._gpu_how = opened
            self._nvml_owned = True
        else:
            if not getattr(self._nvml, "available", False):
                self._gpu_reason = getattr(self._nvml, "reason", "NVML unavailable")
                return
            nvml_index, how = resolve_cuda_device(idx, self._nvml.gpus(), env, uuid)
            if nvml_index is None:
                self._gpu_reason = f"cannot map {self.device} to an NVML device: {how}"
                return
            self._gpu_handle = self._nvml.handle(nvml_index)
            self._gpu_how = f"{self.device} = NVML device {nvml_index} ({how})"
        self._gpu_reason = None

    def _gpu_processes(self) -> dict[int, int | None]:
        """pid -> used GPU memory of every process with a context on our GPU (NVML's
        compute, graphics and MPS lists)."""
        nv = self._nvml.nv
        out: dict[int, int | None] = {}
        got_any = False
        errors = []
        for fn in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses",
                   "nvmlDeviceGetMPSComputeRunningProcesses"):
            f = getattr(nv, fn, None)
            if f is None:
                continue
            try:
                rows = f(self._gpu_handle) or []
            except Exception as e:  # noqa: BLE001 - e.g. NVML_ERROR_NOT_SUPPORTED for graphics
                errors.append(f"{fn}: {type(e).__name__}: {e}")
                continue
            got_any = True
            for r in rows:
                pid = getattr(r, "pid", None)
                if isinstance(pid, int):
                    mem = getattr(r, "usedGpuMemory", None)
                    out[pid] = mem if isinstance(mem, int) else None
        if not got_any:
            raise RuntimeError("; ".join(errors) or "no NVML process list")
        return out

    def _close_gpu(self) -> None:
        if self._nvml_owned and self._nvml is not None:
            try:
                self._nvml.close()
            except Exception:  # noqa: BLE001
                pass
            self._nvml_owned = False

    # -- judging -------------------------------------------------------------------
    def _free_cores(self) -> int:
        return max(0, self.ncpu - (self.threads if self.threads is not None else self.ncpu))

    def _window(self, a: _Snapshot, b: _Snapshot) -> dict[str, Any]:
        dt = b.t - a.t
        w: dict[str, Any] = {"duration_s": _r(dt)}
        if dt <= 0:
            w.update(measurable=False, why="empty window")
            return w
        res = (2 * math.sqrt(self.ncpu) + 2) * self.tick_s / dt
        w["resolution_cores"] = _r(res)
        if b.psi_some_us is not None and a.psi_some_us is not None:
            w["cpu_pressure_some_share"] = _r((b.psi_some_us - a.psi_some_us) / 1e6 / dt)
        if None in (a.busy, b.busy, a.own, b.own):
            w.update(measurable=False, why="CPU counters unreadable (see evidence.errors)")
            return w
        busy_s = (b.busy - a.busy) * self.tick_s  # type: ignore[operator]
        own_s = (b.own - a.own) * self.tick_s  # type: ignore[operator]
        other = (busy_s - own_s) / dt
        free = self._free_cores()
        threshold = free + self.th["margin_cores"] + res
        steal_share = ((b.steal - a.steal) / (b.total - a.total)  # type: ignore[operator]
                       if (b.total or 0) > (a.total or 0) else 0.0)
        steal_threshold = self.th["steal_share"] + res / self.ncpu
        measurable = res <= self.th["max_resolution_cores"]
        w.update(
            other_cpu_cores=_r(other),
            own_cpu_cores=_r(own_s / dt),
            busy_cores=_r(busy_s / dt),
            threshold_cores=_r(threshold),
            steal_share=_r(steal_share),
            steal_threshold=_r(steal_threshold),
            measurable=measurable,
        )
        if not measurable:
            min_s = (2 * math.sqrt(self.ncpu) + 2) * self.tick_s / self.th["max_resolution_cores"]
            w["why"] = (f"{dt:.3f} s is too short for {self.tick_s * 1e3:g} ms jiffies on {self.ncpu} CPUs "
                        f"(resolution {res:.2f} cores; needs >= {min_s:.2f} s)")
        w["cpu_contended"] = bool(measurable and other > threshold)
        psi = w.get("cpu_pressure_some_share")
        # others used some of the cell's cores (less than the margin) while runnable
        # tasks waited for a CPU most of the time: e.g. 2 hogs against a 1-thread cell
        # on 2 cores, where fair sharing leaves the others only 1.33 cores
        w["pressure_contended"] = bool(measurable and not w["cpu_contended"] and psi is not None
                                       and psi > self.th["psi_intrusion_share"] and other > free + res)
        w["steal_contended"] = bool(measurable and steal_share > steal_threshold)
        return w

    def _top_others(self, a: _Snapshot, b: _Snapshot) -> list[dict[str, Any]] | None:
        if a.procs is None or b.procs is None or b.t <= a.t:
            return None
        fam = a.family | b.family
        rows = []
        for pid, p in b.procs.items():
            if pid in fam:
                continue
            q = a.procs.get(pid)
            d = p.ticks - (q.ticks if q is not None and q.start == p.start else 0)
            cores = d * self.tick_s / (b.t - a.t)
            if cores >= 0.05:
                rows.append({"pid": pid, "name": p.comm, "cpu_cores": _r(cores)})
        rows.sort(key=lambda r: -r["cpu_cores"])
        return rows[:TOP_OTHERS]

    def result(self) -> dict[str, Any]:
        """``{"detected": bool, "evidence": {...}, "reasons": [str], "rule": str}``
        (see the module doc); never raises. Closes an NVML session the probe opened."""
        self._close_gpu()
        try:
            return self._result()
        except Exception as e:  # noqa: BLE001 - a probe bug must not fail the cell
            return {"detected": False, "evidence": {"error": f"{type(e).__name__}: {e}"},
                    "reasons": [f"contention probe failed: {type(e).__name__}: {e}"], "rule": self.rule()}

    def rule(self) -> str:
        th = self.th
        return (f"contended if, in a window (pre: warm-up, loop: timed loop, cell: both) whose jiffy "
                f"resolution is <= {th['max_resolution_cores']:g} cores, other processes used more CPU than "
                f"free cores (ncpu - threads) + {th['margin_cores']:g} + resolution, or steal > "
                f"{th['steal_share']:.0%} + resolution/ncpu, or other processes used more than the free cores + "
                f"resolution while tasks waited for a CPU > {th['psi_intrusion_share']:.0%} of the window "
                f"(/proc/pressure/cpu); or another process is on the cell's GPU (NVML). The load average is "
                f"supporting evidence (it decides only without /proc/stat)")

    def _result(self) -> dict[str, Any]:
        free = self._free_cores()
        ev: dict[str, Any] = {
            "ncpu": self.ncpu,
            "cpus": _compact(self.cpus),
            "threads": self.threads,
            "free_cores": free,
            "tick_s": self.tick_s,
            "cpu_scope": self._cpu_scope,
            "thresholds": dict(self.th),
        }
        reasons: list[str] = []
        detected = False
        missing = [m for m in MARKS if m not in self.snaps]
        if missing:
            ev["missing_marks"] = missing
        errors = {f"{m}.{k}": v for m, s in self.snaps.items() for k, v in s.errors.items()}
        if errors:
            ev["errors"] = errors
        windows: dict[str, Any] = {}
        for name, (m0, m1) in WINDOWS.items():
            if m0 in self.snaps and m1 in self.snaps:
                windows[name] = self._window(self.snaps[m0], self.snaps[m1])
        ev["windows"] = windows
        tcount = self.threads if self.threads is not None else self.ncpu
        for name, w in windows.items():
            if w.get("cpu_contended"):
                detected = True
                reasons.append(
                    f"{name}: other processes used {w['other_cpu_cores']:.2f} cores of {self.ncpu} while the cell "
                    f"ran {tcount} thread(s) ({free} core(s) free; threshold {w['threshold_cores']:.2f})")
            if w.get("pressure_contended"):
                detected = True
                reasons.append(
                    f"{name}: other processes used {w['other_cpu_cores']:.2f} cores of {self.ncpu} (more than the "
                    f"{free} core(s) the cell leaves free) and tasks waited for a CPU "
                    f"{w['cpu_pressure_some_share']:.0%} of the time (/proc/pressure/cpu)")
            if w.get("steal_contended"):
                detected = True
                reasons.append(f"{name}: CPU steal {w['steal_share']:.1%} of our CPUs' time "
                               f"(threshold {w['steal_threshold']:.1%}): the hypervisor ran other guests")
        measurable = [w for w in windows.values() if w.get("measurable")]
        if windows and not measurable:
            ev["cpu_verdict"] = "not measurable: windows too short for the jiffy resolution"

        # load average: supporting, or the fallback when no window could be measured
        loads = {m: s.load1 for m, s in self.snaps.items() if s.load1 is not None}
        if loads:
            ev["loadavg_1m"] = loads
            peak = max(loads.values())
            # the cell's own runnable threads are at most min(threads, ncpu) of it; the
            # rest is others' (and it lags ~1 min, so it is a hint, not a measurement)
            expected = min(tcount, self.ncpu) + free + self.th["load_margin"]
            ev["loadavg_expected_max"] = _r(expected)
            if peak > expected:
                text = (f"1-min load average {peak:.2f} on {self.ncpu} CPUs exceeds {expected:.2f} "
                        f"(the cell's {min(tcount, self.ncpu)} thread(s) + {free} free core(s) + "
                        f"{self.th['load_margin']:g})")
                if not measurable and "proc_stat" in "".join(errors):
                    detected = True
                    reasons.append(text + " [fallback: /proc/stat unreadable]")
                else:
                    reasons.append("supporting: " + text)
        for name, w in windows.items():
            psi = w.get("cpu_pressure_some_share")
            if name == "cell" and psi is not None and psi > self.th["psi_share"]:
                reasons.append(f"supporting: tasks waited for a CPU {psi:.0%} of the cell window "
                               "(/proc/pressure/cpu some, system-wide, includes the cell's own threads)")

        if "warmup_start" in self.snaps and "loop_end" in self.snaps:
            top = self._top_others(self.snaps["warmup_start"], self.snaps["loop_end"])
            if top is not None:
                ev["top_other_processes"] = top

        if self.device.startswith("cuda"):
            gpu: dict[str, Any] = {"device": self.device}
            if self._gpu_reason is not None:
                gpu["reason"] = self._gpu_reason
            else:
                gpu["mapping"] = self._gpu_how
                seen: dict[int, int | None] = {}
                for s in self.snaps.values():
                    seen.update(s.gpu_pids or {})
                fam = set().union(*(s.family for s in self.snaps.values())) | {self.pid} | self.exclude
                others = {p: m for p, m in seen.items() if p not in fam}
                n_others = len(others)
                if seen and not (seen.keys() & fam):
                    # NVML reports host PIDs; in a container (own PID namespace) none of
                    # them is ours although our context is there: count one entry as ours
                    gpu["note"] = ("none of NVML's PIDs is this process (PID namespace?): one of them is "
                                   "assumed to be this process")
                    n_others -= 1
                gpu["other_processes"] = [{"pid": p, "used_gpu_memory_bytes": m} for p, m in sorted(others.items())]
                gpu["other_process_count"] = n_others
                gpu["source"] = "NVML compute/graphics/MPS running-process lists at the marks"
                if n_others > 0:
                    detected = True
                    reasons.append(f"{n_others} other process(es) with a context on {self.device}: pids "
                                   f"{', '.join(str(p) for p in sorted(others))}")
            ev["gpu"] = gpu
        if detected and ev.get("top_other_processes"):
            reasons.append("busiest other processes: " + ", ".join(
                f"{r['name']} (pid {r['pid']}, {r['cpu_cores']:.2f} cores)" for r in ev["top_other_processes"]))
        return {"detected": detected, "evidence": ev, "reasons": reasons, "rule": self.rule()}


def parse_cpu_list(text: str) -> set[int]:
    """"0-2,5" -> {0, 1, 2, 5} (the kernel's list format)."""
    out: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        a, _, b = part.partition("-")
        out.update(range(int(a), int(b or a) + 1))
    return out


def process_cpus(proc_root: Path = Path("/proc"), pid: int | None = None) -> list[int]:
    """The CPUs the process may run on: the union of its threads' affinity masks
    (``Cpus_allowed_list``). Not ``os.sched_getaffinity(0)`` alone: that is the calling
    thread's mask, and OpenMP thread binding (``OMP_PROC_BIND``) pins the main thread to
    one CPU while the team runs on all of them."""
    pid = os.getpid() if pid is None else pid
    cpus: set[int] = set()
    try:
        for task in os.listdir(Path(proc_root) / str(pid) / "task"):
            try:
                for line in _read(Path(proc_root) / str(pid) / "task" / task / "status").splitlines():
                    if line.startswith("Cpus_allowed_list:"):
                        cpus |= parse_cpu_list(line.split(":", 1)[1])
            except (OSError, ValueError):
                continue
    except OSError:
        pass
    if not cpus:
        try:
            cpus = set(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cpus = set(range(os.cpu_count() or 1))
    return sorted(cpus)


def _descendants(procs: Mapping[int, _Proc], root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, p in procs.items():
        children.setdefault(p.ppid, []).append(pid)
    out: set[int] = set()
    stack = list(children.get(root, ()))
    while stack:
        p = stack.pop()
        if p not in out and p != root:
            out.add(p)
            stack.extend(children.get(p, ()))
    return out


def _clk_tck() -> int:
    try:
        return int(os.sysconf("SC_CLK_TCK"))
    except (ValueError, OSError, AttributeError):
        return 100


def _r(x: float) -> float:
    return round(float(x), 4)


def _compact(cpus: list[int]) -> str:
    """[0, 1, 2, 5] -> "0-2,5" (the affinity mask as taskset prints it)."""
    out, i = [], 0
    while i < len(cpus):
        j = i
        while j + 1 < len(cpus) and cpus[j + 1] == cpus[j] + 1:
            j += 1
        out.append(str(cpus[i]) if i == j else f"{cpus[i]}-{cpus[j]}")
        i = j + 1
    return ",".join(out)


# -- mitigation ----------------------------------------------------------------------
# Environment variables that steer the threading runtimes: a user who set one keeps it,
# and every one set is recorded with the policy.
THREAD_ENV_PREFIXES = ("OMP_", "GOMP_", "KMP_", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
BUSY_MARGIN_CORES = 0.5  # others' CPU above the free cores that makes a machine "busy" at start


def thread_policy(settings_threads: int | None, ncpu: int, *, other_cores: float | None = None,
                  environ: Mapping[str, str] | None = None) -> tuple[dict[str, str], dict[str, Any]]:
    """The thread policy of one worker: (environment variables to set before the worker
    imports a framework, the record of the policy for the cell's ``runtime``).

    ``settings_threads``: the run's ``--threads`` (None: the framework's default). It is
    never changed: a different default thread count would change every user's numbers,
    and the measurements (docs/contention.md) do not justify it. ``ncpu``: the CPUs of the
    worker's affinity mask. ``other_cores``: CPU that other processes used just before
    the worker starts (:func:`sample_other_cpu`; None: not sampled).

    The decision, from bench/contention.py on a 2-core machine: OpenMP's default
    (idle threads spin before sleeping) is the fastest on a quiet machine (the number
    deployment sees; ``OMP_WAIT_POLICY=PASSIVE`` costs 1.4-1.8x on tiny cells there), but
    on a busy machine spinning teams made tiny and small cells 13-185x slower, where
    PASSIVE kept them within 2.6x. So: OpenMP's default when the machine is quiet at the
    start of the cell, PASSIVE when others already use more than the cores the cell
    leaves free (+ :data:`BUSY_MARGIN_CORES`). Such a cell is contended and flagged
    anyway; the policy only keeps its number from being absurd. A user's own
    ``OMP_WAIT_POLICY`` is kept; every threading variable in ``environ`` (default
    ``os.environ``) is recorded.
    """
    if settings_threads is not None and (isinstance(settings_threads, bool) or settings_threads < 1):
        raise ValueError(f"threads must be >= 1 or None, got {settings_threads}")
    if ncpu < 1:
        raise ValueError(f"ncpu must be >= 1, got {ncpu}")
    environ = os.environ if environ is None else environ
    user_env = {k: v for k, v in environ.items() if k.startswith(THREAD_ENV_PREFIXES)}
    threads_used = settings_threads if settings_threads is not None else ncpu
    free = max(0, ncpu - threads_used)
    busy = other_cores is not None and other_cores > free + BUSY_MARGIN_CORES
    env: dict[str, str] = {}
    if "OMP_WAIT_POLICY" in user_env:
        name, wait = "user", user_env["OMP_WAIT_POLICY"]
        why = f"OMP_WAIT_POLICY={wait} set by the user (kept)"
    elif busy:
        name, wait = "omp-passive-busy", "PASSIVE"
        env["OMP_WAIT_POLICY"] = wait
        why = (f"other processes used {other_cores:.2f} cores of {ncpu} before the cell started "
               f"(> {free} free + {BUSY_MARGIN_CORES:g}): idle OpenMP threads sleep instead of spinning, "
               "which kept cells within 2.6x instead of 13-185x slower on a busy machine (docs/contention.md)")
    else:
        name, wait = "framework-default", None
        why = ("quiet machine at the start of the cell" if other_cores is not None else "machine load not sampled"
               ) + ": OpenMP's default wait policy (spin, then sleep), the fastest on a quiet machine"
    record: dict[str, Any] = {
        "name": name,
        "omp_wait_policy": wait,
        "threads": settings_threads,
        "threads_source": "--threads" if settings_threads is not None else "framework default",
        "ncpu": ncpu,
        "other_cpu_cores_at_start": None if other_cores is None else round(other_cores, 3),
        "why": why,
        "user_env": user_env,
    }
    if settings_threads is not None and settings_threads > ncpu:
        record["warning"] = f"{settings_threads} threads on {ncpu} CPUs oversubscribe them"
    return env, record


def sample_other_cpu(seconds: float = 0.25, *, proc_root: Path | str = Path("/proc"),
                     cpus: Iterable[int] | None = None, pid: int | None = None,
                     clock: Callable[[], float] = time.monotonic,
                     sleep: Callable[[float], None] = time.sleep, clk_tck: int | None = None) -> float | None:
    """CPU (cores) that processes other than ``pid`` (default: this one) used on
    ``cpus`` (default: our affinity) over ``seconds``, for :func:`thread_policy`; None
    where ``/proc`` cannot be read. Call it while the caller is idle (the runner between
    workers): it sleeps for the window. At 0.25 s the jiffy resolution is ~0.2 cores on
    2 CPUs, inside :data:`BUSY_MARGIN_CORES`."""
    root = Path(proc_root)
    pid = os.getpid() if pid is None else pid
    cpus = process_cpus(root, pid) if cpus is None else sorted(set(cpus))
    tick = 1.0 / (clk_tck or _clk_tck())

    def read() -> tuple[float, int, int]:
        busy = parse_proc_stat(_read(root / "stat"), cpus)[0]
        own = parse_pid_stat(_read(root / str(pid) / "stat")).ticks
        return clock(), busy, own

    try:
        t0, b0, o0 = read()
        sleep(seconds)
        t1, b1, o1 = read()
    except (OSError, ValueError, IndexError):
        return None
    if t1 <= t0:
        return None
    return max(0.0, ((b1 - b0) - (o1 - o0)) * tick / (t1 - t0))


class IdleWindow:
    """:func:`sample_other_cpu` over the runner's own time between cells.

    The runner is idle between two workers except for its bookkeeping (the result file,
    the progress line), whose CPU is its own and is subtracted like the rest of its
    ticks. So the window opens when a worker has exited (:meth:`open`) and the next
    cell's :meth:`other_cores` closes it, sleeping only for what is left of ``seconds``:
    the same window length and rule as a separate sample, without adding ``seconds`` of
    idle time to every cell. A machine that is clearly quiet decides early: when other
    processes used at most ``quiet_cores`` over the first ``quiet_after_s`` (at 100 Hz on
    2 CPUs, at most 2 ticks in 0.1 s, where one busy process shows 10), the window ends
    there; anything more runs the full ``seconds``, whose resolution the busy rule
    was set for. A window older than ``max_age_s`` (a long pause between cells) is
    replaced by a fresh sample, so the decision stays about the moment the cell starts.
    ``last_window_s`` is the length of the last window (None: no sample)."""

    def __init__(self, seconds: float = 0.25, max_age_s: float = 2.0, *, quiet_after_s: float = 0.1,
                 quiet_cores: float = 0.1, proc_root: Path | str = Path("/proc"),
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 pid: int | None = None) -> None:
        self.seconds = float(seconds)
        self.max_age_s = float(max_age_s)
        self.quiet_after_s = min(float(quiet_after_s), self.seconds)
        self.quiet_cores = float(quiet_cores)
        self.last_window_s: float | None = None
        self._pid = pid
        self._root = Path(proc_root)
        self._clock = clock
        self._sleep = sleep
        self._start: tuple[float, int, int, list[int], int] | None = None

    def _state(self, pid: int, cpus: list[int]) -> tuple[float, int, int]:
        busy = parse_proc_stat(_read(self._root / "stat"), cpus)[0]
        own = parse_pid_stat(_read(self._root / str(pid) / "stat")).ticks
        return self._clock(), busy, own

    def open(self) -> None:
        """Start the window now (a worker just exited); never raises."""
        pid = self._pid or os.getpid()
        try:
            cpus = process_cpus(self._root, pid)
            t, busy, own = self._state(pid, cpus)
        except (OSError, ValueError, IndexError):
            self._start = None
            return
        self._start = (t, busy, own, cpus, pid)

    def other_cores(self) -> float | None:
        """Cores that other processes used since :meth:`open` (over ``quiet_after_s``
        when that shows a quiet machine, else at least ``seconds``; a fresh
        :func:`sample_other_cpu` when no window is open or it is too old). The window
        closes."""
        start, self._start = self._start, None
        pid_now = self._pid or os.getpid()  # a forked copy of the runner has its own window
        if start is None or start[4] != pid_now or self._clock() - start[0] > self.max_age_s:
            got = sample_other_cpu(self.seconds, proc_root=self._root, clock=self._clock, sleep=self._sleep,
                                   pid=pid_now)
            self.last_window_s = None if got is None else self.seconds
            return got
        t0, b0, o0, cpus, pid = start
        tick = 1.0 / _clk_tck()
        self.last_window_s = None
        for until, final in ((self.quiet_after_s, False), (self.seconds, True)):
            if not final and until >= self.seconds:
                continue
            left = until - (self._clock() - t0)
            if left > 0:
                self._sleep(left)
            try:
                t1, b1, o1 = self._state(pid, cpus)
            except (OSError, ValueError, IndexError):
                return None
            if t1 <= t0:
                return None
            cores = max(0.0, ((b1 - b0) - (o1 - o0)) * tick / (t1 - t0))
            if final or cores <= self.quiet_cores:
                self.last_window_s = round(t1 - t0, 4)
                return cores
        return None  # pragma: no cover - the final pass returns
