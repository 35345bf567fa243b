"""Multi-machine ("procurement") view: the same workloads on several machines, side by side.

A *machine* is an environment fingerprint (``environment.fingerprint``; host + CPU
model where a run has none). For every workload configuration (workload, variant,
mode, batch size, size) and every machine option (machine, backend, device) this
gives:

* throughput (samples/s) and p50 latency (ms): the median over that machine's runs
  of the cell (one run gives its own value), with the number of runs;
* performance per watt = samples per joule (samples/s per W), from **measured** energy
  only: ``metrics.energy`` with ``source`` other than ``"estimate"``/``"unavailable"``;
  estimates are kept in separate, labelled fields and never ranked as measurements;
* performance per dollar from a user price file (``--prices prices.yaml``):
  an hourly price gives samples per dollar (= throughput * 3600 / price per hour),
  a purchase price gives samples/s per 1000 currency units of purchase price;
* scaling efficiency of data-parallel cells (``metrics.distributed.scaling_efficiency``,
  see docs/distributed.md), one row per world size;
* a rank per workload configuration by the metric the user picks; which way is better
  comes from the declared metric table (:mod:`harness.core.metrics`), not from a name.

Contention: a cell measured while other processes competed for the machine
(``timing.contention.detected``) says nothing about the machine. Its runs are left out
of a machine option's medians when the option has uncontended runs (``n_contended``
counts them); an option with contended runs only shows their values, marked
(``contended`` holds the evidence), and is never ranked.

Price file (YAML), keyed by host name or fingerprint::

    currency: USD            # optional, default USD
    machines:
      gpu-box-1: {hourly: 2.50}
      3f2a9c:    {purchase: 25000}
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from harness.core import metrics as M
from harness.analysis.compare import fingerprint
from harness.errors import UserError
from harness.analysis.history import contention_note

MEASURED_SOURCES_EXCLUDED = ("estimate", "unavailable")
# ranking choice -> (Entry attribute, the declared metric it is, or None for one derived here)
_RANKED = {
    "throughput": ("throughput_per_s", "throughput_per_s"),
    "latency": ("latency_p50_ms", "latency_ms.p50"),
    "perf_per_watt": ("samples_per_j", "energy.samples_per_j"),
    "perf_per_dollar": ("perf_per_dollar", None),  # samples per unit of price: more is better
}
# ranking choice -> (Entry attribute, higher is better); the direction from harness.core.metrics
RANK_METRICS = {k: (attr, M.get(name).higher_is_better if name else True) for k, (attr, name) in _RANKED.items()}


class PriceError(UserError, ValueError):
    """A price file that cannot be used (one clear line)."""


@dataclass(frozen=True)
class Price:
    hourly: float | None = None
    purchase: float | None = None


@dataclass(frozen=True)
class Prices:
    currency: str = "USD"
    machines: Mapping[str, Price] = field(default_factory=dict)

    def for_machine(self, host: str, fp: str) -> Price | None:
        return self.machines.get(fp) or self.machines.get(host)


# a price (per hour, or to buy) in currency units: finite, and within bounds no real
# price reaches in any currency; below PRICE_MIN, samples per unit of price overflow
PRICE_MIN = 1e-6
PRICE_MAX = 1e12
CURRENCY_MAX_CHARS = 16
PRICE_FILE_KEYS = ("currency", "machines")


def parse_prices(data: Any, source: str = "prices", root: Any = None) -> Prices:
    """Validate a parsed price file (see the module docstring). With ``root`` (the YAML
    node tree, :func:`harness.core.safeyaml.load`) an error names ``SOURCE:LINE``, and the
    machine keys are taken as written (``0123`` stays ``0123``, ``on`` stays ``on``)."""
    from harness.core.safeyaml import line_of

    def where(*path: Any, key: bool = False) -> str:
        return f"{source}:{line_of(root, list(path), key=key)}" if root is not None else source

    if not isinstance(data, Mapping) or not isinstance(data.get("machines"), Mapping):
        raise PriceError(f"{where()}: expected a mapping with 'machines: {{host-or-fingerprint: {{hourly: X}}}}'")
    unknown = sorted(str(k) for k in data if k not in PRICE_FILE_KEYS)
    if unknown:
        raise PriceError(f"{where(unknown[0], key=True)}: unknown key {unknown[0]!r}; allowed: "
                         f"{', '.join(PRICE_FILE_KEYS)}")
    currency = data.get("currency")
    if currency is not None and (not isinstance(currency, str) or not 0 < len(currency.strip()) <= CURRENCY_MAX_CHARS):
        raise PriceError(f"{where('currency')}: currency must be a name of 1 to {CURRENCY_MAX_CHARS} characters "
                         f"(e.g. USD, EUR), got {_brief(currency)}")
    written = _written_keys(root)
    out = {}
    for key, entry in data["machines"].items():
        name = written.get(_hashable(key), str(key))
        if not isinstance(entry, Mapping) or not ({"hourly", "purchase"} & set(entry)):
            raise PriceError(f"{where('machines', name)}: machine {name!r} needs 'hourly' or 'purchase' (a price)")
        unknown = set(entry) - {"hourly", "purchase"}
        if unknown:
            bad = sorted(map(str, unknown))[0]
            raise PriceError(f"{where('machines', name, bad, key=True)}: machine {name!r}: unknown key {bad!r} "
                             "(use hourly or purchase)")
        vals = {}
        for k in ("hourly", "purchase"):
            if k in entry:
                v = entry[k]
                number = isinstance(v, (int, float)) and not isinstance(v, bool)
                if not number or not (PRICE_MIN <= v <= PRICE_MAX):  # nan and inf fail too
                    raise PriceError(f"{where('machines', name, k)}: machine {name!r}: {k} must be a positive number "
                                     f"from {PRICE_MIN:g} to {PRICE_MAX:g} (currency units), got {_brief(v)}")
                vals[k] = float(v)
        out[name] = Price(**vals)
    return Prices(currency=(currency or "USD").strip() if isinstance(currency, str) else "USD", machines=out)


def _brief(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**15:
        return f"a {len(str(abs(value)))}-digit integer"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _hashable(key: Any) -> Any:
    try:
        hash(key)
        return key
    except TypeError:
        return None


def _written_keys(root: Any) -> dict[Any, str]:
    """The machine keys as written in the file (constructed key -> its text): YAML 1.1
    would turn a host ``on`` into True and a fingerprint ``0123`` into 83."""
    import yaml

    if not isinstance(root, yaml.MappingNode):
        return {}
    machines = next((v for k, v in root.value if isinstance(k, yaml.ScalarNode) and k.value == "machines"), None)
    if not isinstance(machines, yaml.MappingNode):
        return {}
    build = yaml.constructor.SafeConstructor()
    out: dict[Any, str] = {}
    for k, _ in machines.value:
        if isinstance(k, yaml.ScalarNode) and k.tag != "tag:yaml.org,2002:merge":
            try:
                out[build.construct_object(k)] = k.value
            except (yaml.YAMLError, ValueError, TypeError, OverflowError):
                continue
    return out


def load_prices(path: str | Path) -> Prices:
    """The price file ``path`` (UTF-8 YAML, bounded by :mod:`harness.core.safeyaml`), checked;
    :class:`PriceError` with ``FILE:LINE: what is wrong`` otherwise."""
    import yaml

    from harness.core import safeyaml

    p = Path(path)
    try:
        data, root = safeyaml.load_file(p)
    except OSError as e:
        raise PriceError(f"cannot read price file {str(p)!r}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise PriceError(safeyaml.describe(e, str(p))) from None
    return parse_prices(data, str(p), root)


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def _median(xs: Sequence[float]) -> float | None:
    return float(statistics.median(xs)) if xs else None


@dataclass
class Entry:
    """One machine option for one workload configuration."""

    workload_key: str
    machine: str
    host: str
    machine_label: str
    backend: str
    device: str
    n_runs: int
    throughput_per_s: float | None
    latency_p50_ms: float | None
    samples_per_j: float | None = None  # measured energy only
    energy_source: str | None = None
    samples_per_j_estimate: float | None = None  # labelled estimate, never ranked
    energy_reason: str | None = None
    perf_per_dollar: float | None = None
    perf_per_dollar_unit: str | None = None
    scaling_efficiency: float | None = None
    rank: int | None = None
    n_contended: int = 0  # runs left out of the medians: measured under contention
    contended: str | None = None  # evidence, when every run of this option was contended (never ranked)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _machine_label(doc: Mapping[str, Any]) -> str:
    env = doc.get("environment") or {}
    cpu = (env.get("cpu") or {}).get("model") if isinstance(env.get("cpu"), Mapping) else None
    gpus = [g.get("name") for g in env.get("gpus") or [] if isinstance(g, Mapping) and g.get("name")]
    from harness.analysis.compare import fleet_target

    target = fleet_target(doc)
    parts = ([f"target {target}"] if target else []) + [str(env.get("host"))]
    if gpus:
        parts.append(" + ".join(sorted(set(map(str, gpus)))))
    elif cpu:
        parts.append(str(cpu))
    return " · ".join(parts)


def _samples_per_j(energy: Mapping[str, Any], throughput: float | None) -> float | None:
    spj = _num(energy.get("samples_per_j"))
    if spj is not None:
        return spj
    power = _num(energy.get("avg_power_w"))
    if power and throughput:
        return throughput / power
    return None


def _bucket() -> dict[str, Any]:
    return {"thr": [], "lat": [], "spj": [], "spj_est": [], "src": set(), "reason": None, "scal": [], "runs": set()}


def _add(a: dict[str, Any], cell: Mapping[str, Any], run_id: str) -> None:
    """Add one ok cell's values to an accumulator made by :func:`_bucket`."""
    m = cell.get("metrics") or {}
    a["runs"].add(run_id)
    thr = _num(m.get("throughput_per_s"))
    if thr is not None:
        a["thr"].append(thr)
    lat = _num((m.get("latency_ms") or {}).get("p50")) if isinstance(m.get("latency_ms"), Mapping) else None
    if lat is not None:
        a["lat"].append(lat)
    en = m.get("energy")
    if isinstance(en, Mapping):
        src = str(en.get("source"))
        v = _samples_per_j(en, thr)
        if src not in MEASURED_SOURCES_EXCLUDED and v is not None:
            a["spj"].append(v)
            a["src"].add(src)
        elif src == "estimate" and v is not None:
            a["spj_est"].append(v)
        elif en.get("reason"):
            a["reason"] = str(en.get("reason"))
    dist = m.get("distributed") if isinstance(m.get("distributed"), Mapping) else {}
    sc = _num(dist.get("scaling_efficiency", m.get("scaling_efficiency")))
    if sc is not None:
        a["scal"].append(sc)


def machines_of(runs: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """fingerprint -> label of every machine among ``runs``."""
    return {fingerprint(d): _machine_label(d) for d in runs}


def procurement_entries(
    runs: Sequence[Mapping[str, Any]], prices: Prices | None = None, rank_by: str = "throughput"
) -> list[Entry]:
    """Entries for every (workload configuration, machine option) with an ok cell."""
    if rank_by not in RANK_METRICS:
        raise ValueError(f"unknown ranking metric {rank_by!r}; choose from: {', '.join(RANK_METRICS)}")
    acc: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for doc in runs:
        fp, host = fingerprint(doc), str((doc.get("environment") or {}).get("host"))
        for cell in doc.get("cells") or []:
            if not isinstance(cell, Mapping) or cell.get("status") != "ok":
                continue
            s = cell.get("spec") or {}
            wkey = f"{s.get('workload')}/{s.get('variant')}/{s.get('mode')}/bs{s.get('batch_size')}/{s.get('size')}" + (
                f"/ws{s['world_size']}" if s.get("world_size") else "")
            k = (wkey, fp, str(s.get("backend")), str(s.get("device")))
            opt = acc.setdefault(k, {"host": host, "label": _machine_label(doc), "clean": _bucket(),
                                     "contended": _bucket(), "notes": []})  # fmt: skip
            note = contention_note(cell)
            if note:
                opt["notes"].append(note)
            _add(opt["contended" if note else "clean"], cell, str(doc.get("run_id")))
    entries = []
    for (wkey, fp, backend, device), opt in acc.items():
        a = opt["clean"] if opt["clean"]["runs"] else opt["contended"]
        only_contended = not opt["clean"]["runs"]
        e = Entry(workload_key=wkey, machine=fp, host=opt["host"], machine_label=opt["label"], backend=backend,
                  device=device, n_runs=len(a["runs"]), throughput_per_s=_median(a["thr"]),
                  latency_p50_ms=_median(a["lat"]), samples_per_j=_median(a["spj"]),
                  energy_source=", ".join(sorted(a["src"])) or None, samples_per_j_estimate=_median(a["spj_est"]),
                  energy_reason=a["reason"], scaling_efficiency=_median(a["scal"]),
                  n_contended=0 if only_contended else len(opt["contended"]["runs"]),
                  contended=opt["notes"][0] if only_contended else None)  # fmt: skip
        price = prices.for_machine(opt["host"], fp) if prices else None
        if price and e.throughput_per_s:
            if price.hourly:
                e.perf_per_dollar = e.throughput_per_s * 3600.0 / price.hourly
                e.perf_per_dollar_unit = f"samples per {prices.currency}"  # type: ignore[union-attr]
            elif price.purchase:
                e.perf_per_dollar = e.throughput_per_s / (price.purchase / 1000.0)
                e.perf_per_dollar_unit = f"samples/s per 1000 {prices.currency} of purchase price"  # type: ignore[union-attr]
        entries.append(e)
    rank(entries, rank_by)
    return sorted(entries, key=lambda e: (e.workload_key, e.rank if e.rank is not None else 10**9, e.machine))


def rank(entries: list[Entry], by: str) -> None:
    """Set ``rank`` (1 = best) within each workload configuration; entries without the
    metric get no rank, nor do entries measured under contention only. Hourly and
    purchase prices are not comparable: perf per dollar ranks only among entries with
    the same unit."""
    attr, higher = RANK_METRICS[by]
    groups: dict[tuple[str, str | None], list[Entry]] = {}
    for e in entries:
        e.rank = None
        unit = e.perf_per_dollar_unit if by == "perf_per_dollar" else None
        groups.setdefault((e.workload_key, unit), []).append(e)
    for group in groups.values():
        have = [e for e in group if getattr(e, attr) is not None and e.contended is None]
        have.sort(key=lambda e: getattr(e, attr), reverse=higher)
        for i, e in enumerate(have, 1):
            e.rank = i
