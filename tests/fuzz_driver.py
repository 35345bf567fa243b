"""Mutation fuzzer for the files dl-harness reads (run by tests/test_fuzz.py).

Every file the harness reads is untrusted (docs: shared DESIGN "Untrusted input"):
result files, suite YAML, price lists, compare thresholds configs, pytest-benchmark
JSON and the baseline store's manifest. This driver starts from real, valid seed files
(tests/fixtures/fuzz/ and the shipped suites), mutates them (structure, types, huge and
non-finite numbers, deep nesting, long and odd strings, truncation, byte flips,
non-UTF-8 bytes, duplicate keys, YAML aliases, ...), runs the command that reads each
one **in this process** (``harness.cli.main`` in a loop: a subprocess per case would cost
~1 s of imports each) and checks the documented contract for bad files:

* the exit code is 0, 1 or 2 (never 3 = internal error, never anything else);
* no Python traceback on stderr;
* no hang: each command has a CPU-time limit (30 s, ``ITIMER_PROF``: a loaded machine
  does not make a slow case fail) and a wall-clock limit (120 s, ``ITIMER_REAL``, for a
  case that blocks); a watchdog thread ends the whole driver if a case is stuck where
  neither timer can interrupt it. Cases over 5 s of CPU are listed as ``slow``;
* bounded memory: the driver runs under ``RLIMIT_AS`` (3 GiB by default), so a blow-up
  is a ``MemoryError`` (exit 3, a failure) instead of an OOM-killed machine.

Cases are reproducible: case ``i`` of kind ``k`` uses ``random.Random(f"{seed}/{k}/{i}")``.
The driver writes a JSON summary (``--summary``): cases tried per kind, exit-code
counts, and the failures grouped into classes (exception type + the innermost frame of
the traceback), each with the mutation, the command and the last lines of stderr; with
``--repro-dir`` the case directory of the smallest failing input of each class is
copied there (the mutated file and whatever the command read beside it).

Usage (what the test does)::

    python tests/fuzz_driver.py --seed 20261201 --cases 400 --workdir DIR --summary S.json
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import random
import re
import resource
import shutil
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "fuzz"
SUITES = ROOT / "harness" / "suites"
KINDS = ("result", "suite", "prices", "compare_config", "pytest_benchmark", "baseline_store")
OK_CODES = (0, 1, 2)
OTHER_HOST, OTHER_FP = "other-box", "feedfacecafebeef"  # the second machine derived from result.json
DEEP = "\x00DEEP\x00"  # placeholder replaced by deep nesting after serialisation
HUGE_INT = "\x00HUGEINT\x00"  # placeholder replaced by an integer literal of 5000 digits


class CaseTimeout(BaseException):
    """A case ran past its limit (a BaseException: ``except Exception`` in main must not eat it)."""


# ----------------------------------------------------------------------------- values


def odd_values(rng: random.Random, doc: Any) -> Any:
    """A value of a random type, biased to the edge cases that break parsers."""
    choices: list[Callable[[], Any]] = [
        lambda: None, lambda: True, lambda: False, lambda: 0, lambda: -1, lambda: 1, lambda: 7,
        lambda: 2**63, lambda: -(2**63) - 1, lambda: 10**400, lambda: -(10**400), lambda: 1e308, lambda: -0.0,
        lambda: 1e-320, lambda: 0.5, lambda: float("nan"), lambda: float("inf"), lambda: float("-inf"),
        lambda: "", lambda: "x", lambda: "nan", lambda: "inf", lambda: "-1", lambda: "5%", lambda: "auto",
        lambda: "1e999", lambda: "0x10", lambda: "2026-13-45T99:99:99Z", lambda: "1970-01-01T00:00:00Z",
        lambda: "../../../etc/passwd", lambda: "=HYPERLINK(\"http://x\")", lambda: "+cmd|' /C calc'!A0",
        lambda: "\x00\x01\x1b[31mred\x7f", lambda: "\u202eevil\u202c", lambda: "\ud800", lambda: "\udcff",
        lambda: "é日本\U0001f600", lambda: "a" * rng.choice([300, 70_000, 1_100_000]),
        lambda: "line1\nline2\r\n\tx", lambda: "{\"a\": 1}", lambda: "- a\n- b", lambda: "*alias",
        lambda: [], lambda: [None], lambda: [1, "2", None], lambda: {}, lambda: {"a": 1},
        lambda: {"": None, " ": []}, lambda: [0.0] * rng.choice([10, 1000, 200_000]),
        lambda: [[]] * 50, lambda: DEEP, lambda: HUGE_INT,
        lambda: copy.deepcopy(random_node(rng, doc)[1]),  # type confusion: another part of the file
    ]
    return rng.choice(choices)()


def all_paths(doc: Any, limit: int = 20000) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    stack: list[tuple[tuple[Any, ...], Any]] = [((), doc)]
    while stack and len(out) < limit:
        path, node = stack.pop()
        out.append(path)
        if isinstance(node, dict):
            stack.extend((path + (k,), v) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((path + (i,), v) for i, v in enumerate(node[:20]))  # long sample arrays: a few
    return out


def get(doc: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        doc = doc[p]
    return doc


def random_node(rng: random.Random, doc: Any) -> tuple[tuple[Any, ...], Any]:
    """A random (path, node): half uniform over all nodes, half a random walk from the
    root that stops early (shallow, structural keys get hit often)."""
    if rng.random() < 0.5:
        path = rng.choice(all_paths(doc))
        return path, get(doc, path)
    path: tuple[Any, ...] = ()
    node = doc
    while isinstance(node, (dict, list)) and node and rng.random() > 0.3:
        k = rng.choice(list(node)) if isinstance(node, dict) else rng.randrange(len(node))
        path, node = path + (k,), node[k]
    return path, node


def short(path: tuple[Any, ...]) -> str:
    s = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path) or "<root>"
    return s if len(s) < 160 else s[:157] + "..."


def brief(v: Any) -> str:
    if v == DEEP:
        return "<deep nesting>"
    if v == HUGE_INT:
        return "<5000-digit int>"
    r = repr(v)
    return r if len(r) <= 60 else f"{r[:40]}...({len(r)} chars)"


def tree_mutation(rng: random.Random, doc: Any) -> tuple[Any, str]:
    """One structural mutation of a parsed JSON/YAML tree; returns (new doc, description)."""
    path, node = random_node(rng, doc)
    op = rng.choice(["delete", "delete", "replace", "replace", "replace", "retype", "swap", "dup_elem",
                     "rename_key", "empty", "wrap", "bloat"])
    if not path:  # the root itself
        if op in ("replace", "retype", "empty", "delete"):
            new = odd_values(rng, doc)
            return new, f"root := {brief(new)}"
        depth = rng.choice([2, 40, 300])
        for _ in range(depth):
            doc = [doc] if rng.random() < 0.5 else {"x": doc}
        return doc, f"root wrapped {depth} levels deep"
    parent, key = get(doc, path[:-1]), path[-1]
    if op == "delete":
        del parent[key]
        return doc, f"delete {short(path)}"
    if op == "replace":
        new = odd_values(rng, doc)
        parent[key] = new
        return doc, f"{short(path)} := {brief(new)}"
    if op == "retype":
        if isinstance(node, bool) or node is None:
            new = rng.choice([str(node), 1, [node], {"value": node}])
        elif isinstance(node, (int, float)):
            new = rng.choice([str(node), [node], {"value": node}, None,
                              node * 10**30 if isinstance(node, int) else -node,
                              float("nan")])
        elif isinstance(node, str):
            new = rng.choice([1, 0.0, [node], {node: node}, None, node.upper(), node + "\x00", node * 1000, True])
        elif isinstance(node, list):
            new = rng.choice([{str(i): v for i, v in enumerate(node)}, node[:1], None, "list", len(node), node[::-1]])
        else:
            new = rng.choice([list(node.values()), list(node), None, "dict", 0, {}])
        parent[key] = new
        return doc, f"{short(path)} retyped {type(node).__name__} -> {type(new).__name__} {brief(new)}"
    if op == "swap":
        p2, n2 = random_node(rng, doc)
        if p2[: len(path)] == path or path[: len(p2)] == p2 or not p2:
            parent[key] = copy.deepcopy(n2)
            return doc, f"{short(path)} := copy of {short(p2)}"
        parent2, key2 = get(doc, p2[:-1]), p2[-1]
        parent[key], parent2[key2] = n2, node
        return doc, f"swap {short(path)} <-> {short(p2)}"
    if op == "dup_elem" and isinstance(parent, list):
        parent.insert(key, copy.deepcopy(node))
        return doc, f"duplicate element {short(path)}"
    if op == "rename_key" and isinstance(parent, dict):
        new_key = rng.choice([str(key).upper(), f" {key}", f"{key}_x", "", "\u00e9", "__proto__", str(key) + "\x00"])
        parent[new_key] = parent.pop(key)
        return doc, f"rename key {short(path)} -> {new_key!r}"
    if op == "empty":
        new = rng.choice([{}, [], "", None])
        parent[key] = new
        return doc, f"{short(path)} := {brief(new)}"
    if op == "bloat" and isinstance(node, list) and node and len(json.dumps(node, default=str)) < 100_000:
        n = rng.choice([100, 10_000])
        parent[key] = (node * (n // len(node) + 1))[:n]
        return doc, f"{short(path)} repeated to {n} elements"
    if op == "bloat" and isinstance(node, dict) and node:
        for i in range(rng.choice([100, 5000])):
            node[f"extra_{i}"] = rng.choice([1, "x", None, [1]])
        return doc, f"{short(path)} gets thousands of extra keys"
    depth = rng.choice([2, 40, 300])
    new = node
    for _ in range(depth):
        new = [new] if rng.random() < 0.5 else {"x": new}
    parent[key] = new
    return doc, f"{short(path)} wrapped {depth} levels deep"


def byte_mutation(rng: random.Random, data: bytes, yaml_text: bool) -> tuple[bytes, str]:
    """One mutation of the serialised bytes."""
    ops = ["truncate", "flip", "insert", "nonutf8", "number_token", "dup_key", "empty", "garbage"]
    if yaml_text:
        ops += ["yaml_alias", "yaml_bomb", "yaml_merge", "yaml_tag", "yaml_dup_line", "yaml_multi_doc", "yaml_tab"]
    op = rng.choice(ops)
    n = len(data)
    if op == "truncate":
        k = rng.randrange(0, max(1, n))
        return data[:k], f"truncate to {k} of {n} bytes"
    if op == "flip":
        b = bytearray(data)
        count = rng.choice([1, 2, 8])
        for _ in range(count):
            if b:
                i = rng.randrange(len(b))
                b[i] ^= 1 << rng.randrange(8)
        return bytes(b), f"flip {count} random bit(s)"
    if op == "insert":
        ins = rng.choice([b"\x00", b"\xef\xbb\xbf", b"{", b"]", b",", b"\"", b"\\", b"\\u0000", b"\\ud800", b"\n", b"#",
                          b"&", b"*", b"!", b"%"])
        i = 0 if rng.random() < 0.2 else rng.randrange(0, n + 1)
        return data[:i] + ins + data[i:], f"insert {ins!r} at byte {i}"
    if op == "nonutf8":
        ins = rng.choice([b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\x80", b"\xf4\x90\x80\x80"])
        i = rng.randrange(0, n + 1)
        return data[:i] + ins + data[i:], f"insert non-UTF-8 {ins!r} at byte {i}"
    if op == "number_token":
        nums = list(re.finditer(rb"(?<![\w.\"])-?\d+(\.\d+)?([eE][-+]?\d+)?(?![\w\"])", data))
        if nums:
            m = rng.choice(nums)
            tok = rng.choice([b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999", b"1" + b"0" * 5000, b"-0",
                              b".nan", b".inf", b"0x1F", b"1_000", b"01"])
            return data[: m.start()] + tok + data[m.end():], f"number {m.group().decode()[:20]} -> {tok[:20]!r}"
        return data + b"\n", "append newline"
    if op == "dup_key":
        if yaml_text:
            return _yaml_dup_line(rng, data)
        pairs = list(re.finditer(rb"\"([A-Za-z_]\w*)\": (\"[^\"\\]*\"|-?\d[\d.eE+-]*|true|false|null)", data))
        if pairs:
            m = rng.choice(pairs)
            dup = b", \"" + m.group(1) + b"\": " + rng.choice([b"null", b"\"dup\"", b"-5", b"[]", b"{}"])
            return data[: m.end()] + dup + data[m.end():], f"duplicate key {m.group(1).decode()!r}"
        return data, "no-op"
    if op == "empty":
        new = rng.choice([b"", b" \n", b"null", b"[]", b"{}", b"123", b"\"s\"", b"---\n", b"~"])
        return new, f"whole file := {new!r}"
    if op == "garbage":
        g = bytes(rng.randrange(256) for _ in range(rng.choice([1, 16, 256])))
        return data + g, f"append {len(g)} random bytes"
    if op == "yaml_dup_line":
        return _yaml_dup_line(rng, data)
    lines = data.split(b"\n")
    kv = [i for i, ln in enumerate(lines) if re.match(rb"^(\s*)([^\s:#\-][^:#]*): (\S.*)$", ln)]
    if op == "yaml_alias" and len(kv) >= 2:
        a, b = rng.sample(kv, 2)
        ma = re.match(rb"^(\s*[^:]+): (.*)$", lines[a])
        mb = re.match(rb"^(\s*[^:]+): (.*)$", lines[b])
        assert ma and mb
        lines[a] = ma.group(1) + b": &fz " + ma.group(2)
        lines[b] = mb.group(1) + b": *fz"
        return b"\n".join(lines), f"YAML alias: line {b + 1} := *fz (anchor on line {a + 1})"
    if op == "yaml_bomb":
        depth, width = rng.choice([(3, 5), (9, 9), (20, 2)])
        bomb = [b"b0: &b0 [lol, lol]"]
        for i in range(1, depth):
            bomb.append(b"b%d: &b%d [" % (i, i) + b", ".join([b"*b%d" % (i - 1)] * width) + b"]")
        body = b"\n".join(bomb) + b"\n"
        if kv:  # use the bomb as a value too
            i = rng.choice(kv)
            m = re.match(rb"^(\s*[^:]+): (.*)$", lines[i])
            assert m
            lines[i] = m.group(1) + b": *b%d" % (depth - 1)
        return body + b"\n".join(lines), f"YAML alias bomb depth {depth} width {width}"
    if op == "yaml_merge" and kv:
        i = rng.choice(kv)
        m = re.match(rb"^(\s*)", lines[i])
        assert m
        target = rng.choice([b"*mz", b"[*mz, *mz]", b"1", b"[1, 2]"])
        lines.insert(i, m.group(1) + b"<<: " + target)
        return b"mzz: &mz {min_time_s: -1, x: 1}\n" + b"\n".join(lines), f"YAML merge key <<: {target.decode()}"
    if op == "yaml_tag" and kv:
        i = rng.choice(kv)
        m = re.match(rb"^(\s*[^:]+): (.*)$", lines[i])
        assert m
        tag = rng.choice([b"!!python/object:os.system", b"!!binary", b"!!timestamp", b"!!set", b"!!float", b"!!int",
                          b"!!str", b"!custom", b"!!python/name:os.system"])
        lines[i] = m.group(1) + b": " + tag + b" " + m.group(2)
        return b"\n".join(lines), f"YAML tag {tag.decode()} on line {i + 1}"
    if op == "yaml_multi_doc":
        return data + b"\n---\n" + data[: n // 2], "second YAML document"
    if op == "yaml_tab" and kv:
        i = rng.choice(kv)
        lines[i] = b"\t" + lines[i]
        return b"\n".join(lines), f"tab indent on line {i + 1}"
    return data + b"\n#", "append comment"


def _yaml_dup_line(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    lines = data.split(b"\n")
    kv = [i for i, ln in enumerate(lines) if re.match(rb"^\s*[^\s:#\-][^:#]*:", ln)]
    if not kv:
        return data, "no-op"
    i = rng.choice(kv)
    lines.insert(i + 1, lines[i])
    return b"\n".join(lines), f"duplicate YAML line {i + 1} ({lines[i][:40].decode('utf-8', 'replace').strip()!r})"


def dump(doc: Any, fmt: str, rng: random.Random) -> bytes:
    """Serialise ``doc`` as JSON or YAML, then expand the DEEP / HUGE_INT placeholders."""
    if fmt == "json":
        text = json.dumps(doc, indent=rng.choice([None, 1]), ensure_ascii=rng.random() < 0.5)
        deep_tok, huge_tok = json.dumps(DEEP), json.dumps(HUGE_INT)
    else:
        import yaml

        text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=rng.random() < 0.5, width=1_000_000,
                              default_flow_style=rng.choice([False, None]))
        deep_tok, huge_tok = yaml.safe_dump(DEEP).split("\n")[0], yaml.safe_dump(HUGE_INT).split("\n")[0]
    if deep_tok in text:  # (PyYAML's scanner is slow on deep flow nesting: ~3 s for 1000 levels)
        d = rng.choice([100, 1000, 100_000] if fmt == "json" else [70, 100, 100, 100, 3000])
        text = text.replace(deep_tok, "[" * d + "]" * d)
    if huge_tok in text:
        text = text.replace(huge_tok, "9" * 5000)
    return text.encode("utf-8", "surrogatepass")


def mutate(rng: random.Random, seed_doc: Any, fmt: str) -> tuple[bytes, list[str]]:
    """1-3 stacked mutations: structural ones on the tree, then byte-level ones. ``seed_doc``
    is the seed's tree or (faster to copy) its JSON text."""
    doc = json.loads(seed_doc) if isinstance(seed_doc, str) else copy.deepcopy(seed_doc)
    notes: list[str] = []
    n_tree = rng.choice([0, 1, 1, 1, 2, 3])
    n_bytes = rng.choice([0, 0, 0, 1, 1, 2]) if n_tree else rng.choice([1, 1, 2])
    for _ in range(n_tree):
        try:
            doc, note = tree_mutation(rng, doc)
        except (RecursionError, MemoryError) as e:  # copying a subtree this driver made too deep or too big
            notes.append(f"(mutation skipped: {type(e).__name__})")
            break
        notes.append(note)
    try:
        data = dump(doc, fmt, rng)
    except (ValueError, TypeError, RecursionError, MemoryError) as e:  # e.g. YAML cannot represent a lone surrogate
        notes.append(f"(serialisation failed: {type(e).__name__}; seed kept)")
        data = dump(json.loads(seed_doc) if isinstance(seed_doc, str) else copy.deepcopy(seed_doc), fmt, rng)
    for _ in range(n_bytes):
        data, note = byte_mutation(rng, data, fmt == "yaml")
        notes.append(note)
    return data, notes


# ----------------------------------------------------------------------------- running one command


LIMITS = {"cpu_s": 30.0, "wall_s": 120.0}  # per command; set from the command line
SLOW_CPU_S = 5.0  # a case over this much CPU time is listed in the summary (not a failure)


def invoke(argv: list[str], cpu_s: float | None = None,
           wall_s: float | None = None) -> tuple[Any, str, str, float, float]:
    """``harness.cli.main(argv)`` in this process: (exit code, or 'timeout (...)', stdout tail,
    stderr, CPU seconds, wall seconds).

    The limit that makes a case a hang is on CPU time (``ITIMER_PROF``), so that a loaded
    machine does not turn a slow case into a failure; a wall-clock limit (``ITIMER_REAL``)
    catches a case that blocks without using CPU."""
    from harness import cli

    cpu_s = LIMITS["cpu_s"] if cpu_s is None else cpu_s
    wall_s = LIMITS["wall_s"] if wall_s is None else wall_s
    out, err = io.StringIO(), io.StringIO()
    code: Any = None

    def on_timer(signum: int, frame: Any) -> None:
        raise CaseTimeout(f"CPU time over {cpu_s:g} s" if signum == signal.SIGPROF else f"wall time over {wall_s:g} s")

    old = {sig: signal.signal(sig, on_timer) for sig in (signal.SIGALRM, signal.SIGPROF)}
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            signal.setitimer(signal.ITIMER_PROF, cpu_s)
            signal.setitimer(signal.ITIMER_REAL, wall_s)
            try:
                code = cli.main(argv)
            except SystemExit as e:  # argparse errors
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            finally:
                signal.setitimer(signal.ITIMER_PROF, 0)
                signal.setitimer(signal.ITIMER_REAL, 0)
    except CaseTimeout as e:
        code = f"timeout ({e})"
    except BaseException as e:  # noqa: BLE001 - escaped main(): a failure to report, not to crash on
        code = "escaped"
        err.write("".join(traceback.format_exception(type(e), e, e.__traceback__)))
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    return code, out.getvalue()[-2000:], err.getvalue(), time.process_time() - c0, time.perf_counter() - t0


_FRAME = re.compile(r'^\s*File "([^"]+)", line (\d+), in (\S+)', re.M)


def failure_class(code: Any, stderr: str, argv: list[str]) -> str | None:
    """None for a pass; else 'ExcType at file:function' (innermost frame of the last
    traceback), 'timeout in VERB', or 'exit N (VERB)'."""
    verb = argv[0] if argv else "?"
    if isinstance(code, str) and code.startswith("timeout"):
        return f"{code} in harness {verb}"
    has_tb = "Traceback (most recent call last)" in stderr
    if code in OK_CODES and not has_tb:
        return None
    if has_tb:
        tb = stderr[stderr.rfind("Traceback (most recent call last)"):]
        frames = _FRAME.findall(tb)
        exc_re = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Warning|Timeout)\b")
        exc_line = next((ln for ln in tb.splitlines() if exc_re.match(ln)), "")
        exc = exc_line.split(":")[0].strip() or "?"
        where = "?"
        if frames:
            f, line, fn = frames[-1]
            try:
                f = str(Path(f).resolve().relative_to(ROOT))
            except ValueError:
                f = "/".join(Path(f).parts[-2:])
            where = f"{f}:{fn}"
            own = [fr for fr in frames if str(ROOT) in fr[0] and "/.venv/" not in fr[0]]
            if own and own[-1] is not frames[-1]:
                of, ol, ofn = own[-1]
                where += f" (from {Path(of).resolve().relative_to(ROOT)}:{ofn})"
        return f"{exc} at {where} [exit {code}]"
    return f"exit {code} in harness {verb}"


# ----------------------------------------------------------------------------- the file kinds


class PlainRng(random.Random):
    """For the seed checks: every ``rng.choice`` takes the first (plain) option and no
    ``rng.random() < p`` option is added, so the unmutated seed runs the basic command."""

    def random(self) -> float:
        return 0.999

    def choice(self, seq: Any) -> Any:
        return seq[0]


class Kind:
    """A file kind: its seeds, its format and the commands that read a mutated file."""

    name = ""
    fmt = "json"
    ext = ".json"

    def __init__(self, work: Path) -> None:
        self.work = work
        self.seed_result = FIXTURES / "result.json"

    def seeds(self) -> list[Any]:
        raise NotImplementedError

    def commands(self, rng: random.Random, path: Path, case_dir: Path) -> list[list[str]]:
        raise NotImplementedError

    def prepare(self, rng: random.Random, data: bytes, case_dir: Path) -> Path:
        p = case_dir / f"input{self.ext}"
        p.write_bytes(data)
        return p


def _compare_opts(rng: random.Random) -> list[str]:
    opts: list[str] = []
    if rng.random() < 0.5:
        opts += ["--allow-contended"]
    if rng.random() < 0.3:
        opts += ["--within-run"]
    if rng.random() < 0.3:
        opts += ["--stat", rng.choice(["min", "p10", "p50", "mean"])]
    if rng.random() < 0.3:
        opts += ["--metric", rng.choice(["throughput_per_s", "peak_host_mem_bytes", "quality.accuracy",
                                          "energy_per_sample_j", "latency_ms.p90", "first_iter_ms"])]
    if rng.random() < 0.3:
        opts += ["--threshold", rng.choice(["5", "auto", "0"])]
    if rng.random() < 0.2:
        opts += ["--fail-on-missing"]
    opts += ["--format", rng.choice(["table", "markdown", "json"])]
    return opts


class ResultKind(Kind):
    name = "result"

    def seeds(self) -> list[Any]:
        return [json.loads(self.seed_result.read_text())]

    def commands(self, rng: random.Random, path: Path, case_dir: Path) -> list[list[str]]:
        seed, other = str(self.seed_result), str(self.work / "machines" / "other.json")
        pick = rng.choice(["md", "md", "html", "dir", "dir", "cmp_a", "cmp_b", "csv", "csv_samples", "parquet",
                           "baseline"])
        if pick == "md":
            return [["report", str(path), "--format", "markdown", "-o", str(case_dir / "r.md")]]
        if pick == "html":
            return [["report", str(path), "-o", str(case_dir / "r.html")]]
        if pick == "dir":  # history, regressions and the procurement view (two machines)
            d = case_dir / "runs"
            d.mkdir()
            shutil.copy(seed, d / "a.json")
            shutil.copy(other, d / "b.json")
            shutil.copy(path, d / "c.json")
            fmt = (["--format", "markdown", "-o", str(case_dir / "r.md")] if rng.random() < 0.7
                   else ["-o", str(case_dir / "r.html")])
            return [["report", str(d), *fmt, "--rank-by", rng.choice(["throughput", "latency", "perf_per_watt"])],
                    ["compare", str(d), str(path), "--format", "json"]]
        if pick == "cmp_a":
            return [["compare", seed, str(path), *_compare_opts(rng)]]
        if pick == "cmp_b":
            return [["compare", str(path), seed, *_compare_opts(rng)]]
        if pick in ("csv", "csv_samples"):
            extra = ["--samples"] if pick == "csv_samples" else []
            if rng.random() < 0.3:
                extra += rng.choice([["--since", "7d"], ["--status", "ok"], ["-w", "mlp"], ["--world-size", "0"],
                                     ["--until", "2030-01-01"], ["--tag", "fuzz-seed"], ["--host", "vm"]])
            return [["export", str(path), "--format", "csv", "-o", str(case_dir / "r.csv"), *extra]]
        if pick == "parquet":
            return [["export", str(path), "--format", "parquet", "-o", str(case_dir / "r.parquet")]]
        store = str(case_dir / "store")
        return [["baseline", "set", str(path), "--store", store, "--name", "fz"],
                ["baseline", "show", "--store", store, "--name", "fz"],
                ["compare", "--baseline", "fz", "--store", store, seed, "--format", "json"]]


class SuiteKind(Kind):
    name = "suite"
    fmt = "yaml"
    ext = ".yaml"

    def seeds(self) -> list[Any]:
        import yaml

        return [yaml.safe_load((SUITES / f).read_text()) for f in ("quick.yaml", "smoke.yaml")]

    def commands(self, rng: random.Random, path: Path, case_dir: Path) -> list[list[str]]:
        # `harness run` has no dry-run: --out naming an existing *file* makes the run stop with
        # exit 2 right after the suite is parsed, validated and expanded, before any cell runs
        blocker = case_dir / "out-is-a-file"
        blocker.write_text("")
        extra = rng.choice([[], [], ["--size", "tiny"], ["-w", "mlp"], ["--repeats", "2"], ["--world-size", "1,2"]])
        return [["run", "--suite", str(path), "--out", str(blocker), "--no-progress", *extra]]


class PricesKind(Kind):
    name = "prices"
    fmt = "yaml"
    ext = ".yaml"

    def seeds(self) -> list[Any]:
        import yaml

        return [yaml.safe_load((FIXTURES / "prices.yaml").read_text())]

    def commands(self, rng: random.Random, path: Path, case_dir: Path) -> list[list[str]]:
        d = self.work / "machines"
        out = (["--format", "markdown", "-o", str(case_dir / "r.md")] if rng.random() < 0.8
               else ["-o", str(case_dir / "r.html")])
        return [["report", str(d), "--prices", str(path), *out,
                 "--rank-by", rng.choice(["perf_per_dollar", "perf_per_dollar", "throughput", "latency"])]]


class CompareConfigKind(Kind):
    name = "compare_config"
    fmt = "yaml"
    ext = ".yaml"

    def seeds(self) -> list[Any]:
        import yaml

        return [yaml.safe_load((FIXTURES / "thresholds.yaml").read_text())]

    def commands(self, rng: random.Random, path: Path, case_dir: Path) -> list[list[str]]:
        seed = str(self.seed_result)
        return [["compare", seed, seed, "--config", str(path), *_compare_opts(rng)]]


class PytestBenchmarkKind(Kind):
    name = "pytest_benchmark"

    def seeds(self) -> list[Any]:
        return [json.loads((FIXTURES / "pytest_benchmark.json").read_text())]

    def commands(self, rng: random.Random, path: Path, case_dir: Path) -> list[list[str]]:
        out = case_dir / "imported"
        extra = rng.choice([[], [], ["--device", "cuda"], ["--tag", "t"]])
        return [["import", "pytest-benchmark", str(path), "-o", str(out), "--force", *extra],
                ["report", str(out), "--format", "markdown", "-o", str(case_dir / "r.md")],
                ["export", str(out), "--format", "csv", "-o", str(case_dir / "r.csv")]]


class BaselineStoreKind(Kind):
    """A stored baseline whose manifest (or stored run) was edited or corrupted."""

    name = "baseline_store"

    def seeds(self) -> list[Any]:
        manifest = json.loads((self.work / "store-template" / "fz" / "manifest.json").read_text())
        return [manifest]

    def prepare(self, rng: random.Random, data: bytes, case_dir: Path) -> Path:
        store = case_dir / "store"
        shutil.copytree(self.work / "store-template", store)
        if rng.random() < 0.75:
            target = store / "fz" / "manifest.json"
            target.write_bytes(data)
            return target
        # corrupt the stored run instead; half the time with a matching sha256 in the manifest,
        # so that the store's integrity check passes and the run itself is parsed
        import hashlib

        run = next((store / "fz" / "runs").glob("*.json"))
        doc, notes = mutate(rng, run.read_text(), "json")
        run.write_bytes(doc)
        self.extra_notes = [f"stored run: {n}" for n in notes]
        if rng.random() < 0.5:
            m = json.loads((store / "fz" / "manifest.json").read_text())
            m["runs"][0]["sha256"] = hashlib.sha256(doc).hexdigest()
            (store / "fz" / "manifest.json").write_text(json.dumps(m))
            self.extra_notes.append("manifest sha256 updated to match")
        return run

    def commands(self, rng: random.Random, path: Path, case_dir: Path) -> list[list[str]]:
        store = str(case_dir / "store")
        seed = str(self.seed_result)
        return [rng.choice([["baseline", "show", "--store", store, "--name", "fz"],
                            ["baseline", "show", "--store", store, "--name", "fz", "--json"],
                            ["baseline", "list", "--store", store],
                            ["compare", "--baseline", "fz", "--store", store, seed, "--format", "json"]])]


KIND_CLASSES = {k.name: k for k in (ResultKind, SuiteKind, PricesKind, CompareConfigKind, PytestBenchmarkKind,
                                    BaselineStoreKind)}


def setup_work(work: Path) -> None:
    """The derived seeds: a second machine's run (for the procurement view and prices) and
    a baseline store template."""
    machines = work / "machines"
    machines.mkdir(parents=True, exist_ok=True)
    doc = json.loads((FIXTURES / "result.json").read_text())
    (machines / "this.json").write_text(json.dumps(doc))
    doc["environment"]["host"] = OTHER_HOST
    doc["environment"]["fingerprint"] = OTHER_FP
    doc["run_id"] = doc["run_id"].replace("-vm-", f"-{OTHER_HOST}-")
    for cell in doc["cells"]:  # a faster machine
        lat = cell.get("metrics", {}).get("latency_ms")
        if isinstance(lat, dict):
            for k, v in list(lat.items()):
                if isinstance(v, float):
                    lat[k] = v / 2
        if isinstance(cell.get("metrics", {}).get("throughput_per_s"), float):
            cell["metrics"]["throughput_per_s"] *= 2
    (machines / "other.json").write_text(json.dumps(doc))
    tpl = work / "store-template"
    if not tpl.exists():
        code, _, err, _, _ = invoke(["baseline", "set", str(FIXTURES / "result.json"), "--store", str(tpl),
                                     "--name", "fz"])
        if code != 0:
            raise SystemExit(f"fuzz driver: cannot create the baseline store template (exit {code}): {err[-2000:]}")


# ----------------------------------------------------------------------------- main loop


class Summary:
    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.tried: dict[str, int] = {}
        self.codes: dict[str, dict[str, int]] = {}
        self.classes: dict[str, dict[str, Any]] = {}
        self.slowest: list[tuple[float, float, str, int, list[str]]] = []
        self.slow: list[dict[str, Any]] = []
        self.seed_checks: list[dict[str, Any]] = []
        self.aborted: str | None = None
        self.started = time.time()

    def to_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "cases": sum(self.tried.values()),
            "tried": self.tried,
            "exit_codes": self.codes,
            "failures": sum(c["count"] for c in self.classes.values()),
            "classes": self.classes,
            "slowest": [{"cpu_s": round(c, 2), "wall_s": round(w, 2), "kind": k, "case": i, "argv": a}
                        for c, w, k, i, a in self.slowest],
            "slow": self.slow,
            "seed_checks": self.seed_checks,
            "aborted": self.aborted,
            "wall_s": round(time.time() - self.started, 1),
        }


def write_summary(summary: Summary, path: Path | None) -> None:
    text = json.dumps(summary.to_json(), indent=1, default=str)
    if path:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    else:
        print(text)


def run_case(kind: Kind, index: int, seed: int, case_dir: Path, summary: Summary,
             repro_dir: Path | None, current: dict[str, Any]) -> None:
    rng = random.Random(f"{seed}/{kind.name}/{index}")
    seeds = kind.seeds_cache
    seed_doc = seeds[rng.randrange(len(seeds))]
    kind.extra_notes = []
    try:
        data, notes = mutate(rng, seed_doc, kind.fmt)
        if case_dir.exists():
            shutil.rmtree(case_dir, ignore_errors=True)
        case_dir.mkdir(parents=True)
        path = kind.prepare(rng, data, case_dir)
    except Exception as e:  # noqa: BLE001 - a bug of this driver: reported (the test fails), the others go on
        cls = f"driver: fuzz driver error {type(e).__name__} preparing a {kind.name} case"
        tail = traceback.format_exc().splitlines()[-8:]
        entry = summary.classes.setdefault(cls, {"count": 0, "kind": "driver", "case": index, "argv": [],
                                                 "mutation": [], "stderr_tail": tail})
        entry["count"] += 1
        return
    notes = notes + kind.extra_notes
    data = path.read_bytes()
    summary.tried[kind.name] = summary.tried.get(kind.name, 0) + 1
    for argv in kind.commands(rng, path, case_dir):
        current.update(kind=kind.name, case=index, argv=argv, notes=notes, t0=time.monotonic())
        code, _out, err, cpu, wall = invoke(argv)
        current.update(t0=None)
        counts = summary.codes.setdefault(kind.name, {})
        counts[str(code)] = counts.get(str(code), 0) + 1
        summary.slowest = sorted(summary.slowest + [(cpu, wall, kind.name, index, argv)], key=lambda t: -t[0])[:5]
        if cpu > SLOW_CPU_S and len(summary.slow) < 50:
            summary.slow.append({"kind": kind.name, "case": index, "cpu_s": round(cpu, 2), "wall_s": round(wall, 2),
                                 "argv": argv, "mutation": notes, "input_bytes": len(data), "exit": code})
        cls = failure_class(code, err, argv)
        if cls is None:
            continue
        cls = f"{kind.name}: {cls}"  # the same bug reached through another file kind is routed separately
        entry = summary.classes.get(cls)
        if entry is None:
            entry = summary.classes[cls] = {"count": 0, "kind": kind.name, "cases": []}
        entry["count"] += 1
        if len(entry["cases"]) < 3:
            entry["cases"].append(index)
        if "input_bytes" not in entry or len(data) < entry["input_bytes"]:
            entry.update(case=index, input_bytes=len(data), mutation=notes, argv=argv, exit=code,
                         stderr_tail=err.strip().splitlines()[-12:])
            if repro_dir:  # the whole case directory: the mutated file and what the command needs beside it
                slug = re.sub(r"[^A-Za-z0-9]+", "_", cls)[:90].strip("_")
                target = repro_dir / f"{kind.name}__{slug}"
                shutil.rmtree(target, ignore_errors=True)
                shutil.copytree(case_dir, target, symlinks=True)
                entry.update(repro=str(target / path.relative_to(case_dir)), repro_case_dir=str(target),
                             case_dir=str(case_dir), work=str(case_dir.parent))
        break  # the rest of a chain would only repeat the failure


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=20261201)
    ap.add_argument("--cases", type=int, default=400, help="cases per kind")
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--shard", default="0/1", help="I/N: run the cases whose index %% N == I")
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--summary", default=None)
    ap.add_argument("--repro-dir", default=None)
    ap.add_argument("--case-cpu-s", type=float, default=LIMITS["cpu_s"], help="CPU-time limit of one command")
    ap.add_argument("--case-wall-s", type=float, default=LIMITS["wall_s"], help="wall-clock limit of one command")
    ap.add_argument("--budget-s", type=float, default=0.0, help="stop starting cases after this many seconds (0: none)")
    ap.add_argument("--memory-gb", type=float, default=3.0)
    ap.add_argument("--only", default=None, metavar="KIND:I", help="run just case I of KIND (to reproduce one)")
    args = ap.parse_args()

    LIMITS.update(cpu_s=args.case_cpu_s, wall_s=args.case_wall_s)
    limit = int(args.memory_gb * (1 << 30))
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 1000))
    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)  # any default output path (results/, baselines/) lands here
    os.environ["HARNESS_BASELINE_DIR"] = str(work / "default-baselines")
    repro = Path(args.repro_dir).resolve() if args.repro_dir else None
    if repro:
        repro.mkdir(parents=True, exist_ok=True)
    summary_path = Path(args.summary).resolve() if args.summary else None
    shard_i, shard_n = (int(x) for x in args.shard.split("/"))
    summary = Summary(args.seed)
    print(f"fuzz driver: seed {args.seed}, {args.cases} cases per kind, shard {args.shard}", file=sys.stderr,
          flush=True)

    import functools
    import warnings

    from harness import cli

    # main() builds its argparse parser on every call (60 ms, most of a case); the parser is
    # not what is fuzzed and parse_args() does not change it, so build it once
    cli.build_parser = functools.lru_cache(maxsize=None)(cli.build_parser)  # type: ignore[method-assign]
    warnings.simplefilter("ignore")  # a warning is not a failure; tracebacks are what we look for

    setup_work(work)
    kinds = [KIND_CLASSES[k](work) for k in args.kinds.split(",") if k]
    for k in kinds:
        k.seeds_cache = [json.dumps(s) for s in k.seeds()]
    # the unmutated seeds must pass, or every mutation result would be meaningless
    for k in kinds:
        case_dir = work / f"seedcheck-{k.name}"
        case_dir.mkdir(exist_ok=True)
        rng = random.Random(0)
        raw = dump(json.loads(k.seeds_cache[0]), k.fmt, rng)
        k.extra_notes = []
        if k.name == "baseline_store":
            shutil.copytree(work / "store-template", case_dir / "store", dirs_exist_ok=True)
            path = case_dir / "store" / "fz" / "manifest.json"
        else:
            path = k.prepare(rng, raw, case_dir)
        for argv in k.commands(PlainRng(), path, case_dir):
            code, _, err, _, _ = invoke(argv)
            # a valid suite stops (exit 2) only at the --out that is a file, after validation
            ok = (code == 2 and "out-is-a-file" in err) if k.name == "suite" else code == 0
            summary.seed_checks.append({"kind": k.name, "argv": argv, "exit": code, "ok": ok and "Traceback" not in err,
                                        "stderr_tail": err.strip().splitlines()[-5:]})

    current: dict[str, Any] = {"t0": None}
    hard_limit = args.case_wall_s + 30

    def watchdog() -> None:  # a case stuck where SIGALRM cannot interrupt it (C code, a lock)
        while True:
            time.sleep(1)
            t0 = current.get("t0")
            if t0 is not None and time.monotonic() - t0 > hard_limit:
                cls = f"{current['kind']}: hang (not interruptible) in harness {current['argv'][0]}"
                summary.classes[cls] = {"count": 1, "kind": current["kind"], "case": current["case"],
                                        "argv": current["argv"], "mutation": current["notes"], "exit": "hang"}
                summary.aborted = f"case {current['kind']}#{current['case']} ran over {hard_limit:g} s"
                write_summary(summary, summary_path)
                os._exit(5)

    threading.Thread(target=watchdog, daemon=True).start()
    t_start = time.monotonic()
    if args.only:
        kind_name, index = args.only.split(":")
        k = next(k for k in kinds if k.name == kind_name)
        run_case(k, int(index), args.seed, work / "case", summary, repro, current)
        write_summary(summary, summary_path)
        return 0
    for i in range(args.cases):
        if i % shard_n != shard_i:
            continue
        if args.budget_s and time.monotonic() - t_start > args.budget_s:
            summary.aborted = f"time budget of {args.budget_s:g} s spent after {i} cases per kind"
            break
        for k in kinds:
            run_case(k, i, args.seed, work / "case", summary, repro, current)
    write_summary(summary, summary_path)
    print(f"fuzz driver: {sum(summary.tried.values())} cases, {len(summary.classes)} failure classes",
          file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
