"""Fleet runs on a real Ray cluster (``harness run --ray``, harness/launch/fleet.py).

Ray's own local multi-node test cluster (``ray.cluster_utils.Cluster``): several raylets
on this machine, each with its own resources and labels. No fakes: the driver is a real
``harness run --ray ADDRESS`` subprocess, every cell a real Ray task starting a real
worker process. Skipped with the reason when Ray is not installed (it is optional).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, interruptible, pids_with_env, run_cli

ray = pytest.importorskip("ray", reason="Ray is not installed (optional: pip install 'ray==2.60.0')")
cluster_utils = pytest.importorskip("ray.cluster_utils", reason="ray.cluster_utils is missing from this Ray")

BIG = 262144  # a batch whose 5 timed steps take seconds even on a fast CPU (mlp tiny: ~1.8 GFLOP a step)
SETTINGS = "{size: tiny, min_time_s: 0.05, warmup_max_s: 0.1, min_samples: 5, threads: 1, timeout_s: 120}"


@pytest.fixture(scope="module")
def cluster() -> Any:
    """A head node that runs nothing (no CPU) and two worker nodes with one CPU each:
    node a has the custom resource ``machine_a``, node b the label ``type=b``; both
    declare the optional ``dl_harness_slot``."""
    c = cluster_utils.Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        c.add_node(num_cpus=1, resources={"machine_a": 1, "dl_harness_slot": 1}, labels={"type": "a"})
        c.add_node(num_cpus=1, resources={"dl_harness_slot": 1}, labels={"type": "b"})
        c.wait_for_nodes()
        yield c
    finally:
        c.shutdown()


def write_suite(path: Path, matrix: str, targets: str, settings: str = SETTINGS) -> Path:
    path.write_text(f"name: fleet-test\nsettings: {settings}\nmatrix: {matrix}\ntargets:\n{targets}")
    return path


def results_by_target(out: Path) -> dict[str, dict[str, Any]]:
    docs = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    return {((d.get("fleet") or {}).get("target") or {}).get("name"): d for d in docs}


def start_driver(args: list[str], marker: str) -> subprocess.Popen[str]:
    env = dict(os.environ, DLH_TEST_MARK=marker)
    return subprocess.Popen([sys.executable, "-m", "harness", *args], cwd=str(ROOT), env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=interruptible)


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_targets_every_cell_once_per_target_one_file_each_and_exclusive_nodes(cluster: Any, tmp_path: Path) -> None:
    """Three targets (by resource, by label, and one matching both nodes) plus one that
    matches nothing: every cell runs once per target, each target has its own result
    file with the node's environment, the unmatched target's cells are skipped with
    the reason, and no two cells ever overlapped on one node."""
    suite = write_suite(tmp_path / "s.yaml", "{workload: [mlp], batch_size: [4]}",
                        "  - {name: a, resources: {machine_a: 1}}\n"
                        "  - {name: b, node_labels: {type: b}}\n"
                        "  - {name: any, resources: {CPU: 1}}\n"
                        "  - {name: h100, resources: {GPU: 1}}\n")
    out = tmp_path / "out"
    proc = run_cli(["run", "--suite", str(suite), "--ray", cluster.address, "--out", str(out), "--no-progress",
                    "--report", str(tmp_path / "fleet.html")], timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    docs = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    by_target: dict[str, list[dict[str, Any]]] = {}
    for d in docs:
        by_target.setdefault(d["fleet"]["target"]["name"], []).append(d)
    assert set(by_target) == {"a", "b", "any", "h100"}
    ids = {"mlp/torch/cpu/fp32/inference/bs4/tiny"}
    for name in ("a", "b"):  # one node each: one file each, every cell once
        (doc,) = by_target[name]
        assert sorted(c["id"] for c in doc["cells"]) == sorted(ids)
        assert all(c["status"] == "ok" for c in doc["cells"]), [c["reason"] for c in doc["cells"]]
        assert doc["complete"] and doc["not_run"] == []
        assert doc["environment"]["fingerprint"] and doc["fleet"]["node"]["node_id"]
        assert doc["environment"]["env_vars"]["OMP_NUM_THREADS"] == os.environ.get("OMP_NUM_THREADS")
        for c in doc["cells"]:
            fleet = c["runtime"]["fleet"]
            assert fleet["target"] == name and fleet["node_id"] == doc["fleet"]["node"]["node_id"]
            assert c["runtime"]["launch"]["method"] == "fresh-process"
    a_node = by_target["a"][0]["fleet"]["node"]
    assert a_node["resources"]["machine_a"] == 1
    # 'any' matches both nodes: its cell runs once, on one of them (its file is that node's)
    any_cells = [c for d in by_target["any"] for c in d["cells"]]
    assert sorted(c["id"] for c in any_cells) == sorted(ids)
    assert all(c["status"] == "ok" for c in any_cells)
    (gpu,) = by_target["h100"]
    assert [c["status"] for c in gpu["cells"]] == ["skipped"]
    assert "no alive Ray node matches target 'h100'" in gpu["cells"][0]["reason"]
    # exclusive: per node, no two cells' [start, end] overlap (node clock, across targets)
    spans: dict[str, list[tuple[float, float]]] = {}
    for d in docs:
        for c in d["cells"]:
            f = (c.get("runtime") or {}).get("fleet")
            if c["status"] == "ok":
                spans.setdefault(f["node_id"], []).append((f["started_unix"], f["ended_unix"]))
    assert len(spans) == 2 and sum(map(len, spans.values())) == 3  # one node ran two cells
    for node_spans in spans.values():
        node_spans.sort()
        for (s0, e0), (s1, e1) in zip(node_spans, node_spans[1:]):
            assert e0 <= s1, node_spans
    assert (tmp_path / "fleet.html").is_file()
    # report reads the fleet's files unchanged and shows the machines side by side
    rep = run_cli(["report", str(out), "-o", str(tmp_path / "all.html")])
    assert rep.returncode == 0, rep.stderr


def test_node_lost_mid_cell_fails_that_cell_and_keeps_the_others(cluster: Any, tmp_path: Path) -> None:
    """A node removed while its second cell runs: the first cell (finished) is kept,
    the running one is failed with 'node lost', the third (no node left for the target)
    is skipped with the reason, and the run ends (exit 1: a failed cell)."""
    node = cluster.add_node(num_cpus=1, labels={"type": "doomed"})
    cluster.wait_for_nodes()
    suite = write_suite(tmp_path / "s.yaml", f"{{workload: [mlp], batch_size: [4, {BIG}, 8]}}",
                        "  - {name: doomed, node_labels: {type: doomed}}\n")
    out = tmp_path / "out"
    proc = start_driver(["run", "--suite", str(suite), "--ray", cluster.address, "--out", str(out),
                         "--no-progress"], f"DLH_TEST_MARK={uuid.uuid4()}")
    try:
        wait_for(lambda: any(d["cells"] for d in results_by_target(out).values()), 120, "the first cell")
        time.sleep(2.0)  # the big cell is running
        cluster.remove_node(node, allow_graceful=False)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, stderr[-3000:]
    cells = results_by_target(out)["doomed"]["cells"]
    assert [c["status"] for c in cells] == ["ok", "failed", "skipped"], [c["reason"] for c in cells]
    assert cells[1]["reason"].startswith("node lost") and cells[1]["error"]["type"] == "NodeLost", cells[1]["reason"]
    assert "every node of 'doomed' was lost" in cells[2]["reason"]


def test_ctrl_c_keeps_finished_cells_and_stops_running_ones(cluster: Any, tmp_path: Path) -> None:
    """SIGINT to the driver: the finished cell is saved, the running cell's worker is
    gone (cancelled), the files say interrupted, exit 130."""
    suite = write_suite(tmp_path / "s.yaml", f"{{workload: [mlp], batch_size: [4, {BIG}]}}",
                        "  - {name: a, resources: {machine_a: 1}}\n")
    out = tmp_path / "out"
    marker = f"DLH_TEST_MARK={uuid.uuid4()}"
    # the first cell is quick; the second (a big batch) takes many seconds: interrupted in the middle
    proc = start_driver(["run", "--suite", str(suite), "--ray", cluster.address, "--out", str(out),
                         "--no-progress"], marker)
    try:
        wait_for(lambda: any(d["cells"] for d in results_by_target(out).values()), 120, "the first cell")
        time.sleep(2.0)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr[-3000:]
    doc = results_by_target(out)["a"]
    assert doc["interrupted"] is True and doc["complete"] is False
    assert [c["status"] for c in doc["cells"]] == ["ok"]
    assert doc["not_run"] == [f"mlp/torch/cpu/fp32/inference/bs{BIG}/tiny"]
    wait_for(lambda: not pids_with_env(marker.split("=", 1)[1]), 30, "the cancelled cell's worker to exit")


def test_bad_address_is_one_line_exit_2(tmp_path: Path) -> None:
    for address in ("127.0.0.1:1", "not-an-address"):
        proc = run_cli(["run", "-w", "mlp", "--size", "tiny", "--ray", address, "--out", str(tmp_path)], timeout=60)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and f"--ray {address}" in lines[0], proc.stderr
    assert not list(tmp_path.glob("*.json"))


def test_without_ray_flag_ray_is_never_imported(tmp_path: Path) -> None:
    """A local run (a TPU cell, skipped without a worker) never imports Ray."""
    code = ("import sys; from harness.cli import main; "
            f"rc = main(['run', '-w', 'mlp', '--size', 'tiny', '-d', 'tpu', '--out', {str(tmp_path)!r}, "
            "'--no-progress']); print('RAY' if any(m == 'ray' or m.startswith('ray.') for m in sys.modules) "
            "else 'NO-RAY', rc)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=str(ROOT), capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip().splitlines()[-1] == "NO-RAY 0", proc.stdout + proc.stderr
