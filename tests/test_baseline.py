"""Named baselines (``harness baseline``), ``harness compare --baseline``, and the
documented nightly CI sequence run for real on the smoke suite."""

from __future__ import annotations

import hashlib
import json
import math
import shlex
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from harness.store.baseline import BaselineError, cell_table, get_baseline, list_baselines, set_baseline
from tests.conftest import ROOT, run_cli
from tests.test_store import make_cell, make_doc, write


def timed_runs(n: int, factor: float, seed: int, host: str = "h") -> list[dict[str, Any]]:
    """``n`` runs of two cells whose samples sit at ``factor`` x 1 ms / 2 ms, with a few
    percent of run-to-run noise (what a real machine shows)."""
    rng = np.random.default_rng(seed)
    docs = []
    for i in range(n):
        level = factor * math.exp(0.01 * rng.standard_normal())
        cells = [make_cell(w, samples=[float(x) for x in (k + 1) * level * (1 + 0.02 * np.abs(rng.standard_normal(60)))])
                 for k, w in enumerate(("mlp", "cnn"))]  # fmt: skip
        docs.append(make_doc(f"20261120T00000{i}Z-{host}-{seed:04x}{i:02x}", f"2026-11-20T00:00:0{i}Z", host,
                             cells=cells, commit=f"{seed:040x}"))  # fmt: skip
    return docs


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"HARNESS_BASELINE_DIR": str(tmp_path / "store")}


def test_set_copies_runs_with_a_manifest(tmp_path: Path) -> None:
    src = write(tmp_path / "results", timed_runs(3, 1.0, seed=1))
    b = set_baseline([src], name="nightly", store=tmp_path / "store", note="first", now=0)
    m = b.manifest
    assert m["name"] == "nightly" and m["set_at"] == "1970-01-01T00:00:00Z" and m["note"] == "first"
    assert m["set_on_host"] and m["cell_count"] == 2 and m["ok_cell_count"] == 2
    assert m["git_commits"] == [f"{1:040x}"] and m["sources"] == [str(src)]
    assert sorted(r["run_id"] for r in m["runs"]) == sorted(p.stem for p in src.glob("*.json"))
    for r in m["runs"]:
        copy = b.path / r["file"]
        assert copy.read_bytes() == Path(r["source"]).read_bytes()  # byte-for-byte copies
        assert r["sha256"] == hashlib.sha256(copy.read_bytes()).hexdigest() and r["ok_cells"] == 2
    shutil.rmtree(src)  # the baseline survives the results directory being cleaned
    again = get_baseline("nightly", tmp_path / "store")
    assert again.manifest == json.loads(json.dumps(m)) and len(again.run_files()) == 3
    assert [b.name for b in list_baselines(tmp_path / "store")] == ["nightly"]


def test_refusals_leave_the_existing_baseline_alone(tmp_path: Path) -> None:
    store = tmp_path / "store"
    good = write(tmp_path / "good", timed_runs(2, 1.0, seed=2))
    set_baseline([good], store=store)
    before = sorted(p.name for p in (store / "default" / "runs").iterdir())
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text('{"schema_version": 1, "cells": [')
    nothing_ok = tmp_path / "skipped.json"
    nothing_ok.write_text(json.dumps(make_doc(cells=[make_cell(status="skipped"), make_cell("cnn", status="failed")])))
    dup = tmp_path / "dup"
    dup.mkdir()
    shutil.copy(next(good.glob("*.json")), dup / "copy.json")
    cases = [
        ([corrupt], "corrupt or truncated JSON"),
        ([nothing_ok], "has no ok cell"),
        ([tmp_path / "missing"], "no such result file"),
        ([good, dup], "is given twice"),
        ([tmp_path / "dup" / "nothing-here"], "no such result file"),
    ]
    for sources, msg in cases:
        with pytest.raises(BaselineError, match=msg):
            set_baseline(sources, store=store)
    with pytest.raises(BaselineError, match="invalid baseline name"):
        set_baseline([good], name="../escape", store=store)
    assert sorted(p.name for p in (store / "default" / "runs").iterdir()) == before
    assert [p.name for p in store.iterdir()] == ["default"]  # no temp directories left behind


def test_set_again_replaces_the_baseline(tmp_path: Path) -> None:
    store = tmp_path / "store"
    set_baseline([write(tmp_path / "a", timed_runs(3, 1.0, seed=3))], store=store)
    newer = write(tmp_path / "b", timed_runs(1, 2.0, seed=4))
    b = set_baseline([newer], store=store)
    assert [p.stem for p in b.run_files()] == [p.stem for p in newer.glob("*.json")]
    assert [p.name for p in store.iterdir()] == ["default"]


def test_cell_table_summarises_the_runs() -> None:
    docs = timed_runs(3, 1.0, seed=5)
    docs[1]["cells"][1] = make_cell("cnn", status="failed")
    rows = {r["id"]: r for r in cell_table(docs)}
    mlp, cnn = rows["mlp/torch/cpu/fp32/inference/bs8/tiny"], rows["cnn/torch/cpu/fp32/inference/bs8/tiny"]
    p50s = sorted(d["cells"][0]["metrics"]["latency_ms"]["p50"] for d in docs)
    assert mlp["p50_ms"] == p50s[1] and mlp["status"] == "3/3 ok"
    assert cnn["status"] == "1/3 failed, 2/3 ok" and cnn["reason"] == "failed because of a test"


def test_cli_set_show_list_clear(tmp_path: Path, env: dict[str, str]) -> None:
    src = write(tmp_path / "results", timed_runs(2, 1.0, seed=6))
    p = run_cli(["baseline", "set", str(src), "--name", "nightly", "--note", "after PR 12"], env=env)
    assert p.returncode == 0, p.stderr
    assert "baseline 'nightly' set: 2 run(s), 2 of 2 cells ok" in p.stdout and "3+ repeated runs" in p.stderr
    assert (Path(env["HARNESS_BASELINE_DIR"]) / "nightly" / "manifest.json").is_file()  # the env var picks the store
    show = run_cli(["baseline", "show", "--name", "nightly"], env=env)
    assert show.returncode == 0, show.stderr
    p50 = sorted(d["cells"][0]["metrics"]["latency_ms"]["p50"] for d in timed_runs(2, 1.0, seed=6))
    line = next(ln for ln in show.stdout.splitlines() if "mlp/torch/cpu/fp32/inference/bs8/tiny" in ln)
    assert f"{(p50[0] + p50[1]) / 2:.4g}" in line and "2/2 ok" in line
    assert "after PR 12" in show.stdout and f"{6:040x}" in show.stdout
    js = json.loads(run_cli(["baseline", "show", "--name", "nightly", "--json"], env=env).stdout)
    assert js["manifest"]["name"] == "nightly" and len(js["cells"]) == 2
    listed = run_cli(["baseline", "list"], env=env)
    assert listed.returncode == 0 and listed.stdout.startswith("nightly")
    assert run_cli(["baseline", "clear", "--name", "nightly"], env=env).returncode == 0
    gone = run_cli(["baseline", "show", "--name", "nightly"], env=env)
    assert gone.returncode == 2 and "harness baseline set" in gone.stderr and "Traceback" not in gone.stderr
    assert "no baselines" in run_cli(["baseline", "list"], env=env).stdout


def test_cli_set_refusal_is_one_line_exit_2(tmp_path: Path, env: dict[str, str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("not json")
    for args, msg in ((["set", str(bad)], "corrupt or truncated JSON"), (["set", str(tmp_path / "nope")], "no such"),
                      (["show", "--name", "x/y"], "invalid baseline name"), ([], "give an action")):  # fmt: skip
        p = run_cli(["baseline", *args], env=env)
        assert p.returncode == 2, (args, p.stderr)
        assert msg in p.stderr and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr


def test_compare_with_a_stored_baseline(tmp_path: Path, env: dict[str, str]) -> None:
    base = write(tmp_path / "base", timed_runs(3, 1.0, seed=7))
    same = write(tmp_path / "same", timed_runs(3, 1.0, seed=8))
    slow = write(tmp_path / "slow", timed_runs(3, 1.5, seed=9))
    missing = run_cli(["compare", "--baseline", "nightly", str(same)], env=env)
    assert missing.returncode == 2 and "no baseline 'nightly'" in missing.stderr
    assert "harness baseline set RESULT_FILE_OR_DIR --name nightly" in missing.stderr
    assert run_cli(["baseline", "set", str(base), "--name", "nightly"], env=env).returncode == 0
    shutil.rmtree(base)
    ok = run_cli(["compare", "--baseline", "nightly", str(same), "--format", "json"], env=env)
    assert ok.returncode == 0, ok.stderr
    assert "baseline 'nightly': 3 run(s)" in ok.stderr
    assert {c["verdict"] for c in json.loads(ok.stdout)["cells"]} <= {"unchanged", "inconclusive", "improvement"}
    bad = run_cli(["compare", str(slow), "--baseline=nightly", "--format", "markdown"], env=env)
    assert bad.returncode == 1, bad.stderr
    assert "**regression**" in bad.stdout
    # the default name; `--baseline CANDIDATE` (argparse takes the path as NAME) means the same
    assert run_cli(["baseline", "set", str(slow)], env=env).returncode == 0
    for args in (["--baseline", str(same)], [str(same), "--baseline"]):
        p = run_cli(["compare", *args, "--format", "json"], env=env)
        assert p.returncode == 0 and "baseline 'default'" in p.stderr, (args, p.stderr)
        assert {c["verdict"] for c in json.loads(p.stdout)["cells"]} == {"improvement"}
    # explicit --store wins over the environment
    other = run_cli(["compare", "--baseline", "nightly", str(same), "--store", str(tmp_path / "empty")], env=env)
    assert other.returncode == 2 and "no baseline 'nightly'" in other.stderr
    for args, msg in ((["--baseline", "nightly", str(same), str(slow)], "only the CANDIDATE"),
                      (["--baseline", "nightly"], "needs a CANDIDATE"), ([str(same)], "give BASELINE and CANDIDATE")):  # fmt: skip
        p = run_cli(["compare", *args], env=env)
        assert p.returncode == 2 and msg in p.stderr and "Traceback" not in p.stderr, (args, p.stderr)


# ------------------------------------------------------------ the documented CI sequence

WORKFLOW = ROOT / "docs" / "ci" / "nightly.yml"


def _harness_commands(script: str) -> list[list[str]]:
    """Every ``harness ...`` command line of a workflow ``run:`` script, up to the
    first shell operator, with ${{ }} expressions and $VARS replaced by a word."""
    import re

    out = []
    for line in script.replace("\\\n", " ").splitlines():
        line = re.sub(r"\$\{\{[^}]*\}\}", "X", line)
        m = re.match(r"^(?:if\s+)?(?:[\w./-]*/)?harness\s+(.*)$", line.strip())
        if not m:
            continue
        words = []
        for w in shlex.split(m.group(1), comments=True):
            if w in (">", ">>", "|", "||", "&&", ";", "2>&1") or w.startswith((">", "2>")):
                break
            # numeric workflow variables stand in as numbers, others as a word
            words.append(re.sub(r"\$\{?(\w+)\}?", lambda v: "3" if v.group(1) == "REPEATS" else "X", w))
        out.append(words)
    return out


def test_example_workflow_is_valid_and_uses_real_commands() -> None:
    from harness.cli import build_parser

    wf = yaml.safe_load(WORKFLOW.read_text())
    steps = [s for job in wf["jobs"].values() for s in job["steps"]]
    uses = {s.get("uses", "").split("@")[0] for s in steps}
    assert {"actions/checkout", "actions/upload-artifact"} <= uses
    scripts = "\n".join(s.get("run", "") for s in steps)
    cmds = _harness_commands(scripts)
    verbs = [c[0] for c in cmds]
    for verb in ("run", "compare", "report", "baseline"):
        assert verb in verbs, verbs
    assert "GITHUB_STEP_SUMMARY" in scripts and "--suite nightly" in scripts.replace("--suite=nightly", "--suite nightly")
    parser, _ = build_parser()
    for words in cmds:  # every documented command line parses with the real CLI
        try:
            parser.parse_args(words)
        except SystemExit as e:
            pytest.fail(f"workflow command does not parse: harness {' '.join(words)} ({e})")


@pytest.fixture(scope="module")
def second_smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One more real smoke run (the session's smoke_run is the other)."""
    out = tmp_path_factory.mktemp("smoke2")
    proc = run_cli(["run", "--suite", "smoke", "--out", str(out), "--no-progress", "--tag", "nightly"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def test_documented_sequence_on_the_smoke_suite(smoke_run: dict[str, Any], second_smoke_run: Path,
                                                tmp_path: Path) -> None:  # fmt: skip
    """docs/nightly-ci.md, with smoke instead of nightly: run twice -> baseline set ->
    compare --baseline (markdown) -> report; exit 0 or 1 (a verdict), never 2."""
    assert smoke_run["files"], smoke_run["proc"].stderr[-2000:]
    env = {"HARNESS_BASELINE_DIR": str(tmp_path / "baselines")}
    results = tmp_path / "results"
    shutil.copytree(smoke_run["out"], results, ignore=shutil.ignore_patterns("*.html"))
    p = run_cli(["baseline", "set", str(results), "--name", "smoke", "--note", "test"], env=env)
    assert p.returncode == 0, p.stderr
    shutil.rmtree(results)  # cleaning results/ does not lose the baseline
    summary = tmp_path / "summary.md"
    cmp = run_cli(["compare", "--baseline", "smoke", str(second_smoke_run), "--format", "markdown", "-o", str(summary)],
                  env=env)  # fmt: skip
    assert cmp.returncode in (0, 1), cmp.stderr
    md = summary.read_text()
    table = [ln for ln in md.splitlines() if ln.startswith("|")]
    assert len(table) >= 2 + 6, md  # header, separator, one row per smoke cell
    for cell in smoke_run["doc"]["cells"]:
        assert cell["spec"]["workload"] in md
    rep = run_cli(["report", str(second_smoke_run), "-o", str(tmp_path / "report" / "nightly.html")])
    assert rep.returncode == 0, rep.stderr
    assert (tmp_path / "report" / "nightly.html").stat().st_size > 10_000
    show = run_cli(["baseline", "show", "--name", "smoke"], env=env)
    assert show.returncode == 0 and show.stdout.count("/torch/cpu/fp32/") == 6


def test_a_damaged_baseline_is_refused_not_used_in_part(tmp_path: Path, env: dict[str, str]) -> None:
    src = write(tmp_path / "results", timed_runs(3, 1.0, seed=5))
    b = set_baseline([src], name="nightly", store=tmp_path / "store")
    cand = write(tmp_path / "cand", timed_runs(2, 1.0, seed=6))
    assert run_cli(["compare", "--baseline", "nightly", str(cand)], env=env).returncode == 0
    victim = sorted((b.path / "runs").glob("*.json"))[0]
    victim.write_text(victim.read_text()[:200])  # truncated on disk
    proc = run_cli(["compare", "--baseline", "nightly", str(cand)], env=env)
    assert proc.returncode == 2 and "set the baseline again" in proc.stderr and "Traceback" not in proc.stderr
    victim.unlink()
    proc = run_cli(["compare", "--baseline", "nightly", str(cand)], env=env)
    assert proc.returncode == 2 and "unreadable" in proc.stderr


def test_runs_of_different_machines_or_suites_are_not_one_baseline(tmp_path: Path) -> None:
    a = timed_runs(2, 1.0, seed=7, host="a")
    b = timed_runs(2, 1.0, seed=8, host="b")  # make_doc gives each host its own fingerprint
    src = write(tmp_path / "mixed", a + b)
    with pytest.raises(BaselineError, match="different machines"):
        set_baseline([src], name="n", store=tmp_path / "store")
    other_suite = timed_runs(1, 1.0, seed=9, host="a")
    other_suite[0]["suite"] = {"name": "quick"}
    with pytest.raises(BaselineError, match="different suites"):
        set_baseline([write(tmp_path / "s", a + other_suite)], name="n", store=tmp_path / "store")
    assert list_baselines(tmp_path / "store") == []
    assert set_baseline([src], name="n", store=tmp_path / "store", allow_mixed=True).manifest["runs"]


def test_a_shared_store_stays_readable(tmp_path: Path) -> None:
    import os
    import stat

    b = set_baseline([write(tmp_path / "r", timed_runs(1, 1.0, seed=10))], name="n", store=tmp_path / "store")
    mask = os.umask(0)
    os.umask(mask)
    for d in (b.path, b.path / "runs"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o777 & ~mask


def test_only_the_manifests_verified_runs_are_the_baseline(tmp_path: Path, env: dict[str, str]) -> None:
    """Issue 13: files dropped into runs/ or a manifest entry without a checksum used to
    turn a real regression into a pass; now they are a usage error naming the file."""
    base = write(tmp_path / "base", timed_runs(3, 1.0, seed=21))
    cand = write(tmp_path / "cand", timed_runs(3, 1.5, seed=22))
    ok = run_cli(["baseline", "set", str(base), "--name", "nightly"], env=env)
    assert ok.returncode == 0, ok.stderr
    assert run_cli(["compare", "--baseline", "nightly", str(cand)], env=env).returncode == 1  # a real regression
    b = get_baseline("nightly", tmp_path / "store")
    # two slow runs dropped into the store's runs/ directory
    for i, d in enumerate(timed_runs(2, 1.5, seed=23)):
        (b.runs_dir / f"dropped-{i}.json").write_text(json.dumps(d))
    proc = run_cli(["compare", "--baseline", "nightly", str(cand)], env=env)
    assert proc.returncode == 2 and "dropped-0.json" in proc.stderr and "not in its manifest" in proc.stderr
    for f in b.runs_dir.glob("dropped-*.json"):
        f.unlink()
    # an entry whose checksum was removed cannot be verified
    m = json.loads((b.path / "manifest.json").read_text())
    del m["runs"][0]["sha256"]
    (b.path / "manifest.json").write_text(json.dumps(m))
    proc = run_cli(["compare", "--baseline", "nightly", str(cand)], env=env)
    assert proc.returncode == 2 and "no sha256" in proc.stderr and "Traceback" not in proc.stderr


def test_run_ids_that_sanitise_alike_do_not_overwrite_each_other(tmp_path: Path) -> None:
    docs = timed_runs(2, 1.0, seed=31)
    docs[0]["run_id"], docs[1]["run_id"] = "r/1", "r-1"
    src = tmp_path / "results"
    src.mkdir()
    for i, d in enumerate(docs):  # file names of our own; the run ids collide once sanitised
        (src / f"run{i}.json").write_text(json.dumps(d))
    b = set_baseline([src], name="nightly", store=tmp_path / "store", now=0)
    files = [r["file"] for r in b.manifest["runs"]]
    assert len(set(files)) == 2 and len(b.run_files()) == 2
    from harness.store.baseline import load_baseline_runs

    assert sorted(d["run_id"] for d in load_baseline_runs(b)) == ["r-1", "r/1"]
