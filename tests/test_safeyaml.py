"""Untrusted YAML (suites, prices, compare configs): a bounded parse cost (an alias bomb or
deep nesting is one line and exit 2 in well under a second, not minutes and GB), UTF-8
only, no duplicate keys, and no Python exception escaping from a value it cannot build."""

from __future__ import annotations

import codecs
import time
from pathlib import Path
from typing import Any

import pytest

from harness.core import safeyaml


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


# ----------------------------------------------------------------------------- duplicate keys, encodings, values


@pytest.mark.parametrize("text, key, lines", [
    ("a: 1\nb: 2\na: 3\n", "a", "on lines 1 and 3"),
    ("x:\n  y: 1\n  y: 2\n", "y", "on lines 2 and 3"),
    ("x: {k: 1, k: 2}\n", "k", "twice on line 1"),
    ("1: a\n1.0: b\n", "1.0", "on lines 1 and 2"),  # equal as Python keys: one would be lost
    ("true: a\nyes: b\n", "yes", "on lines 1 and 2"),
    ("- {a: 1}\n- {b: 1, b: 2}\n", "b", "twice on line 2"),
    ("base: &m {k: 1, k: 2}\nother: *m\n", "k", "twice on line 1"),
])
def test_duplicate_keys_are_refused_naming_both_lines(text: str, key: str, lines: str) -> None:
    with pytest.raises(safeyaml.YamlInputError, match=f"duplicate key '{key}' {lines}") as e:
        safeyaml.load(text)
    assert e.value.problem_mark is not None
    assert safeyaml.describe(e.value, "f.yaml").startswith(f"f.yaml:{e.value.problem_mark.line + 1}: duplicate key")


def test_merge_keys_may_be_overridden_and_distinct_keys_load() -> None:
    data, _ = safeyaml.load("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  x: 5\n'1': s\n1: i\n")
    assert data == {"base": {"x": 1, "y": 2}, "other": {"x": 5, "y": 2}, "1": "s", 1: "i"}


@pytest.mark.parametrize("raw, line, needle", [
    ("name: café\n".encode("latin-1"), 1, "not UTF-8 text: byte 0xe9 at column 10"),
    (b"a: 1\nb: 2\nc: \xff\n", 3, "byte 0xff"),
    ("a: 1\n".encode("utf-16"), 1, "UTF-16"),
    ("a: 1\n".encode("utf-16-be"), 1, "binary data"),
    (codecs.BOM_UTF32_BE + "a: 1\n".encode("utf-32-be"), 1, "UTF-32"),
    (b"a: 1\nb: \x00\x01\x02\n", 2, "binary data"),
])
def test_text_that_is_not_utf8_is_refused_with_its_line(tmp_path: Path, raw: bytes, line: int, needle: str) -> None:
    f = tmp_path / "f.yaml"
    f.write_bytes(raw)
    with pytest.raises(safeyaml.YamlInputError) as e:
        safeyaml.load_file(f)
    msg = safeyaml.describe(e.value, str(f))
    assert msg.startswith(f"{f}:{line}: ") and needle in msg and "\n" not in msg, msg


def test_read_text_reads_at_most_the_limit_and_accepts_a_utf8_bom(tmp_path: Path) -> None:
    f = tmp_path / "big.yaml"
    f.write_bytes(b"#" * (safeyaml.MAX_BYTES + 10))
    with pytest.raises(safeyaml.YamlLimitError, match="the limit is"):
        safeyaml.read_text(f)
    f.write_bytes(codecs.BOM_UTF8 + "name: naïve\n".encode())
    assert safeyaml.load_file(f)[0] == {"name": "naïve"}
    with pytest.raises(OSError):
        safeyaml.read_text(tmp_path / "missing.yaml")


@pytest.mark.parametrize("text, line, needle", [
    ("a: 1\nn: 1" + "0" * 5000 + "\n", 2, "an integer of 5001 digits"),
    ("d: 2001-02-30\n", 1, "'2001-02-30'"),
    ("a: 1\nb: \"x\x07\"\n", 2, "#x0007 is not allowed"),
])
def test_values_python_cannot_build_are_yaml_errors_at_their_line(text: str, line: int, needle: str) -> None:
    with pytest.raises(safeyaml.YamlInputError) as e:
        safeyaml.load(text)
    msg = safeyaml.describe(e.value, "f.yaml")
    assert msg.startswith(f"f.yaml:{line}: ") and needle in msg, msg


def test_non_finite_and_big_numbers_load_as_numbers_for_the_schemas_to_bound() -> None:
    data, _ = safeyaml.load("a: .inf\nb: 1.0e+400\nc: 1" + "0" * 400 + "\n")
    assert data["a"] == data["b"] == float("inf") and data["c"] == 10**400


def test_line_of_points_at_values_and_keys() -> None:
    _, root = safeyaml.load("a:\n  b:\n    - 1\n    - x: 2\nc: 3\n")
    assert safeyaml.line_of(root, ["a", "b", 1, "x"]) == 4
    assert safeyaml.line_of(root, ["c"], key=True) == 5
    assert safeyaml.line_of(root, ["a", "nosuch"]) == 2  # the deepest node found
    assert safeyaml.line_of(None, ["a"]) == 1


@pytest.mark.parametrize("text, needle", [
    ("a: 1\nb: !!timestamp x\n", "'x' as timestamp"),       # PyYAML: AttributeError
    ("a: 1\nb: !!int ''\n", "'' as int"),                   # PyYAML: IndexError
    ("a: 1\nb: !!bool maybe\n", "'maybe' as bool"),         # PyYAML: KeyError
    ("a: 1\nb: !!float x\n", "'x'"),                        # ValueError
    ("a: 1\nb: \"\\ud800\"\n", "lone surrogate"),           # not text: cannot be written back out
    ("a: 1\n\"\\udc80\": 2\n", "lone surrogate"),           # ... in a key too
])
def test_values_an_explicit_tag_or_escape_cannot_build_are_yaml_errors(text: str, needle: str) -> None:
    """Found by tests/test_fuzz.py: an explicit tag on a value that does not fit it made
    PyYAML raise plain Python errors (exit 3), and a lone surrogate escape crashed the
    report that printed it. Both are a bad value at its line."""
    with pytest.raises(safeyaml.YamlInputError) as e:
        safeyaml.load(text)
    msg = safeyaml.describe(e.value, "f.yaml")
    assert msg.startswith("f.yaml:2: ") and needle in msg, msg
