"""The environment of each run: host, OS, Python, CPU and its DL flags, cores, memory,
GPUs, framework versions, environment variables, fingerprint and suite settings."""

from __future__ import annotations

from typing import Any

from harness.reports import formatting as F
from harness.reports.sections.common import M, ReportContext, ReportSection
from harness.reports.templating import join, render

# DL-relevant CPU flags shown first, in this order, when a run recorded them
FLAG_ORDER = (
    "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8",
)  # fmt: skip


def _text_or_na(value: Any) -> Any:
    return M.na(None) if value is None or value == "" else value


def _flags(flags: Any) -> Any:
    if not isinstance(flags, dict) or not flags:
        return M.na("CPU flags were not recorded")
    keys = [k for k in FLAG_ORDER if k in flags] + sorted(k for k in flags if k not in FLAG_ORDER)
    out = []
    for k in keys:
        v = flags[k]
        if v is True:
            out.append(M.badge(f"{k}: yes", "yes", f"CPU supports {k}"))
        elif v is False:
            out.append(M.badge(f"{k}: no", "no", f"CPU lacks {k}"))
        else:
            out.append(M.badge(f"{k}: ?", "unknown", f"{k}: {v!r}"))
    return join(out)


def _gpus(env: dict[str, Any]) -> Any:
    gpus = env.get("gpus")
    if isinstance(gpus, list) and gpus:
        rows = [g for g in gpus if isinstance(g, dict)]
        return render("env_gpus.html.j2", gpus=[
            (g.get("index"), g.get("name"), F.bytes_human(g.get("memory_bytes")) or M.na(None),
             _text_or_na(g.get("driver")), _text_or_na(g.get("cuda"))) for g in rows])  # fmt: skip
    return render("env_gpus.html.j2", gpus=None, reason=env.get("gpus_reason"))


def _mapping(mapping: Any, missing: str) -> Any:
    """A name -> value mapping as a compact table; a null value shows ``missing``."""
    if not isinstance(mapping, dict) or not mapping:
        return M.na("not recorded by this run")
    rows = [(str(k), M.muted(missing) if mapping[k] is None else M.code(mapping[k])) for k in sorted(mapping, key=str)]
    return M.kv_table(rows, "kv inner")


def _rows(run: dict[str, Any], env: dict[str, Any]) -> list[tuple[str, Any]]:
    osd = env.get("os") or {}
    os_text = (" ".join(str(osd.get(k)) for k in ("system", "release") if osd.get(k)) if isinstance(osd, dict)
               else str(osd))  # fmt: skip
    os_title = osd.get("platform") if isinstance(osd, dict) else None
    cpu = env.get("cpu") or {}
    if not isinstance(cpu, dict):
        cpu = {}
    cores = []
    if cpu.get("physical_cores") is not None:
        cores.append(f"{cpu['physical_cores']} physical")
    if cpu.get("logical_cores") is not None:
        cores.append(f"{cpu['logical_cores']} logical")
    mem = F.bytes_human(env.get("memory_bytes"))
    rows = [
        ("host", env.get("host")),
        ("OS", M.span(os_text, title=os_title or "") if os_text else M.na(None)),
        ("Python", _text_or_na(env.get("python"))),
        ("CPU", _text_or_na(cpu.get("model"))),
        ("CPU DL flags", _flags(cpu.get("flags_dl"))),
        ("cores", ", ".join(cores) if cores else M.na(None)),
        ("memory", mem if mem else M.na(None)),
        ("GPUs", _gpus(env)),
        ("frameworks", _mapping(env.get("frameworks"), "not installed")),
        ("environment variables", _mapping(env.get("env_vars"), "unset")),
    ]
    if env.get("fingerprint"):
        rows.append(("fingerprint", M.code(env.get("fingerprint"))))
    settings = (run.get("suite") or {}).get("settings")
    if isinstance(settings, dict) and settings:
        rows.append(("suite settings", _mapping(settings, "null")))
    return rows


class EnvironmentSection(ReportSection):
    name = "environment"
    title = "Environment"
    order = 150
    description = "each run's host, OS, CPU and flags, memory, GPUs, frameworks and environment variables"

    def data(self, ctx: ReportContext) -> Any:
        blocks = []
        for i, run in enumerate(ctx.runs):
            env = run.get("environment") or {}
            if isinstance(env, dict):
                blocks.append({"run_id": run.get("run_id"), "host": env.get("host"), "rows": _rows(run, env),
                               "open": i == 0})  # fmt: skip
        return blocks or None

    def html(self, data: Any, ctx: ReportContext) -> Any:
        return render("environment.html.j2", blocks=data)
