"""YAML for untrusted files (suites, price lists, compare configs): bounded parse cost,
UTF-8 only, no duplicate keys.

``yaml.safe_load`` refuses arbitrary objects, but not a 1 KB "billion laughs" document:
nested aliases share nodes while parsing, and everything that walks the result later
(schema validation, error messages that print it, the suite expansion) sees the
expanded tree, which took a minute and 3 GB here before this bound. So before anything
is constructed the composed node graph is measured: its size with every alias
expanded, and its depth, each against a documented limit; the file's size is checked
first (:func:`read_text` reads at most ``MAX_BYTES + 1`` bytes).

What else ``yaml.safe_load`` lets through, and what this module does instead:

* **Encodings.** Files are UTF-8 (a UTF-8 byte-order mark is allowed). Latin-1 bytes,
  UTF-16/UTF-32 text and binary data (a NUL byte) are refused with the line of the
  first bad byte, instead of a ``UnicodeDecodeError`` traceback (or, for UTF-16 with a
  byte-order mark, a silently different decoding).
* **Duplicate keys.** YAML says a mapping's keys are unique; PyYAML keeps the last one
  silently, so ``min_time_s: 1`` ... ``min_time_s: 60`` ran with 60 and nobody knew.
  Keys that Python would merge into one (``1`` and ``1.0``, ``true`` and ``1``) are
  duplicates; both lines are named. Keys brought in by a merge (``<<: *base``) may be
  overridden, as YAML intends.
* **Values Python cannot build.** An integer over Python's 4300-digit conversion
  limit, or a date such as ``2001-02-30``, raised ``ValueError`` from inside the
  constructor (exit 3); it is a YAML error at the value's line here.
* Control characters that YAML forbids are reported with their line.

Every problem is a :class:`YamlInputError` (a ``yaml.YAMLError`` with ``problem`` and
``problem_mark``), so callers report it like any invalid YAML: :func:`describe` gives
the one line ``FILE:LINE: invalid YAML (what is wrong)``, exit 2.

Numbers are not range-checked here (a float may be ``.inf``/``.nan``, an int may be
huge): each file kind's schema says which numbers it takes and their bounds
(``harness/core/suite.py: LIMITS``, ``harness/analysis/procurement.py``, ``harness/commands/compare.py``).
"""

from __future__ import annotations

import codecs
import re
from pathlib import Path
from typing import Any, Callable

import yaml

MAX_BYTES = 1 << 20  # 1 MiB of text: far beyond any real suite, price list or config
MAX_NODES = 100_000  # scalars + collections with every alias expanded
MAX_DEPTH = 64  # nesting depth

_MERGE_TAG = "tag:yaml.org,2002:merge"
_OTHER_UNICODE_BOMS = (  # longest first: UTF-32-LE's starts with UTF-16-LE's
    (codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"),
)


class YamlInputError(yaml.YAMLError):
    """A YAML file this module refuses: ``problem`` (one line) at ``problem_mark``
    (a ``yaml.Mark`` or None)."""

    def __init__(self, problem: str, mark: Any = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.problem_mark = mark

    def __str__(self) -> str:
        return self.problem


class YamlLimitError(YamlInputError):
    """A YAML document over one of the size/depth limits above."""


def _mark(line: int, column: int = 0, name: str = "<file>") -> yaml.Mark:
    """A mark at 0-based ``line``/``column`` (for errors found outside the parser)."""
    return yaml.Mark(name, 0, line, column, None, None)


def _check(root: yaml.Node, key_of: Callable[[yaml.Node], Any]) -> None:
    """Expanded size and depth of the node graph, iteratively and memoised per node
    (linear in the distinct nodes, whatever the aliases expand to); and no mapping with
    the same key twice (``key_of`` builds a scalar key's value)."""
    size: dict[int, int] = {}
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, done = stack.pop()
        if depth > MAX_DEPTH:
            raise YamlLimitError(f"nesting deeper than {MAX_DEPTH} levels", node.start_mark)
        if id(node) in size and not done:
            continue
        if isinstance(node, yaml.ScalarNode):
            size[id(node)] = 1
            continue
        kids = ([k for pair in node.value for k in pair] if isinstance(node, yaml.MappingNode)
                else list(node.value))
        if done:
            total = 1 + sum(size[id(k)] for k in kids)
            if total > MAX_NODES:
                raise YamlLimitError(f"more than {MAX_NODES:,} values once aliases are expanded "
                                     "(an alias bomb?)", node.start_mark)
            size[id(node)] = total
            continue
        if isinstance(node, yaml.MappingNode):
            _no_duplicate_keys(node, key_of)
        size.setdefault(id(node), 0)  # visiting (a cycle through an alias stays finite)
        stack.append((node, depth, True))
        stack.extend((k, depth + 1, False) for k in kids if id(k) not in size)


def _no_duplicate_keys(node: yaml.MappingNode, key_of: Callable[[yaml.Node], Any]) -> None:
    """:class:`YamlInputError` naming both lines when two of the mapping's own keys
    would become one dict key (merged-in keys, ``<<``, may be overridden)."""
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        if key_node.tag == _MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
            continue  # a collection as a key is refused by the constructor itself
        key = key_of(key_node)
        try:
            first = seen.setdefault(key, key_node)
        except TypeError:  # unhashable: the constructor reports it
            continue
        if first is not key_node:
            a, b = first.start_mark.line + 1, key_node.start_mark.line + 1
            where = f"on lines {a} and {b}" if a != b else f"twice on line {a}"
            raise YamlInputError(f"duplicate key {_short(key_node.value)!r} {where}; a key may appear only once "
                                 "in a mapping (remove one)", key_node.start_mark)


def _short(text: str, n: int = 40) -> str:
    return text if len(text) <= n else text[:n] + "..."


_SURROGATE = re.compile('[\ud800-\udfff]')


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` whose constructor errors are YAML errors at the value's line
    (Python's ``ValueError``/``OverflowError`` from ``int()`` or ``datetime`` are not),
    and whose scanner stops at ``MAX_DEPTH`` open brackets or indentation levels (its
    work per token grows with the open flow levels: ``[`` x 5000 took seconds)."""

    def fetch_flow_collection_start(self, token_class: Any) -> None:
        super().fetch_flow_collection_start(token_class)
        if self.flow_level > MAX_DEPTH:
            raise YamlLimitError(f"nesting deeper than {MAX_DEPTH} levels", self.get_mark())

    def add_indent(self, column: int) -> bool:
        added = super().add_indent(column)
        if len(self.indents) > MAX_DEPTH:
            raise YamlLimitError(f"nesting deeper than {MAX_DEPTH} levels", self.get_mark())
        return added

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            obj = super().construct_object(node, deep=deep)
        except (ValueError, OverflowError, AttributeError, IndexError, TypeError, KeyError) as e:
            # PyYAML's constructors fail with plain Python errors on a value that does
            # not fit an explicit tag (`!!timestamp x` -> AttributeError, `!!int ''` ->
            # IndexError, `!!float x` -> ValueError): all of them are a bad value here
            value = node.value if isinstance(node, yaml.ScalarNode) else ""
            if isinstance(e, (AttributeError, IndexError, TypeError, KeyError)):
                what = f"cannot read the value {_short(str(value))!r} as {node.tag.rsplit(':', 1)[-1]}"
            elif node.tag.endswith(":int") and len(str(value)) > 1000:
                what = f"an integer of {len(value.lstrip('+-'))} digits (too long to read)"
            else:
                what = f"cannot read the value {_short(str(value))!r} ({str(e).split(';')[0]})"
            raise YamlInputError(what, node.start_mark) from None
        if isinstance(obj, str) and _SURROGATE.search(obj):
            # a "\ud800" escape in a quoted string: not text, and it cannot be written
            # back out as UTF-8 (a report or message naming it would fail)
            raise YamlInputError("a string with a lone surrogate escape (e.g. \\ud800) is not text",
                                 node.start_mark)
        return obj


def decode(raw: bytes) -> str:
    """UTF-8 text of ``raw`` (a leading UTF-8 byte-order mark dropped), or
    :class:`YamlInputError` at the first byte that is not UTF-8 text."""
    for bom, name in _OTHER_UNICODE_BOMS:
        if raw.startswith(bom):
            raise YamlInputError(f"the file is {name} text (it starts with a {name} byte-order mark); "
                                 "save it as UTF-8", _mark(0))
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8):]
    nul = raw.find(b"\0")
    if nul >= 0:
        line = raw.count(b"\n", 0, nul)
        raise YamlInputError("binary data (a NUL byte), not text: expected a UTF-8 YAML file (UTF-16 text "
                             "has NUL bytes too: save it as UTF-8)", _mark(line))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start)
        col = e.start - (raw.rfind(b"\n", 0, e.start) + 1)
        raise YamlInputError(f"not UTF-8 text: byte 0x{raw[e.start]:02x} at column {col + 1} (Latin-1 or "
                             "another encoding?); save the file as UTF-8", _mark(line, col)) from None


def read_text(path: str | Path) -> str:
    """The UTF-8 text of the file ``path``, reading at most ``MAX_BYTES + 1`` bytes:
    ``OSError`` when it cannot be read, :class:`YamlInputError` when it is too big or
    not UTF-8 text (:func:`decode`)."""
    with open(path, "rb") as f:
        raw = f.read(MAX_BYTES + 1)
    if len(raw) > MAX_BYTES:
        raise YamlLimitError(f"more than {MAX_BYTES:,} bytes; the limit is {MAX_BYTES:,}")
    return decode(raw)


def load(text: str) -> tuple[Any, yaml.Node | None]:
    """(data, root node) of one YAML document, within the limits; raises ``yaml.YAMLError``
    (:class:`YamlInputError` for what this module adds) like ``yaml.safe_load``."""
    if len(text) > MAX_BYTES:
        raise YamlLimitError(f"{len(text):,} characters; the limit is {MAX_BYTES:,}")
    try:
        loader = _Loader(text)  # the reader checks every character here
    except yaml.reader.ReaderError as e:  # a forbidden character: no mark, only a position
        pos = max(0, min(e.position, len(text)))
        line = text.count("\n", 0, pos)
        what = (f"character #x{e.character:04x} is not allowed in YAML (a control character: binary data?)"
                if isinstance(e.character, int) else str(e).splitlines()[0])
        raise YamlInputError(what, _mark(line, pos - (text.rfind("\n", 0, pos) + 1))) from None
    try:
        try:
            root = loader.get_single_node()
        except RecursionError:
            raise YamlLimitError(f"nesting deeper than {MAX_DEPTH} levels") from None
        if root is None:
            return None, None
        _check(root, loader.construct_object)
        return loader.construct_document(root), root
    finally:
        loader.dispose()


def load_file(path: str | Path) -> tuple[Any, yaml.Node | None]:
    """:func:`load` of the file ``path`` (:func:`read_text`): ``OSError`` when it cannot
    be read, ``yaml.YAMLError`` for everything else wrong with it."""
    return load(read_text(path))


def safe_load(text: str) -> Any:
    """``yaml.safe_load`` with the limits of this module."""
    return load(text)[0]


def describe(err: yaml.YAMLError, source: str, invalid: str = "invalid YAML") -> str:
    """The one line for a YAML error in the file ``source``: ``SOURCE:LINE: invalid YAML
    (what the parser says)`` (``invalid``: the words before the parenthesis), or
    ``SOURCE:LINE: what is wrong`` for this module's own checks (limits, encoding,
    duplicate keys)."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    line = f":{mark.line + 1}" if mark is not None else ""
    problem = getattr(err, "problem", None) or (str(err).splitlines() or ["unreadable"])[0]
    if isinstance(err, YamlInputError):
        return f"{source}{line}: {problem}"
    return f"{source}{line}: {invalid} ({problem})"


def line_of(root: yaml.Node | None, path: list[Any], key: bool = False) -> int:
    """1-based line of the node at ``path`` (mapping keys / sequence indexes) below
    ``root``; with ``key``, of the last element's mapping *key* rather than its value.
    The deepest node found when the path runs out; 1 without a root."""
    node: Any = root
    if node is None:
        return 1
    for i, step in enumerate(path):
        last = i == len(path) - 1
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if str(k.value) == str(step):
                    node = k if (last and key) else v
                    break
            else:
                break
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and 0 <= step < len(node.value):
            node = node.value[step]
        else:
            break
    return node.start_mark.line + 1
