"""The root cause of a failed cell: the innermost exception of its chain, as one line.

Why: a cell's ``reason`` is its *outermost* error, and libraries wrap the real problem.
transformers turns "No module named 'sentencepiece'" into "Could not import module
'BertModel'"; a console line that shows only the wrapper sends the user into the JSON.
The cell record keeps the traceback text Python printed (``error.traceback``, from
:func:`traceback.format_exc`) and the worker's output tail (``error.stderr_tail``);
Python prints a chain root first::

    Traceback (most recent call last):
      ...
    ModuleNotFoundError: No module named 'sentencepiece'      <- the root cause

    The above exception was the direct cause of the following exception:   (raise ... from e)
    [or: During handling of the above exception, another exception occurred:]

    Traceback (most recent call last):
      ...
    RuntimeError: Could not import module 'BertModel'          <- the outer error

Rules (pure functions of the record; nothing is imported or executed):

* Both links count: ``raise X from e`` ("direct cause") and an error raised while
  handling another ("During handling ..."). The first exception printed is the one
  that started it; each link records which kind it was (``Link.via``).
* A message may span lines (kept whole in ``Link.message``; :meth:`Link.line` joins
  them with `` | `` for a one-line display). Exception notes (``add_note``) are part
  of it, as Python prints them.
* A traceback cut at its start (the record keeps the last 8000 characters) still
  yields the earliest exception left in it; ``RootCause.truncated`` says an earlier
  root may have been lost.
* A cell the launcher failed -- a timeout, a worker killed by a signal, a launcher
  error -- has no traceback: its ``reason`` already is the cause. A worker that exited
  with a status but no record, or a torchrun job, may have printed a Python traceback
  to its output: then that chain is read from ``error.stderr_tail``.
* Anything unexpected (no error at all, a non-string field, text that is no
  traceback) falls back to the error's type and message, then to the reason; never
  raises.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

HEADER = "Traceback (most recent call last):"
CAUSE = "The above exception was the direct cause of the following exception:"
CONTEXT = "During handling of the above exception, another exception occurred:"
_SEPARATOR = re.compile(r"\n[ \t]*\n(" + re.escape(CAUSE) + "|" + re.escape(CONTEXT) + r")[ \t]*\n[ \t]*\n")
# "ValueError: msg", "torch.OutOfMemoryError: msg", "KeyboardInterrupt"
_EXC_LINE = re.compile(r"^(?P<type>[A-Za-z_][\w.]*)(?::(?: (?P<msg>.*))?)?$")
_HEADER_LINE = re.compile(r"^(?P<prefix>.*?)" + re.escape(HEADER) + r"\s*$", re.M)

# error types of cells the launcher failed: the reason is the cause (no Python chain)
LAUNCHER_TYPES = frozenset({"Timeout", "BadWorkerMessage"})
ONE_LINE_JOIN = " | "


@dataclass(frozen=True)
class Link:
    """One exception of a chain. ``via`` is how it led to the next (outer) one:
    ``"cause"`` (``raise ... from``), ``"context"`` (raised while handling it) or None
    for the outermost."""

    type: str
    message: str
    via: str | None = None

    def line(self) -> str:
        """``"Type: message"`` on one line (a multi-line message's lines joined by `` | ``)."""
        msg = ONE_LINE_JOIN.join(s.strip() for s in self.message.splitlines() if s.strip())
        if not self.type:
            return msg
        return f"{self.type}: {msg}" if msg else self.type


@dataclass(frozen=True)
class RootCause:
    """What :func:`root_cause` found. ``root`` and ``outer`` are one line each;
    ``outer`` is None when it says the same as ``root`` (no chain). ``source``:
    ``"traceback"`` (``error.traceback``), ``"stderr"`` (``error.stderr_tail``) or
    ``"reason"`` (no chain to read). ``chain`` is root first (empty for ``"reason"``)."""

    root: str
    outer: str | None
    source: str
    chain: tuple[Link, ...] = ()
    truncated: bool = False

    def text(self) -> str:
        """``"<root> (outer: <outer>)"``, or just the root when there is no outer error."""
        return f"{self.root} (outer: {self.outer})" if self.outer else self.root

    def to_dict(self) -> dict[str, Any]:
        return {"root": self.root, "outer": self.outer, "source": self.source, "truncated": self.truncated,
                "chain": [{"type": x.type, "message": x.message, "via": x.via} for x in self.chain]}


def parse_chain(text: str, stop_at_blank: bool = False) -> tuple[list[Link], bool]:
    """The exceptions of a Python traceback text, root first, and whether the text was
    cut at its start (it does not begin with a traceback header or an exception line).

    ``stop_at_blank``: a message ends at the first blank line (for text read from a
    process's output, where other output may follow the traceback)."""
    if not isinstance(text, str) or not text.strip():
        return [], False
    text = text.replace("\r\n", "\n")
    parts = _SEPARATOR.split("\n" + text.strip("\n") + "\n")
    # parts: block, separator, block, separator, ..., block
    blocks = parts[0::2]
    seps = parts[1::2]
    links: list[Link] = []
    truncated = False
    for k, block in enumerate(blocks):
        parsed = _parse_block(block.strip("\n"), first=(k == 0), stop_at_blank=stop_at_blank)
        if parsed is None:
            continue
        (etype, msg), cut = parsed
        truncated = truncated or cut
        via = None
        if k < len(seps):
            via = "cause" if seps[k] == CAUSE else "context"
        links.append(Link(etype, msg, via))
    if links and links[-1].via is not None:  # the outermost (a dropped last block) leads nowhere
        links[-1] = Link(links[-1].type, links[-1].message, None)
    return links, truncated


def _parse_block(block: str, first: bool, stop_at_blank: bool) -> tuple[tuple[str, str], bool] | None:
    """(type, message) of one printed exception, and whether the block was cut at its start."""
    lines = block.split("\n")
    start = next((i for i, s in enumerate(lines) if s.rstrip() == HEADER), None)
    cut = False
    if start is None:
        # a chained exception without a traceback prints only its line; a text cut at its
        # start begins inside a frame: skip to the first frame line, if any
        frame = next((i for i, s in enumerate(lines) if s.startswith("  File ")), None)
        if frame is not None:
            start, cut = frame, first
        elif lines and _EXC_LINE.match(lines[0]) is None and first:
            cut = True
            start = -1
        else:
            start = -1
    j = start + 1
    while j < len(lines) and (not lines[j].strip() or lines[j][:1] in (" ", "\t")):
        j += 1  # frame lines, source lines, carets, "[Previous line repeated N more times]"
    if j >= len(lines):
        return None
    head, rest = lines[j], lines[j + 1:]
    if stop_at_blank and "" in [s.strip() for s in rest]:
        rest = rest[:[s.strip() for s in rest].index("")]
    while rest and not rest[-1].strip():
        rest.pop()
    m = _EXC_LINE.match(head.rstrip())
    if m is None:
        return ("", "\n".join([head, *rest]).strip()), cut
    return (m.group("type"), "\n".join([m.group("msg") or "", *rest]).strip()), cut


def _stderr_chain(tail: str) -> tuple[list[Link], bool]:
    """The last exception chain a process printed in its output tail (``[rankN]: ``-style
    prefixes of the traceback's lines removed)."""
    if not isinstance(tail, str) or HEADER not in tail:
        return [], False
    headers = list(_HEADER_LINE.finditer(tail))
    if not headers:
        return [], False
    prefix = headers[-1].group("prefix")
    if prefix.strip() and len(prefix) <= 40:
        tail = "\n".join(s[len(prefix):] if s.startswith(prefix) else s for s in tail.split("\n"))
        headers = list(_HEADER_LINE.finditer(tail))
    k = len(headers) - 1
    while k > 0:  # walk back over the chain's separators to its first traceback
        before = tail[headers[k - 1].end():headers[k].start()].rstrip()
        if before.endswith(CAUSE) or before.endswith(CONTEXT):
            k -= 1
        else:
            break
    start = headers[k].start() + len(headers[k].group("prefix"))
    return parse_chain(tail[start:], stop_at_blank=True)


def _get(d: Any, key: str) -> str | None:
    v = d.get(key) if isinstance(d, Mapping) else None
    return v if isinstance(v, str) and v.strip() else None


def _launcher_failure(error: Mapping[str, Any]) -> bool:
    """A cell failed by the launcher, whose reason is the cause: a timeout, a bad message,
    a worker killed by a signal, or an error of the launcher itself (no returncode)."""
    etype = _get(error, "type")
    if etype in LAUNCHER_TYPES:
        return True
    rc = error.get("returncode")
    return isinstance(rc, int) and not isinstance(rc, bool) and rc < 0


def root_cause(cell: Mapping[str, Any]) -> RootCause | None:
    """The root cause of a failed cell (None for a cell that did not fail); see the
    module doc for the rules. Never raises."""
    if not isinstance(cell, Mapping) or cell.get("status") != "failed":
        return None
    try:
        return _root_cause(cell)
    except Exception:  # noqa: BLE001 - a display helper must not fail on an odd record
        reason = _get(cell, "reason") or "failed (no reason recorded)"
        return RootCause(_first_line(reason), None, "reason")


def _first_line(text: str) -> str:
    return ONE_LINE_JOIN.join(s.strip() for s in text.splitlines() if s.strip())


def _root_cause(cell: Mapping[str, Any]) -> RootCause:
    error = cell.get("error") if isinstance(cell.get("error"), Mapping) else {}
    reason = _get(cell, "reason")
    etype, emsg = _get(error, "type"), _get(error, "message")
    recorded = Link(etype or "", emsg or "").line() if (etype or emsg) else None
    outer = recorded or (_first_line(reason) if reason else None)
    if error and _launcher_failure(error) and not _get(error, "traceback"):
        return RootCause(_first_line(reason or recorded or "failed"), None, "reason")
    chain, truncated, source = [], False, "traceback"
    tb = _get(error, "traceback")
    if tb and (HEADER in tb or '  File "' in tb):  # else no traceback: the recorded error says it all
        chain, truncated = parse_chain(tb)
    if not chain:
        chain, truncated = _stderr_chain(_get(error, "stderr_tail") or "")
        source = "stderr"
        if chain and reason:  # the launcher's description of the exit is the outer error
            outer = _first_line(reason)
    if not chain:
        return RootCause(outer or "failed (no reason recorded)", None, "reason")
    if len(chain) == 1 and recorded and source == "traceback":
        # one exception, no chain: the recorded error is that exception (and keeps its message
        # when the traceback text was cut)
        return RootCause(recorded, None, source, tuple(chain), truncated)
    root = chain[0].line() or outer or "failed"
    if outer is None:
        outer = chain[-1].line() or None
    if outer is not None and (outer == root or _same(outer, root)):
        outer = None
    return RootCause(root, outer, source, tuple(chain), truncated)


def _same(a: str, b: str) -> bool:
    """The recorded error is cut at 4000 characters and the reason at 2000: a long one
    that starts with the other is the same error."""
    short, long_ = sorted((a, b), key=len)
    return len(short) >= 1000 and long_.startswith(short)
