"""Issue 17 end to end, as a user types it: ONE real ``harness run`` of tiny mlp cells
(fp32 + bf16, torch + tensorflow, cpu + cuda, inference, ``--repeats 2``), then
``harness compare DIR --across variant=fp32 / backend=torch / device=cpu`` and
``harness show`` on it, and ``harness show`` on a run with a failed cell.

What it shows:

* each across question pairs exactly the cells that differ only in that field
  (bf16 against fp32 on each backend, tensorflow against torch for each variant), with
  a verdict in the question's words (faster / slower / no detectable difference; or
  inconclusive when the shared machine was busy, which this test cannot prevent) and an
  estimate in the same words;
* the cuda cells (no CUDA here) are listed under "not compared" with the reason, the
  device question says no cell could be compared instead of crashing, and the exit
  codes are the documented ones: 0 when it ran, 1 with ``--fail-on-missing`` where
  cells were skipped, 2 (one line, no traceback) for a field that is not variant,
  backend or device and for a baseline value absent from the run;
* ``harness show`` lists every cell of the run and a failed cell's root cause on its
  line, and ``harness show RESULT CELL`` prints the root cause, the outer error and
  the traceback; the terminal summary at the end of the failed run leads with the root
  cause too.

On a machine with a GPU the cuda cells run; the assertions about "not compared" then
only require that every cuda cell was either compared or listed with its reason.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PLUGIN_SITE, run_cli

CHAINED = Path(__file__).resolve().parent / "fixtures" / "third_party" / "chained_failures"
MISSING = "dlh_chained_definitely_missing_module"
WORDS = re.compile(r"^(\d+\.\d\dx (faster|slower)|no detectable difference|inconclusive: (contended|run-to-run noise unknown))$")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("issue17")
    proc = run_cli(["run", "--suite", "smoke", "-w", "mlp", "-v", "fp32", "-v", "bf16", "-b", "torch", "-b",
                    "tensorflow", "-d", "cpu", "-d", "cuda", "--mode", "inference", "--repeats", "2", "--out",
                    str(out), "--no-progress"], timeout=600)  # fmt: skip
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    (path,) = sorted(out.glob("*.json"))
    return {"proc": proc, "out": out, "doc": json.loads(path.read_text())}


def _compare(out: Path, *args: str) -> Any:
    return run_cli(["compare", str(out), *args], env={"COLUMNS": "200"}, timeout=120)


def _json(out: Path, across: str) -> dict[str, Any]:
    # --allow-contended: a verdict is drawn even on a busy machine, so the words are checked
    proc = _compare(out, "--across", across, "--allow-contended", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return json.loads(proc.stdout)


def _status(doc: dict[str, Any]) -> dict[str, str]:
    return {c["id"]: c["status"] for c in doc["cells"]}


def test_the_run_measured_every_cpu_cell_twice_and_said_why_cuda_did_not_run(run_dir):
    status = _status(run_dir["doc"])
    assert len(status) == 8
    for cid, st in status.items():
        if "/cpu/" in cid:
            assert st == "ok", (cid, st)
    cells = {c["id"]: c for c in run_dir["doc"]["cells"]}
    for cid, c in cells.items():
        if c["status"] == "ok":
            assert len(c.get("repeats") or []) == 2, cid
        else:  # no CUDA on this machine: skipped with the reason, on the console too
            assert c["status"] == "skipped" and "cuda" in c["reason"].lower(), c
            assert f"skipped {cid}" in run_dir["proc"].stderr


def test_across_variant_pairs_bf16_with_fp32_on_each_backend(run_dir):
    res = _json(run_dir["out"], "variant=fp32")
    assert res["across"] == {"field": "variant", "baseline": "fp32", "better": "faster", "worse": "slower",
                             "factor": "speed-up"}  # fmt: skip
    pairs = {(p["baseline_cell"], p["candidate_cell"]) for p in res["cells"]}
    status = _status(run_dir["doc"])
    want = {(f"mlp/{b}/{d}/fp32/inference/bs8/tiny", f"mlp/{b}/{d}/bf16/inference/bs8/tiny")
            for b in ("torch", "tensorflow") for d in ("cpu", "cuda:0")
            if status[f"mlp/{b}/{d}/fp32/inference/bs8/tiny"] == status[f"mlp/{b}/{d}/bf16/inference/bs8/tiny"] == "ok"}  # fmt: skip
    assert pairs == want and len(want) >= 2
    for p in res["cells"]:
        assert p["variant"] == "bf16" and p["n_baseline"] == 2 and p["n_candidate"] == 2
        assert WORDS.match(p["across_verdict"]), p["across_verdict"]
        assert re.match(r"^\d+\.\d\dx (faster|slower)$", p["estimate"]), p["estimate"]
        lo, hi = p["gain_ci"]
        assert 0 < lo <= hi
        # the estimate and the CI are one factor: speed-up = fp32 time / bf16 time
        assert (p["gain"] >= 1) == p["estimate"].endswith("faster")
    # every cell that was not paired is listed once, with its reason
    listed = {n["cell"] for n in res["not_compared"]}
    paired = {c for pair in pairs for c in pair}
    assert listed | paired == set(status)
    for n in res["not_compared"]:
        assert n["reason"], n


def test_across_backend_pairs_tensorflow_with_torch_for_each_variant(run_dir):
    res = _json(run_dir["out"], "backend=torch")
    got = {(p["cell"], p["backend"]) for p in res["cells"]}
    assert {("mlp/cpu/fp32/inference/bs8/tiny", "tensorflow"), ("mlp/cpu/bf16/inference/bs8/tiny", "tensorflow")} <= got
    for p in res["cells"]:
        assert p["baseline_cell"].startswith("mlp/torch/") and p["candidate_cell"].startswith("mlp/tensorflow/")
        assert WORDS.match(p["across_verdict"]), p["across_verdict"]


def test_the_table_reads_as_the_question_with_the_ci_in_the_same_words(run_dir):
    proc = _compare(run_dir["out"], "--across", "backend=torch", "--allow-contended")
    assert proc.returncode == 0, proc.stderr
    head, *rows = [ln for ln in proc.stdout.splitlines() if ln.startswith(("cell ", "mlp/cpu/"))]
    assert head.split()[:5] == ["cell", "backend", "verdict", "estimate", "95%"]
    assert len(rows) == 2
    for row in rows:
        assert "tensorflow vs torch" in row
        # "1.09–1.16x slower", or an interval across 1 with both ends named
        assert re.search(r"\d\.\d\d–\d+\.\d\dx (faster|slower)|\d+\.\d\dx slower – \d+\.\d\dx faster", row), row
    assert proc.stdout.startswith("across backend (baseline torch): each cell against the torch cell")


def test_across_device_says_why_nothing_was_compared_and_fail_on_missing_exits_1(run_dir):
    status = _status(run_dir["doc"])
    cuda_ran = any(st == "ok" for cid, st in status.items() if "/cuda:0/" in cid)
    proc = _compare(run_dir["out"], "--across", "device=cpu")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    if not cuda_ran:
        assert "no cell could be compared with its device cpu counterpart" in proc.stderr
        assert "not compared (8):" in proc.stdout
        for cid in status:
            line = next(ln for ln in proc.stdout.splitlines() if ln.startswith(f"  {cid}: "))
            if "/cuda:0/" in cid:
                assert "skipped (" in line and "CUDA" in line, line  # the skip reason itself
            else:
                assert "no other device measured" in line, line
    lost = _compare(run_dir["out"], "--across", "device=cpu", "--fail-on-missing")
    if any(st != "ok" for st in status.values()):
        assert lost.returncode == 1, lost.stdout + lost.stderr
        assert re.search(r"^error: \d+ cell\(s\) not compared because they or their counterpart were skipped",
                         lost.stderr, re.M), lost.stderr  # fmt: skip
        # the same holds for a question where some pairs were compared
        assert _compare(run_dir["out"], "--across", "variant=fp32", "--fail-on-missing").returncode == 1
    else:
        assert lost.returncode == 0


@pytest.mark.parametrize("across, says", [
    ("precision=fp32", "variant, backend, device"),
    ("variant=int4", "fp32"),       # a value absent from the run: the message lists those present
    ("variant", "FIELD=BASELINE"),  # no =BASELINE
])  # fmt: skip
def test_a_bad_across_is_one_line_and_exit_2(run_dir, across, says):
    proc = _compare(run_dir["out"], "--across", across)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    err = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(err) == 1 and "error: " in err[0] and says in err[0], err


def test_show_lists_the_run_and_one_cell(run_dir):
    proc = run_cli(["show", str(run_dir["out"])], env={"COLUMNS": "200"}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for cid, st in _status(run_dir["doc"]).items():
        assert re.search(rf"^{st}\s+{re.escape(cid)}\s", proc.stdout, re.M), cid
    one = run_cli(["show", str(run_dir["out"]), "mlp/tensorflow/cpu/bf16/*"], env={"COLUMNS": "200"}, timeout=120)
    assert one.returncode == 0, one.stderr
    assert "cell    mlp/tensorflow/cpu/bf16/inference/bs8/tiny" in one.stdout
    assert re.search(r"^processes \(2\)", one.stdout, re.M)
    as_json = run_cli(["show", str(run_dir["out"]), "mlp/torch/cuda:0/fp32/*", "--json"], timeout=120)
    assert as_json.returncode == 0, as_json.stderr
    assert "cuda" in json.dumps(json.loads(as_json.stdout)).lower()


# ----------------------------------------------------------------------------- a failed cell


@pytest.fixture(scope="module")
def failed_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("issue17-failed")
    old = os.environ.get("PYTHONPATH", "")
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(CHAINED), str(PLUGIN_SITE), old) if p), "COLUMNS": "200"}
    proc = run_cli(["run", "-w", "chained_import", "-w", "mlp", "--size", "tiny", "--min-time", "0.05",
                    "--timeout", "60", "--out", str(out), "--no-progress"], env=env)  # fmt: skip
    return {"proc": proc, "out": out, "env": env}


def test_the_console_and_show_name_the_root_cause(failed_run):
    proc, out, env = failed_run["proc"], failed_run["out"], failed_run["env"]
    assert proc.returncode == 1, proc.stdout + proc.stderr
    cid = "chained_import/torch/cpu/fp32/inference/bs2/tiny"
    root = f"ModuleNotFoundError: No module named '{MISSING}'"
    line = next(ln for ln in proc.stderr.splitlines() if ln.startswith("failed "))
    assert line.startswith(f"failed  {cid}  {root} (outer: RuntimeError: Could not import module 'ChainedModel'")
    # the summary table at the end leads with the root cause as well, not the wrapper
    row = next(ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith(cid))
    assert "ModuleNotFoundError" in row, row
    assert "harness show" in proc.stdout + proc.stderr  # where to look next

    listing = run_cli(["show", str(out)], env=env, timeout=120)
    assert listing.returncode == 0, listing.stderr
    assert re.search(rf"^failed\s+{re.escape(cid)}\s+{re.escape(root)}", listing.stdout, re.M), listing.stdout
    detail = run_cli(["show", str(out), "chained_import"], env=env, timeout=120)
    assert detail.returncode == 0, detail.stderr
    text = detail.stdout
    assert re.search(rf"^root cause\s+{re.escape(root)}$", text, re.M), text
    assert re.search(r"^outer error\s+RuntimeError: Could not import module 'ChainedModel'", text, re.M)
    assert "Traceback (most recent call last):" in text
    assert "The above exception was the direct cause of the following exception:" in text
    # a pattern that matches no cell: one line, exit 2
    none = run_cli(["show", str(out), "no_such_cell_*"], env=env, timeout=120)
    assert none.returncode == 2 and "Traceback" not in none.stderr, none.stderr


# ----------------------------------------------------------------------------- what the walk-through fixed


def _copy_run(run_dir: dict[str, Any], dest: Path, edit: Any) -> Path:
    """The real run's document, changed by ``edit(doc)``, as the only file of ``dest``."""
    doc = json.loads(json.dumps(run_dir["doc"]))
    edit(doc)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / f"{doc['run_id']}.json").write_text(json.dumps(doc))
    return dest


def test_across_variant_shows_the_quality_gate_and_the_engine_next_to_the_speed(run_dir, tmp_path):
    """An engineer weighing compression: a variant that fails its quality gate, or whose
    speed comes from another engine (int8 on ONNX Runtime), says so in the same row."""
    bf16 = "mlp/torch/cpu/bf16/inference/bs8/tiny"

    def edit(doc: dict[str, Any]) -> None:
        for c in doc["cells"]:
            if c["id"] == bf16:
                q = c["metrics"].setdefault("quality", {})
                q.update({"accuracy": 0.5, "accuracy_delta": -0.46,
                          "gate": {"passed": False, "rule": "accuracy >= 0.99 x fp32 accuracy", "threshold": 0.99}})
                c["metrics"]["runtime_engine"] = "onnxruntime"

    out = _copy_run(run_dir, tmp_path / "gate", edit)
    proc = _compare(out, "--across", "variant=fp32", "--allow-contended")
    assert proc.returncode == 0, proc.stderr
    head = next(ln for ln in proc.stdout.splitlines() if ln.startswith("cell "))
    assert "quality (vs fp32)" in head
    row = next(ln for ln in proc.stdout.splitlines() if ln.startswith("mlp/torch/cpu/inference/bs8/tiny "))
    assert "FAIL (-46.00 pp), on onnxruntime" in row, row
    assert "note: 1 cell(s) FAIL the quality gate (accuracy >= 0.99 x fp32 accuracy)" in proc.stdout
    assert bf16 in proc.stdout.split("FAIL the quality gate", 1)[1]
    assert "their speed-up includes the change of engine" in proc.stdout
    doc = json.loads(_compare(out, "--across", "variant=fp32", "--allow-contended", "--format", "json").stdout)
    q = {p["candidate_cell"]: p.get("quality") for p in doc["cells"]}
    assert q[bf16]["gate_passed"] is False and q[bf16]["engine"] == "onnxruntime"


def test_compare_headline_says_no_verdict_when_nothing_could_be_tested(tmp_path):
    """A nightly job's gate: one process per side (or every cell contended) tests nothing;
    the headline must not read as a pass."""
    from tests.test_compare import _write, runs

    base = _write(tmp_path / "base", runs(1, 1.0, seed=1))
    cand = _write(tmp_path / "cand", runs(1, 1.0, seed=2))
    proc = run_cli(["compare", str(base), str(cand)], timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("no verdict: none of the 1 cell(s) could be tested"), proc.stdout


def test_report_with_prices_shows_one_machines_perf_per_dollar(run_dir, tmp_path):
    """A hardware buyer measuring one candidate: --prices is not silently ignored."""
    host = run_dir["doc"]["environment"]["host"]
    prices = tmp_path / "prices.yaml"
    prices.write_text(f"currency: USD\nmachines:\n  {json.dumps(host)}: {{hourly: 2.5}}\n")
    md = tmp_path / "buyer.md"
    proc = run_cli(["report", str(run_dir["out"]), "--prices", str(prices), "--format", "markdown", "-o", str(md)],
                   timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    text = md.read_text()
    assert "Machines side by side" in text and "samples per USD" in text
    html = tmp_path / "buyer.html"
    assert run_cli(["report", str(run_dir["out"]), "--prices", str(prices), "-o", str(html)]).returncode == 0
    assert "1 machine (environment fingerprint): nothing to rank it against yet" in html.read_text()
    without = run_cli(["report", str(run_dir["out"]), "--format", "markdown"], timeout=120)
    assert "Machines side by side" not in without.stdout  # one machine, no prices: nothing to show


def test_regressions_say_why_a_cell_has_no_baseline_and_the_pivot_uses_compares_words():
    from harness.reports.html import render_html
    from harness.reports.markdown import markdown_report
    from tests.test_report import make_doc, ok_cell

    def cell(variant: str, ms: float, seed: int, contended: float | None = None) -> dict[str, Any]:
        c = ok_cell("mlp", seed=seed, center_ms=ms, n=80, contended_cores=contended)
        c["spec"]["variant"] = variant
        c["id"] = c["id"].replace("/fp32/", f"/{variant}/")
        c["metrics"]["runtime_engine"] = "onnxruntime" if variant == "int8-dynamic" else None
        return c

    earlier = make_doc([cell("fp32", 1.0, 1, contended=1.7)], run_id="20261110T000000Z-m",
                       created="2026-11-10T00:00:00Z")  # fmt: skip
    latest = make_doc([cell("fp32", 1.0, 2), cell("bf16", 2.0, 3), cell("int8-dynamic", 0.5, 4)],
                      run_id="20261111T000000Z-m", created="2026-11-11T00:00:00Z")  # fmt: skip
    html = render_html([earlier, latest])
    reg = html[html.index('<section id="regressions"'):]
    reg = reg[:reg.index("</section>")]
    # the fp32 cell was measured before, under contention only: not "only_candidate"
    assert "no baseline: every earlier measurement was contended (left out)" in reg
    pivot = render_html([latest])
    pivot = pivot[pivot.index('<section id="pivot"'):]
    pivot = pivot[:pivot.index("</section>")]
    assert re.search(r"(1\.9\d|2\.\d\d)× slower", pivot) and not re.search(r"0\.\d\d× slower", pivot)
    assert re.search(r"\d\.\d\d× faster", pivot) and "on onnxruntime" in pivot
    md = markdown_report([latest]).text
    assert re.search(r"\*\*(1\.9\d|2\.\d\d)x\*\* slower", md) and "on onnxruntime" in md


def test_the_terminal_summary_names_a_failed_quality_gate():
    from harness.reports.tables import markdown_summary
    from tests.test_report import make_doc, ok_cell

    c = ok_cell("mlp", seed=5)
    c["metrics"]["quality"] = {"accuracy": 0.1, "accuracy_delta": -0.82,
                               "gate": {"passed": False, "rule": "accuracy >= 0.99 x fp32 accuracy"}}
    assert "quality gate FAIL (accuracy -82.0 pp vs fp32)" in markdown_summary([make_doc([c])])


def test_busy_summary_does_not_advise_the_threads_the_run_already_used():
    """A nightly owner already running --threads 1 on a 2-core runner was told "or leave
    them cores with --threads 1"; advice to lower threads only when it would lower them."""
    from harness.launch.runner import busy_summary

    def cell(threads: int) -> dict[str, Any]:
        window = {"other_cpu_cores": 1.8, "cpu_contended": True}
        ev = {"ncpu": 2, "threads": threads, "windows": {"cell": window},
              "top_other_processes": [{"pid": 1, "name": "python", "cpu_cores": 0.9}]}
        return {"id": "mlp", "status": "ok", "metrics": {},
                "timing": {"contention": {"detected": True, "reasons": ["busy"], "evidence": ev}}}  # fmt: skip

    one = busy_summary({"cells": [cell(1)]})
    assert one is not None and "--threads" not in one.split("what to do:", 1)[1]
    two = busy_summary({"cells": [cell(2)]})
    assert two is not None and "leave them cores with --threads 1" in two
