"""MFU and the roofline from a calibration taken after the run (``harness report
--calibration DIR``).

A run stores MFU only when its machine was calibrated before it ran
(:func:`harness.core.flops.apply_calibration`, called by the runner). Here the same
function is applied at report time, to in-memory copies of the runs: for each run, the
calibration in ``DIR`` whose fingerprint is the run's machine fingerprint
(``environment.fingerprint``; ``<DIR>/<fingerprint>.json``, what ``harness calibrate
--out DIR`` writes) gives each ok cell's ``mfu``, ``mfu_peak_flops_per_s`` and
``roofline_attainable_flops_per_s``, and becomes the run's ``calibration`` (the
roofline section draws from it). Nothing is written to the result files.

Every value computed here is labelled: the run gets ``report_calibration`` =
``{"label": "calibration of <date>, applied at report time", "source", "measured_at",
"replaced"}`` and each cell whose MFU was computed here ``mfu_at_report_time: True``;
the summary, the roofline and the other-metrics table say so.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping, Sequence

from harness.errors import UserError


class CalibrationDirError(UserError):
    """``--calibration DIR`` names no directory of calibrations."""


def _measured_at(cal: Mapping[str, Any]) -> str:
    dates = sorted({str(d.get("measured_at")) for d in cal.values() if isinstance(d, Mapping) and d.get("measured_at")})
    return ", ".join(dates) if dates else "unknown date"


def check_calibration_dir(directory: str | Path) -> Path:
    """``directory`` as a Path; :class:`CalibrationDirError` (exit 2, one line) when it is
    not a directory or holds no calibration file (``*.json`` with a ``devices`` map)."""
    path = Path(directory)
    if not path.is_dir():
        raise CalibrationDirError(f"--calibration {directory}: no such directory (write one with "
                                  f"`harness calibrate --out {directory}`)")  # fmt: skip
    from harness.core.calibrate import load

    if not any(load(f) is not None for f in sorted(path.glob("*.json"))[:1000]):
        raise CalibrationDirError(f"--calibration {directory}: no calibration file (<fingerprint>.json) in it; "
                                  f"write one with `harness calibrate --out {directory}`")  # fmt: skip
    return path


def apply_report_calibration(
    runs: Sequence[dict[str, Any]], directory: str | Path
) -> tuple[list[dict[str, Any]], list[str]]:
    """Copies of ``runs`` with MFU and the roofline computed from the calibrations in
    ``directory`` (see the module doc), and one message per run that had no calibration
    there (its stored values are kept). The inputs are not modified."""
    from harness.core.calibrate import find_calibration
    from harness.core.flops import apply_calibration

    out: list[dict[str, Any]] = []
    notes: list[str] = []
    for run in runs:
        env = run.get("environment") if isinstance(run.get("environment"), Mapping) else {}
        fp = env.get("fingerprint") if isinstance(env, Mapping) else None
        cal = find_calibration(str(fp), [directory]) if isinstance(fp, str) and fp else None
        if not cal:
            why = (f"no calibration of its machine (fingerprint {fp}) in {directory}" if fp else
                   "it records no machine fingerprint")  # fmt: skip
            notes.append(f"run {run.get('run_id')}: {why}; its stored MFU is shown as it is")
            out.append(run)
            continue
        new = dict(run)
        new["cells"] = copy.deepcopy(run.get("cells") or [])
        old = run.get("calibration")
        new["calibration"] = cal
        when = _measured_at(cal)
        new["report_calibration"] = {
            "label": f"calibration of {when}, applied at report time",
            "measured_at": when,
            "source": str(Path(directory)),
            "replaced": _measured_at(old) if isinstance(old, Mapping) and old else None,
        }
        for cell in new["cells"]:
            if not isinstance(cell, dict) or cell.get("status") != "ok":
                continue
            if not isinstance(cell.get("metrics"), dict) or cell["metrics"].get("achieved_flops_per_s") is None:
                continue
            for key in ("mfu_peak_flops_per_s", "mfu_peak_dtype", "mfu_peak_threads", "roofline_attainable_flops_per_s",
                        "roofline_bound"):  # fmt: skip
                cell["metrics"].pop(key, None)  # the run's own calibration's, if any
            apply_calibration(cell, cal)
            cell["mfu_at_report_time"] = True
        out.append(new)
    return out, notes
