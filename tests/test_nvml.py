"""NVML adapter and the CUDA <-> NVML device mapping, against an autospec'd pynvml."""

from __future__ import annotations

from types import SimpleNamespace
from unittest import mock

import pynvml
import pytest

from harness.core.hw.nvml import open_nvml, parse_visible_devices, resolve_cuda_device


def fake_nvml(gpus: list[dict]) -> mock.MagicMock:
    """An autospec'd pynvml whose devices are ``gpus`` (name, uuid, bus, mem, limit_mw)."""
    nv = mock.create_autospec(pynvml, instance=False)
    nv.nvmlDeviceGetCount.return_value = len(gpus)
    nv.nvmlDeviceGetHandleByIndex.side_effect = lambda i: f"h{i}"
    by = lambda h: gpus[int(h[1:])]  # noqa: E731
    nv.nvmlDeviceGetName.side_effect = lambda h: by(h)["name"]
    nv.nvmlDeviceGetUUID.side_effect = lambda h: by(h)["uuid"]
    nv.nvmlDeviceGetPciInfo.side_effect = lambda h: SimpleNamespace(busId=by(h)["bus"])
    nv.nvmlDeviceGetMemoryInfo.side_effect = lambda h: SimpleNamespace(total=by(h)["mem"], used=by(h)["mem"] // 4)
    nv.nvmlDeviceGetCudaComputeCapability.side_effect = lambda h: by(h)["cc"]
    nv.nvmlDeviceGetPowerManagementLimit.side_effect = lambda h: by(h)["limit_mw"]
    nv.nvmlSystemGetDriverVersion.return_value = "550.54.15"
    nv.nvmlSystemGetCudaDriverVersion_v2.return_value = 12040
    nv.nvmlDeviceGetUtilizationRates.side_effect = lambda h: SimpleNamespace(gpu=87, memory=40)
    nv.nvmlDeviceGetClockInfo.return_value = 1410
    nv.nvmlDeviceGetTemperature.return_value = 61
    return nv


A100 = {"name": "NVIDIA A100-SXM4-40GB", "uuid": "GPU-aaaa1111-0000", "bus": "00000000:07:00.0",
        "mem": 40 * 2**30, "cc": (8, 0), "limit_mw": 400_000}
T4 = {"name": "Tesla T4", "uuid": "GPU-bbbb2222-0000", "bus": "00000000:81:00.0",
      "mem": 16 * 2**30, "cc": (7, 5), "limit_mw": 70_000}


def test_gpus_static_facts():
    nv = open_nvml(fake_nvml([A100, T4]))
    gpus = nv.gpus()
    assert [g["name"] for g in gpus] == [A100["name"], T4["name"]]
    assert gpus[0]["compute_capability"] == "8.0" and gpus[1]["power_limit_w"] == 70.0
    assert gpus[0]["cuda_driver"] == "12.4" and gpus[0]["driver"] == "550.54.15"
    assert gpus[1]["pci_bus_id"] == T4["bus"]


def test_utilisation_sample_uses_sm_clock_and_gpu_sensor():
    mod = fake_nvml([A100])
    nv = open_nvml(mod)
    row = nv.utilisation(nv.handle(0))
    assert row == {"gpu_util_percent": 87, "sm_clock_mhz": 1410, "gpu_mem_used_bytes": 10 * 2**30, "gpu_temp_c": 61}
    mod.nvmlDeviceGetClockInfo.assert_called_with("h0", pynvml.NVML_CLOCK_SM)
    mod.nvmlDeviceGetTemperature.assert_called_with("h0", pynvml.NVML_TEMPERATURE_GPU)


def test_missing_library_gives_the_reason():
    mod = fake_nvml([])
    mod.nvmlInit.side_effect = pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    nv = open_nvml(mod)
    assert not nv.available and "NVML unavailable" in nv.reason and nv.gpus() == []


@pytest.mark.parametrize(
    "value, expected",
    [(None, None), ("", []), ("1,0", ["1", "0"]), ("0,x,1", ["0"]), ("-1", []), ("GPU-ab,2", ["GPU-ab", "2"])],
)
def test_parse_visible_devices_like_cuda(value, expected):
    assert parse_visible_devices(value) == expected


GPUS_SAME = [dict(A100, nvml_index=0, uuid="GPU-aaaa", pci_bus_id=A100["bus"]),
             dict(A100, nvml_index=1, uuid="GPU-cccc", pci_bus_id="00000000:0B:00.0")]
GPUS_MIXED = [dict(T4, nvml_index=0, uuid="GPU-bbbb", pci_bus_id="00000000:07:00.0"),
              dict(A100, nvml_index=1, uuid="GPU-aaaa", pci_bus_id="00000000:81:00.0")]


def test_unset_env_maps_identity_for_identical_gpus():
    assert resolve_cuda_device(1, GPUS_SAME, {})[0] == 1


def test_visible_devices_reorders():
    idx, how = resolve_cuda_device(0, GPUS_SAME, {"CUDA_VISIBLE_DEVICES": "1,0"})
    assert idx == 1 and "PCI" in how
    assert resolve_cuda_device(1, GPUS_SAME, {"CUDA_VISIBLE_DEVICES": "1,0"})[0] == 0


def test_device_not_visible():
    idx, why = resolve_cuda_device(1, GPUS_SAME, {"CUDA_VISIBLE_DEVICES": "0"})
    assert idx is None and "not visible" in why


def test_fastest_first_with_different_gpus_is_refused_without_uuid():
    # CUDA's default FASTEST_FIRST would put the A100 (NVML 1) first: PCI order would be wrong
    idx, why = resolve_cuda_device(0, GPUS_MIXED, {})
    assert idx is None and "FASTEST_FIRST" in why and "PCI_BUS_ID" in why


def test_pci_bus_order_maps_different_gpus():
    idx, how = resolve_cuda_device(0, GPUS_MIXED, {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": "1"})
    assert idx == 1 and "PCI_BUS_ID" in how


def test_framework_uuid_settles_fastest_first():
    idx, how = resolve_cuda_device(0, GPUS_MIXED, {}, cuda_uuid="aaaa")
    assert idx == 1 and "UUID" in how


def test_uuid_prefix_in_visible_devices():
    idx, how = resolve_cuda_device(0, GPUS_MIXED, {"CUDA_VISIBLE_DEVICES": "GPU-bb"})
    assert idx == 0 and "UUID" in how
    idx, why = resolve_cuda_device(0, GPUS_MIXED, {"CUDA_VISIBLE_DEVICES": "GPU-zz"})
    assert idx is None and "matches 0" in why


def test_mig_instance_is_explained():
    idx, why = resolve_cuda_device(0, GPUS_SAME, {"CUDA_VISIBLE_DEVICES": "MIG-1234"})
    assert idx is None and "MIG" in why
