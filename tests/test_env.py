"""Fingerprint: fake /proc/cpuinfo, autospec'd NVML, fake TPU roots; `harness env`."""

from __future__ import annotations

from pathlib import Path

from harness.commands.env import format_environment
from harness.core.environment import collect_environment, fingerprint
from harness.core.hw.cpuinfo import read_cpu
from harness.core.hw.tpu import detect_tpu
from tests.test_nvml import A100, fake_nvml

SAPPHIRE = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
physical id\t: 0
core id\t\t: 0
flags\t\t: fpu sse4_2 avx avx2 fma f16c avx512f avx512bw avx512vl avx512_vnni avx512_bf16 amx_tile amx_bf16 amx_int8

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
physical id\t: 0
core id\t\t: 1
flags\t\t: fpu sse4_2 avx avx2 fma f16c avx512f avx512bw avx512vl avx512_vnni avx512_bf16 amx_tile amx_bf16 amx_int8
"""
HASWELL = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) CPU E5-2680 v3\nflags\t\t: fpu sse4_2 avx avx2 fma\n"


def test_cpuinfo_flags_and_isa_summary(tmp_path: Path):
    f = tmp_path / "cpuinfo"
    f.write_text(SAPPHIRE)
    cpu = read_cpu(f)
    assert cpu["model"] == "Intel(R) Xeon(R) Platinum 8480+"
    assert cpu["isa"] == {"avx2": True, "avx512": True, "vnni": True, "bf16": True, "amx": True}
    assert cpu["sockets"] == 1 and cpu["flags_source"] == str(f)
    f.write_text(HASWELL)
    assert read_cpu(f)["isa"] == {"avx2": True, "avx512": False, "vnni": False, "bf16": False, "amx": False}


def test_missing_cpuinfo_says_unavailable(tmp_path: Path):
    cpu = read_cpu(tmp_path / "nope")
    assert cpu["flags_source"] == "unavailable" and not any(cpu["isa"].values())


def test_tpu_detection_by_pci_vendor_devices_and_env(tmp_path: Path):
    sys_root, dev = tmp_path / "sys", tmp_path / "dev"
    none = detect_tpu(env={}, sys_root=sys_root, dev_root=dev)
    assert none["present"] is False and "TensorFlow not imported" in none["how"]
    for i, vendor in enumerate(["0x1ae0", "0x8086", "0x1ae0"]):
        d = sys_root / "bus" / "pci" / "devices" / f"0000:00:0{i}.0"
        d.mkdir(parents=True)
        (d / "vendor").write_text(vendor + "\n")
    (dev / "vfio").mkdir(parents=True)
    (dev / "vfio" / "0").write_text("")
    found = detect_tpu(env={"TPU_ACCELERATOR_TYPE": "v5litepod-4"}, sys_root=sys_root, dev_root=dev)
    assert found["present"] and found["chips"] == 2 and found["accelerator_type"] == "v5litepod-4"
    assert any("0x1ae0" in e for e in found["evidence"]) and any("VFIO" in e for e in found["evidence"])
    remote = detect_tpu(env={"TPU_NAME": "my-tpu"}, sys_root=tmp_path / "x", dev_root=tmp_path / "y")
    assert remote["present"] and "TPU_NAME=my-tpu" in remote["evidence"]


def test_environment_with_a_gpu_prints_its_facts(tmp_path: Path):
    f = tmp_path / "cpuinfo"
    f.write_text(SAPPHIRE)
    env = collect_environment(cpuinfo=f, nvml_module=fake_nvml([A100]))
    g = env["gpus"][0]
    assert g["name"] == A100["name"] and g["power_limit_w"] == 400.0 and g["compute_capability"] == "8.0"
    assert env["gpus_reason"] is None and "tpu" in env
    text = "\n".join(format_environment(env))
    assert "A100" in text and "CUDA 12.4" in text and "400 W limit" in text and "compute 8.0" in text
    assert "AMX yes" in text and "AVX-512 yes" in text
    # a different GPU is a different machine
    other = collect_environment(cpuinfo=f, nvml_module=fake_nvml([dict(A100, mem=80 * 2**30)]))
    assert fingerprint(other) != env["fingerprint"]


def test_cli_env_prints_the_fingerprint(cli):
    proc = cli(["env"])
    assert proc.returncode == 0, proc.stderr
    for key in ("dl isa", "cores", "memory", "gpu", "tpu", "fingerprint"):
        assert key in proc.stdout
