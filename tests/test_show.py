"""``harness show`` and the root cause of a failed cell, on cells that really failed.

One real ``harness run`` (module scope) of workloads that fail the way libraries do
(tests/fixtures/third_party/chained_failures: an import error wrapped ``from`` in a
RuntimeError, a KeyError during whose handling a ValueError with a multi-line message
is raised, a worker that prints a chained traceback and exits without a result) plus a
segfaulting and a working one (tests/fixtures/plugin_site); then ``harness show`` on the
written result. The parser of :mod:`harness.core.rootcause` is also checked on its own
on traceback texts Python itself produced.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import traceback
from pathlib import Path
from typing import Any

import pytest

from harness.core.rootcause import Link, parse_chain, root_cause
from tests.conftest import PLUGIN_SITE, run_cli

CHAINED = Path(__file__).resolve().parent / "fixtures" / "third_party" / "chained_failures"
MISSING = "dlh_chained_definitely_missing_module"
IMPORT_ID = "chained_import/torch/cpu/fp32/inference/bs2/tiny"


def _env() -> dict[str, str]:
    old = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(CHAINED), str(PLUGIN_SITE), old) if p)}


@pytest.fixture(scope="module")
def failed_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("show")
    proc = run_cli(["run", "-w", "chained_import", "-w", "chained_context", "-w", "chained_exit", "-w", "toy_crash",
                    "-w", "toy", "--size", "tiny", "--min-time", "0.05", "--timeout", "60", "--out", str(out),
                    "--no-progress"], env=_env())
    (path,) = sorted(out.glob("*.json"))
    return {"proc": proc, "out": out, "path": path, "doc": json.loads(path.read_text())}


def _show(*args: str) -> Any:
    return run_cli(["show", *args], env={"COLUMNS": "200"}, timeout=120)


# ----------------------------------------------------------------------------- the console line of the run


def test_the_run_console_names_each_failures_root_cause_and_outer_error(failed_run):
    proc = failed_run["proc"]
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr  # causes on the console, tracebacks only in show
    lines = {ln.split()[1]: ln for ln in proc.stderr.splitlines() if ln.startswith(("failed ", "ok "))}
    assert lines[IMPORT_ID].startswith(f"failed  {IMPORT_ID}  ModuleNotFoundError: No module named '{MISSING}' "
                                       "(outer: RuntimeError: Could not import module 'ChainedModel'")
    ctx = lines["chained_context/torch/cpu/fp32/inference/bs2/tiny"]
    assert "KeyError: 'weights' (outer: ValueError: checkpoint is unusable: | no weights found" in ctx
    ex = lines["chained_exit/torch/cpu/fp32/inference/bs2/tiny"]  # read from the worker's output
    assert "OSError: [Errno 28] No space left on device (outer: worker exited with status 3" in ex
    crash = lines["toy_crash/torch/cpu/fp32/inference/bs4/tiny"]  # the reason is the cause
    assert crash.rstrip().endswith("worker died with SIGSEGV")
    assert lines["toy/torch/cpu/fp32/inference/bs4/tiny"].startswith("ok ")


def test_root_cause_of_the_stored_records(failed_run):
    cells = {c["spec"]["workload"]: c for c in failed_run["doc"]["cells"]}
    rc = root_cause(cells["chained_import"])
    assert (rc.root, rc.source, [x.via for x in rc.chain]) == (
        f"ModuleNotFoundError: No module named '{MISSING}'", "traceback", ["cause", None])
    assert rc.outer.startswith("RuntimeError: Could not import module 'ChainedModel'")
    rc = root_cause(cells["chained_context"])
    assert rc.chain[0] == Link("KeyError", "'weights'", "context")
    assert rc.chain[1].message == "checkpoint is unusable:\nno weights found\nexpected keys: weights, bias"
    rc = root_cause(cells["chained_exit"])
    assert (rc.root, rc.source) == ("OSError: [Errno 28] No space left on device", "stderr")
    assert rc.outer == "worker exited with status 3 without writing a result"
    rc = root_cause(cells["toy_crash"])
    assert (rc.root, rc.outer, rc.source) == ("worker died with SIGSEGV", None, "reason")
    assert root_cause(cells["toy"]) is None


# ----------------------------------------------------------------------------- harness show


def test_show_prints_the_root_cause_traceback_and_the_rest(failed_run):
    proc = _show(str(failed_run["path"]), IMPORT_ID)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"root cause   ModuleNotFoundError: No module named '{MISSING}'" in out
    assert "innermost of 2 chained exception(s)" in out
    assert "outer error  RuntimeError: Could not import module 'ChainedModel'" in out
    assert "The above exception was the direct cause of the following exception:" in out
    assert "__import__(MISSING)" in out and "Traceback (most recent call last):" in out  # the full traceback
    assert "spec         workload chained_import  backend torch" in out
    for section in ("worker output (tail", "settings (suite cli)", "min_time_s", "runtime", "metrics"):
        assert section in out, section
    assert out.index("root cause") < out.index("Traceback")


def test_show_of_a_worker_that_died_reads_its_output_and_an_ok_cell_shows_metrics(failed_run):
    proc = _show(str(failed_run["path"]), "workload=chained_exit")
    assert proc.returncode == 0, proc.stderr
    assert "root cause   OSError: [Errno 28] No space left on device" in proc.stdout
    assert "from the traceback the worker printed" in proc.stdout and "exit         returncode 3" in proc.stdout
    ok = _show(str(failed_run["path"]), "toy/torch/cpu/fp32/inference/bs4/tiny")
    assert ok.returncode == 0 and "root cause" not in ok.stdout
    assert "latency_ms.p50" in ok.stdout and " ms" in ok.stdout and "not measured" in ok.stdout


def test_show_without_a_cell_lists_every_cell_and_points_at_a_failed_one(failed_run):
    proc = _show(str(failed_run["out"]))  # a directory: its newest result file
    assert proc.returncode == 0, proc.stderr
    assert f"showing {failed_run['path']}" in proc.stderr
    lines = proc.stdout.splitlines()
    assert sum(ln.startswith("failed  ") for ln in lines) == 4 and sum(ln.startswith("ok  ") for ln in lines) == 1
    assert any(ln.startswith(f"failed  {IMPORT_ID}  ModuleNotFoundError") for ln in lines)
    hint = next(ln for ln in lines if ln.startswith("4 failed; root cause and traceback: "))
    cmd = shlex.split(hint.split(": ", 1)[1].split(" (")[0])
    assert cmd[:2] == ["harness", "show"]
    again = _show(*cmd[2:])  # the command it prints works
    assert again.returncode == 0 and "root cause" in again.stdout


def test_json_and_patterns(failed_run):
    path = str(failed_run["path"])

    def ids(pattern: str) -> list[str]:
        proc = _show(path, pattern, "--json")
        assert proc.returncode == 0, proc.stderr
        doc = json.loads(proc.stdout)
        assert doc["result"] == path and doc["run_id"] == failed_run["doc"]["run_id"]
        return [c["id"] for c in doc["cells"]]

    proc = _show(path, IMPORT_ID, "--json")
    (cell,) = json.loads(proc.stdout)["cells"]
    stored = next(c for c in failed_run["doc"]["cells"] if c["id"] == IMPORT_ID)
    assert {k: v for k, v in cell.items() if k != "root_cause"} == stored  # the record as stored
    assert cell["root_cause"]["root"] == f"ModuleNotFoundError: No module named '{MISSING}'"
    assert len(ids("chained_*")) == 3  # a glob over the id
    assert ids("workload=toy*,mode=inference") == ["toy_crash/torch/cpu/fp32/inference/bs4/tiny",
                                                   "toy/torch/cpu/fp32/inference/bs4/tiny"]
    assert ids("CONTEXT") == ["chained_context/torch/cpu/fp32/inference/bs2/tiny"]  # a substring, any case
    assert len(json.loads(_show(path, "--json").stdout)["cells"]) == 5  # no cell: all of them


@pytest.mark.parametrize("args, words", [
    (["{path}", "chained_imprt/torch"], ["no cell of", "closest: " + IMPORT_ID]),
    (["{path}", "varient=fp32"], ["unknown spec field 'varient'"]),
    (["{dir}/missing.json"], ["no such result file"]),
    (["{dir}/bad.json"], ["bad.json", "corrupt or truncated JSON"]),
    (["{dir}/empty"], ["no result files"]),
])
def test_user_errors_exit_2_with_one_line(failed_run, tmp_path, args, words):
    (tmp_path / "bad.json").write_text('{"schema_version": 3, "cells": [')
    (tmp_path / "empty").mkdir()
    proc = _show(*[a.format(path=failed_run["path"], dir=tmp_path) for a in args])
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    for w in words:
        assert w in proc.stderr


def test_a_directory_shows_its_most_recently_modified_readable_result(failed_run, tmp_path):
    old = tmp_path / "a-old.json"
    shutil.copy(failed_run["path"], old)
    doc = dict(failed_run["doc"], run_id="newer-run", cells=failed_run["doc"]["cells"][-1:])
    (tmp_path / "b-new.json").write_text(json.dumps(doc))
    (tmp_path / "c-broken.json").write_text("{")
    os.utime(old, (1_000_000, 1_000_000))
    proc = _show(str(tmp_path), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["run_id"] == "newer-run"
    assert "b-new.json" in proc.stderr and "skipped 1 newer unreadable" in proc.stderr


# ----------------------------------------------------------------------------- the parser on its own


def _chain_text() -> str:
    try:
        try:
            try:
                {}["k"]
            except KeyError as e:
                raise ImportError("inner\nsecond line") from e
        except ImportError:
            raise RuntimeError("outer")
    except RuntimeError:
        return traceback.format_exc()


def test_parse_chain_reads_both_kinds_of_link_and_multiline_messages():
    links, cut = parse_chain(_chain_text())
    assert not cut
    assert links == [Link("KeyError", "'k'", "cause"), Link("ImportError", "inner\nsecond line", "context"),
                     Link("RuntimeError", "outer", None)]
    assert links[1].line() == "ImportError: inner | second line"


def test_a_traceback_cut_at_its_start_still_yields_the_earliest_exception_left():
    text = _chain_text()
    cut_text = text[text.index("Traceback", text.index("The above exception")) + 10:]  # the root's block is gone
    links, cut = parse_chain(cut_text)
    assert cut and links[0].type == "ImportError"
    rc = root_cause({"status": "failed", "reason": "RuntimeError: outer",
                     "error": {"type": "RuntimeError", "message": "outer", "traceback": cut_text}})
    assert rc.truncated and rc.root.startswith("ImportError")


def test_root_cause_of_launcher_failures_and_odd_records():
    tail = "log line\n" + "\n".join("[rank1]: " + ln for ln in _chain_text().splitlines()) + "\n\nE1202 torchrun\n"
    rc = root_cause({"status": "failed", "reason": "torchrun exited with status 1 without a result from rank 0",
                     "error": {"type": "WorkerCrash", "message": "x", "stderr_tail": tail, "returncode": 1}})
    assert (rc.root, rc.source) == ("KeyError: 'k'", "stderr")
    assert rc.outer.startswith("torchrun exited")
    for error in ({"type": "Timeout", "message": "timed out after 5 s", "stderr_tail": tail},
                  {"type": "WorkerCrash", "message": "worker died with SIGKILL", "stderr_tail": tail, "returncode": -9}):
        rc = root_cause({"status": "failed", "reason": error["message"], "error": error})
        assert (rc.root, rc.outer, rc.source) == (error["message"], None, "reason")
    assert root_cause({"status": "failed", "reason": None, "error": None}).root == "failed (no reason recorded)"
    assert root_cause({"status": "failed", "reason": "boom", "error": "not a dict"}).root == "boom"
    plain = root_cause({"status": "failed", "reason": "ValueError: x",
                        "error": {"type": "ValueError", "message": "x", "traceback": "no traceback here"}})
    assert (plain.root, plain.outer) == ("ValueError: x", None)
    assert root_cause({"status": "ok"}) is None and root_cause({"status": "skipped", "reason": "r"}) is None
