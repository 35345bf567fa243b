"""Write errors while ``harness run`` saves results (issue 13, item 6).

Real ``harness run`` processes on tiny cells, with real failures: a read-only or full
tmpfs (when this machine lets us mount one), ``RLIMIT_FSIZE`` (EFBIG), an output
directory deleted or replaced by a file mid-run. ``chmod`` is not used: the tests run as
root, and root writes through a 0o555 directory.

The mid-run tests run two cells (skipped ones, which are fast and small; one test runs a
real measured ``toy`` cell second). The failure is caused as soon as the first cell's
result file appears, while the second cell's worker starts (a second or so).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.conftest import PLUGIN_SITE, ROOT

# a skipped cell costs a worker start (about a second: the runner's precheck is turned
# off and fresh worker processes are used, so that the tests can act between two cells)
# and a small record: most tests run two of them; one test runs a real measured cell
# (several seconds on a busy machine)
ONE_SKIPPED_CELL = ["-w", "toy_inference_only", "--mode", "training", "--size", "tiny", "--no-progress",
                    "--launch", "process"]
TWO_SKIPPED_CELLS = [*ONE_SKIPPED_CELL, "--batch-size", "4", "--batch-size", "8"]
SKIPPED_THEN_OK = ["-w", "toy_inference_only", "-w", "toy", "--mode", "training", "--size", "tiny",
                   "--min-time", "0.05", "--timeout", "120", "--no-progress"]
SKIPPED_ID = "toy_inference_only/torch/cpu/fp32/training/bs4/tiny"
SKIPPED_2_ID = "toy_inference_only/torch/cpu/fp32/training/bs8/tiny"
OK_ID = "toy/torch/cpu/fp32/training/bs4/tiny"


def _mount_problem() -> str | None:
    """None when this process may mount a tmpfs (root in a permissive container), else why not."""
    if not shutil.which("mount"):
        return "no mount command"
    probe = Path("/tmp") / f"dlh-mount-probe-{uuid.uuid4().hex[:8]}"
    probe.mkdir()
    try:
        p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)],
                           capture_output=True, text=True, timeout=20)
        if p.returncode != 0:
            return f"mounting a tmpfs is not permitted here: {(p.stderr or p.stdout).strip()[:200]}"
        subprocess.run(["umount", "-l", str(probe)], capture_output=True, timeout=20)
        return None
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"mount failed: {e}"
    finally:
        try:
            probe.rmdir()
        except OSError:
            pass


MOUNT_PROBLEM = _mount_problem()
needs_mount = pytest.mark.skipif(MOUNT_PROBLEM is not None, reason=str(MOUNT_PROBLEM))


@pytest.fixture
def tmpfs(tmp_path: Path):
    """Mount a fresh 512 KiB tmpfs (yields its path and a remount function); unmounted after."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)], check=True, timeout=20)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=20)


def _env(tmp_path: Path) -> dict[str, str]:
    """The toy plugin importable; $TMPDIR of our own (the fallback copy goes there)."""
    tmp = tmp_path / "tmpdir"
    tmp.mkdir(exist_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PLUGIN_SITE), env.get("PYTHONPATH", "")) if p)
    env["TMPDIR"] = str(tmp)
    env["DLH_PRECHECK"] = "0"  # skips decided by the worker: a second per cell, time to act between cells
    return env


def _harness(args: list[str], tmp_path: Path, **kw: Any) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "harness", "run", *args], cwd=str(ROOT), env=_env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _run(args: list[str], tmp_path: Path, **kw: Any) -> tuple[int, str, str]:
    proc = _harness(args, tmp_path, **kw)
    out, err = proc.communicate(timeout=240)
    return proc.returncode, out, err


def _run_and_break(out_dir: Path, tmp_path: Path, act: Callable[[subprocess.Popen[str], Path], None],
                   args: list[str] = TWO_SKIPPED_CELLS) -> tuple[int, str, str]:
    """Run the two cells into ``out_dir``; once the first cell is saved, ``act(proc, file)``."""
    proc = _harness([*args, "--out", str(out_dir)], tmp_path)
    try:
        deadline = time.time() + 120
        while True:
            assert time.time() < deadline, "the first cell was never saved"
            assert proc.poll() is None, proc.communicate()
            files = list(out_dir.glob("*.json"))
            if files:
                try:
                    if len(json.loads(files[0].read_text())["cells"]) == 1:
                        break
                except (json.JSONDecodeError, KeyError, OSError):
                    pass
            time.sleep(0.02)
        act(proc, files[0])
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out, err


def _error_lines(err: str) -> list[str]:
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if "error:" in line]


def _one_error_line(err: str, *needles: str) -> str:
    lines = _error_lines(err)
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], (n, err)
    return lines[0]


def _no_temp_files(*dirs: Path) -> None:
    for d in dirs:
        if d.is_dir():
            left = [p.name for p in d.iterdir() if p.name.endswith(".tmp")]
            assert left == [], left


def _fallback(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "tmpdir" / "dl-harness-unsaved").glob("*.json"))


def _ids(doc: dict[str, Any]) -> list[str]:
    return [c["id"] for c in doc["cells"]]


# ----------------------------------------------------------------------------- before any cell


@needs_mount
def test_read_only_out_is_refused_before_any_cell_runs(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)], check=True, timeout=20)
    try:
        rc, out, err = _run([*ONE_SKIPPED_CELL, "--out", str(ro)], tmp_path)
    finally:
        subprocess.run(["umount", "-l", str(ro)], capture_output=True, timeout=20)
    assert rc == 2, err
    line = _one_error_line(err, f"cannot write results to {ro}: Read-only file system; choose another --out")
    assert line == f"harness run: error: cannot write results to {ro}: Read-only file system; choose another --out"
    assert SKIPPED_ID not in out + err  # no cell ran


@pytest.mark.parametrize("case", ["file_size_limit", "out_is_a_file"])
def test_unwritable_out_is_refused_before_any_cell_runs(tmp_path: Path, case: str) -> None:
    out_dir = tmp_path / "results"
    kw: dict[str, Any] = {}
    if case == "file_size_limit":  # ulimit -f 1 KiB: EFBIG on the first write (not SIGXFSZ: Python ignores it)
        kw["preexec_fn"] = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))
        cause = "File too large"
    else:
        out_dir.write_text("a file\n")
        cause = "it is a file, not a directory"
    rc, out, err = _run([*ONE_SKIPPED_CELL, "--out", str(out_dir)], tmp_path, **kw)
    assert rc == 2, err
    _one_error_line(err, f"cannot write results to {out_dir}: {cause}; choose another --out")
    assert SKIPPED_ID not in out + err
    if out_dir.is_dir():
        assert list(out_dir.iterdir()) == []  # neither a probe nor a temp file left


# ----------------------------------------------------------------------------- during the run


def test_deleted_output_directory_is_recreated_and_keeps_every_cell(tmp_path: Path) -> None:
    out_dir = tmp_path / "results"
    rc, out, err = _run_and_break(out_dir, tmp_path, lambda proc, f: shutil.rmtree(out_dir), SKIPPED_THEN_OK)
    assert rc == 0, err
    assert _error_lines(err) == []
    said = [line for line in err.splitlines() if "deleted during the run" in line]
    assert said == [f"warning: output directory {out_dir} was deleted during the run; recreated it"], err
    files = list(out_dir.glob("*.json"))
    assert len(files) == 1
    doc = json.loads(files[0].read_text())
    assert _ids(doc) == [SKIPPED_ID, OK_ID] and doc["complete"] is True
    assert f"result: {files[0]}" in out
    _no_temp_files(out_dir)
    assert _fallback(tmp_path) == []


def test_directory_replaced_by_a_file_exits_4_with_a_complete_copy(tmp_path: Path) -> None:
    out_dir = tmp_path / "results"
    first: list[Path] = []

    def replace(proc: subprocess.Popen[str], f: Path) -> None:
        first.append(f)
        shutil.rmtree(out_dir)
        out_dir.write_text("someone else's file\n")

    rc, out, err = _run_and_break(out_dir, tmp_path, replace)
    assert rc == 4, err
    path = first[0]
    line = _one_error_line(err, f"results could not be fully written to {path}: Not a directory",
                           "none of the 2 finished cell(s) are saved there")
    copies = _fallback(tmp_path)
    assert len(copies) == 1 and f"all 2 are in {copies[0]}" in line
    doc = json.loads(copies[0].read_text())
    assert _ids(doc) == [SKIPPED_ID, SKIPPED_2_ID] and doc["complete"] is True and doc["run_id"] == path.stem
    assert f"result: {copies[0]}" in out
    assert out_dir.read_text() == "someone else's file\n"  # not ours: left alone
    warnings = [x for x in err.splitlines() if x.startswith("warning:")]
    assert len(warnings) == 1 and str(path) in warnings[0] and "Not a directory" in warnings[0], err
    _no_temp_files(copies[0].parent)


def test_file_size_limit_mid_run_keeps_the_saved_cells_and_exits_4(tmp_path: Path) -> None:
    """``ulimit -f`` reached after the first cell (EFBIG for the harness, and for every
    copy it tries: the limit is per process)."""
    out_dir = tmp_path / "results"
    first: list[Path] = []

    def limit(proc: subprocess.Popen[str], f: Path) -> None:
        first.append(f)
        size = f.stat().st_size + 100  # the next document (one more cell) is larger
        resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (size, size))

    rc, out, err = _run_and_break(out_dir, tmp_path, limit)
    assert rc == 4, err
    path = first[0]
    line = _one_error_line(err, f"results could not be fully written to {path}: File too large",
                           "1 of the 2 finished cell(s) are saved there", "no copy could be saved elsewhere")
    assert "dl-harness-unsaved: File too large" in line
    doc = json.loads(path.read_text())  # the previous complete file, intact
    assert _ids(doc) == [SKIPPED_ID] and doc["complete"] is False
    assert "result: " not in out  # no file holds every cell: no result line to mislead a script
    _no_temp_files(out_dir, tmp_path / "tmpdir" / "dl-harness-unsaved")


@needs_mount
@pytest.mark.parametrize("how", ["disk_full", "remounted_read_only"])
def test_full_or_read_only_disk_mid_run_keeps_every_cell(tmp_path: Path, tmpfs: Path, how: str) -> None:
    out_dir = tmpfs / "results"
    first: list[Path] = []

    def fill(proc: subprocess.Popen[str], f: Path) -> None:
        first.append(f)
        if how == "remounted_read_only":
            subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True, timeout=20)
            return
        fd = os.open(tmpfs / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:  # ENOSPC: the disk is full
            pass
        finally:
            os.close(fd)

    rc, out, err = _run_and_break(out_dir, tmp_path, fill)
    assert rc == 4, err
    path = first[0]
    cause = "No space left on device" if how == "disk_full" else "Read-only file system"
    copies = _fallback(tmp_path)
    assert len(copies) == 1
    _one_error_line(err, f"results could not be fully written to {path}: {cause}",
                    "1 of the 2 finished cell(s) are saved there", f"all 2 are in {copies[0]}")
    assert _ids(json.loads(path.read_text())) == [SKIPPED_ID]  # the previous complete file, intact
    doc = json.loads(copies[0].read_text())
    assert _ids(doc) == [SKIPPED_ID, SKIPPED_2_ID] and doc["complete"] is True
    warnings = [x for x in err.splitlines() if x.startswith("warning:")]
    assert len(warnings) == 1 and cause in warnings[0] and str(copies[0]) in warnings[0], err
    _no_temp_files(out_dir, copies[0].parent)


def test_report_write_failure_keeps_the_json_and_exits_4(tmp_path: Path) -> None:
    """The HTML report (about 13 KB for one skipped cell) exceeds an 8 KiB ``ulimit -f``;
    the JSON (about 3.5 KB) does not."""
    out_dir = tmp_path / "results"
    rc, out, err = _run([*ONE_SKIPPED_CELL, "--out", str(out_dir), "--report"], tmp_path,
                        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192)))
    assert rc == 4, err
    files = list(out_dir.glob("*.json"))
    assert len(files) == 1
    _one_error_line(err, f"could not write the HTML report to {files[0].with_suffix('.html')}: File too large",
                    f"the results are saved in {files[0]}")
    doc = json.loads(files[0].read_text())
    assert _ids(doc) == [SKIPPED_ID] and doc["complete"] is True
    assert not files[0].with_suffix(".html").exists()
    _no_temp_files(out_dir)


# ----------------------------------------------------------------------------- the writer itself


def test_a_write_that_recovers_rewrites_the_file_and_drops_the_copy(tmp_path: Path, monkeypatch, capsys) -> None:
    """In-process, with a fake cell runner: the directory is replaced by a file during
    cell 2 (write fails, a copy is made), the file is gone again during cell 3 (the
    directory is recreated, the file rewritten with every cell, the copy removed)."""
    import tempfile

    from harness.launch.runner import run_suite
    from harness.core.suite import Settings, Suite, TaskSpec
    from harness.launch.worker import empty_cell

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmpdir"))
    (tmp_path / "tmpdir").mkdir()
    out_dir = tmp_path / "results"
    cells = [TaskSpec(workload=w, backend="torch", device="cpu", variant="fp32", mode="inference", batch_size=4,
                      size="tiny") for w in ("a", "b", "c")]

    def cell_runner(spec: TaskSpec, settings: Settings) -> dict[str, Any]:
        if spec.workload == "b":
            shutil.rmtree(out_dir)
            out_dir.write_text("x")
        elif spec.workload == "c":
            out_dir.unlink()
        c = empty_cell(spec)
        c["status"], c["reason"] = "skipped", "fake"
        return c

    outcome = run_suite(Suite(name="t"), cells, out_dir, show_progress=False, cell_runner=cell_runner)
    err = capsys.readouterr().err
    assert outcome.write_error is None and outcome.fallback is None
    doc = json.loads(outcome.path.read_text())
    assert [c["spec"]["workload"] for c in doc["cells"]] == ["a", "b", "c"] and doc["complete"] is True
    assert "could not write results to" in err and "Not a directory" in err
    assert f"output directory {out_dir} was deleted during the run; recreated it" in err
    assert f"results written to {outcome.path} again (all 3 finished cell(s)); removed the copy" in err
    assert _fallback(tmp_path) == []


def test_runner_scratch_files_that_cannot_be_written_fail_only_that_cell(tmp_path: Path, monkeypatch) -> None:
    """A full or missing ``$TMPDIR`` (the worker's request and log files) fails the cell
    with the path and cause; it does not end the sweep."""
    import tempfile

    from harness.launch.runner import run_in_worker
    from harness.core.suite import Settings, TaskSpec

    gone = tmp_path / "no-such-tmpdir"
    monkeypatch.setattr(tempfile, "tempdir", str(gone))
    # a cell that can run here (the runner skips one that cannot before it needs $TMPDIR)
    spec = TaskSpec(workload="mlp", backend="torch", device="cpu", variant="fp32", mode="inference", batch_size=4,
                    size="tiny")
    cell = run_in_worker(spec, Settings())
    assert cell["status"] == "failed"
    assert "No such file or directory" in cell["reason"] and str(gone) in cell["reason"]
    assert cell["error"]["type"] == "FileNotFoundError"
