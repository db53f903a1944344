"""The NVML exporter: mapping checked on a reading recorded on an H200, absence checked here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from prometheus_client import CollectorRegistry, generate_latest

from stack import ROOT
from stack.local import gpu_exporter as gpu

RECORDED = json.loads((Path(__file__).parent / "data" / "nvml-reading-h200.json").read_text())


class FakeNvml:
    """pynvml's surface, answering with the recorded reading (raw NVML units: mW, percent)."""

    NVML_TEMPERATURE_GPU = 0
    NVML_MEMORY_ERROR_TYPE_CORRECTED, NVML_MEMORY_ERROR_TYPE_UNCORRECTED, NVML_VOLATILE_ECC = 0, 1, 0

    class NVMLError(Exception):
        pass

    def __init__(self, reading: dict, ecc: bool = True) -> None:
        self.r, self.ecc = reading, ecc

    def nvmlDeviceGetCount(self): return 1
    def nvmlDeviceGetHandleByIndex(self, i): return i
    def nvmlDeviceGetName(self, h): return self.r["name"].encode()
    def nvmlDeviceGetUUID(self, h): return self.r["uuid"]
    def nvmlDeviceGetTemperature(self, h, sensor): return int(self.r["temperature_celsius"])
    def nvmlDeviceGetPowerUsage(self, h): return int(self.r["power_watts"] * 1000)
    def nvmlDeviceGetCurrentClocksEventReasons(self, h): return self.r["throttle_mask"]

    def nvmlDeviceGetMemoryInfo(self, h):
        return SimpleNamespace(used=self.r["memory_used_bytes"], total=self.r["memory_total_bytes"])

    def nvmlDeviceGetUtilizationRates(self, h):
        return SimpleNamespace(gpu=round(self.r["utilization_gpu_ratio"] * 100),
                               memory=round(self.r["utilization_memory_ratio"] * 100))

    def nvmlDeviceGetTotalEccErrors(self, h, kind, counter):
        if not self.ecc:
            raise self.NVMLError("Not Supported")
        return self.r["ecc_corrected"] if kind == 0 else self.r["ecc_uncorrected"]


def exposition(nvml) -> str:
    registry = CollectorRegistry()
    registry.register(gpu.NvmlCollector(nvml))
    return generate_latest(registry).decode()


def test_read_all_converts_units() -> None:
    [reading] = gpu.read_all(FakeNvml(RECORDED[0]))
    assert reading.name == "NVIDIA H200" and reading.memory_total_bytes == 150754820096
    assert abs(reading.power_watts - RECORDED[0]["power_watts"]) < 0.001
    assert reading.throttle_mask == 1


def test_exposition_of_recorded_reading() -> None:
    text = exposition(FakeNvml(RECORDED[0]))
    labels = 'gpu="0",name="NVIDIA H200",uuid="GPU-ce203535-04bb-1136-59f4-be31be5d2103"'
    assert f"serveops_gpu_memory_total_bytes{{{labels}}} 1.50754820096e+11" in text
    assert f"serveops_gpu_temperature_celsius{{{labels}}} 36.0" in text
    assert 'serveops_gpu_ecc_errors_total{error_type="corrected",' in text
    assert 'reason="gpu_idle"' in text and 'reason="gpu_idle",uuid=' in text
    idle = next(line for line in text.splitlines() if 'reason="gpu_idle"' in line)
    assert idle.endswith(" 1.0")
    for family in ("memory_used_bytes", "utilization_ratio", "memory_utilization_ratio", "power_watts"):
        assert f"serveops_gpu_{family}{{" in text


def test_unsupported_ecc_is_absent_not_zero() -> None:
    text = exposition(FakeNvml(RECORDED[0], ecc=False))
    assert "serveops_gpu_ecc_errors_total{" not in text
    assert "serveops_gpu_memory_used_bytes{" in text


def test_no_gpu_means_no_exporter() -> None:
    # This machine has no NVIDIA driver: the exporter refuses to start, so the series are absent.
    out = subprocess.run([sys.executable, "-m", "stack.local.gpu_exporter"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 3
    assert "no NVIDIA GPU" in out.stdout
