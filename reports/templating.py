"""The report's one Jinja2 environment: templates and static files are package files.

* Templates live in ``harness/reports/templates/`` (loaded with
  :class:`jinja2.PackageLoader`, so they work from the installed wheel as from a
  checkout) and are rendered with **autoescaping on**: every value from a result file
  is escaped by Jinja2, never by hand. ``None`` renders as an empty string.
* ``macros.html.j2`` holds the small fragments (badge, n/a with its reason, table
  cell, figure, ...). Section code composes table cells by calling these macros from
  Python (:data:`M`); they return :class:`markupsafe.Markup`, so a string from a file
  can only ever reach the page escaped.
* CSS and JavaScript are ``harness/reports/static/report.css`` / ``report.js``, read
  with :mod:`importlib.resources` and inlined: the report stays one offline file.
* JSON inside ``<script>`` (:func:`script_json`) has ``<``, ``>``, ``&``, U+2028 and
  U+2029 written as ``\\u`` escapes, so no string can close the script element.
* Strings handed to plotly (trace names, category labels, hover data) go through
  :func:`plotly_text` (HTML-escaped), because plotly renders a subset of HTML in them;
  file strings are never put into a ``hovertemplate``.
"""

from __future__ import annotations

import html
import json
import math
from functools import lru_cache
from importlib import resources
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup, escape


def _finalize(value: Any) -> Any:
    return "" if value is None else value


@lru_cache(maxsize=1)
def environment() -> Environment:
    """The autoescaping environment of the report's templates (built once)."""
    env = Environment(
        loader=PackageLoader("harness.reports", "templates"),
        autoescape=True,  # every template, whatever its file name
        finalize=_finalize,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )
    env.filters["plural"] = lambda n, word="s": word if n != 1 else ""
    return env


def render(template: str, **context: Any) -> Markup:
    """Render ``templates/<template>`` (autoescaped) to markup."""
    return Markup(environment().get_template(template).render(**context))


def render_string(source: str, **context: Any) -> Markup:
    """Render a template given as a string with the same autoescaping environment
    (and the macros as ``m``): what a third-party section uses for its HTML."""
    return Markup(environment().from_string(source).render(m=macros(), **context))


class _Macros:
    """Attribute access to the macros of ``macros.html.j2`` (each returns Markup)."""

    def __init__(self) -> None:
        self._module = environment().get_template("macros.html.j2").module

    def __getattr__(self, name: str) -> Any:
        fn = getattr(self._module, name)

        def call(*args: Any, **kwargs: Any) -> Markup:
            return Markup(fn(*args, **kwargs))

        return call


@lru_cache(maxsize=1)
def macros() -> _Macros:
    """The fragment macros (``badge``, ``na``, ``td``, ``code`` ...), callable from Python."""
    return _Macros()


class _LazyMacros:
    def __getattr__(self, name: str) -> Any:
        return getattr(macros(), name)


M: Any = _LazyMacros()  # ``M.badge("noisy", "noisy", tip)`` -> Markup


def join(parts: Any, sep: str = " ") -> Markup:
    """Join fragments (Markup kept, plain strings escaped) with a plain-text separator."""
    return Markup(html.escape(sep)).join(p for p in parts if p)


def cat(*parts: Any) -> Markup:
    """Concatenate fragments: Markup kept, other values escaped, None as ""."""
    return Markup("").join(escape("" if p is None else p) for p in parts)


@lru_cache(maxsize=None)
def static_text(name: str) -> str:
    """A file of ``harness/reports/static/`` as text (CSS, JS)."""
    return resources.files("harness.reports").joinpath("static", name).read_text(encoding="utf-8")


def plotly_text(x: Any) -> str:
    """Escape a string for plotly, which renders a subset of HTML in text it draws."""
    return html.escape("" if x is None else str(x), quote=True)


def _finite(obj: Any) -> Any:
    """Copy of ``obj`` with non-finite floats as None (JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def script_json(obj: Any) -> str:
    """JSON that is safe to place inside a ``<script>`` element (and valid JS)."""
    text = json.dumps(_finite(obj), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return (
        text.replace("&", "\\u0026")
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )
