"""The TPU path of the TensorFlow backend, faked only at its lowest boundary.

The boundary is :class:`harness.backends.tf_backend.TPURuntime`: ``resolve`` (the
``TPUClusterResolver``) and ``connect`` (connect to the cluster, initialise the TPU
system, return the ``TPUStrategy``). The fakes record what they were asked and return
a *real* ``tf.distribute`` strategy over CPU devices, so everything above the boundary
(the strategy scope, the per-replica batch split, ``strategy.run``/``reduce``, the
optimizer's cross-replica update, skip reasons, metrics) runs for real.

A test marked ``tpu`` runs only where a real TPU is configured (``TPU_NAME``).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from typing import Any

import numpy as np
import pytest

from harness.api import SkipCell, Variant
from tests.conftest import ROOT

if importlib.util.find_spec("tensorflow") is None:
    pytest.skip("tensorflow is not installed", allow_module_level=True)

from harness.workloads.mlp import MLPWorkload  # noqa: E402
from harness.workloads.transformer import TransformerWorkload  # noqa: E402


class FP32(Variant):
    name = "fp32"

    def apply_tensorflow(self, model: Any, **ctx: Any) -> Any:
        return model


class FakeResolver:
    def __init__(self, tpu: str) -> None:
        self.tpu = tpu

    def master(self) -> str:
        return f"grpc://{self.tpu}:8470"


class FakeTPURuntime:
    """Resolves any name except None (like the real resolver off Cloud TPU) and
    'connects' to a real one-device CPU strategy."""

    calls: list[tuple[str, Any]] = []

    def __init__(self, tf: Any) -> None:
        self.tf = tf

    def resolve(self, tpu: str | None) -> Any:
        FakeTPURuntime.calls.append(("resolve", tpu))
        if tpu is None:
            raise ValueError("Please provide a TPU Name to connect to.")
        return FakeResolver(tpu)

    def connect(self, resolver: Any) -> Any:
        FakeTPURuntime.calls.append(("connect", resolver.tpu))
        return self.tf.distribute.OneDeviceStrategy("/cpu:0")


@pytest.fixture
def fake_runtime(monkeypatch: pytest.MonkeyPatch) -> type[FakeTPURuntime]:
    monkeypatch.delenv("TPU_NAME", raising=False)
    FakeTPURuntime.calls = []
    return FakeTPURuntime


def _backend(tpu: str | None, runtime: Any) -> Any:
    from harness.backends.tf_backend import TensorFlowBackend, TensorFlowConfig

    b = TensorFlowBackend(TensorFlowConfig(tpu=tpu), tpu_runtime=runtime)
    b.setup()
    return b


def test_no_tpu_is_skipped_with_the_resolvers_reason(fake_runtime: Any) -> None:
    b = _backend(None, fake_runtime)
    with pytest.raises(SkipCell, match="Please provide a TPU Name to connect to"):
        b.prepare(MLPWorkload("tiny"), FP32(), "tpu", "inference", 8)
    assert ("connect", None) not in fake_runtime.calls  # never connects without a TPU


def test_real_resolver_here_skips_with_its_own_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    """No fake: on this machine (no TPU, no TPU_NAME) the real TPUClusterResolver refuses."""
    monkeypatch.delenv("TPU_NAME", raising=False)
    b = _backend(None, None)
    if b.tf.config.list_physical_devices("TPU"):
        pytest.skip("this machine has a local TPU")
    with pytest.raises(SkipCell, match="TPUClusterResolver found none: Please provide a TPU Name"):
        b.prepare(MLPWorkload("tiny"), FP32(), "tpu", "inference", 8)
    devices = {d.name: d for d in b.list_devices()}
    assert not devices["tpu"].available and "TPU_NAME" in devices["tpu"].detail


@pytest.mark.parametrize("mode", ["inference", "training"])
def test_named_tpu_connects_and_runs_under_the_strategy(fake_runtime: Any, mode: str) -> None:
    b = _backend("my-tpu", fake_runtime)
    w = TransformerWorkload("tiny") if mode == "inference" else MLPWorkload("tiny")
    step = b.prepare(w, FP32(), "tpu", mode, 4, seed=0)
    assert fake_runtime.calls == [("resolve", "my-tpu"), ("connect", "my-tpu")]
    assert step.params == w.analytic_params()
    assert step.extra_metrics()["tpu_replicas"] == 1
    # the variables were created under the strategy, so the strategy owns them
    assert all(b._strategy.extended.variable_created_in_scope(v.value) for v in step.model.trainable_variables)
    before = [v.numpy().copy() for v in step.model.trainable_variables]
    step.run(2)
    step.sync()
    after = [v.numpy() for v in step.model.trainable_variables]
    changed = any(not np.array_equal(x, y) for x, y in zip(before, after))
    assert changed == (mode == "training")
    peak, why = step.device_peak_memory()
    assert peak is None and "TPUStrategy" in why
    assert b.runtime_info()["strategy"] == "OneDeviceStrategy"
    assert step.device_clock() is not None  # asynchronous device: synced host clock


def test_tpu_name_from_the_environment_reaches_the_resolver(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no --tpu, the real resolver reads TPU_NAME itself: the backend passes None."""
    from harness.backends.tf_backend import TensorFlowBackend

    seen: list[Any] = []

    class Recorder(FakeTPURuntime):
        def resolve(self, tpu: str | None) -> Any:
            seen.append(tpu)
            raise ValueError("unreachable in this test")

    monkeypatch.setenv("TPU_NAME", "from-env")
    b = TensorFlowBackend(tpu_runtime=Recorder)
    with pytest.raises(SkipCell, match="unreachable in this test"):
        b.prepare(MLPWorkload("tiny"), FP32(), "tpu", "inference", 8)
    assert seen == [None]


def test_list_devices_shows_a_resolved_tpu(fake_runtime: Any) -> None:
    b = _backend("node-1", fake_runtime)
    tpu = {d.name: d for d in b.list_devices()}["tpu"]
    assert tpu.available and "grpc://node-1:8470" in tpu.detail
    assert ("connect", "node-1") not in fake_runtime.calls  # listing never connects


_TWO_REPLICAS = textwrap.dedent("""
    import numpy as np
    from harness.backends.tf_backend import TensorFlowBackend, TensorFlowConfig, import_tf
    from harness.api import SkipCell, Variant
    from harness.workloads.mlp import MLPWorkload
    tf = import_tf()
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    class Runtime:
        def __init__(self, tf): pass
        def resolve(self, tpu): return tpu
        def connect(self, resolver): return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])

    class FP32(Variant):
        name = "fp32"
        def apply_tensorflow(self, model, **ctx): return model

    b = TensorFlowBackend(TensorFlowConfig(tpu="fake"), tpu_runtime=Runtime)
    w = MLPWorkload("tiny")
    try:
        b.prepare(w, FP32(), "tpu", "inference", 7)
        raise SystemExit("batch 7 on 2 replicas was not skipped")
    except SkipCell as e:
        assert "not divisible by the 2 TPU replicas" in str(e), e
    step = b.prepare(w, FP32(), "tpu", "inference", 8)
    # each replica's part of the batch lives on that replica's device before timing
    devices = list(b._strategy.extended.worker_devices)
    assert devices[0] != devices[1], devices
    for value in (*step.inputs, step.labels):
        got = [t.device for t in b._strategy.experimental_local_results(value)]
        assert got == devices, (got, devices)
    out = step._fn()
    parts = [t.numpy() for t in b._strategy.experimental_local_results(out)]
    assert [p.shape for p in parts] == [(4, 10), (4, 10)], [p.shape for p in parts]
    ref = step.model(np.concatenate([t.numpy() for t in b._strategy.experimental_local_results(step.inputs[0])]))
    np.testing.assert_allclose(np.concatenate(parts), ref.numpy(), rtol=1e-5, atol=1e-6)
    # the replicas received the two halves of the same global batch as on one device
    arrays, _ = w.make_inputs(8)
    got = np.concatenate([t.numpy() for t in b._strategy.experimental_local_results(step.inputs[0])])
    np.testing.assert_array_equal(got, arrays[0])
    # the TPU barrier fetches one scalar per replica, computed from the last output
    step.run(2)
    step.sync()
    np.testing.assert_allclose(step.last_barrier_value, np.concatenate(parts).astype(np.float64).sum(), rtol=1e-5)
    train = b.prepare(w, FP32(), "tpu", "training", 8)
    loss = float(train._fn())
    train.run(3)
    assert np.isfinite(loss) and train.extra_metrics()["tpu_replicas"] == 2
    print("OK")
""")


@pytest.mark.slow
def test_global_batch_is_split_over_replicas_in_a_fresh_process() -> None:
    """Two logical CPU devices behind a MirroredStrategy stand in for two TPU cores
    (logical devices must be configured before TensorFlow starts: own process)."""
    proc = subprocess.run([sys.executable, "-c", _TWO_REPLICAS], capture_output=True, text=True,
                          cwd=str(ROOT), timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-3000:]


@pytest.mark.parametrize("mode", ["inference", "training"])
def test_tpu_clock_waits_by_fetching_the_step_output_to_the_host(
        fake_runtime: Any, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    """``sync_devices`` runs ``SyncDevice``, whose only waiting kernel is the GPU's: it
    proves nothing about a TPU. The TPU clock must read the host time only after a host
    fetch of a value computed from the last step's output, and the timed region must
    hold the steps and that one fetch only."""
    b = _backend("my-tpu", fake_runtime)
    tf = b.tf

    def sync_devices() -> None:
        raise AssertionError("tf.test.experimental.sync_devices used as the TPU barrier")

    monkeypatch.setattr(tf.test.experimental, "sync_devices", sync_devices)
    w = MLPWorkload("tiny")
    step = b.prepare(w, FP32(), "tpu", mode, 4, seed=0)  # its first (compile) call is synced too
    clock = step.device_clock()
    assert clock is not None and clock.name == "perf_counter+host_fetch_of_step_output"
    real_now = clock._now
    fetches_at_read: list[int] = []

    def now() -> float:  # the clock's time source: note how many fetches preceded each read
        fetches_at_read.append(step.barrier_fetches)
        return real_now()

    clock._now = now
    before = step.barrier_fetches
    token = clock.start()
    step.run(3)
    assert step.barrier_fetches == before + 1  # run(): the steps only, no fetch inside the loop
    elapsed = clock.elapsed(token)
    assert elapsed > 0
    assert fetches_at_read == [before + 1, before + 2]  # each clock read right after a host fetch
    last = b._strategy.experimental_local_results(step._last)
    if mode == "inference":  # the fetched scalar is the sum of the last step's logits
        x = np.concatenate([t.numpy() for t in b._strategy.experimental_local_results(step.inputs[0])])
        expected = float(np.sum(step.model(x, training=False).numpy(), dtype=np.float64))
    else:  # training: the last step's loss
        expected = float(last[0].numpy())
    assert step.last_barrier_value == pytest.approx(expected, rel=1e-5)


def test_tpu_flag_and_setting_are_validated() -> None:
    from harness.cli import build_parser
    from harness.core.suite import Settings

    parser, _ = build_parser()
    args = parser.parse_args(["run", "-w", "mlp", "-d", "tpu", "--tpu", "local"])
    assert args.tpu == "local"
    assert Settings(tpu="grpc://10.0.0.2:8470").tpu == "grpc://10.0.0.2:8470"
    with pytest.raises(ValueError, match="tpu must be"):
        Settings(tpu="")


@pytest.mark.tpu
def test_real_tpu_runs_a_cell() -> None:  # pragma: no cover - needs a Cloud TPU
    if not os.environ.get("TPU_NAME"):
        pytest.skip("no TPU configured (set TPU_NAME)")
    from harness.backends.tf_backend import TensorFlowBackend

    b = TensorFlowBackend()
    b.setup()
    step = b.prepare(MLPWorkload("small"), FP32(), "tpu", "training", 64)
    step.run(3)
    step.sync()
    assert step.extra_metrics()["tpu_replicas"] >= 1
