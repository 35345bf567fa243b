"""Contention detection (harness.core.contention) against a fake /proc tree and an
autospec'd pynvml, plus one real end-to-end check with busy-loop processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pynvml
import pytest

from harness.core.contention import (ContentionProbe, parse_pid_stat, parse_proc_stat, process_cpus, sample_other_cpu,
                                thread_policy)
from harness.core.hw.nvml import open_nvml
from harness.core.timing import TimingConfig, measure
from tests.test_nvml import A100, fake_nvml

PID = 4000  # "this process" in the fake tree
HZ = 100


@dataclass
class State:
    """Cumulative counters at one mark. ``cpus``: per CPU (busy, idle, steal) ticks;
    ``procs``: pid -> (ppid, name, utime+stime ticks, cutime ticks)."""

    cpus: list[tuple[int, int, int]]
    procs: dict[int, tuple[int, str, int, int]] = field(default_factory=dict)
    load1: float = 0.1
    psi_us: int = 0


def write_proc(root: Path, st: State) -> None:
    lines = ["cpu  " + " ".join(["0"] * 10)]  # aggregate line (not used when per-CPU lines match)
    for i, (busy, idle, steal) in enumerate(st.cpus):
        # user nice system idle iowait irq softirq steal guest guest_nice
        lines.append(f"cpu{i} {busy - busy // 4} 0 {busy // 4} {idle} 0 0 0 {steal} 0 0")
    lines += ["intr 0", "ctxt 0", "procs_running 1"]
    (root / "stat").write_text("\n".join(lines) + "\n")
    (root / "loadavg").write_text(f"{st.load1:.2f} 0.50 0.40 1/100 {PID}\n")
    (root / "pressure").mkdir(exist_ok=True)
    (root / "pressure" / "cpu").write_text(
        f"some avg10=0.00 avg60=0.00 avg300=0.00 total={st.psi_us}\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")
    for d in root.iterdir():
        if d.name.isdigit() and int(d.name) not in st.procs:
            for f in d.iterdir():
                f.unlink()
            d.rmdir()
    for pid, (ppid, name, ticks, cticks) in st.procs.items():
        (root / str(pid)).mkdir(exist_ok=True)
        # fields: pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt
        # cmajflt utime stime cutime cstime priority nice threads itrealvalue starttime ...
        (root / str(pid) / "stat").write_text(
            f"{pid} ({name}) R {ppid} {pid} {pid} 0 -1 0 0 0 0 0 {ticks - ticks // 3} {ticks // 3} "
            f"{cticks} 0 20 0 1 0 {1000 + pid} 0 0\n")


class Clock:
    def __init__(self, times: list[float]) -> None:
        self.times = list(times)

    def __call__(self) -> float:
        return self.times.pop(0)


def probe_over(tmp_path: Path, states: list[State], times: list[float], threads: int | None = 2,
               **kw) -> dict:
    """Run a probe over the three marks, the fake /proc showing ``states[i]`` at mark i."""
    kw.setdefault("cpus", range(len(states[0].cpus)))
    probe = ContentionProbe(threads=threads, device=kw.pop("device", "cpu"), proc_root=tmp_path,
                            clock=Clock(times), pid=PID, clk_tck=HZ, **kw)
    for st, event in zip(states, ("warmup_start", "loop_start", "loop_end")):
        write_proc(tmp_path, st)
        probe.mark(event)
    return probe.result()


def two_cpus(busy0: int, busy1: int, idle: int = 0, steal: int = 0) -> list[tuple[int, int, int]]:
    return [(busy0, idle, steal), (busy1, idle, steal)]


# -- the rule, on a fake /proc -------------------------------------------------------
def test_busy_other_process_is_detected_with_evidence(tmp_path):
    # 2 CPUs fully busy for 1 s per window; the cell (2 threads) got 1.2 cores, a hog 0.8
    states = [
        State(two_cpus(1000, 1000), {PID: (1, "python", 500, 0), 77: (1, "stress", 900, 0)}),
        State(two_cpus(1100, 1100), {PID: (1, "python", 620, 0), 77: (1, "stress", 980, 0)}),
        State(two_cpus(1200, 1200), {PID: (1, "python", 740, 0), 77: (1, "stress", 1060, 0)}),
    ]
    rec = probe_over(tmp_path, states, [10.0, 11.0, 12.0])
    assert rec["detected"] is True
    loop = rec["evidence"]["windows"]["loop"]
    assert loop["other_cpu_cores"] == pytest.approx(0.8) and loop["own_cpu_cores"] == pytest.approx(1.2)
    assert loop["busy_cores"] == pytest.approx(2.0) and loop["cpu_contended"] is True
    assert loop["threshold_cores"] == pytest.approx(0 + 0.25 + (2 * 2**0.5 + 2) / 100, abs=1e-3)
    assert rec["evidence"]["free_cores"] == 0 and rec["evidence"]["ncpu"] == 2
    assert rec["evidence"]["top_other_processes"] == [{"pid": 77, "name": "stress", "cpu_cores": 0.8}]
    assert any(r.startswith("loop: other processes used 0.80 cores of 2") for r in rec["reasons"])
    assert any("stress (pid 77" in r for r in rec["reasons"])
    assert "ncpu - threads" in rec["rule"]


def test_idle_machine_is_not_contended(tmp_path):
    # the cell uses 1.9 cores, background 0.05 cores (kernel threads, the parent runner)
    states = [
        State(two_cpus(1000, 1000, idle=500), {PID: (1, "python", 500, 0)}),
        State(two_cpus(1097, 1098, idle=505), {PID: (1, "python", 690, 0)}),
        State(two_cpus(1195, 1195, idle=510), {PID: (1, "python", 880, 0)}),
    ]
    rec = probe_over(tmp_path, states, [0.0, 1.0, 2.0])
    assert rec["detected"] is False and rec["reasons"] == []
    for w in rec["evidence"]["windows"].values():
        assert w["measurable"] and not w["cpu_contended"] and w["other_cpu_cores"] < 0.1


def test_cores_the_cell_leaves_free_absorb_other_work(tmp_path):
    # a 1-thread cell on 2 CPUs: a hog on the other core is not contention
    states = [
        State(two_cpus(1000, 1000), {PID: (1, "python", 500, 0), 77: (1, "hog", 500, 0)}),
        State(two_cpus(1100, 1100), {PID: (1, "python", 600, 0), 77: (1, "hog", 600, 0)}),
        State(two_cpus(1200, 1200), {PID: (1, "python", 700, 0), 77: (1, "hog", 700, 0)}),
    ]
    rec = probe_over(tmp_path, states, [0.0, 1.0, 2.0], threads=1)
    assert rec["detected"] is False
    assert rec["evidence"]["free_cores"] == 1 and rec["evidence"]["windows"]["loop"]["other_cpu_cores"] == 1.0
    # the same load against a 2-thread cell is contention
    assert probe_over(tmp_path, states, [0.0, 1.0, 2.0], threads=2)["detected"] is True


def test_others_on_the_cells_cores_with_cpu_pressure(tmp_path):
    # 1-thread cell, 2 hogs: the others got 1.25 cores (inside the margin of the first rule)
    # while tasks waited for a CPU all the time: the pressure rule catches it
    states = [State(two_cpus(1000 + 100 * i, 1000 + 100 * i), {PID: (1, "python", 500 + 75 * i, 0)},
                    psi_us=10**6 * i) for i in range(3)]
    rec = probe_over(tmp_path, states, [0.0, 1.0, 2.0], threads=1)
    loop = rec["evidence"]["windows"]["loop"]
    assert not loop["cpu_contended"] and loop["pressure_contended"] and rec["detected"] is True
    assert any("waited for a CPU 100% of the time" in r for r in rec["reasons"])
    # without pressure (e.g. the others slept half the time) it stays undetected
    for st in states:
        st.psi_us = 0
    assert probe_over(tmp_path, states, [0.0, 1.0, 2.0], threads=1)["detected"] is False


def test_steal_is_detected(tmp_path):
    # the cell owns every busy tick, but the hypervisor stole 10% of the CPUs' time
    states = [State(two_cpus(1000 + 90 * i, 1000 + 90 * i, steal=10 * i), {PID: (1, "python", 500 + 180 * i, 0)})
              for i in range(3)]
    rec = probe_over(tmp_path, states, [0.0, 1.0, 2.0])
    loop = rec["evidence"]["windows"]["loop"]
    assert loop["steal_share"] == pytest.approx(0.1) and loop["steal_contended"] and not loop["cpu_contended"]
    assert rec["detected"] is True and any("steal 10.0%" in r for r in rec["reasons"])


def test_window_too_short_for_jiffies_raises_no_alarm(tmp_path):
    # 20 ms windows: one stray tick of someone else is "0.5 cores" but means nothing
    states = [
        State(two_cpus(1000, 1000), {PID: (1, "python", 500, 0)}),
        State(two_cpus(1002, 1002), {PID: (1, "python", 503, 0)}),
        State(two_cpus(1004, 1004), {PID: (1, "python", 506, 0)}),
    ]
    rec = probe_over(tmp_path, states, [0.0, 0.02, 0.04])
    assert rec["detected"] is False
    loop = rec["evidence"]["windows"]["loop"]
    assert loop["other_cpu_cores"] == pytest.approx(0.5) and loop["measurable"] is False
    assert "too short for 10 ms jiffies" in loop["why"] and loop["resolution_cores"] > 0.5
    assert rec["evidence"]["cpu_verdict"].startswith("not measurable")


def test_short_loop_is_judged_from_the_longer_cell_window(tmp_path):
    # a 1 s warm-up with a hog, then a 20 ms loop: the loop decides nothing, the cell
    # window (warm-up + loop) shows the hog
    states = [
        State(two_cpus(1000, 1000), {PID: (1, "python", 500, 0)}),
        State(two_cpus(1100, 1100), {PID: (1, "python", 620, 0)}),
        State(two_cpus(1101, 1101), {PID: (1, "python", 621, 0)}),
    ]
    rec = probe_over(tmp_path, states, [0.0, 1.0, 1.02])
    w = rec["evidence"]["windows"]
    assert not w["loop"]["measurable"] and w["pre"]["cpu_contended"] and w["cell"]["cpu_contended"]
    assert rec["detected"] is True


def test_descendants_and_reaped_children_count_as_the_cell(tmp_path):
    # the cell's child (e.g. a compile worker) uses 1 core, then exits and is reaped:
    # its time moves into our cutime. Not another process's CPU.
    states = [
        State(two_cpus(1000, 1000), {PID: (1, "python", 500, 0), 4001: (PID, "compile", 50, 0)}),
        State(two_cpus(1100, 1100), {PID: (1, "python", 600, 0), 4001: (PID, "compile", 150, 0)}),
        State(two_cpus(1200, 1200), {PID: (1, "python", 700, 250)}),
    ]
    rec = probe_over(tmp_path, states, [0.0, 1.0, 2.0])
    w = rec["evidence"]["windows"]
    assert w["loop"]["other_cpu_cores"] == pytest.approx(0.0) and w["pre"]["other_cpu_cores"] == pytest.approx(0.0)
    assert rec["detected"] is False and rec["evidence"]["top_other_processes"] == []


def test_other_process_reaping_its_child_is_not_charged_to_the_window(tmp_path):
    # a shell reaps a 9-CPU-second job that ran before the window: its cutime jumps,
    # but that is not CPU used in the window
    states = [State(two_cpus(1000 + 100 * i, 1000 + 100 * i, idle=0), {PID: (1, "python", 500 + 195 * i, 0),
                    50: (1, "bash", 10, 900 * (i == 2))}) for i in range(3)]
    rec = probe_over(tmp_path, states, [0.0, 1.0, 2.0])
    assert rec["evidence"]["top_other_processes"] == [] and rec["detected"] is False


def test_only_cpus_in_the_affinity_mask_count(tmp_path):
    # 4 CPUs, the cell may run on 0-1; CPUs 2-3 are busy with someone else's job
    states = [State([(1000 + 100 * i, 0, 0), (1000 + 100 * i, 0, 0), (1000 + 100 * i, 0, 0), (1000 + 100 * i, 0, 0)],
                    {PID: (1, "python", 500 + 195 * i, 0)}) for i in range(3)]
    rec = probe_over(tmp_path, states, [0.0, 1.0, 2.0], cpus=[0, 1])
    assert rec["detected"] is False and rec["evidence"]["ncpu"] == 2 and rec["evidence"]["cpus"] == "0-1"
    assert rec["evidence"]["windows"]["loop"]["busy_cores"] == pytest.approx(2.0)
    rec4 = probe_over(tmp_path, states, [0.0, 1.0, 2.0], cpus=[0, 1, 2, 3], threads=4)
    assert rec4["detected"] is True


def test_loadavg_is_supporting_and_decides_only_without_proc_stat(tmp_path):
    states = [State(two_cpus(1000 + 100 * i, 1000 + 100 * i), {PID: (1, "python", 500 + 198 * i, 0)}, load1=6.0)
              for i in range(3)]
    rec = probe_over(tmp_path, states, [0.0, 1.0, 2.0])
    assert rec["detected"] is False  # /proc/stat says the CPUs were ours: the load is stale
    assert any(r.startswith("supporting: 1-min load average 6.00") for r in rec["reasons"])
    assert rec["evidence"]["loadavg_1m"]["loop_end"] == 6.0

    probe = ContentionProbe(threads=2, proc_root=tmp_path, clock=Clock([0.0, 1.0, 2.0]), pid=PID, clk_tck=HZ,
                            cpus=[0, 1])
    (tmp_path / "stat").unlink()
    for ev in ("warmup_start", "loop_start", "loop_end"):
        probe.mark(ev)
    rec = probe.result()
    assert rec["detected"] is True and "fallback" in rec["reasons"][0]
    assert "loop_end.proc_stat" in rec["evidence"]["errors"]


def test_unreadable_proc_never_raises(tmp_path):
    probe = ContentionProbe(threads=2, proc_root=tmp_path / "missing", pid=PID, cpus=[0, 1])
    for ev in ("warmup_start", "loop_start", "loop_end"):
        probe.mark(ev)
    rec = probe.result()
    assert rec["detected"] is False and rec["evidence"]["errors"]
    assert all(not w["measurable"] for w in rec["evidence"]["windows"].values())
    # a probe that saw no marks (the cell failed before timing) says so
    rec = ContentionProbe(threads=1, proc_root=tmp_path, cpus=[0]).result()
    assert rec["detected"] is False and rec["evidence"]["missing_marks"] == ["warmup_start", "loop_start", "loop_end"]


def test_parsers():
    p = parse_pid_stat("42 (my (odd) name) S 7 42 42 0 -1 0 0 0 0 0 30 12 5 1 20 0 3 0 999 0 0")
    assert (p.ppid, p.comm, p.ticks, p.child_ticks, p.start) == (7, "my (odd) name", 42, 6, 999)
    text = "cpu  9 9 9 9 9 9 9 9 9 9\ncpu0 10 1 5 100 7 2 3 4 6 0\ncpu1 1 1 1 1 1 1 1 1 1 1\n"
    assert parse_proc_stat(text, [0])[:3] == (10 + 1 + 5 + 2 + 3, 10 + 1 + 5 + 2 + 3 + 100 + 7 + 4, 4)
    assert "aggregate" in parse_proc_stat(text, [5])[3]


# -- GPUs: NVML faked at the pynvml boundary ------------------------------------------
def nvml_with_processes(compute: list, graphics_error: bool = True):
    mod = fake_nvml([A100])
    mod.nvmlDeviceGetComputeRunningProcesses.return_value = compute
    if graphics_error:
        mod.nvmlDeviceGetGraphicsRunningProcesses.side_effect = pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
    else:
        mod.nvmlDeviceGetGraphicsRunningProcesses.return_value = []
    mod.nvmlDeviceGetMPSComputeRunningProcesses.return_value = []
    return mod


def idle_states() -> list[State]:
    return [State(two_cpus(1000 + 10 * i, 1000 + 10 * i, idle=180 * i), {PID: (1, "python", 500 + 20 * i, 0)})
            for i in range(3)]


def test_other_process_on_the_gpu_is_detected(tmp_path):
    mod = nvml_with_processes([SimpleNamespace(pid=PID, usedGpuMemory=2 << 30),
                               SimpleNamespace(pid=31337, usedGpuMemory=5 << 30)])
    rec = probe_over(tmp_path, idle_states(), [0.0, 1.0, 2.0], device="cuda:0", nvml=open_nvml(mod), env={})
    gpu = rec["evidence"]["gpu"]
    assert rec["detected"] is True and gpu["other_process_count"] == 1
    assert gpu["other_processes"] == [{"pid": 31337, "used_gpu_memory_bytes": 5 << 30}]
    assert "NVML device 0" in gpu["mapping"]
    assert any("other process(es) with a context on cuda:0: pids 31337" in r for r in rec["reasons"])
    mod.nvmlDeviceGetComputeRunningProcesses.assert_called_with("h0")


def test_alone_on_the_gpu_is_not_contended(tmp_path):
    mod = nvml_with_processes([SimpleNamespace(pid=PID, usedGpuMemory=2 << 30)], graphics_error=False)
    rec = probe_over(tmp_path, idle_states(), [0.0, 1.0, 2.0], device="cuda:0", nvml=open_nvml(mod), env={})
    assert rec["detected"] is False and rec["evidence"]["gpu"]["other_processes"] == []


def test_gpu_pid_namespace_counts_one_entry_as_ours(tmp_path):
    # in a container NVML reports host PIDs: neither is ours, one of them must be
    mod = nvml_with_processes([SimpleNamespace(pid=900001, usedGpuMemory=1),
                               SimpleNamespace(pid=900002, usedGpuMemory=1)])
    rec = probe_over(tmp_path, idle_states(), [0.0, 1.0, 2.0], device="cuda:0", nvml=open_nvml(mod), env={})
    gpu = rec["evidence"]["gpu"]
    assert gpu["other_process_count"] == 1 and "PID namespace" in gpu["note"] and rec["detected"] is True
    mod1 = nvml_with_processes([SimpleNamespace(pid=900001, usedGpuMemory=1)])
    assert probe_over(tmp_path, idle_states(), [0.0, 1.0, 2.0], device="cuda:0", nvml=open_nvml(mod1),
                      env={})["detected"] is False


def test_no_nvml_gives_the_reason(tmp_path):
    mod = fake_nvml([])
    mod.nvmlInit.side_effect = pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    rec = probe_over(tmp_path, idle_states(), [0.0, 1.0, 2.0], device="cuda:0", nvml=open_nvml(mod), env={})
    assert rec["detected"] is False and "NVML unavailable" in rec["evidence"]["gpu"]["reason"]


# -- the thread policy ------------------------------------------------------------------
def test_thread_policy_quiet_machine_keeps_openmp_defaults():
    env, rec = thread_policy(None, 2, other_cores=0.05, environ={})
    assert env == {} and rec["name"] == "framework-default" and rec["omp_wait_policy"] is None
    assert rec["threads"] is None and rec["threads_source"] == "framework default" and "quiet" in rec["why"]
    env, rec = thread_policy(1, 2, environ={})  # not sampled: defaults, said so
    assert env == {} and rec["threads"] == 1 and "not sampled" in rec["why"]


def test_thread_policy_busy_machine_makes_openmp_passive():
    env, rec = thread_policy(None, 2, other_cores=1.1, environ={})
    assert env == {"OMP_WAIT_POLICY": "PASSIVE"} and rec["name"] == "omp-passive-busy"
    assert rec["other_cpu_cores_at_start"] == 1.1 and "1.10 cores" in rec["why"]
    # a 1-thread cell leaves a core free: one busy core is not "busy" for it
    assert thread_policy(1, 2, other_cores=1.1, environ={})[0] == {}
    assert thread_policy(1, 2, other_cores=1.6, environ={})[0] == {"OMP_WAIT_POLICY": "PASSIVE"}
    with pytest.raises(ValueError):
        thread_policy(0, 2)


def test_thread_policy_respects_and_records_the_users_environment():
    user = {"OMP_WAIT_POLICY": "ACTIVE", "OMP_PROC_BIND": "close", "PATH": "/bin"}
    env, rec = thread_policy(None, 2, other_cores=2.0, environ=user)
    assert env == {} and rec["name"] == "user" and rec["omp_wait_policy"] == "ACTIVE" and "user" in rec["why"]
    assert rec["user_env"] == {"OMP_WAIT_POLICY": "ACTIVE", "OMP_PROC_BIND": "close"}


def test_sample_other_cpu_from_a_fake_proc(tmp_path):
    states = iter([State(two_cpus(1000, 1000), {PID: (1, "harness", 300, 0)}),
                   State(two_cpus(1030, 1030), {PID: (1, "harness", 301, 0)})])
    write_proc(tmp_path, next(states))
    got = sample_other_cpu(0.25, proc_root=tmp_path, cpus=[0, 1], pid=PID, clock=Clock([0.0, 0.25]),
                           sleep=lambda s: write_proc(tmp_path, next(states)), clk_tck=HZ)
    assert got == pytest.approx((60 - 1) / 100 / 0.25)
    assert sample_other_cpu(0.1, proc_root=tmp_path / "none", cpus=[0], pid=PID, sleep=lambda s: None) is None


def test_idle_window_counts_the_runners_time_between_cells_and_sleeps_only_the_rest(tmp_path):
    from harness.core.contention import IdleWindow

    (tmp_path / str(PID) / "task" / str(PID)).mkdir(parents=True)
    (tmp_path / str(PID) / "task" / str(PID) / "status").write_text("Cpus_allowed_list:\t0-1\n")
    slept: list[float] = []
    # opened at t=0 (a worker exited), 0.1 s of bookkeeping (the runner's own 5 ticks are
    # not "others"), closed at t=0.1: sleeps the 0.15 s left of the 0.25 s window
    write_proc(tmp_path, State(two_cpus(1000, 1000), {PID: (1, "harness", 300, 0)}))
    # (others busy at the early look too, so the full window runs)
    win = IdleWindow(0.25, proc_root=tmp_path, clock=Clock([0.0, 0.1, 0.1, 0.1, 0.1, 0.25]), sleep=slept.append,
                     pid=PID)
    win.open()
    write_proc(tmp_path, State(two_cpus(1030, 1030), {PID: (1, "harness", 305, 0)}))
    assert win.other_cores() == pytest.approx((60 - 5) / 100 / 0.25)
    assert slept == [pytest.approx(0.15)] and win.last_window_s == 0.25
    # a clearly quiet machine (only the runner's own ticks) decides after 0.1 s
    slept.clear()
    win = IdleWindow(0.25, proc_root=tmp_path, clock=Clock([0.0, 0.02, 0.02, 0.1]), sleep=slept.append, pid=PID)
    win.open()
    write_proc(tmp_path, State(two_cpus(1033, 1032), {PID: (1, "harness", 310, 0)}))
    assert win.other_cores() == 0.0 and slept == [pytest.approx(0.08)] and win.last_window_s == 0.1
    # a window left open longer than max_age_s is replaced by a fresh sample of its own
    slept.clear()
    win = IdleWindow(0.25, max_age_s=2.0, proc_root=tmp_path, clock=Clock([0.0, 5.0, 5.0, 5.25]),
                     sleep=lambda s: (slept.append(s), write_proc(tmp_path, State(two_cpus(1040, 1040),
                                                                                  {PID: (1, "harness", 305, 0)}))),
                     pid=PID)
    win.open()
    assert win.other_cores() == pytest.approx(20 / 100 / 0.25) and slept == [0.25]
    # nothing open: a plain sample; an unreadable /proc: None, never an error
    assert IdleWindow(0.1, proc_root=tmp_path / "none", sleep=lambda s: None, pid=PID).other_cores() is None


# -- end to end, for real ----------------------------------------------------------------
class BusyPythonStep:
    """A trivial single-threaded CPU step (the probe needs nothing of torch)."""

    def run(self, n: int) -> None:
        x = 0
        for _ in range(n):
            for i in range(300):
                x += i

    def sync(self) -> None:
        pass

    def device_clock(self):
        return None


def _measured(threads: int) -> dict:
    probe = ContentionProbe(threads=threads, device="cpu")
    measure(BusyPythonStep(), TimingConfig(min_time_s=1.0, warmup_min_s=0.3, warmup_max_s=0.6), probes=[probe])
    return probe.result()


def start_hog(seconds: float = 30.0) -> int:
    """A busy loop that is *not* our descendant (double fork: a child of ours would count
    as the cell's own CPU, like a compile worker); it stops by itself after ``seconds``."""
    code = f"import time\nend = time.time() + {seconds}\nwhile time.time() < end:\n    pass\n"
    out = subprocess.run(["sh", "-c", f'"{sys.executable}" -c "$0" >/dev/null 2>&1 & echo $!', code],
                         capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL)
    return int(out.stdout.strip())


def stop(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="needs Linux /proc")
def test_real_hogs_on_every_core_are_detected():
    ncpu = len(os.sched_getaffinity(0))
    hogs = [start_hog() for _ in range(ncpu)]
    try:
        time.sleep(0.3)
        rec = _measured(threads=1)
    finally:
        for pid in hogs:
            stop(pid)
    assert rec["detected"] is True, rec
    loop = rec["evidence"]["windows"]["loop"]
    assert loop["measurable"] and loop["other_cpu_cores"] > ncpu - 1 and loop["own_cpu_cores"] <= 1.1
    top = rec["evidence"]["top_other_processes"]  # the hogs, or busier jobs of other users
    assert top and all(r["cpu_cores"] >= 0.05 and r["pid"] != os.getpid() for r in top)
    # without the hogs: other engineers' jobs may share this machine, so only the
    # consistency of the verdict with its evidence is asserted (and the cell's own CPU)
    alone = _measured(threads=1)
    w = alone["evidence"]["windows"]["loop"]
    assert w["measurable"] and 0.2 < w["own_cpu_cores"] <= 1.1
    expected = any(x.get("cpu_contended") or x.get("pressure_contended") or x.get("steal_contended")
                   for x in alone["evidence"]["windows"].values())
    assert alone["detected"] is expected


def test_torchrun_sibling_ranks_count_as_the_cell(tmp_path):
    # worker 0 (PID) and rank 1 (4100) are children of the torchrun agent (3000)
    states = [State(two_cpus(1000 + 100 * i, 1000 + 100 * i),
                    {3000: (1, "torchrun", 5, 0), PID: (3000, "python", 500 + 100 * i, 0),
                     4100: (3000, "python", 500 + 99 * i, 0)}) for i in range(3)]
    assert probe_over(tmp_path, states, [0.0, 1.0, 2.0], threads=2)["detected"] is True
    rec = probe_over(tmp_path, states, [0.0, 1.0, 2.0], threads=2, siblings=True)
    assert rec["detected"] is False and rec["evidence"]["windows"]["loop"]["own_cpu_cores"] == pytest.approx(1.99)


def test_cpus_are_the_union_of_the_threads_masks(tmp_path):
    # OMP_PROC_BIND pins the main thread to CPU 0 and the worker to CPU 1: the cell
    # runs on both, although os.sched_getaffinity(0) in the main thread says {0}
    for tid, mask in ((PID, "0"), (PID + 1, "1"), (PID + 2, "4-5,7")):
        (tmp_path / str(PID) / "task" / str(tid)).mkdir(parents=True)
        (tmp_path / str(PID) / "task" / str(tid) / "status").write_text(
            f"Name:\tpython\nCpus_allowed:\tff\nCpus_allowed_list:\t{mask}\n")
    assert process_cpus(tmp_path, PID) == [0, 1, 4, 5, 7]
    assert ContentionProbe(threads=2, proc_root=tmp_path, pid=PID).ncpu == 5
