"""Cross-framework agreement (harness/analysis/parity.py) and ``harness verify``.

The two sides are called in-process here (both frameworks install together) to keep
the tests fast; one CLI test runs the real two-process ``harness verify``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.analysis.parity import Agreement, relative_error, tensorflow_side, torch_side
from tests.conftest import run_cli

if importlib.util.find_spec("tensorflow") is None or importlib.util.find_spec("torch") is None:
    pytest.skip("parity needs both torch and tensorflow", allow_module_level=True)


# ------------------------------------------------------------------ the metric


def test_relative_error_is_max_abs_diff_over_max_abs_reference() -> None:
    ref = np.array([[1.0, -4.0], [2.0, 0.5]], dtype=np.float32)
    other = ref + np.array([[0.0, 0.002], [-0.001, 0.0]], dtype=np.float32)
    diff, scale, rel = relative_error(ref, other)
    assert diff == pytest.approx(0.002, rel=1e-3) and scale == 4.0 and rel == pytest.approx(0.0005, rel=1e-3)


def test_relative_error_edge_cases() -> None:
    z = np.zeros((2, 3))
    assert relative_error(z, z)[2] == 0.0
    assert math.isinf(relative_error(z, z + 1e-9)[2])
    assert math.isinf(relative_error(np.ones(3), np.array([1.0, np.nan, 1.0]))[2])
    with pytest.raises(ValueError, match="shapes differ"):
        relative_error(np.ones((2, 3)), np.ones((3, 2)))


def _agreement(**kw: Any) -> Agreement:
    base = dict(workload="mlp", size="tiny", batch_size=8, params_torch=10, params_tensorflow=10,
                params_analytic=10, max_abs_diff=1e-7, max_abs_ref=1.0, rel_error=1e-7,
                rel_error_xla=None, tolerance=1e-4)
    base.update(kw)
    return Agreement(**base)  # type: ignore[arg-type]


def test_agreement_needs_small_error_and_equal_params_and_no_error() -> None:
    assert _agreement().agrees
    assert not _agreement(rel_error=2e-4).agrees
    assert not _agreement(params_tensorflow=11).agrees
    assert not _agreement(params_analytic=9).agrees
    assert not _agreement(rel_error_xla=1.0).agrees
    assert not _agreement(rel_error=None, error="tensorflow side: boom").agrees
    assert _agreement().to_dict()["agrees"] is True


# ------------------------------------------------------------------ both sides for real


@pytest.fixture(scope="module")
def dumped(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Torch side for every workload at tiny (in this process)."""
    d = tmp_path_factory.mktemp("parity")
    job = {"items": [{"workload": w, "size": "tiny", "batch_size": 4} for w in ("mlp", "cnn", "transformer")],
           "seed": 1, "dir": str(d), "xla": True, "threads": None}
    return {"job": job, "torch": torch_side(job)}


def test_torch_and_keras_agree_on_every_workload(dumped: dict[str, Any]) -> None:
    res = tensorflow_side({**dumped["job"], "torch": dumped["torch"]})
    for key, r in res.items():
        assert "error" not in r, r
        assert r["rel_error"] <= 1e-4 and r["rel_error_xla"] <= 1e-4, (key, r)
        assert r["params"] == dumped["torch"][key]["params"]
        assert r["max_abs_ref"] > 0


def test_weights_are_made_informative_so_their_transfer_is_tested(dumped: dict[str, Any]) -> None:
    with np.load(dumped["torch"]["cnn/tiny"]["npz"]) as z:
        var = z["state/stem.1.running_var"]
        mean = z["state/stem.1.running_mean"]
    assert not np.allclose(var, 1.0) and not np.allclose(mean, 0.0)


@pytest.mark.parametrize("key,tensor", [("cnn/tiny", "state/stem.1.running_var"),
                                        ("cnn/tiny", "state/stages.1.0.conv1.weight"),
                                        ("transformer/tiny", "state/layers.1.attn.k.weight"),
                                        ("transformer/tiny", "state/layers.0.attn.q.bias"),
                                        ("transformer/tiny", "state/type_emb.weight"),
                                        ("transformer/tiny", "state/layers.1.ffn_norm.bias"),
                                        ("mlp/tiny", "state/net.2.bias")])
def test_a_wrong_weight_is_detected(dumped: dict[str, Any], tmp_path: Path, key: str, tensor: str) -> None:
    """Change one torch tensor after the torch outputs were computed: the check must fail."""
    src = dumped["torch"][key]["npz"]
    with np.load(src) as z:
        data = {k: z[k] for k in z.files}
    rng = np.random.default_rng(0)
    data[tensor] = data[tensor] * (1.5 + rng.random(data[tensor].shape, dtype=np.float32))
    broken = tmp_path / "broken.npz"
    np.savez(broken, **data)
    item = next(i for i in dumped["job"]["items"] if f"{i['workload']}/tiny" == key)
    res = tensorflow_side({**dumped["job"], "items": [item], "xla": False,
                           "torch": {key: {"npz": str(broken), "params": 0}}})
    assert res[key]["rel_error"] > 1e-2  # 100x the tolerance: a wrong mapping cannot hide


def test_missing_or_misshapen_weights_are_named() -> None:
    from harness.workloads._keras_models import load_torch_state
    from harness.workloads.mlp import MLPWorkload

    w = MLPWorkload("tiny")
    state = {k: v.detach().numpy() for k, v in w.build_torch().state_dict().items()}
    model = w.build("tensorflow")
    assert load_torch_state(model, state) == w.analytic_params()
    with pytest.raises(ValueError, match="net_4"):
        load_torch_state(model, {k: v for k, v in state.items() if not k.startswith("net.4")})
    bad = dict(state, **{"net.0.weight": np.zeros((32, 65), np.float32)})
    with pytest.raises(ValueError, match="net_0"):
        load_torch_state(model, bad)


# ------------------------------------------------------------------ the CLI


@pytest.mark.slow
def test_verify_cli_passes_and_prints_agreement(tmp_path: Path) -> None:
    proc = run_cli(["verify", "-w", "mlp", "-w", "transformer", "--size", "tiny", "--json"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(proc.stdout)
    assert [(r["workload"], r["size"]) for r in rows] == [("mlp", "tiny"), ("transformer", "tiny")]
    for r in rows:
        assert r["agrees"] and r["rel_error"] <= 1e-4 and r["params_torch"] == r["params_tensorflow"]


@pytest.mark.parametrize("args,needle", [
    (["verify", "-w", "nope"], "unknown workload 'nope'"),
    (["verify", "-w", "mlp", "--size", "huge"], "unknown size 'huge'"),
    (["verify", "--tolerance", "0"], "positive number"),
])
def test_verify_usage_errors_exit_2(args: list[str], needle: str) -> None:
    proc = run_cli(args)
    assert proc.returncode == 2
    assert needle in proc.stderr and "Traceback" not in proc.stderr


def test_verify_exits_1_when_a_preset_disagrees(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    import harness.analysis.parity
    from harness.commands import verify as cmd

    def fake_verify(items: Any, **kw: Any) -> list[Agreement]:
        return [_agreement(workload=w, size=s, batch_size=b, rel_error=0.3 if w == "cnn" else 1e-7)
                for w, s, b in items]

    monkeypatch.setattr(harness.analysis.parity, "verify", fake_verify)
    args = argparse.Namespace(workload=["mlp", "cnn"], size=["tiny"], batch_size=None, tolerance=None,
                              xla=False, threads=None, json=False)
    assert cmd.run(args) == 1
    out = capsys.readouterr().out
    assert "1 of 2 agree" in out and "NO" in out
