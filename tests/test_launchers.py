"""The launcher layer: every way of starting a cell returns the same cell record for the
same spec; the in-process launcher is usable from tests; the runner takes any launcher
without touching the worker; whether a data-parallel cell can run is decided in one
place; and one JSON encoding carries records between processes and into result files."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.api import SkipCell
from harness.core import cells
from harness.core.cells import Settings, TaskSpec
from harness.launch.base import Launcher
from harness.launch.distributed import data_parallel_engine
from harness.launch.inprocess import InProcessLauncher
from harness.launch.process import ProcessLauncher
from harness.launch.runner import run_suite
from harness.core.suite import Suite
from harness.store import results
from tests.conftest import ROOT

FAST = Settings(size="tiny", min_time_s=0.02, warmup_max_s=0.05, min_samples=3, threads=1, idle_baseline_s=0)
TOY = TaskSpec("toy", "torch", "cpu", "fp32", "inference", 4, "tiny")


def _shape(cell: dict[str, Any]) -> tuple[Any, ...]:
    """What must not depend on the launcher: identity, outcome and the record's fields."""
    return (cell["id"], cell["spec"], cell["status"], cell["reason"], sorted(cell),
            sorted(cell["metrics"]), sorted(cell["unavailable"]), sorted(cell["timing"]))


def test_process_and_in_process_launchers_return_the_same_record(plugin_site: Path) -> None:
    here = InProcessLauncher().launch(TOY, FAST)
    there = ProcessLauncher().launch(TOY, FAST)
    assert here["status"] == "ok", here.get("reason")
    assert _shape(here) == _shape(there)
    assert there["runtime"]["thread_policy"]  # what only the process launcher adds (its environment)
    assert len(here["samples_ms"]) >= 3 and len(there["samples_ms"]) >= 3
    # where the time went (docs/launch.md): the worker's phases, plus what the runner
    # spent outside the worker; together they account for the cell's wall time
    worker_phases = {"resolve", "collectors_load", "prepare", "measure", "collectors", "close"}
    assert worker_phases <= set(here["timing"]["phases_s"]) and "outside_worker" not in here["timing"]["phases_s"]
    assert any(k.startswith("analysis:") for k in here["timing"]["phases_s"])
    phases = there["timing"]["phases_s"]
    assert worker_phases <= set(phases) and phases["outside_worker"] > 0
    assert phases["measure"] >= there["timing"]["warmup_s"] + there["timing"]["loop_wall_s"]
    assert sum(phases.values()) == pytest.approx(there["duration_s"], rel=0.05, abs=0.05)
    # a cell that cannot run is skipped the same way whoever starts it
    unknown = TaskSpec("toy", "torch", "cpu", "no_such_variant", "inference", 4, "tiny")
    skip_here, skip_there = InProcessLauncher()(unknown, FAST), ProcessLauncher()(unknown, FAST)
    assert skip_here["status"] == skip_there["status"] == "skipped"
    assert skip_here["reason"] == skip_there["reason"] and "no_such_variant" in skip_here["reason"]
    assert _shape(skip_here) == _shape(skip_there)


def test_the_runner_takes_any_launcher_without_touching_the_worker(plugin_site: Path, tmp_path: Path) -> None:
    class Counting(Launcher):
        name = "counting"

        def __init__(self) -> None:
            self.seen: list[str] = []

        def launch(self, spec: TaskSpec, settings: Settings) -> dict[str, Any]:
            self.seen.append(spec.id)
            return InProcessLauncher().launch(spec, settings)

    specs = [TOY, TaskSpec("toy_raise", "torch", "cpu", "fp32", "inference", 4, "tiny")]
    launcher = Counting()
    out = run_suite(Suite(name="t", settings=FAST), specs, tmp_path, show_progress=False, cell_runner=launcher)
    assert launcher.seen == [s.id for s in specs]
    doc = results.load_result(out.path)  # the stored document passes the schema
    assert [(c["id"], c["status"]) for c in doc["cells"]] == [(TOY.id, "ok"), (specs[1].id, "failed")]
    assert "boom: toy_raise" in doc["cells"][1]["reason"]


def test_a_launcher_must_implement_launch() -> None:
    class Incomplete(Launcher):
        name = "incomplete"

    with pytest.raises(TypeError, match="launch"):
        Incomplete()  # type: ignore[abstract]


class _Backend:
    """The part of a backend the data-parallel decision reads."""

    data_parallel: str | None = "torchrun"

    def __init__(self, gpus: int = 0) -> None:
        self.gpus = gpus

    def resolve_device(self, device: str) -> str:
        if int(device.split(":")[1]) >= self.gpus:
            raise SkipCell(f"{device} is not there ({self.gpus} GPU(s))")
        return device


class _InProcessBackend(_Backend):
    data_parallel = "in-process"


class _NoDP(_Backend):
    data_parallel = None


def _dp(device: str = "cpu", world_size: int = 2, backend: str = "torch") -> TaskSpec:
    return TaskSpec("mlp", backend, device, "fp32", "training", 8, "tiny", world_size=world_size)


def test_whether_a_data_parallel_cell_can_run_is_decided_in_one_place(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    assert data_parallel_engine(_dp(), Settings(), _Backend()) == "torchrun"
    assert data_parallel_engine(_dp(), Settings(), _InProcessBackend()) == "in-process"
    with pytest.raises(SkipCell, match="has no data-parallel training"):
        data_parallel_engine(_dp(), Settings(), _NoDP())
    with pytest.raises(SkipCell, match="8 CPU workers on 4 cores would oversubscribe"):
        data_parallel_engine(_dp(world_size=8), Settings(), _Backend())
    # the same 8 workers over 2 nodes are 4 per node: they fit
    two_nodes = Settings(nnodes=2, rdzv_endpoint="head:29400")
    assert data_parallel_engine(_dp(world_size=8), two_nodes, _Backend()) == "torchrun"
    with pytest.raises(SkipCell, match="2 data-parallel GPU worker.s. per node need as many GPUs"):
        data_parallel_engine(_dp("cuda:0"), Settings(), _Backend(gpus=1))
    assert data_parallel_engine(_dp("cuda:0"), Settings(), _Backend(gpus=2)) == "torchrun"
    with pytest.raises(SkipCell, match="nnodes > 1 needs torchrun"):
        data_parallel_engine(_dp(world_size=4), two_nodes, _InProcessBackend())


def test_one_json_encoding_for_messages_and_result_files(tmp_path: Path) -> None:
    cell = cells.empty_cell(TOY)
    cell["metrics"] = {"p50": np.float32(1.5), "hist": np.arange(3), "where": tmp_path, "settings": FAST}
    cells.write_message(tmp_path / "m.json", cell)
    back = cells.read_message(tmp_path / "m.json")
    assert back["metrics"]["p50"] == 1.5 and back["metrics"]["hist"] == [0, 1, 2]
    assert back["metrics"]["where"] == str(tmp_path) and back["metrics"]["settings"]["size"] == "tiny"
    assert json.loads((tmp_path / "m.json").read_text())["message_version"] == cells.MESSAGE_VERSION
    # the result store encodes the same values the same way, and stays strict about the rest
    assert json.loads(results.dumps({"x": cell["metrics"]}))["x"] == back["metrics"]
    with pytest.raises(TypeError, match="not JSON serializable: object"):
        results.dumps({"x": object()})
    assert cells.dumps_message({"x": object()}).startswith('{"x": "<object object')
    assert list(tmp_path.iterdir()) == [tmp_path / "m.json"]  # written atomically: no temp file left
    spec, settings = TOY, FAST
    cells.write_request(tmp_path / "r.json", spec, settings)
    assert cells.read_request(tmp_path / "r.json") == (spec, settings)


def test_launcher_failure_records_share_one_shape() -> None:
    c = cells.failed_cell(TOY, "Timeout", "timed out after 1 s", 1.25, stderr_tail="x", returncode=None)
    assert c["status"] == "failed" and c["reason"] == "timed out after 1 s" and c["duration_s"] == 1.25
    assert c["error"] == {"type": "Timeout", "message": "timed out after 1 s", "stderr_tail": "x", "returncode": None}
    assert sorted(c) == sorted(cells.empty_cell(TOY))


def test_measurement_imports_no_launcher() -> None:
    """Data flows one way: launchers call the measurement, never the reverse."""
    launch = ROOT / "harness" / "launch"
    for module in ("measure", "distributed"):
        tree = ast.parse((launch / f"{module}.py").read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not {m for m in imported if m.startswith("harness.launch")}, (module, imported)
