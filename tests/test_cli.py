"""Every CLI error path and exit code: one clear line, no traceback, valid choices listed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def _usage_error(proc, *needles):
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    for n in needles:
        assert n in proc.stderr, (n, proc.stderr)


@pytest.mark.parametrize(
    "args, needles",
    [
        (["run", "-w", "nosuch"], ["unknown workload 'nosuch'", "cnn, mlp, transformer"]),
        (["run", "-w", "mlp", "-b", "jax"], ["unknown backend 'jax'", "torch"]),
        (["run", "-w", "mlp", "-v", "int3"], ["unknown variant 'int3'", "fp32"]),
        (["run", "-w", "mlp", "-d", "gpu"], ["unknown device 'gpu'", "cpu, cuda, cuda:N, tpu"]),
        (["run", "-w", "mlp", "--size", "huge"], ["unknown size 'huge'", "tiny, small, base"]),
        (["run", "-w", "mlp", "--batch-size", "0"], ["--batch-size", "positive integer"]),
        (["run", "-w", "mlp", "--batch-size", "abc"], ["--batch-size", "positive integer"]),
        (["run", "-w", "mlp", "--min-time", "-1"], ["--min-time", "positive number"]),
        (["run", "-w", "mlp", "--timeout", "0"], ["--timeout", "positive number"]),
        (["run", "-w", "mlp", "--mode", "serve"], ["--mode", "invalid choice"]),
        (["run", "--suite", "nosuch"], ["unknown suite 'nosuch'", "quick", "smoke"]),
        (["run"], ["nothing to run"]),
        (["list", "gizmos"], ["invalid choice", "workloads"]),
        (["frobnicate"], ["invalid choice"]),
        (["report", "does/not/exist.json"], ["no such result file"]),
    ],
)
def test_usage_errors_exit_2_with_one_clear_line(cli, args, needles):
    _usage_error(cli(args), *needles)


def test_no_verb_prints_help_and_exits_2(cli):
    proc = cli([])
    assert proc.returncode == 2 and "usage: harness" in proc.stdout


def test_bad_suite_files(cli, tmp_path):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("matrix: [unclosed\n")
    _usage_error(cli(["run", "--suite", str(bad_yaml)]), "invalid YAML")
    unknown_key = tmp_path / "k.yaml"
    unknown_key.write_text("name: x\nmatrixx: {}\n")
    _usage_error(cli(["run", "--suite", str(unknown_key)]), "unknown key(s) ['matrixx']")
    bad_setting = tmp_path / "s.yaml"
    bad_setting.write_text("settings: {min_time_s: -2}\nmatrix: {workload: [mlp]}\n")
    _usage_error(cli(["run", "--suite", str(bad_setting)]), "min_time_s must be > 0")
    bad_bs = tmp_path / "b.yaml"
    bad_bs.write_text("matrix: {workload: [mlp], batch_size: [0]}\n")
    _usage_error(cli(["run", "--suite", str(bad_bs)]), "batch size must be a positive integer")
    _usage_error(cli(["run", "--suite", str(tmp_path / "missing.yaml")]), "cannot read suite file")


def test_unwritable_output_dir(cli, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _usage_error(cli(["run", "-w", "mlp", "--out", str(blocker / "sub")]), "cannot create output directory")


def test_report_with_only_corrupt_files_is_a_usage_error(cli, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema_version": 1, "cells": [')
    proc = cli(["report", str(bad)])
    _usage_error(proc, "corrupt or truncated JSON", "no readable result files")


def test_report_from_newer_schema_is_refused_with_advice(cli, tmp_path):
    newer = tmp_path / "newer.json"
    newer.write_text(json.dumps({"schema_version": 999, "cells": []}))
    _usage_error(cli(["report", str(newer)]), "newer than this harness supports", "upgrade")


def test_debug_shows_traceback(cli):
    proc = cli(["--debug", "run", "-w", "nosuch"])
    assert proc.returncode == 2 and "Traceback" in proc.stderr


def test_help_and_list_do_not_import_frameworks():
    code = (
        "import sys, contextlib, io\n"
        "from harness.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['list', 'workloads']); main(['list', 'variants']); main(['list', 'suites'])\n"
        "    try:\n        main(['--help'])\n    except SystemExit:\n        pass\n"
        "bad = [m for m in ('torch', 'tensorflow', 'plotly') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT))
    assert proc.returncode == 0, proc.stderr


def test_list_devices_explains_unavailable_ones(cli):
    proc = cli(["list", "devices"])
    assert proc.returncode == 0
    assert "cpu" in proc.stdout
    # this machine has no GPU: the CUDA row must say why
    import torch

    if not torch.cuda.is_available():
        assert "cuda" in proc.stdout and ("without CUDA" in proc.stdout or "no CUDA device" in proc.stdout)
    assert "tpu" in proc.stdout


def test_env_prints_fingerprint(cli):
    proc = cli(["env", "--json"])
    assert proc.returncode == 0
    env = json.loads(proc.stdout)
    assert env["cpu"]["logical_cores"] >= 1
    assert set(env["cpu"]["flags_dl"]) >= {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile"}
    assert env["fingerprint"]


def test_module_entry_point_matches_console_script(cli):
    proc = cli(["--version"])
    assert proc.returncode == 0 and "dl-harness" in proc.stdout
    script = ROOT / ".venv" / "bin" / "harness"
    if script.exists():
        proc2 = subprocess.run([str(script), "--version"], capture_output=True, text=True)
        assert proc2.stdout == proc.stdout
