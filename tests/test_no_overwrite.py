"""``-o`` never destroys an input: report, export and compare refuse an output path that
is one of the result files they read (issue 13, item 5)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.test_report import make_doc, ok_cell


@pytest.mark.parametrize("verb", ["report", "export", "compare"])
def test_output_that_is_an_input_is_refused(verb: str, cli: Any, tmp_path: Path) -> None:
    d = tmp_path / "runs"
    d.mkdir()
    a, b = d / "a.json", d / "b.json"
    a.write_text(json.dumps(make_doc([ok_cell("mlp", seed=1)])))
    b.write_text(json.dumps(make_doc([ok_cell("mlp", seed=2)])))
    before = a.read_bytes()
    args = {"report": ["report", str(a), "-o", str(a)],
            "export": ["export", str(d), "-o", str(b)],  # a file inside an input directory
            "compare": ["compare", str(a), str(b), "-o", str(a)]}[verb]
    proc = cli(args, timeout=120)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "it is one of the inputs" in proc.stderr and "Traceback" not in proc.stderr
    assert a.read_bytes() == before and json.loads(b.read_text())
