"""Importers: other tools' benchmark results -> dl-harness result documents.

Each importer module converts one foreign format into a result document of the current
``SCHEMA_VERSION`` (validated by :mod:`harness.store.schema`), so ``harness report`` and
``harness compare`` read it like a run of our own. Importers never invent data: what
the foreign file does not hold is ``null`` with the reason in the cell's
``unavailable`` map, and every imported document keeps its provenance under
``imported``. Input files are read through :mod:`harness.store.importers.safe_read` (regular
files only, bounded size, strict JSON, bounded depth).
"""

from __future__ import annotations

from harness.errors import UserError


class ImportFormatError(UserError, ValueError):
    """A file that cannot be imported: one clear line for the user (exit code 2)."""


FORMATS: tuple[str, ...] = ("pytest-benchmark",)
