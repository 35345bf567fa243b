"""Finding the report's sections: every class registered in the entry-point group
``dl_harness.report_sections`` (built-ins are declared there too), checked and sorted
by their declared order. A section that cannot be loaded is returned as a
:class:`BrokenSection`, which the report shows in place of it (it never stops a report)."""

from __future__ import annotations

from typing import Any

from harness.core import registry
from harness.reports.api import ReportContext, ReportSection, SectionLoadError, check_section_class

KIND = "report_section"


class BrokenSection(ReportSection):
    """Stands in for a registered section whose code could not be loaded."""

    title = "Broken report section"
    order = float("inf")  # after every section that loaded

    def __init__(self, name: str, error: str) -> None:
        self.name = name  # type: ignore[misc]
        self.error = error

    def data(self, ctx: ReportContext) -> Any:
        raise SectionLoadError(self.error)

    def html(self, data: Any, ctx: ReportContext) -> Any:  # pragma: no cover - data() raises
        return None


def load_sections() -> list[ReportSection]:
    """Instances of every registered section, by (order, name)."""
    out: list[ReportSection] = []
    for name in registry.names(KIND):
        try:
            cls = registry.load(KIND, name)
            check_section_class(cls, name)
            out.append(cls())
        except Exception as e:  # noqa: BLE001 - a broken plug-in is shown, not fatal
            msg = str(e) if isinstance(e, (registry.PluginLoadError, TypeError)) else f"{type(e).__name__}: {e}"
            out.append(BrokenSection(name, msg))
    return sorted(out, key=lambda s: (s.order, s.name))
