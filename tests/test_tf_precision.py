"""fp32 means fp32 on the TensorFlow backend (issue 11, section 3).

TensorFlow runs fp32 matmuls/convolutions in TensorFloat-32 by default on Ampere+ GPUs,
and its XLA bridge (``jit_compile``, and every TPU program) lowers them with precision
DEFAULT while TF32 is enabled (one bfloat16 pass on a TPU). The backend turns TF32 off
for every variant whose ``fp32_math`` is "ieee", turns it on for "tf32" where the
hardware has it, skips "tf32" with the reason elsewhere, and records what it did under
``runtime.precision``.

GPUs are faked only at the lowest boundary: ``tf.test.is_built_with_cuda``,
``tf.config.list_physical_devices("GPU")`` and
``tf.config.experimental.get_device_details`` (the compute capability). Everything
above runs for real; on this CPU-only TensorFlow, ops under ``tf.device("/GPU:0")``
fall back to the CPU (soft placement), so a faked-GPU cell is prepared and run.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

from harness.api import SkipCell, Variant
from harness.workloads.mlp import MLPWorkload

if importlib.util.find_spec("tensorflow") is None:
    pytest.skip("tensorflow is not installed", allow_module_level=True)

from tests.test_tpu import FakeTPURuntime  # noqa: E402


class FP32(Variant):
    name = "fp32"

    def apply_tensorflow(self, model: Any, **ctx: Any) -> Any:
        return model


class XLA(FP32):
    name = "compile"
    tf_jit_compile = True


class TF32(FP32):
    """What the tf32 variant declares (harness/variants/precision.py)."""

    name = "tf32"
    fp32_math = "tf32"


@pytest.fixture(scope="module")
def tf() -> Any:
    from harness.backends.tf_backend import import_tf

    return import_tf()


@pytest.fixture
def backend(tf: Any) -> Any:
    from harness.backends.tf_backend import TensorFlowBackend

    b = TensorFlowBackend()
    b.setup()
    yield b
    tf.config.experimental.enable_tensor_float_32_execution(True)  # TensorFlow's default


@pytest.fixture
def fake_gpu(tf: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A CUDA build with one GPU of a settable compute capability (the lowest boundary)."""
    state = {"cc": (8, 0), "name": "NVIDIA A100-SXM4-40GB", "asked": []}
    real = tf.config.list_physical_devices
    gpu = tf.config.PhysicalDevice("/physical_device:GPU:0", "GPU")

    def details(device: Any) -> dict[str, Any]:
        state["asked"].append(device.name)
        return {"compute_capability": state["cc"], "device_name": state["name"]}

    monkeypatch.setattr(tf.test, "is_built_with_cuda", lambda: True)
    monkeypatch.setattr(tf.config, "list_physical_devices",
                        lambda device_type=None: [gpu] if device_type == "GPU" else real(device_type))
    monkeypatch.setattr(tf.config.experimental, "get_device_details", details)
    return state


# --------------------------------------------------------------------------- fp32


def test_fp32_cell_turns_tf32_off_and_records_it(backend: Any, tf: Any) -> None:
    tf.config.experimental.enable_tensor_float_32_execution(True)  # TensorFlow's default
    step = backend.prepare(MLPWorkload("tiny"), FP32(), "cpu", "inference", 4)
    assert tf.config.experimental.tensor_float_32_execution_enabled() is False
    step.run(2)
    prec = backend.runtime_info()["precision"]
    assert prec["fp32_math"] == "ieee" and prec["tensor_float_32_execution"] is False
    assert prec["tensor_float_32_execution_after"] is False and "warning" not in prec
    assert prec["device_kind"] == "cpu" and prec["tf32_hardware"] is False and prec["fp32_strict"] is True
    assert prec["keras_dtype_policy"] == "float32" and prec["keras_global_dtype_policy"] == "float32"
    assert "enable_tensor_float_32_execution(False)" in prec["set_by"]
    assert step.runtime_info()["precision"] == prec  # the step carries the same record


def test_a_changed_flag_during_the_cell_is_recorded(backend: Any, tf: Any) -> None:
    backend.prepare(MLPWorkload("tiny"), FP32(), "cpu", "inference", 4)
    tf.config.experimental.enable_tensor_float_32_execution(True)  # e.g. a library changed it
    prec = backend.runtime_info()["precision"]
    assert prec["tensor_float_32_execution"] is False and prec["tensor_float_32_execution_after"] is True
    assert "changed it" in prec["warning"]


def test_xla_fp32_step_is_lowered_with_highest_precision(backend: Any, tf: Any) -> None:
    """The compiled step's HLO: with TF32 on (TensorFlow's default) fp32 dots are emitted
    with precision DEFAULT (one bfloat16 pass on a TPU); the fp32 cell must be HIGHEST."""
    tf.config.experimental.enable_tensor_float_32_execution(True)
    step = backend.prepare(MLPWorkload("tiny"), XLA(), "cpu", "inference", 4)
    hlo = step._fn.experimental_get_compiler_ir()(stage="hlo")
    dots = [line for line in hlo.splitlines() if " dot(" in line]
    assert len(dots) == 3 and all("operand_precision={highest,highest}" in line for line in dots)
    rec = backend.runtime_info()["precision"]["xla_dot_precision"]
    assert rec["dot_and_convolution_ops"] == rec["operand_precision_highest"] == 3


def test_onednn_down_conversion_is_not_called_strict(backend: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONEDNN_DEFAULT_FPMATH_MODE", "BF16")
    backend.prepare(MLPWorkload("tiny"), FP32(), "cpu", "inference", 4)
    prec = backend.runtime_info()["precision"]
    assert prec["fp32_strict"] is False and "ONEDNN_DEFAULT_FPMATH_MODE=BF16" in prec["fp32_matmul_conv"]


def test_unknown_fp32_math_is_a_clear_error(backend: Any) -> None:
    class Bad(FP32):
        fp32_math = "fp19"

    with pytest.raises(ValueError, match="fp32_math must be one of ieee, tf32"):
        backend.prepare(MLPWorkload("tiny"), Bad(), "cpu", "inference", 4)


# --------------------------------------------------------------------------- tf32


def test_tf32_is_skipped_on_cpu_with_the_reason(backend: Any, tf: Any) -> None:
    with pytest.raises(SkipCell, match="a CPU runs fp32 matmuls and convolutions in IEEE fp32"):
        backend.prepare(MLPWorkload("tiny"), TF32(), "cpu", "inference", 4)
    with pytest.raises(SkipCell, match="TensorFloat-32"):
        backend.prepare_data_parallel(MLPWorkload("tiny"), TF32(), "cpu", 4, 2)


def test_tf32_is_skipped_on_tpu_before_connecting(tf: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.backends.tf_backend import TensorFlowBackend, TensorFlowConfig

    monkeypatch.delenv("TPU_NAME", raising=False)
    FakeTPURuntime.calls = []
    b = TensorFlowBackend(TensorFlowConfig(tpu="my-tpu"), tpu_runtime=FakeTPURuntime)
    with pytest.raises(SkipCell, match="TPUs have no TensorFloat-32.*one bfloat16 pass"):
        b.prepare(MLPWorkload("tiny"), TF32(), "tpu", "inference", 4)
    assert FakeTPURuntime.calls == []


def test_fp32_on_tpu_turns_tf32_off_so_xla_uses_highest(tf: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.backends.tf_backend import TensorFlowBackend, TensorFlowConfig

    monkeypatch.delenv("TPU_NAME", raising=False)
    tf.config.experimental.enable_tensor_float_32_execution(True)
    b = TensorFlowBackend(TensorFlowConfig(tpu="my-tpu"), tpu_runtime=FakeTPURuntime)
    try:
        b.prepare(MLPWorkload("tiny"), FP32(), "tpu", "inference", 4)
        prec = b.runtime_info()["precision"]
        assert tf.config.experimental.tensor_float_32_execution_enabled() is False
        assert prec["device_kind"] == "tpu" and prec["tensor_float_32_execution"] is False
        assert "HIGHEST" in prec["fp32_matmul_conv"] and "one bfloat16 pass" in prec["fp32_matmul_conv"]
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(True)


@pytest.mark.parametrize("cc", [(7, 0), (7, 5)])
def test_tf32_is_skipped_on_a_pre_ampere_gpu(backend: Any, fake_gpu: Any, cc: tuple[int, int]) -> None:
    fake_gpu["cc"], fake_gpu["name"] = cc, "Tesla V100-SXM2-16GB"
    with pytest.raises(SkipCell, match=rf"GPU:0 \(Tesla V100-SXM2-16GB, compute capability {cc[0]}\.{cc[1]}\) "
                                       "has no TensorFloat-32"):
        backend.prepare(MLPWorkload("tiny"), TF32(), "cuda:0", "inference", 4)
    assert fake_gpu["asked"] == ["/physical_device:GPU:0"]


def test_tf32_is_skipped_when_the_compute_capability_is_unknown(backend: Any, fake_gpu: Any) -> None:
    fake_gpu["cc"] = None
    with pytest.raises(SkipCell, match="compute capability unknown"):
        backend.prepare(MLPWorkload("tiny"), TF32(), "cuda:0", "inference", 4)


def test_tf32_on_an_ampere_gpu_enables_it_and_records_it(backend: Any, tf: Any, fake_gpu: Any) -> None:
    tf.config.experimental.enable_tensor_float_32_execution(False)
    fake_gpu["cc"] = (8, 6)
    step = backend.prepare(MLPWorkload("tiny"), TF32(), "cuda:0", "training", 4)
    assert tf.config.experimental.tensor_float_32_execution_enabled() is True
    prec = backend.runtime_info()["precision"]
    assert prec["fp32_math"] == "tf32" and prec["tensor_float_32_execution"] is True
    assert prec["tf32_hardware"] is True and prec["fp32_strict"] is False
    assert prec["gpus"] == [{"index": 0, "name": "NVIDIA A100-SXM4-40GB", "compute_capability": "8.6"}]
    assert step.barrier == "tf_sync_devices"  # a GPU keeps TensorFlow's stream barrier


def test_fp32_on_an_ampere_gpu_turns_tf32_off(backend: Any, tf: Any, fake_gpu: Any) -> None:
    tf.config.experimental.enable_tensor_float_32_execution(True)  # TensorFlow's default
    step = backend.prepare(MLPWorkload("tiny"), FP32(), "cuda:0", "inference", 4)
    step.run(1)
    assert tf.config.experimental.tensor_float_32_execution_enabled() is False
    prec = backend.runtime_info()["precision"]
    assert prec["fp32_math"] == "ieee" and prec["tensor_float_32_execution"] is False
    assert prec["tf32_hardware"] is True and prec["fp32_strict"] is True
    assert prec["fp32_matmul_conv"].startswith("IEEE fp32: TF32 off")


def test_fp32_on_a_pre_ampere_gpu_says_the_flag_does_nothing_there(backend: Any, fake_gpu: Any) -> None:
    fake_gpu["cc"] = (6, 1)
    backend.prepare(MLPWorkload("tiny"), FP32(), "cuda:0", "inference", 4)
    prec = backend.runtime_info()["precision"]
    assert prec["tf32_hardware"] is False and "has no TF32" in prec["fp32_matmul_conv"]


# --------------------------------------------------------------------------- worker


def test_the_worker_records_runtime_precision(tf: Any) -> None:
    from harness.core.suite import Settings, TaskSpec
    from harness.launch.worker import run_cell

    spec = TaskSpec(workload="mlp", backend="tensorflow", device="cpu", variant="fp32", mode="training",
                    batch_size=4, size="tiny")
    try:
        cell = run_cell(spec, Settings(size="tiny", min_time_s=0.01, warmup_max_s=0.05, min_samples=2))
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(True)
    assert cell["status"] == "ok", cell["reason"]
    prec = cell["runtime"]["precision"]
    assert prec["fp32_math"] == "ieee" and prec["tensor_float_32_execution"] is False
    assert prec["keras_dtype_policy"] == "float32"
