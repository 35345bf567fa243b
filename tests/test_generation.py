"""``mode: generate`` (docs/generation.md): every generated token timed.

* A real run (one CLI run, a module-scoped fixture over a suite file): the relations
  between TTFT, TPOT, ITL and end-to-end time hold *exactly* on the raw per-token times
  the cell keeps (integer nanoseconds), and every stored percentile and tokens/s is
  what the raw times give; the KV cache measured equals the config's size; prefill and
  decode FLOPs are counted apart; bf16 runs, non-LM workloads skip with the reason.
* In-process: the timed loop's tokens equal ``transformers``' ``model.generate`` (greedy,
  fixed length) for tiny GPT-2 and tiny Llama; the KV cache of a batch of 2 equals the
  config's size (GQA included); a variant that replaces the model skips; SLO goodput on
  synthetic requests; ``--slo`` / ``--prompt-len`` mistakes exit 2 with one line;
  compare gates ``generation.*`` from the raw times; the suite's token axes.
"""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness import cli
from harness.analysis.compare import CompareSettings, compare_docs
from harness.api import SkipCell
from harness.core import generation as G
from harness.core import registry
from harness.core.cells import TaskSpec, parse_slo
from harness.core.suite import expand, parse_suite
from tests.conftest import run_cli
from tests.test_report import make_doc, ok_cell

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from harness.core.frameworks import torch_generate as TG  # noqa: E402

PROMPTS, GEN = (8, 16), 4
SLO = "ttft_ms=60000,tpot_ms=0.001"  # every TTFT meets it, no TPOT does: goodput 0 whatever the machine

SUITE = f"""
name: gen
settings: {{min_time_s: 0.1, size: tiny, slo: "{SLO}"}}
matrix:
  workload: [hf:gpt2, mlp, hf:resnet-50]
  mode: [generate]
  variant: [fp32, bf16]
  batch_size: [1]
  prompt_len: [8, 16]
  gen_len: [{GEN}]
exclude:
  - {{variant: bf16, prompt_len: 16}}
  - {{workload: mlp, variant: bf16}}
  - {{workload: hf:resnet-50, variant: bf16}}
"""


@pytest.fixture(scope="module")
def run_doc(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """hf:gpt2@tiny fp32 at prompts 8 and 16, bf16 at 8; mlp and resnet-50 (not LMs)."""
    d = tmp_path_factory.mktemp("gen-run")
    suite = d / "gen.yaml"
    suite.write_text(SUITE)
    proc = run_cli(["run", "--suite", str(suite), "--out", str(d / "out"), "--no-progress"], timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (f,) = (d / "out").glob("*.json")
    return json.loads(f.read_text())


def _cell(doc: dict[str, Any], workload: str = "hf:gpt2", variant: str = "fp32", prompt: int = 8) -> dict[str, Any]:
    (cell,) = [c for c in doc["cells"] if c["spec"]["workload"] == workload and c["spec"]["variant"] == variant
               and c["spec"].get("prompt_len") == prompt]
    return cell


def _ok(cell: dict[str, Any]) -> dict[str, Any]:
    assert cell["status"] == "ok", cell.get("error") or cell.get("reason")
    return cell["metrics"]["generation"]


# ----------------------------------------------------------------------------- a real run


@pytest.mark.parametrize("prompt", PROMPTS)
def test_relations_hold_exactly_on_the_raw_token_times(run_doc: dict[str, Any], prompt: int) -> None:
    cell = _cell(run_doc, prompt=prompt)
    g = _ok(cell)
    assert cell["id"].endswith(f"/generate/bs1/tiny/p{prompt}g{GEN}")
    assert (g["batch_size"], g["prompt_len"], g["gen_len"]) == (1, prompt, GEN)
    reqs = g["requests"]
    assert cell["timing"]["iters_per_sample"] == 1
    assert g["requests_timed"] == len(reqs) == len(cell["samples_ms"]) >= 2
    ttft, tpot, e2e, itl = [], [], [], []
    for r, sample_ms in zip(reqs, cell["samples_ms"]):
        t, gaps = r["ttft_ns"], r["itl_ns"]
        assert isinstance(t, int) and all(isinstance(x, int) for x in gaps)  # integer nanoseconds
        assert len(gaps) == GEN - 1 and t > 0 and min(gaps) > 0
        e2e_ns = t + sum(gaps)
        # tpot = (e2e - ttft) / (gen_len - 1) = mean(itl), as rationals: exact
        assert Fraction(e2e_ns - t, GEN - 1) == Fraction(sum(gaps), len(gaps))
        times = G.request_times(r)
        assert times["tpot_ms"] == float(Fraction(e2e_ns - t, (GEN - 1) * 10**6)) == float(
            Fraction(sum(gaps), len(gaps)) / 10**6)
        assert times["e2e_ms"] == e2e_ns / 1e6 and times["ttft_ms"] == t / 1e6
        # the timing loop's sample wraps the whole request
        assert sample_ms >= times["e2e_ms"] - 1e-3
        ttft.append(t / 1e6)
        e2e.append(e2e_ns / 1e6)
        tpot.append(times["tpot_ms"])
        itl.extend(x / 1e6 for x in gaps)
    for name, xs in (("ttft_ms", ttft), ("tpot_ms", tpot), ("e2e_ms", e2e), ("itl_ms", itl)):
        stored = g[name]
        for p in (50, 90, 99):
            assert stored[f"p{p}"] == float(np.percentile(np.asarray(xs), p)), (name, p)
        assert (stored["min"], stored["max"]) == (min(xs), max(xs))
        assert stored["mean"] == pytest.approx(float(np.mean(xs)), rel=1e-12)
        assert sorted(G.raw_samples(cell, f"generation.{name}")) == sorted(xs)  # what compare gates
    assert g["itl_ms"]["mean"] == pytest.approx(g["tpot_ms"]["mean"], rel=1e-12)  # equal gaps per request
    assert g["output_tokens_per_s"] == 1 * GEN / (float(np.median(e2e)) / 1e3)
    assert g["prefill_tokens_per_s"] == 1 * prompt / (float(np.median(ttft)) / 1e3)
    assert "perf_counter_ns" in g["method"]


def test_goodput_of_the_run_is_recomputed_from_the_raw_times(run_doc: dict[str, Any]) -> None:
    g = _ok(_cell(run_doc))
    assert g["slo"] == parse_slo(SLO)
    per = [G.request_times(r) for r in g["requests"]]
    assert all(p["ttft_ms"] <= 60000 for p in per) and all(p["tpot_ms"] > 0.001 for p in per)
    assert g["goodput"]["requests_meeting_slo"] == 0.0 and g["goodput"]["output_tokens_per_s"] == 0.0
    loose = G.goodput(per, {"ttft_ms": 60000.0}, GEN)
    assert loose["requests_meeting_slo"] == 1.0
    assert loose["output_tokens_per_s"] == pytest.approx(GEN * len(per) / (sum(p["e2e_ms"] for p in per) / 1e3))


def test_kv_cache_and_flops_of_the_run(run_doc: dict[str, Any]) -> None:
    gens = {p: _ok(_cell(run_doc, prompt=p)) for p in PROMPTS}
    for p, g in gens.items():
        kv = g["kv_cache"]
        assert kv["cached_positions"] == p + GEN - 1  # the last token is never fed back
        # tiny GPT-2: 2 layers, 2 heads x 32, fp32, batch 1
        assert kv["bytes_measured"] == kv["bytes_from_config"] == 2 * 2 * 2 * 32 * (p + GEN - 1) * 1 * 4
        assert g["prefill_flops"] > 0 and g["decode_flops"] > 0
        assert g["prefill_achieved_flops_per_s"] > 0 and g["decode_achieved_flops_per_s"] > 0
        assert "generation.prefill_flops" not in _cell(run_doc, prompt=p)["unavailable"]
    assert gens[16]["prefill_flops"] > gens[8]["prefill_flops"]
    # the decode steps attend over a longer cache after a longer prompt
    assert gens[16]["decode_flops"] >= gens[8]["decode_flops"]


def test_bf16_generates_and_non_lm_workloads_skip_with_the_reason(run_doc: dict[str, Any]) -> None:
    g = _ok(_cell(run_doc, variant="bf16"))
    assert g["requests_timed"] >= 2 and g["kv_cache"]["bytes_measured"] == g["kv_cache"]["bytes_from_config"]
    for w in ("mlp", "hf:resnet-50"):
        for p in PROMPTS:
            cell = _cell(run_doc, workload=w, prompt=p)
            assert cell["status"] == "skipped"
            assert f"workload {w!r} does not support mode 'generate'" in cell["reason"]


# ----------------------------------------------------------------------------- in-process


def _lm(name: str) -> Any:
    built = registry.load("workload", name)(size="tiny").build("torch")
    lm = built.model
    lm.eval()
    return lm


@pytest.mark.parametrize("name", ["hf:gpt2", "hf:llama-1b"])
def test_tokens_equal_transformers_generate(name: str) -> None:
    lm = _lm(name)
    torch.manual_seed(0)
    batch, prompt, new = 2, 8, 6
    ids = torch.randint(0, lm.config.vocab_size, (batch, prompt))
    r = TG.make_request(lm, ids, new, sync=lambda: None, keep_tokens=True)()
    with torch.inference_mode():
        ref = lm.generate(ids, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                          attention_mask=torch.ones_like(ids), pad_token_id=0)[:, prompt:]
    assert ref.shape == (batch, new)
    assert torch.equal(r["tokens"], ref)
    assert torch.equal(r["last_token"], ref[:, -1:])
    assert len(r["stamps_ns"]) == new and all(isinstance(s, int) for s in r["stamps_ns"])
    assert r["t0_ns"] <= r["stamps_ns"][0] and r["stamps_ns"] == sorted(r["stamps_ns"])
    # without keep_tokens the timed loop keeps none
    assert "tokens" not in TG.make_request(lm, ids, 2, sync=lambda: None)()


@pytest.mark.parametrize(("name", "kv_heads", "heads"), [("hf:gpt2", 2, 2), ("hf:llama-1b", 2, 4)])
def test_kv_cache_measured_equals_the_config_size(name: str, kv_heads: int, heads: int) -> None:
    lm = _lm(name)
    batch, prompt, new = 2, 8, 5
    ids = torch.randint(0, lm.config.vocab_size, (batch, prompt))
    r = TG.make_request(lm, ids, new, sync=lambda: None)()
    cfg = lm.config
    assert (getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads, cfg.num_attention_heads) == (
        kv_heads, heads)
    positions = prompt + new - 1
    measured = TG.cache_nbytes(r["cache"])
    assert TG.cache_element_size(r["cache"]) == 4
    expected = G.kv_cache_bytes(cfg, batch, positions, 4)
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    assert measured == expected == 2 * cfg.num_hidden_layers * kv_heads * head_dim * positions * batch * 4
    # legacy tuple caches count the same
    legacy = tuple((layer.keys, layer.values) for layer in r["cache"].layers)
    assert TG.cache_nbytes(legacy) == measured
    assert TG.cache_nbytes(object()) is None and G.kv_cache_bytes(object(), 1, 1, 4) is None


def test_prefill_and_decode_flops_are_counted_apart() -> None:
    lm = _lm("hf:gpt2")
    counts = {p: TG.count_request_flops(lm, torch.randint(0, 1000, (1, p)), 4) for p in (8, 16)}
    for c in counts.values():
        assert c["prefill_flops"] > 0 and c["decode_flops"] > 0
    assert counts[16]["prefill_flops"] > counts[8]["prefill_flops"]
    # one decode step of one token costs far less than the 8-token prefill
    assert counts[8]["decode_flops"] / 3 < counts[8]["prefill_flops"]


def test_a_variant_that_replaces_the_model_is_skipped_with_the_reason() -> None:
    backend = registry.load("backend", "torch")()
    workload = registry.load("workload", "hf:gpt2")(size="tiny")
    variant = registry.load("variant", "int8-dynamic")()
    with pytest.raises(SkipCell, match="replaces the model .*generate cells need the causal LM itself"):
        backend.prepare_generate(workload, variant, "cpu", 1, 8, 4)


def _stamps(ttft_ms: float, gaps_ms: list[float]) -> dict[str, Any]:
    t = [int(ttft_ms * 1e6)]
    for g in gaps_ms:
        t.append(t[-1] + int(g * 1e6))
    return {"t0_ns": 0, "stamps_ns": t}


def test_slo_goodput_is_the_exact_share_of_requests_meeting_every_objective() -> None:
    # (ttft, tpot): 4 of 10 meet both ttft <= 50 and tpot <= 5 (the limits themselves count)
    spec = [(10, 2), (50, 5), (49, 4), (20, 5), (51, 1), (10, 6), (200, 200), (60, 5), (5, 5.5), (1, 9)]
    reqs = [_stamps(t, [p] * 3) for t, p in spec]
    g = G.summarize(reqs, batch_size=2, prompt_len=8, gen_len=4, slo={"ttft_ms": 50, "tpot_ms": 5})
    assert g["goodput"]["requests_meeting_slo"] == 0.4
    total_s = sum(t + 3 * p for t, p in spec) / 1e3
    assert g["goodput"]["output_tokens_per_s"] == pytest.approx(2 * 4 * 4 / total_s, rel=1e-12)
    assert g["slo"] == {"ttft_ms": 50, "tpot_ms": 5}
    e2e_only = G.summarize(reqs, 2, 8, 4, slo={"e2e_ms": 30})
    assert e2e_only["goodput"]["requests_meeting_slo"] == sum(t + 3 * p <= 30 for t, p in spec) / 10
    assert "goodput" not in G.summarize(reqs, 2, 8, 4)
    # the same requests given in seconds (a float clock) give the same times to the nanosecond
    secs = [{"t0": 1000.0, "stamps": [1000.0 + s / 1e9 for s in r["stamps_ns"]]} for r in reqs]
    assert G.summarize(secs, 2, 8, 4)["ttft_ms"] == G.summarize(reqs, 2, 8, 4)["ttft_ms"]


def test_summarize_refuses_inconsistent_requests() -> None:
    with pytest.raises(ValueError, match="no timed requests"):
        G.summarize([], 1, 8, 4)
    with pytest.raises(ValueError, match="expected gen_len = 4"):
        G.summarize([_stamps(1, [1, 1])], 1, 8, 4)
    with pytest.raises(ValueError, match="back in time"):
        G.summarize([{"t0_ns": 0, "stamps_ns": [5, 3, 9, 10]}], 1, 8, 4)
    with pytest.raises(ValueError, match="at least 2"):
        G.summarize([{"t0_ns": 0, "stamps_ns": [5]}], 1, 8, 1)


def _usage_error(capsys: pytest.CaptureFixture[str], args: list[str]) -> str:
    """Exit 2 with one line (argparse's own errors add the "(see 'harness run --help')" hint)."""
    try:
        code = cli.main(args)
    except SystemExit as e:  # argparse: a bad option value
        code = e.code
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("(see ")]
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize(("slo", "says"), [
    ("latency_ms=5", "bad term 'latency_ms=5'"),
    ("ttft_ms=-5", "must be a positive number"),
    ("ttft_ms=0", "must be a positive number"),
    ("tpot_ms=fast", "needs a number of milliseconds"),
    ("ttft_ms=nan", "must be a positive number"),
    ("ttft_ms", "bad term"),
])
def test_bad_slo_is_a_usage_error(capsys: pytest.CaptureFixture[str], slo: str, says: str) -> None:
    line = _usage_error(capsys, ["run", "-w", "hf:gpt2@tiny", "--mode", "generate", "--slo", slo,
                                 "--out", "/nonexistent-dlh-out"])
    assert says in line


def test_prompt_len_without_generate_mode_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    line = _usage_error(capsys, ["run", "-w", "hf:gpt2@tiny", "--mode", "inference", "--prompt-len", "8",
                                 "--out", "/nonexistent-dlh-out"])
    assert "prompt_len applies to generate cells" in line
    line = _usage_error(capsys, ["run", "-w", "hf:gpt2@tiny", "--mode", "generate", "--gen-len", "1",
                                 "--out", "/nonexistent-dlh-out"])
    assert "--gen-len: must be an integer from 2" in line


# ----------------------------------------------------------------------------- spec and suite


def test_token_lengths_belong_to_generate_cells_and_name_them() -> None:
    s = TaskSpec(workload="hf:gpt2", backend="torch", device="cpu", variant="fp32", mode="generate", batch_size=2,
                 size="tiny", prompt_len=8, gen_len=4)
    assert s.id == "hf:gpt2/torch/cpu/fp32/generate/bs2/tiny/p8g4"
    assert s.to_dict()["prompt_len"] == 8 and s.to_dict()["gen_len"] == 4
    inf = TaskSpec(workload="hf:gpt2", backend="torch", device="cpu", variant="fp32", mode="inference", batch_size=2,
                   size="tiny")
    assert "prompt_len" not in inf.to_dict() and "gen_len" not in inf.to_dict() and not inf.id.endswith("g4")
    with pytest.raises(ValueError, match="generate cells only"):
        TaskSpec(workload="hf:gpt2", backend="torch", device="cpu", variant="fp32", mode="inference", batch_size=2,
                 size="tiny", prompt_len=8)
    with pytest.raises(ValueError, match="gen_len >= 2"):
        TaskSpec(workload="hf:gpt2", backend="torch", device="cpu", variant="fp32", mode="generate", batch_size=2,
                 size="tiny", prompt_len=8, gen_len=1)


def test_suite_prompt_lengths_expand_per_generate_combination() -> None:
    suite = parse_suite("name: g\nsettings: {size: tiny}\nmatrix:\n  workload: ['hf:gpt2', 'hf:llama-1b']\n"
                        "  mode: [inference, generate]\n  batch_size: [1, 2]\n  prompt_len: [8, 16]\n", "g.yaml")
    cells = expand(suite)
    gen = [c for c in cells if c.mode == "generate"]
    inf = [c for c in cells if c.mode == "inference"]
    assert len(inf) == 4 and all(c.prompt_len is None and c.gen_len is None for c in inf)
    assert len(gen) == 8  # 2 workloads x 2 batch sizes x 2 prompt lengths
    assert {(c.workload, c.batch_size, c.prompt_len, c.gen_len) for c in gen} == {
        (w, b, p, 16) for w in ("hf:gpt2", "hf:llama-1b") for b in (1, 2) for p in (8, 16)}  # gen_len default
    from harness.core.suite import ConfigError

    with pytest.raises(ConfigError, match="prompt_len applies to generate cells"):
        expand(parse_suite("name: g\nmatrix:\n  workload: ['hf:gpt2']\n  mode: [inference]\n  prompt_len: [8]\n",
                           "g.yaml"))


# ----------------------------------------------------------------------------- compare


def _gen_doc(i: int, factor: float, seed: int, tpot_factor: float = 1.0) -> dict[str, Any]:
    """One run of a generate cell: 30 requests, TTFT ~ 10 ms x factor, gaps ~ 2 ms x tpot_factor
    (each run with its own small offset, as separate processes have)."""
    rng = np.random.default_rng(seed)
    level = math.exp(0.01 * rng.standard_normal())
    reqs = [_stamps(10 * factor * level * (1 + 0.01 * rng.standard_normal()),
                    list(2 * tpot_factor * level * (1 + 0.01 * rng.standard_normal(3)))) for _ in range(30)]
    gen = G.summarize(reqs, 1, 8, 4)
    cell = ok_cell("hf:gpt2", batch=1, seed=seed, extra_metrics={"generation": gen}, n=30)
    cell["spec"].update(mode="generate", prompt_len=8, gen_len=4, size="tiny")
    cell["id"] = "hf:gpt2/torch/cpu/fp32/generate/bs1/tiny/p8g4"
    return make_doc([cell], run_id=f"2026112{i}T000000Z-h-{seed:06x}")


def test_compare_gates_generation_metrics_from_the_raw_times(tmp_path: Path) -> None:
    base = [_gen_doc(i, 1.0, 100 + i) for i in range(4)]
    slow_ttft = [_gen_doc(i, 1.5, 200 + i) for i in range(4)]  # TTFT 1.5x, TPOT unchanged
    fast_tpot = [_gen_doc(i, 1.0, 300 + i, tpot_factor=0.5) for i in range(4)]
    res = compare_docs(base, slow_ttft, CompareSettings(metric="generation.ttft_ms"))
    (cc,) = res.cells
    assert cc.verdict == "regression" and res.regressions
    assert cc.ratio == pytest.approx(1.5, rel=0.05)
    assert compare_docs(base, slow_ttft, CompareSettings(metric="generation.tpot_ms")).cells[0].verdict == "unchanged"
    assert compare_docs(base, fast_tpot, CompareSettings(metric="generation.tpot_ms")).cells[0].verdict == \
        "improvement"
    # the observation of one run is its raw requests' median, not a stored summary
    wrong = [json.loads(json.dumps(d)) for d in slow_ttft]
    for d in wrong:
        d["cells"][0]["metrics"]["generation"]["ttft_ms"]["p50"] = 1.0  # a stale summary is ignored
    assert compare_docs(base, wrong, CompareSettings(metric="generation.ttft_ms")).cells[0].verdict == "regression"
    # and through the CLI: exit 1 on the regression
    for side, docs in (("b", base), ("c", slow_ttft)):
        (tmp_path / side).mkdir()
        for d in docs:
            (tmp_path / side / f"{d['run_id']}.json").write_text(json.dumps(d))
    proc = run_cli(["compare", str(tmp_path / "b"), str(tmp_path / "c"), "--metric", "generation.ttft_ms",
                    "--format", "json"])
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    (cell,) = json.loads(proc.stdout)["cells"]
    assert cell["verdict"] == "regression"
