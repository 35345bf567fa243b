"""``harness compare RUNS --across FIELD=BASELINE`` (issue 17): each cell against the cell
that differs from it only in FIELD (variant, backend or device), with the statistics of
``harness compare``; verdict words faster / slower / no detectable difference.

Most tests build schema-valid result documents from seeded samples (the helpers of
tests/test_report.py and tests/test_compare.py) with known speed ratios, so the verdicts
are known; one module fixture runs a real ``harness run`` of tiny mlp cells (fp32 + bf16,
cpu + cuda, 2 processes each) and compares across variant and device.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.analysis.compare import (
    NO_DIFFERENCE,
    NOISE_UNKNOWN,
    CompareError,
    CompareSettings,
    compare_across,
    compare_docs,
    parse_across,
)
from tests.conftest import run_cli
from tests.test_compare import _write
from tests.test_report import failed_cell, make_doc, ok_cell, skipped_cell

SMOKE = [(w, m) for w in ("mlp", "cnn", "transformer") for m in ("inference", "training")]


def _spec(cell: dict[str, Any], **spec: Any) -> dict[str, Any]:
    cell["spec"] = {**cell["spec"], **spec}
    s = cell["spec"]
    cell["id"] = f"{s['workload']}/{s['backend']}/{s['device']}/{s['variant']}/{s['mode']}/bs{s['batch_size']}/{s['size']}"
    return cell


def cell(workload: str = "mlp", mode: str = "inference", size: str = "tiny", variant: str = "fp32",
         backend: str = "torch", device: str = "cpu", level: float = 1.0, procs: int = 4, seed: int = 0,
         noise: float = 0.02, peak_host: int = 400_000_000) -> dict[str, Any]:
    """An ok cell at ``level`` ms; with ``procs`` > 1 measured in that many worker processes
    (``harness run --repeats``), each with its own run-to-run offset (``noise``)."""
    c = _spec(ok_cell(workload, seed=seed, center_ms=level, n=60, peak_host=peak_host), mode=mode, size=size,
              variant=variant, backend=backend, device=device)  # fmt: skip
    if procs > 1:
        rng = np.random.default_rng(seed + 7)
        reps = []
        for i in range(procs):
            lv = level * math.exp(noise * rng.standard_normal())
            xs = (lv * (1.0 + 0.02 * np.abs(rng.standard_normal(40)))).tolist()
            reps.append({"index": i, "status": "ok", "samples_ms": xs, "reason": None,
                         "timing": {"contention": {"detected": False, "evidence": {}}},
                         "metrics": {"latency_ms": {"min": min(xs)}, "throughput_per_s": 64 / (min(xs) / 1000)}})  # fmt: skip
        c["repeats"] = reps
        c["samples_ms"] = [x for r in reps for x in r["samples_ms"]]
    return c


def doc(cells: list[dict[str, Any]], tag: str = "a") -> dict[str, Any]:
    d = make_doc([], run_id=f"20261202T000000Z-h-{tag}")  # schema-checked envelope
    d["cells"] = cells
    return d


def smoke_like(factors: dict[str, float], size: str = "tiny", procs: int = 4, seed: int = 0) -> list[dict[str, Any]]:
    """fp32 plus each variant of ``factors`` (its time / fp32's) for every smoke workload and mode."""
    out, k = [], seed
    for w, m in SMOKE:
        base = {"mlp": 0.2, "cnn": 1.0, "transformer": 3.0}[w] * (2 if m == "training" else 1)
        for v, f in {"fp32": 1.0, **factors}.items():
            k += 1
            out.append(cell(w, m, size, v, level=base * f, procs=procs, seed=k))
    return out


def times(words: str, word: str) -> float:
    """``"1.80x faster"`` -> 1.8 (and checks the word)."""
    number, _, rest = words.partition("x ")
    assert rest == word, words
    return float(number)


def by_value(res: Any) -> dict[tuple[str, str], Any]:
    return {(res.pairs[c.key].group, res.pairs[c.key].value): c for c in res.comparison.cells}


# ----------------------------------------------------------------------------- pairing and words


def test_across_variant_on_a_smoke_like_set_pairs_each_cell_with_its_fp32_cell() -> None:
    # bf16 takes 0.55x the time of fp32 (1.8x faster), int8 1.3x (slower), compile the same
    res = compare_across([doc(smoke_like({"bf16": 0.55, "int8": 1.3, "compile": 1.0}))], "variant", "fp32")
    pairs = by_value(res)
    assert len(pairs) == 18 and not res.not_compared  # 6 workload/mode groups x 3 variants
    for (group, v), cc in pairs.items():
        pair = res.pairs[cc.key]
        assert pair.baseline == cc.key.replace(f"/{v}/", "/fp32/") and group == cc.key.replace(f"/{v}", "")
        assert (cc.n_baseline, cc.n_candidate) == (4, 4) and cc.noise_model == "between-run"
        words = res.verdict(cc)
        if v == "bf16":
            assert times(words, "faster") == pytest.approx(1 / 0.55, rel=0.06)
            g, (lo, hi) = res.gain(cc)
            assert lo < g < hi and lo > 1
        elif v == "int8":
            assert times(words, "slower") == pytest.approx(1.3, rel=0.06)
        else:
            assert words == NO_DIFFERENCE
    assert res.counts() == {"faster": 6, "slower": 6, NO_DIFFERENCE: 6}
    assert len(res.worse) == 6 and res.comparison.tested == 18  # one Holm family over all pairs


def test_across_uses_the_compare_statistics_unchanged() -> None:
    # the pair bf16-vs-fp32 gives exactly what compare_docs gives for fp32 cells as the baseline and
    # the bf16 cells (renamed to fp32) as the candidate: same ratio, CI, p-values, threshold, detectable change
    cells = smoke_like({"bf16": 0.7}, seed=40)
    fp32 = [c for c in cells if c["spec"]["variant"] == "fp32"]
    bf16 = [json.loads(json.dumps(c)) for c in cells if c["spec"]["variant"] == "bf16"]
    for c in bf16:
        _spec(c, variant="fp32")
    plain = {c.key: c for c in compare_docs([doc(fp32, "b")], [doc(bf16, "c")]).cells}
    across = compare_across([doc(cells)], "variant", "fp32")
    assert len(across.comparison.cells) == len(plain) == 6
    for cc in across.comparison.cells:
        ref = plain[across.pairs[cc.key].baseline]
        for f in ("verdict", "ratio", "ratio_ci", "p_adjusted", "threshold", "min_detectable_change", "run_noise", "df"):
            assert getattr(cc, f) == pytest.approx(getattr(ref, f)), f


def test_cells_without_a_counterpart_are_listed_once_with_the_reason() -> None:
    cells = smoke_like({"bf16": 0.55})
    cells = [c for c in cells if not (c["spec"]["workload"] == "cnn" and c["spec"]["mode"] == "training"
                                       and c["spec"]["variant"] == "bf16")]  # fp32 alone
    cells = [c for c in cells if not (c["spec"]["workload"] == "mlp" and c["spec"]["mode"] == "training"
                                       and c["spec"]["variant"] == "fp32")]  # bf16 alone
    res = compare_across([doc(cells)], "variant", "fp32")
    why = dict(res.not_compared)
    assert len(res.not_compared) == len(why) == 2 and len(res.comparison.cells) == 4
    assert why["mlp/torch/cpu/bf16/training/bs64/tiny"] == "no fp32 cell for mlp/torch/cpu/training/bs64/tiny"
    assert why["cnn/torch/cpu/fp32/training/bs64/tiny"] == "no other variant than fp32 for cnn/torch/cpu/training/bs64/tiny"
    assert not res.unmeasured


def test_across_backend_on_a_quick_like_set_skips_and_names_failed_cells() -> None:
    cells = []
    for k, (w, m) in enumerate(SMOKE):
        cells.append(cell(w, m, "small", backend="torch", level=1.0, seed=10 + k))
        if (w, m) == ("transformer", "training"):
            cells.append(_spec(failed_cell(w, "Could not import module 'keras_nlp'"), mode=m, size="small",
                               backend="tensorflow", batch_size=64))  # fmt: skip
        else:
            cells.append(cell(w, m, "small", backend="tensorflow", level=1.25 if w == "mlp" else 1.0, seed=20 + k))
    res = compare_across([doc(cells)], "backend", "torch")
    pairs = by_value(res)
    assert set(pairs) == {(f"{w}/cpu/fp32/{m}/bs64/small", "tensorflow") for w, m in SMOKE[:-1]}
    assert times(res.verdict(pairs[("mlp/cpu/fp32/inference/bs64/small", "tensorflow")]), "slower") == pytest.approx(
        1.25, rel=0.06)
    assert res.verdict(pairs[("cnn/cpu/fp32/training/bs64/small", "tensorflow")]) == NO_DIFFERENCE
    why = dict(res.not_compared)
    failed = "transformer/tensorflow/cpu/fp32/training/bs64/small"
    assert why[failed].startswith("failed (RuntimeError: Could not import module 'keras_nlp')")
    torch_cell = "transformer/torch/cpu/fp32/training/bs64/small"
    assert why[torch_cell].startswith("no other backend measured for transformer/cpu/fp32/training/bs64/small")
    assert res.unmeasured == [failed]


def test_across_device_pairs_cpu_with_gpu_and_lists_skipped_gpu_cells() -> None:
    cells = []
    for k, (w, m) in enumerate(SMOKE[:4]):
        cells.append(cell(w, m, device="cpu", level=2.0, seed=30 + k))
        if w == "mlp":
            cells.append(_spec(skipped_cell(w, "no CUDA device visible"), mode=m, size="tiny", batch_size=64,
                               device="cuda:0"))  # fmt: skip
        else:
            cells.append(cell(w, m, device="cuda:0", level=0.4, seed=40 + k))
    res = compare_across([doc(cells)], "device", "cpu")
    assert len(res.comparison.cells) == 2
    for c in res.comparison.cells:
        assert res.pairs[c.key].value == "cuda:0" and times(res.verdict(c), "faster") == pytest.approx(5, rel=0.08)
    why = dict(res.not_compared)
    assert why["mlp/torch/cuda:0/fp32/inference/bs64/tiny"] == "skipped (no CUDA device visible)"
    assert len(res.unmeasured) == 2


def test_memory_metric_speaks_of_smaller_and_larger() -> None:
    # three runs (one process of each cell per run): peak memory of int8 cells is 0.5x fp32's
    rng = np.random.default_rng(5)
    docs = []
    for i in range(3):
        cs = [cell("mlp", variant=v, procs=1, seed=10 * i + j,
                   peak_host=int(f * 400_000_000 * (1 + 0.01 * rng.standard_normal())))
              for j, (v, f) in enumerate((("fp32", 1.0), ("int8", 0.5), ("bf16", 1.0)))]  # fmt: skip
        docs.append(doc(cs, f"m{i}"))
    res = compare_across(docs, "variant", "fp32", CompareSettings(metric="peak_host_mem_bytes"))
    words = {res.pairs[c.key].value: res.verdict(c) for c in res.comparison.cells}
    assert times(words["int8"], "smaller") == pytest.approx(2, rel=0.05)
    assert words["bf16"] == NO_DIFFERENCE
    assert res.words == ("smaller", "larger", "size reduction")


# ----------------------------------------------------------------------------- repeated runs


def test_one_process_per_cell_is_inconclusive_several_runs_are_tested() -> None:
    one = [doc([cell("mlp", variant=v, level=f, procs=1, seed=s) for s, (v, f) in enumerate((("fp32", 1), ("bf16", .5)))],
               f"r{i}") for i in range(3)]  # fmt: skip
    (single,) = compare_across(one[:1], "variant", "fp32").comparison.cells
    assert single.verdict_text == NOISE_UNKNOWN and single.n_baseline == single.n_candidate == 1
    within = compare_across(one[:1], "variant", "fp32", CompareSettings(within_run=True))
    assert times(within.verdict(within.comparison.cells[0]), "faster") > 1.5
    res = compare_across(one, "variant", "fp32")  # three runs = three processes of each cell
    (cc,) = res.comparison.cells
    assert (cc.n_baseline, cc.n_candidate) == (3, 3) and cc.noise_model == "between-run"
    assert times(res.verdict(cc), "faster") > 1.5 and res.runs == [d["run_id"] for d in one]


def test_parse_across_refuses_other_fields() -> None:
    assert parse_across("variant=fp32") == ("variant", "fp32")
    assert parse_across(" device = cuda:0 ") == ("device", "cuda:0")
    for bad, msg in (("workload=mlp", "choose from: variant, backend, device"), ("mode=training", "unknown field"),
                     ("variant", "needs FIELD=BASELINE"), ("backend=", "needs FIELD=BASELINE")):  # fmt: skip
        with pytest.raises(CompareError, match=msg):
            parse_across(bad)
    with pytest.raises(CompareError, match="variant values present: bf16, fp32"):
        compare_across([doc(smoke_like({"bf16": 0.5})[:4])], "variant", "fp16")
    with pytest.raises(CompareError, match="every cell has backend 'torch'"):
        compare_across([doc(smoke_like({"bf16": 0.5})[:4])], "backend", "torch")


# ----------------------------------------------------------------------------- the command line


def cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``harness ARGS`` in this process (fast): (exit code, stdout, stderr)."""
    from harness.cli import main

    capsys.readouterr()
    rc = main(args)
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_exit_codes_formats_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = _write(tmp_path / "runs", [doc(smoke_like({"bf16": 0.55, "int8": 1.3})[:6])])
    proc = run_cli(["compare", str(runs), "--across", "variant=fp32"])  # as a user runs it
    assert proc.returncode == 0, proc.stderr  # it ran; slower cells alone do not fail it
    assert "x faster" in proc.stdout and "x slower" in proc.stdout and "bf16 vs fp32" in proc.stdout
    rc, stdout, stderr = cli(["compare", str(runs), "--across", "variant=fp32", "--fail-if-slower", "--format", "json"],
                             capsys)  # fmt: skip
    assert rc == 1 and "slower than their variant fp32 counterpart" in stderr
    out = json.loads(stdout)
    assert out["across"]["field"] == "variant" and out["across"]["baseline"] == "fp32" and out["worse"] is True
    assert {c["across_verdict"].split(" ", 1)[1] for c in out["cells"]} == {"faster", "slower"}
    assert all(c["baseline_cell"].split("/")[3] == "fp32" and c["gain_ci"] for c in out["cells"])
    rc, md, _ = cli(["compare", str(runs), "--across", "variant=fp32", "--format", "markdown", "--fail-if-worse"], capsys)
    assert rc == 1 and md.startswith("### harness compare --across") and "| bf16 vs fp32 |" in md
    for args, msg in (
        (["--across", "workload=mlp"], "unknown field 'workload'; choose from: variant, backend, device"),
        (["--across", "variant=fp16"], "no cell has variant 'fp16'; variant values present: bf16, fp32, int8"),
        (["--across", "device=cpu"], "every cell has device 'cpu'"),
        (["--across", "variant"], "needs FIELD=BASELINE"),
        (["--fail-if-slower"], "--fail-if-worse goes with --across"),
    ):
        rc, _, err = cli(["compare", str(runs), *args] if args[0] != "--fail-if-slower"
                         else ["compare", str(runs), str(runs), *args], capsys)  # fmt: skip
        lines = err.strip().splitlines()
        assert rc == 2 and len(lines) == 1 and msg in lines[0] and "Traceback" not in err, (args, err)
    rc, _, err = cli(["compare", "--baseline", "nightly", str(runs), "--across", "variant=fp32"], capsys)
    assert rc == 2 and "not --baseline" in err
    # several runs given one by one are one pool: each run is one process of each cell
    files = []
    for i in range(3):
        one = doc([cell("mlp", variant=v, level=f, procs=1, seed=10 * i + j)
                   for j, (v, f) in enumerate((("fp32", 1.0), ("bf16", 0.5)))], f"p{i}")  # fmt: skip
        files.append(str(_write(tmp_path / f"p{i}", [one])))
    rc, out_json, _ = cli(["compare", *files, "--across", "variant=fp32", "--format", "json"], capsys)
    (pooled,) = json.loads(out_json)["cells"]
    assert rc == 0 and (pooled["n_baseline"], pooled["n_candidate"]) == (3, 3) and pooled["noise_model"] == "between-run"
    assert times(pooled["across_verdict"], "faster") == pytest.approx(2, rel=0.1)
    # a bad FIELD in a real process: one line, exit 2, no traceback
    proc = run_cli(["compare", str(runs), "--across", "mode=inference"])
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "choose from: variant, backend, device" in proc.stderr


# ----------------------------------------------------------------------------- a real run


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny mlp cells fp32 + bf16 on cpu and cuda (skipped on a machine without CUDA), each
    in 2 worker processes: a real result file."""
    out = tmp_path_factory.mktemp("across")
    proc = run_cli(["run", "--suite", "smoke", "-w", "mlp", "-v", "fp32", "-v", "bf16", "-d", "cpu", "-d", "cuda",
                    "--mode", "inference", "--repeats", "2", "--out", str(out), "--no-progress"])  # fmt: skip
    assert list(out.glob("*.json")), proc.stderr[-2000:]
    return out


def test_real_run_across_variant_and_device(real_run: Path) -> None:
    proc = run_cli(["compare", str(real_run), "--across", "variant=fp32", "--format", "json", "--fail-on-missing", "--allow-contended"])
    out = json.loads(proc.stdout)
    (cpu,) = [c for c in out["cells"] if c["candidate_cell"].startswith("mlp/torch/cpu/")]
    assert cpu["candidate_cell"] == "mlp/torch/cpu/bf16/inference/bs8/tiny" and cpu["variant"] == "bf16"
    assert cpu["baseline_cell"] == "mlp/torch/cpu/fp32/inference/bs8/tiny" and cpu["noise_model"] == "between-run"
    assert (cpu["n_baseline"], cpu["n_candidate"]) == (2, 2)
    assert cpu["contended"] or cpu["min_detectable_change"] > 0  # a busy machine: no verdict, no detectable change
    v = cpu["across_verdict"]
    assert v == NO_DIFFERENCE or v.endswith(("x faster", "x slower")) or v.startswith("inconclusive"), v
    cuda = [c for c in out["cells"] if "cuda" in c["candidate_cell"]]
    if not cuda:  # no CUDA here: the cuda cells were skipped, listed, and --fail-on-missing fails the job
        assert {n["cell"] for n in out["not_compared"]} == {"mlp/torch/cuda:0/fp32/inference/bs8/tiny",
                                                            "mlp/torch/cuda:0/bf16/inference/bs8/tiny"}
        assert all(n["reason"].startswith("skipped (") and n["unmeasured"] for n in out["not_compared"])
        assert proc.returncode == 1 and "not compared because they or their counterpart were skipped" in proc.stderr
        dev = run_cli(["compare", str(real_run), "--across", "device=cpu"])
        assert dev.returncode == 0 and "no cell could be compared" in dev.stderr
        assert "skipped (" in dev.stdout and "no other device measured for mlp/torch/fp32/inference/bs8/tiny" in dev.stdout
    else:  # pragma: no cover - a CUDA machine
        assert proc.returncode == 0
