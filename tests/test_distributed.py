"""Data-parallel training cells: real 2-process gloo DDP through torchrun, a real
2-replica MirroredStrategy on logical CPU devices, scaling efficiency, a failing
worker, multi-node rendezvous on localhost, and the lock-step timing loop."""

from __future__ import annotations

import json
import socket
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from harness.launch.distributed import attach_scaling, lockstep_measure, sweep_worker_threads, threads_per_worker
from harness.launch.torchrun import torchrun_command
from harness.core.suite import ConfigError, Settings, Suite, TaskSpec, expand
from harness.core.timing import TimingConfig
from tests.conftest import ROOT, interruptible, only_result


def _by_ws(doc):
    return {c["spec"].get("world_size"): c for c in doc["cells"]}


def _check_scaling(cells):
    one, two = cells[1], cells[2]
    for c in (one, two):
        assert c["status"] == "ok", c.get("reason")
        # throughput is recomputable from the record: sustained = timed steps x global batch /
        # the loop's wall time; the per-step rate (global batch / p50) keeps its own name
        d = c["metrics"]["distributed"]
        assert d["global_batch_size"] == d["per_worker_batch_size"] * c["spec"]["world_size"]
        p50 = statistics.median(c["samples_ms"])
        t = c["timing"]
        steps = t["samples"] * t["iters_per_sample"]
        assert c["metrics"]["throughput_per_s"] == pytest.approx(
            steps * d["global_batch_size"] / t["loop_wall_s"], rel=1e-9)
        assert c["metrics"]["throughput_p50_per_s"] == pytest.approx(d["global_batch_size"] * 1e3 / p50, rel=1e-9)
    d2 = two["metrics"]["distributed"]
    thr1, thr2 = one["metrics"]["throughput_per_s"], two["metrics"]["throughput_per_s"]
    assert d2["speedup_vs_1"] == pytest.approx(thr2 / thr1)
    assert d2["scaling_efficiency"] == pytest.approx(thr2 / (2 * thr1))
    assert d2["scaling_baseline_cell"] == one["id"]
    assert one["metrics"]["distributed"]["scaling_efficiency"] == pytest.approx(1.0)
    return d2


def test_torchrun_gloo_ddp_two_workers_report_scaling_efficiency(cli, tmp_path):
    proc = cli(["run", "-w", "mlp", "--size", "tiny", "--mode", "training", "--world-size", "1,2",
                "--min-time", "0.1", "--out", str(tmp_path), "--no-progress"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = only_result(tmp_path)
    assert [c["id"] for c in doc["cells"]] == ["mlp/torch/cpu/fp32/training/bs8/tiny/ws1",
                                               "mlp/torch/cpu/fp32/training/bs8/tiny/ws2"]
    d2 = _check_scaling(_by_ws(doc))
    assert d2["engine"].startswith("torchrun") and d2["comm_backend"] == "gloo"
    assert d2["workers_per_node"] == 2 and d2["nnodes"] == 1
    # equal resources per worker across the sweep: cores / the largest world size
    import os

    want = max(1, (os.cpu_count() or 1) // 2)
    assert doc["suite"]["settings"]["worker_threads"] == want
    assert [_by_ws(doc)[n]["metrics"]["distributed"]["threads_per_worker"] for n in (1, 2)] == [want, want]
    assert len(d2["per_worker_p50_ms"]) == 2
    two = _by_ws(doc)[2]
    # the samples add up to the timed loop's wall time (nothing between steps escapes)
    assert sum(two["samples_ms"]) <= d2["wall_per_step_ms"] * d2["steps_timed"] * 1.001
    assert sum(two["samples_ms"]) >= d2["wall_per_step_ms"] * d2["steps_timed"] * 0.5
    assert two["metrics"]["flops"] == two["metrics"]["flops_analytic"]  # analytic FLOPs of the global batch
    assert "quality" in two["unavailable"]
    assert "data-parallel" in two["metrics"]["utilisation"]["data_parallel_scope"]  # what worker 0 saw
    # the report shows the scaling table and chart with the stored efficiency
    html = tmp_path / "r.html"
    rep = cli(["report", str(tmp_path), "-o", str(html)])
    assert rep.returncode == 0, rep.stderr
    text = html.read_text()
    assert 'id="scaling"' in text and "chart-scaling" in text
    assert f"{d2['scaling_efficiency'] * 100:.1f}%" in text
    md = cli(["report", str(tmp_path), "--format", "markdown"])
    assert "#### Data-parallel scaling" in md.stdout
    assert f"| {two['id']} | 2 |" in md.stdout and f"{d2['scaling_efficiency'] * 100:.1f}%" in md.stdout


def test_mirrored_strategy_two_logical_cpu_replicas(cli, tmp_path):
    pytest.importorskip("tensorflow")
    proc = cli(["run", "-w", "mlp", "-b", "tensorflow", "--size", "tiny", "--mode", "training",
                "--world-size", "1,2", "--min-time", "0.1", "--out", str(tmp_path), "--no-progress"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cells = _by_ws(only_result(tmp_path))
    d2 = _check_scaling(cells)
    assert d2["engine"] == "tf.distribute.MirroredStrategy"
    assert cells[2]["metrics"]["distribution_strategy"] == "MirroredStrategy"
    assert len(cells[2]["metrics"]["replica_devices"]) == 2


def test_one_failing_worker_fails_the_cell_with_its_error_and_the_sweep_goes_on(plugin_site, cli, tmp_path):
    proc = cli(["run", "-w", "toy_rank_fail", "-w", "toy", "--size", "tiny", "--mode", "training",
                "--world-size", "2", "--min-time", "0.05", "--timeout", "120", "--out", str(tmp_path),
                "--no-progress"])
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    doc = only_result(tmp_path)
    cells = {c["spec"]["workload"]: c for c in doc["cells"]}
    bad = cells["toy_rank_fail"]
    assert bad["status"] == "failed"
    assert "fails on worker 1 only" in bad["reason"]
    assert bad["error"]["torchrun_returncode"] != 0
    assert "build_torch" in bad["error"]["traceback"]  # worker 1's own traceback
    assert "torch.distributed" in bad["error"]["stderr_tail"]  # and torchrun's output
    assert bad["duration_s"] < 100  # torchrun stopped worker 0; it did not wait for a timeout
    assert cells["toy"]["status"] == "ok"
    # alone in its run, the ws2 cell has no 1-worker baseline: null with the reason
    assert cells["toy"]["metrics"]["distributed"]["scaling_efficiency"] is None
    assert "world_size 1" in cells["toy"]["unavailable"]["distributed.scaling_efficiency"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_multi_node_rendezvous_arguments_reach_torchrun(plugin_site, tmp_path):
    """Two 'nodes' on localhost: the same command on each, a shared c10d rendezvous.
    The node that runs rank 0 records the cell; the other says where it is."""
    port = _free_port()
    procs = []
    for node in (0, 1):
        out = tmp_path / f"node{node}"
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "harness", "run", "-w", "toy", "--size", "tiny", "--mode", "training",
             "--world-size", "2", "--nnodes", "2", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "t1",
             "--min-time", "0.05", "--timeout", "150", "--out", str(out), "--no-progress"],
            cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outs = [p.communicate(timeout=200)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    cells = [only_result(tmp_path / f"node{n}")["cells"][0] for n in (0, 1)]
    statuses = sorted(c["status"] for c in cells)
    assert statuses == ["ok", "skipped"], cells
    ok = next(c for c in cells if c["status"] == "ok")
    skipped = next(c for c in cells if c["status"] == "skipped")
    assert ok["metrics"]["distributed"]["nnodes"] == 2
    assert ok["metrics"]["distributed"]["workers_per_node"] == 1
    assert "rank 0" in skipped["reason"]


def test_torchrun_command_standalone_and_rendezvous():
    spec = TaskSpec("mlp", "torch", "cpu", "fp32", "training", 8, "tiny", world_size=4)
    cmd = torchrun_command(spec, Settings(), Path("r.json"), Path("out"), python="py")
    assert cmd[:3] == ["py", "-m", "torch.distributed.run"]
    assert "--nproc-per-node=4" in cmd and "--standalone" in cmd
    cmd = torchrun_command(spec, Settings(nnodes=2, rdzv_endpoint="head:29400", rdzv_id="job7"),
                           Path("r.json"), Path("out"), python="py")
    assert "--standalone" not in cmd
    assert {"--nproc-per-node=2", "--nnodes=2", "--rdzv-endpoint=head:29400", "--rdzv-backend=c10d"} <= set(cmd)
    assert cmd[-3:] == ["harness.launch.torchrun", "r.json", "out"]
    # every cell gets its own rendezvous, even under one user-given id
    other = TaskSpec("mlp", "torch", "cpu", "fp32", "training", 16, "tiny", world_size=4)
    ids = {c for spec_ in (spec, other) for c in torchrun_command(
        spec_, Settings(nnodes=2, rdzv_endpoint="h:1", rdzv_id="job7"), Path("r"), Path("o"))
        if c.startswith("--rdzv-id=")}
    assert len(ids) == 2 and all(i.startswith("--rdzv-id=job7-") for i in ids)
    # workers share the cores unless --threads (or the run's worker_threads) says otherwise
    assert threads_per_worker(spec, Settings(), cpu_count=16) == 4
    assert threads_per_worker(spec, Settings(threads=3), cpu_count=16) == 3
    assert threads_per_worker(spec, Settings(worker_threads=2), cpu_count=16) == 2
    assert threads_per_worker(spec, Settings(), cpu_count=2) == 1
    sweep = [TaskSpec("mlp", "torch", "cpu", "fp32", "training", 8, "tiny", world_size=w) for w in (1, 2, 4)]
    assert sweep_worker_threads(sweep, Settings(), cpu_count=16) == 4  # 16 cores / 4 workers, for all three
    assert sweep_worker_threads(sweep, Settings(threads=8), cpu_count=16) is None
    gpu = [TaskSpec("mlp", "torch", "cuda:0", "fp32", "training", 8, "tiny", world_size=8)]
    assert sweep_worker_threads(gpu, Settings(), cpu_count=16) is None


def test_world_size_axis_expands_training_cells_only_and_validates():
    suite = Suite(name="t", settings=Settings(size="tiny"),
                  matrix={"workload": ["mlp"], "mode": ["inference", "training"], "world_size": [1, 2]})
    ids = [c.id for c in expand(suite)]
    assert ids == ["mlp/torch/cpu/fp32/inference/bs8/tiny", "mlp/torch/cpu/fp32/training/bs8/tiny/ws1",
                   "mlp/torch/cpu/fp32/training/bs8/tiny/ws2"]
    with pytest.raises(ConfigError, match="add --mode training"):
        expand(Suite(name="t", settings=Settings(size="tiny"), matrix={"workload": ["mlp"], "world_size": [2]}))
    with pytest.raises(ConfigError, match="not a multiple of nnodes"):
        expand(Suite(name="t", settings=Settings(size="tiny", nnodes=2, rdzv_endpoint="h:1"),
                     matrix={"workload": ["mlp"], "mode": ["training"], "world_size": [3]}))
    with pytest.raises(ValueError, match="rdzv_endpoint"):
        Settings(nnodes=2)
    with pytest.raises(ConfigError, match="GPUs 0..N-1"):
        expand(Suite(name="t", settings=Settings(size="tiny"),
                     matrix={"workload": ["mlp"], "mode": ["training"], "device": ["cuda:1"], "world_size": [2]}))
    # old result files (no world_size key) still load as single-process specs
    d = TaskSpec("mlp", "torch", "cpu", "fp32", "training", 8, "tiny").to_dict()
    assert "world_size" not in d and TaskSpec.from_dict(d).world_size is None


def test_world_size_without_training_is_a_usage_error(cli, tmp_path):
    proc = cli(["run", "-w", "mlp", "--world-size", "2", "--out", str(tmp_path)])
    assert proc.returncode == 2
    assert "add --mode training" in proc.stderr and "Traceback" not in proc.stderr


class _FakeStep:
    def __init__(self, times, clock):
        self.times, self.clock, self.calls = list(times), clock, 0

    def run(self, n):
        for _ in range(n):
            self.clock.t += self.times[min(self.calls, len(self.times) - 1)]
            self.calls += 1

    def sync(self):
        pass


class _Clock:
    t = 0.0

    def __call__(self):
        return self.t


def test_lockstep_measure_uses_shared_decisions_and_mean_over_workers():
    clock = _Clock()
    step = _FakeStep([0.010] * 1000, clock)
    shared_warmup = []

    def all_max(x):  # the other worker is always 2 ms slower in warm-up
        shared_warmup.append(x + 0.002)
        return x + 0.002

    def gather(local):  # the other worker's timed steps: alternately faster and slower
        other = [t + (0.003 if i % 2 else -0.001) for i, t in enumerate(local)]
        return [local, other]

    barriers = []
    cfg = TimingConfig(min_time_s=0.5, min_samples=5, warmup_min_s=0.05, warmup_max_s=1.0)
    meas, details = lockstep_measure(step, cfg, all_max, gather, lambda: barriers.append(1), now=clock)
    # decisions come from the all-reduced times (the last all-reduce is the loop wall)
    assert meas.warmup_samples_s == shared_warmup[:-1]
    assert meas.warmup_stable
    # steps timed = min_time / shared warm-up median (12 ms), the same on every worker
    assert details["steps_timed"] == len(meas.samples_s) == 42
    expected = [(0.010 + 0.010 + (0.003 if i % 2 else -0.001)) / 2 for i in range(42)]
    assert meas.samples_s == pytest.approx(expected)
    assert details["per_step_spread_p50_ms"] == pytest.approx(2.0)  # median of |+3| and |-1| ms, 21 each
    assert len(barriers) == 2
    assert details["per_worker_p50_ms"][0] == pytest.approx(10.0)


def test_lockstep_loop_wall_is_the_slowest_workers_so_samples_never_exceed_it():
    # the other worker leaves the first barrier 1 ms before this one, so its first step
    # includes waiting for this one at the all-reduce: its loop wall is 1 ms longer
    clock = _Clock()
    step = _FakeStep([0.010] * 1000, clock)
    walls = []

    def all_max(x):
        walls.append(x)
        return x + 0.001 if x > 0.05 else x

    def gather(local):
        return [local, [local[0] + 0.001] + local[1:]]

    cfg = TimingConfig(min_time_s=0.1, min_samples=5, warmup_min_s=0.05, warmup_max_s=1.0)
    meas, details = lockstep_measure(step, cfg, all_max, gather, lambda: None, now=clock)
    n = details["steps_timed"]
    own_wall = walls[-1]
    assert sum(meas.samples_s) > own_wall  # this worker's own wall alone is too short
    assert details["wall_per_step_ms"] == pytest.approx((own_wall + 0.001) / n * 1e3)
    assert sum(meas.samples_s) <= details["wall_per_step_ms"] / 1e3 * n + 1e-12
    assert meas.loop_wall_s == pytest.approx(own_wall + 0.001)


def test_attach_scaling_needs_the_matching_one_worker_cell():
    def cell(ws, thr, bs=8):
        spec = {"workload": "mlp", "backend": "torch", "device": "cpu", "variant": "fp32", "mode": "training",
                "batch_size": bs, "size": "tiny", "world_size": ws}
        return {"id": f"x/ws{ws}/bs{bs}", "status": "ok", "spec": spec, "unavailable": {},
                "metrics": {"throughput_per_s": thr, "distributed": {}}}

    cells = [cell(1, 100.0), cell(4, 300.0), cell(2, 150.0, bs=16), cell(2, 250.0)]
    attach_scaling(cells)
    assert cells[1]["metrics"]["distributed"]["scaling_efficiency"] == pytest.approx(0.75)
    assert cells[1]["metrics"]["distributed"]["speedup_vs_1"] == pytest.approx(3.0)
    assert "scaling_warning" not in cells[1]["metrics"]["distributed"]
    # superlinear scaling is flagged, not presented as a plain fact
    assert cells[3]["metrics"]["distributed"]["scaling_efficiency"] == pytest.approx(1.25)
    assert "superlinear" in cells[3]["metrics"]["distributed"]["scaling_warning"]
    # a different batch size is a different experiment: no baseline
    assert cells[2]["metrics"]["distributed"]["scaling_efficiency"] is None
    assert "sweep --world-size 1,N" in cells[2]["unavailable"]["distributed.scaling_efficiency"]
    json.dumps(cells)  # plain JSON


def _pids_with_env(marker: str) -> list[int]:
    pids = []
    for env in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker.encode() in env.read_bytes():
                pids.append(int(env.parent.name))
        except OSError:
            continue
    return pids


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_interrupt_during_a_ddp_cell_keeps_finished_cells_and_leaves_no_workers(plugin_site, tmp_path, sig):
    import os
    import signal
    import time
    import uuid

    import tempfile

    scratch_before = set(Path(tempfile.gettempdir()).glob("dlh-*"))
    marker = f"DLH_TEST_MARK={uuid.uuid4().hex}"
    env = dict(os.environ)
    env["DLH_TEST_MARK"] = marker.split("=", 1)[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness", "run", "-w", "toy", "-w", "toy_hang", "--size", "tiny", "--mode",
         "training", "--world-size", "2", "--min-time", "0.05", "--out", str(tmp_path), "--no-progress",
         "--timeout", "300"],
        cwd=str(ROOT), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=interruptible)
    # the toy cell finishes; toy_hang's two workers then hang while building: interrupt them
    deadline = time.time() + 120
    while time.time() < deadline:
        files = list(tmp_path.glob("*.json"))
        if files:
            try:
                if len(json.loads(files[0].read_text())["cells"]) == 1:
                    break
            except json.JSONDecodeError:
                pass
        time.sleep(0.2)
    while time.time() < deadline and len(_pids_with_env(marker)) < 5:  # harness, worker, torchrun, 2 workers
        time.sleep(0.1)
    proc.send_signal(getattr(signal, sig))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    doc = only_result(tmp_path)
    assert [(c["spec"]["workload"], c["status"]) for c in doc["cells"]] == [("toy", "ok")]
    assert doc["interrupted"] is True and doc["not_run"] == ["toy_hang/torch/cpu/fp32/training/bs4/tiny/ws2"]
    time.sleep(1.0)  # PR_SET_PDEATHSIG is delivered asynchronously
    assert _pids_with_env(marker) == []
    assert set(Path(tempfile.gettempdir()).glob("dlh-*")) - scratch_before == set()  # no scratch left
