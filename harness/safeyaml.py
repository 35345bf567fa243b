"""YAML for untrusted files (suites, price lists, compare configs): bounded parse cost.

``yaml.safe_load`` refuses arbitrary objects, but not a 1 KB "billion laughs" document:
nested aliases share nodes while parsing, and everything that walks the result later
(schema validation, error messages that print it, the suite expansion) sees the
expanded tree, which took a minute and 3 GB here before this bound. So before anything
is constructed the composed node graph is measured: its size with every alias
expanded, and its depth, each against a documented limit; the file's size is checked
first. A document over a limit is a :class:`YamlLimitError` (a ``yaml.YAMLError``, so
callers report it like any invalid YAML: one line, exit 2).
"""

from __future__ import annotations

from typing import Any

import yaml

MAX_BYTES = 1 << 20  # 1 MiB of text: far beyond any real suite, price list or config
MAX_NODES = 100_000  # scalars + collections with every alias expanded
MAX_DEPTH = 64  # nesting depth


class YamlLimitError(yaml.YAMLError):
    """A YAML document over one of the limits above."""

    def __init__(self, problem: str, mark: Any = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.problem_mark = mark

    def __str__(self) -> str:
        return self.problem


def _check(root: yaml.Node) -> None:
    """Expanded size and depth of the node graph, iteratively and memoised per node
    (linear in the distinct nodes, whatever the aliases expand to)."""
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
        size.setdefault(id(node), 0)  # visiting (a cycle through an alias stays finite)
        stack.append((node, depth, True))
        stack.extend((k, depth + 1, False) for k in kids if id(k) not in size)


def load(text: str) -> tuple[Any, yaml.Node | None]:
    """(data, root node) of one YAML document, within the limits; raises ``yaml.YAMLError``
    (:class:`YamlLimitError` for a limit) like ``yaml.safe_load``."""
    if len(text) > MAX_BYTES:
        raise YamlLimitError(f"{len(text):,} characters; the limit is {MAX_BYTES:,}")
    loader = yaml.SafeLoader(text)
    try:
        try:
            root = loader.get_single_node()
        except RecursionError:
            raise YamlLimitError(f"nesting deeper than {MAX_DEPTH} levels") from None
        if root is None:
            return None, None
        _check(root)
        return loader.construct_document(root), root
    finally:
        loader.dispose()


def safe_load(text: str) -> Any:
    """``yaml.safe_load`` with the limits of this module."""
    return load(text)[0]
