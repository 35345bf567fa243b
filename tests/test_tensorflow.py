"""The TensorFlow backend and the Keras twins of the built-in workloads.

TensorFlow is imported once for the module (a module-scoped fixture) and only by the
tests that need it; the import-isolation tests run in fresh interpreters.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.api import BackendConfig, SkipCell, Variant
from harness.workloads.cnn import CNNWorkload
from harness.workloads.mlp import MLPWorkload
from harness.workloads.transformer import TransformerWorkload

if importlib.util.find_spec("tensorflow") is None:  # find_spec: no import at collection time
    pytest.skip("tensorflow is not installed", allow_module_level=True)

from tests.conftest import ROOT, only_result, run_cli  # noqa: E402

WORKLOADS = [MLPWorkload, CNNWorkload, TransformerWorkload]
ALL_PRESETS = [(w, s) for w in WORKLOADS for s in ("tiny", "small", "base")]


def _ids(p: Any) -> str:
    return p.name if isinstance(p, type) else str(p)


@pytest.fixture(scope="module")
def tf() -> Any:
    from harness.backends.tf_backend import import_tf

    return import_tf()


@pytest.fixture(scope="module")
def backend(tf: Any) -> Any:
    from harness.backends.tf_backend import TensorFlowBackend

    b = TensorFlowBackend()
    b.setup()
    return b


class FP32(Variant):
    name = "fp32"

    def apply_tensorflow(self, model: Any, **ctx: Any) -> Any:
        return model


class XLA(FP32):
    """What the lead's ``compile`` variant provides: ``tf_jit_compile = True``."""

    name = "compile"
    tf_jit_compile = True


# ------------------------------------------------------------------ model parity


@pytest.mark.parametrize("wl,size", ALL_PRESETS, ids=_ids)
def test_keras_twin_has_the_analytic_parameter_count(tf: Any, wl: type, size: str) -> None:
    from harness.workloads._keras_models import trainable_params

    w = wl(size)
    model = w.build("tensorflow")
    assert trainable_params(model) == w.analytic_params()
    # BatchNorm running statistics exist but are not parameters (buffers in torch)
    n_bn = sum(1 for layer in model.layers if type(layer).__name__ == "BatchNormalization")
    assert len(model.non_trainable_weights) == 2 * n_bn


@pytest.mark.parametrize("wl", WORKLOADS, ids=_ids)
@pytest.mark.parametrize("size", ["tiny", "small"])
def test_keras_graph_flops_equal_the_analytic_count(tf: Any, wl: type, size: str) -> None:
    """MatMul/BatchMatMul/Conv2D FLOPs of the traced forward graph == analytic FLOPs."""
    from harness.workloads._keras_models import graph_matmul_flops, keras_inputs

    w = wl(size)
    model = w.build("tensorflow")
    bs = 3
    arrays, _ = w.make_inputs(bs)
    xs = [tf.constant(a) for a in keras_inputs(w, arrays)]
    graph = tf.function(lambda: model(xs[0], training=False)).get_concrete_function().graph
    assert graph_matmul_flops(graph) == w.analytic_flops(bs)


def test_layer_structure_mirrors_torch_module_paths(tf: Any) -> None:
    torch = pytest.importorskip("torch")
    for wl in WORKLOADS:
        w = wl("tiny")
        tm = w.build_torch()
        torch_paths = {n.replace(".", "_") for n, m in tm.named_modules()
                       if any(True for _ in m.parameters(recurse=False))}
        keras_paths = {layer.name for layer in w.build("tensorflow").layers if layer.weights}
        assert torch_paths == keras_paths, wl.name
        assert isinstance(tm, torch.nn.Module)


def test_cnn_inputs_are_transposed_to_nhwc_outside_the_model(tf: Any) -> None:
    from harness.workloads._keras_models import keras_inputs

    w = CNNWorkload("tiny")
    (x,), _ = w.make_inputs(2)
    (y,) = keras_inputs(w, [x])
    assert x.shape == (2, 3, 16, 16) and y.shape == (2, 16, 16, 3)
    assert y[1, 5, 7, 2] == x[1, 2, 5, 7] and y.flags["C_CONTIGUOUS"]
    ids, _ = TransformerWorkload("tiny").make_inputs(2)
    assert keras_inputs(TransformerWorkload("tiny"), ids)[0] is ids[0]


# ------------------------------------------------------------------ backend steps


@pytest.mark.parametrize("wl", WORKLOADS, ids=_ids)
def test_inference_step_computes_the_models_outputs(backend: Any, tf: Any, wl: type) -> None:
    w = wl("tiny")
    step = backend.prepare(w, FP32(), "cpu", "inference", 4, seed=0)
    assert step.params == w.analytic_params()
    assert step.mode == "inference" and step.device == "/CPU:0"
    assert step.labels.shape == (4,) and len(step.inputs) == 1
    assert "CPU:0" in step.inputs[0].device  # placed on the device before timing
    step.run(2)
    step.sync()
    ref = step.model(step.inputs[0], training=False).numpy()
    out = step._fn().numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    m = step.extra_metrics()
    assert m["compile_time_s"] > 0 and m["xla_jit_compile"] is False
    assert step.device_clock() is None  # CPU: synchronous, the host clock is exact


@pytest.mark.parametrize("wl", WORKLOADS, ids=_ids)
def test_training_step_updates_weights_and_lowers_the_loss(backend: Any, tf: Any, wl: type) -> None:
    w = wl("tiny")
    step = backend.prepare(w, FP32(), "cpu", "training", 4, seed=0)
    assert step.mode == "training"
    before = [v.numpy().copy() for v in step.model.trainable_variables]
    first = float(step._fn())
    step.run(30)
    after = [v.numpy() for v in step.model.trainable_variables]
    assert all(not np.array_equal(a, b) for a, b in zip(before, after))  # every weight trained
    last = float(step._fn())
    assert last < first  # AdamW on a fixed batch (dropout on) still fits it


def test_xla_variant_jit_compiles_and_reports_compile_time(backend: Any, tf: Any) -> None:
    w = MLPWorkload("tiny")
    step = backend.prepare(w, XLA(), "cpu", "inference", 8, seed=0)
    m = step.extra_metrics()
    assert m["xla_jit_compile"] is True and "XLA" in m["compile_method"] and m["compile_time_s"] > 0
    # the compiled function really is XLA: its HLO can be dumped
    hlo = step._fn.experimental_get_compiler_ir()(stage="hlo")
    assert "HloModule" in hlo
    ref = backend.prepare(w, FP32(), "cpu", "inference", 8, seed=0)
    np.testing.assert_allclose(step._fn().numpy(), ref._fn().numpy(), rtol=1e-4, atol=1e-6)


def test_cpu_peak_memory_is_measured_or_null_with_a_reason_never_zero(backend: Any) -> None:
    small = backend.prepare(MLPWorkload("small"), FP32(), "cpu", "training", 64)
    small.reset_device_peak_memory()
    small.run(2)
    peak, source = small.device_peak_memory()
    # TensorFlow's CPU allocator keeps statistics only on some builds/allocators (here:
    # "Allocator stats not available for device 'CPU:0'" unless TF_CPU_ALLOCATOR_USE_BFC
    # is set): measured, or null with the reason -- never a made-up number, never 0
    if peak is None:
        assert "get_memory_info" in source and ("not available" in source or "0 bytes" in source), source
    else:
        assert peak >= MLPWorkload("small").analytic_params() * 4
        assert "get_memory_info('CPU:0')['peak']" in source
    tiny = backend.prepare(MLPWorkload("tiny"), FP32(), "cpu", "inference", 8)
    tiny.reset_device_peak_memory()
    tiny.run(2)
    peak, why = tiny.device_peak_memory()
    assert peak != 0
    if peak is None:
        assert "0 bytes" in why or "not available" in why, why


def test_cuda_is_skipped_with_the_reason_on_a_cpu_build(backend: Any, tf: Any) -> None:
    if tf.test.is_built_with_cuda():
        pytest.skip("this TensorFlow has CUDA support")
    with pytest.raises(SkipCell, match="built without CUDA"):
        backend.prepare(MLPWorkload("tiny"), FP32(), "cuda:0", "inference", 8)
    devices = {d.name: d for d in backend.list_devices()}
    assert devices["cpu"].available and not devices["cuda"].available
    assert "tpu" in devices


def test_unknown_device_and_tpu_index_are_skipped(backend: Any) -> None:
    with pytest.raises(SkipCell, match="use -d tpu"):
        backend.prepare(MLPWorkload("tiny"), FP32(), "tpu:1", "inference", 8)


def test_backend_accepts_the_workers_plain_config() -> None:
    from harness.backends.tf_backend import TensorFlowBackend, TensorFlowConfig

    b = TensorFlowBackend(BackendConfig(threads=3))
    assert isinstance(b.config, TensorFlowConfig) and b.config.threads == 3 and b.config.tpu is None
    with pytest.raises(ValueError, match="tpu"):
        TensorFlowConfig(tpu="  ")


# ------------------------------------------------------------------ placement

_MIRRORED_PLACEMENT = """
from harness.backends.tf_backend import TensorFlowBackend
from harness.api import Variant
from harness.workloads.mlp import MLPWorkload

class FP32(Variant):
    name = "fp32"
    def apply_tensorflow(self, model, **ctx): return model

b = TensorFlowBackend()
b.setup()
step = b.prepare_data_parallel(MLPWorkload("tiny"), FP32(), "cpu", 4, 2)
strategy = b._strategy
devices = list(strategy.extended.worker_devices)
assert len(devices) == 2 and devices[0] != devices[1], devices
for value in (*step.inputs, step.labels):
    got = [t.device for t in strategy.experimental_local_results(value)]
    assert got == devices, ("per-replica inputs not on their replica's device", got, devices)
loss = float(step._fn())
step.run(2)
assert loss == loss
print("OK")
"""


@pytest.mark.slow
def test_mirrored_strategy_inputs_live_on_their_replicas_device() -> None:
    """Two logical CPU devices behind a MirroredStrategy (configured before TensorFlow
    starts: own process). Each replica's share of the batch must be created on that
    replica's device before timing, or every step copies it there in the timed region
    (host-to-device on GPUs)."""
    proc = subprocess.run([sys.executable, "-c", _MIRRORED_PLACEMENT], capture_output=True, text=True,
                          cwd=str(ROOT), timeout=300)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-3000:]


_QUALITY_ON_CPU = """
import json
from harness.backends.tf_backend import import_tf
tf = import_tf()
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from harness.api import Variant
from harness.core.quality import evaluate_quality
from harness.workloads.mlp import MLPWorkload

seen = {"variables": set(), "outputs": set()}

class Spy(Variant):
    name = "spy"
    def apply_tensorflow(self, model, **ctx):
        seen["variables"] |= {v.value.device for v in model.variables}
        def call(x, training=False):
            out = model(x, training=training)
            seen["outputs"].add(out.device)
            return out
        return call

# an ambient default device other than the host's first CPU: on a GPU machine that
# default is GPU:0, where TensorFlow places variables and ops unless told otherwise
with tf.device("/CPU:1"):
    q = evaluate_quality(MLPWorkload("tiny"), Spy(), "tensorflow")
print(json.dumps({k: sorted(v) for k, v in seen.items()} | {"agreement": q["agreement"]}))
"""


@pytest.mark.slow
def test_tensorflow_quality_track_runs_on_cpu0_whatever_the_default_device(tmp_path: Path) -> None:
    import os

    env = {**os.environ, "DL_HARNESS_CACHE_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", _QUALITY_ON_CPU], capture_output=True, text=True,
                          cwd=str(ROOT), timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["variables"] and all(d.endswith("/device:CPU:0") for d in seen["variables"]), seen
    assert seen["outputs"] and all(d.endswith("/device:CPU:0") for d in seen["outputs"]), seen
    assert seen["agreement"] == 1.0


# ------------------------------------------------------------------ import isolation

_NO_TF_CHECK = (
    "import sys\n{body}\n"
    "bad = sorted(m for m in ('tensorflow', 'keras') if m in sys.modules)\n"
    "print(json.dumps(bad))\n"
)


def _imports_after(body: str) -> list[str]:
    code = "import json\n" + _NO_TF_CHECK.format(body=body)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_help_list_and_is_installed_never_import_tensorflow() -> None:
    body = (
        "from harness.cli import main\n"
        "for argv in (['--help'], ['run', '--help'], ['verify', '--help'], ['list', 'backends']):\n"
        "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
        "from harness.backends.tf_backend import TensorFlowBackend\n"
        "assert TensorFlowBackend.is_installed()[0]\n"
        "from harness.workloads.cnn import CNNWorkload\n"
        "assert CNNWorkload('tiny').supports_backend('tensorflow')\n"
    )
    assert _imports_after(body) == []


def test_a_pytorch_worker_never_imports_tensorflow() -> None:
    body = (
        "from harness.core.suite import Settings, TaskSpec\n"
        "from harness.launch.worker import run_cell\n"
        "for w, bs in (('mlp', 8), ('cnn', 4), ('transformer', 4)):\n"
        "    spec = TaskSpec(workload=w, backend='torch', device='cpu', variant='fp32', mode='inference',"
        " batch_size=bs, size='tiny')\n"
        "    cell = run_cell(spec, Settings(size='tiny', min_time_s=0.01, warmup_max_s=0.05, min_samples=2))\n"
        "    assert cell['status'] == 'ok', cell\n"
    )
    assert _imports_after(body) == []


# ------------------------------------------------------------------ end to end


@pytest.mark.slow
def test_run_both_backends_tiny_gives_ok_cells_with_equal_params(tmp_path: Path) -> None:
    """The issue's check: harness run -w mlp -w cnn -w transformer -b torch -b tensorflow --size tiny."""
    proc = run_cli(["run", "-w", "mlp", "-w", "cnn", "-w", "transformer", "-b", "torch", "-b", "tensorflow",
                    "--size", "tiny", "--min-time", "0.05", "--threads", "1", "--out", str(tmp_path),
                    "--no-progress"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = only_result(tmp_path)
    cells = {(c["spec"]["workload"], c["spec"]["backend"]): c for c in doc["cells"]}
    assert len(cells) == 6
    for w in ("mlp", "cnn", "transformer"):
        t, f = cells[(w, "torch")], cells[(w, "tensorflow")]
        assert t["status"] == f["status"] == "ok", (t["reason"], f["reason"])
        assert t["metrics"]["params"] == f["metrics"]["params"] == f["metrics"]["params_analytic"]
        assert t["metrics"]["flops_analytic"] == f["metrics"]["flops_analytic"]
        assert f["metrics"]["compile_time_s"] > 0
        assert f["runtime"]["intra_op_threads"] == 1  # --threads reached TensorFlow
        assert f["runtime"]["tensorflow"].startswith("2.")
        # never a silent zero: measured bytes with a source, or null with a reason
        peak = f["metrics"]["peak_device_mem_bytes"]
        assert (peak and f["metrics"]["peak_device_mem_source"]) or f["unavailable"]["peak_device_mem_bytes"]
