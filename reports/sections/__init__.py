"""The built-in report sections, one module each (registered in the entry-point group
``dl_harness.report_sections``; see :mod:`harness.reports.api`).

overview, contention, skipped_files, pivot, summary, charts, generation, backends, scaling, energy,
quality, roofline, regressions, history, procurement, other_metrics, failed,
environment. The functions below return one section's ``(html, figures)`` on its own
(for callers and tests that want a single section).
"""

from __future__ import annotations

from harness.reports.sections.energy import energy_section
from harness.reports.sections.history import history_section
from harness.reports.sections.procurement import procurement_section
from harness.reports.sections.quality import quality_section
from harness.reports.sections.regressions import regressions_section
from harness.reports.sections.roofline import roofline_section

__all__ = ["energy_section", "history_section", "procurement_section", "quality_section", "regressions_section",
           "roofline_section"]  # fmt: skip
