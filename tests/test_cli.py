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


@pytest.mark.parametrize(
    "text, needles",
    [
        ("matrix: [unclosed\n", [":2: invalid YAML"]),
        ("name: x\nmatrixx: {}\n", [":2: suite: unknown key 'matrixx'", "allowed: description, exclude, matrix"]),
        ("name: x\nsettings:\n  size: tiny\n  min_time_s: -2\n", [":4: settings.min_time_s: must be > 0"]),
        ("name: x\nsettings:\n  min_tme_s: 1\n", [":3: settings: unknown key 'min_tme_s'", "min_time_s"]),
        ("matrix:\n  workload: [mlp]\n  batch_size: [8, 0]\n", [":3: matrix.batch_size[1]: must be >= 1"]),
        ("matrix:\n  workload:\n    - mlp\n    - mlpp\n",
         [":4: matrix.workload[1]: 'mlpp' is not valid; choose from: cnn, mlp, transformer"]),
        ("matrix:\n  workload: [mlp]\n  device: [gpu]\n", [":3: matrix.device[0]: unknown device 'gpu'",
                                                              "cpu, cuda, cuda:N, tpu"]),
        ("matrix:\n  mode: [serve]\n", [":2: matrix.mode[0]: 'serve' is not valid; choose from: inference, training"]),
        ("matrix:\n  world_size: [two]\n", [":2: matrix.world_size[0]: 'two' is not of type integer"]),
        ("exclude:\n  - {wrkload: mlp}\n", [":2: exclude[0]", "'wrkload'", "workload"]),
        ("- just\n- a list\n", [":1: a suite must be a YAML mapping"]),
        ("name: x\nmatrix:\n  batch_size: {mlpp: [8]}\n", [":3: matrix.batch_size", "'mlpp'"]),
        ("matrix:\n  batch_size:\n    mlp: [8]\n    cnn: [4]\n    cnnn: [2]\n", [":5: matrix.batch_size", "'cnnn'"]),
        ("exclude:\n  - {workload: mlp}\n  - {variant: int8}\n", [":3: exclude[1].variant: 'int8' is not valid",
                                                                 "int8-dynamic"]),
        ("matrix:\n  mode: [training]\n  world_size: [2.0]\n", [":3: matrix.world_size[0]: 2.0 is not of type integer"]),
        ("settings:\n  size: tiny\n  nnodes: 2\n", [":3: settings: nnodes > 1 needs rdzv_endpoint"]),
        ("settings:\n  threads: 0\n  rdzv_id: ''\n", [":2: settings.threads: must be >= 1", "1 more problem"]),
    ],
)
def test_malformed_suite_file_names_file_line_and_allowed_values(cli, tmp_path, text, needles):
    f = tmp_path / "suite.yaml"
    f.write_text(text)
    proc = cli(["run", "--suite", str(f)])
    _usage_error(proc, str(f), *needles)
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_suite_file_uses_the_safe_loader(cli, tmp_path):
    f = tmp_path / "evil.yaml"
    f.write_text("name: !!python/object/apply:os.system ['echo pwned > " + str(tmp_path / "pwned") + "']\n")
    _usage_error(cli(["run", "--suite", str(f)]), "invalid YAML")
    assert not (tmp_path / "pwned").exists()


def test_missing_suite_file(cli, tmp_path):
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


def test_an_internal_error_has_its_own_exit_code(monkeypatch, capsys):
    """A bug (an unexpected exception) exits 3 with the traceback: never 1, which CI
    reads as "regression" or "failed cells"."""
    from harness import cli
    from harness.commands import env as env_cmd

    def boom(args):
        raise RuntimeError("unexpected state")

    monkeypatch.setattr(env_cmd, "run", boom)
    assert cli.main(["env"]) == cli.EXIT_INTERNAL == 3
    err = capsys.readouterr().err
    assert "Traceback" in err and "internal error: RuntimeError: unexpected state" in err
