"""Untrusted YAML (suites, prices, compare configs) has a bounded parse cost: an alias
bomb or deep nesting is one line and exit 2 in well under a second, not minutes and GB."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from harness import safeyaml


def _bomb(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        refs = ",".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return "\n".join(lines) + "\n"


def test_alias_bomb_and_deep_nesting_are_refused_fast() -> None:
    t0 = time.perf_counter()
    with pytest.raises(safeyaml.YamlLimitError, match="aliases are expanded"):
        safeyaml.load(_bomb())
    with pytest.raises(safeyaml.YamlLimitError, match="nesting deeper"):
        safeyaml.load("[" * 5000 + "]" * 5000)
    with pytest.raises(safeyaml.YamlLimitError, match="the limit is"):
        safeyaml.load("x: 1\n" * (safeyaml.MAX_BYTES // 4))
    assert time.perf_counter() - t0 < 5
    # ordinary documents, aliases included, load as yaml.safe_load does
    data, root = safeyaml.load("base: &b {size: tiny}\nother: *b\nlist: [1, 2]\n")
    assert data == {"base": {"size": "tiny"}, "other": {"size": "tiny"}, "list": [1, 2]} and root is not None


@pytest.mark.parametrize("where", ["suite-name", "suite-matrix", "prices", "compare-config"])
def test_cli_refuses_a_1kb_alias_bomb_in_any_yaml_input(where: str, cli: Any, tmp_path: Path) -> None:
    bomb = _bomb()
    assert len(bomb) < 1500
    if where == "suite-name":
        f = tmp_path / "s.yaml"
        f.write_text(bomb + "name: *a8\nmatrix: {workload: [mlp]}\n")
        args = ["run", "--suite", str(f)]
    elif where == "suite-matrix":
        f = tmp_path / "s.yaml"
        f.write_text(bomb + "name: x\nmatrix: {workload: *a8}\n")
        args = ["run", "--suite", str(f)]
    else:
        import json

        from tests.test_report import make_doc, ok_cell

        doc = tmp_path / "r.json"  # a valid result: the YAML file is what must be refused
        doc.write_text(json.dumps(make_doc([ok_cell("mlp", seed=1)])))
        f = tmp_path / "x.yaml"
        f.write_text(bomb + "threshold: 5%\n")
        args = (["report", str(doc), "--prices", str(f), "-o", str(tmp_path / "o.html")] if where == "prices"
                else ["compare", str(doc), str(doc), "--config", str(f)])
    t0 = time.perf_counter()
    proc = cli(args, timeout=60)
    assert time.perf_counter() - t0 < 30
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-500:])
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) <= 2, proc.stderr
    assert "alias" in proc.stderr, proc.stderr
