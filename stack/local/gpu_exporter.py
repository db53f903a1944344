"""GPU metrics from NVML, as a small Prometheus exporter on loopback.

`make up` starts it when a GPU is present; with no GPU it does not run, so the serveops_gpu_*
series are absent rather than zero. Dependencies: nvidia-ml-py and prometheus_client only, so it
also runs beside a GPU node's own Python.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

# NVML clock-event (throttle) reason bits, from nvml.h.
THROTTLE_REASONS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}


@dataclass(frozen=True)
class GpuReading:
    index: int
    uuid: str
    name: str
    memory_used_bytes: int
    memory_total_bytes: int
    utilization_gpu_ratio: float
    utilization_memory_ratio: float
    power_watts: float | None
    temperature_celsius: float
    ecc_corrected: int | None  # None where the card has no ECC
    ecc_uncorrected: int | None
    throttle_mask: int


def _optional(nvml: Any, fn, *args) -> Any:
    """A reading the card may not support (power, ECC, clock events): None instead of an error."""
    try:
        return fn(*args)
    except nvml.NVMLError:
        return None


def read_all(nvml: Any) -> list[GpuReading]:
    """One reading per GPU, through an initialised pynvml module."""
    readings = []
    for i in range(nvml.nvmlDeviceGetCount()):
        h = nvml.nvmlDeviceGetHandleByIndex(i)
        mem = nvml.nvmlDeviceGetMemoryInfo(h)
        util = nvml.nvmlDeviceGetUtilizationRates(h)
        power_mw = _optional(nvml, nvml.nvmlDeviceGetPowerUsage, h)
        reasons = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
            nvml.nvmlDeviceGetCurrentClocksThrottleReasons
        name = nvml.nvmlDeviceGetName(h)
        uuid = nvml.nvmlDeviceGetUUID(h)
        readings.append(GpuReading(
            index=i,
            uuid=uuid.decode() if isinstance(uuid, bytes) else uuid,
            name=name.decode() if isinstance(name, bytes) else name,
            memory_used_bytes=int(mem.used),
            memory_total_bytes=int(mem.total),
            utilization_gpu_ratio=util.gpu / 100,
            utilization_memory_ratio=util.memory / 100,
            power_watts=None if power_mw is None else power_mw / 1000,
            temperature_celsius=float(nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU)),
            ecc_corrected=_optional(nvml, nvml.nvmlDeviceGetTotalEccErrors, h,
                                    nvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, nvml.NVML_VOLATILE_ECC),
            ecc_uncorrected=_optional(nvml, nvml.nvmlDeviceGetTotalEccErrors, h,
                                      nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nvml.NVML_VOLATILE_ECC),
            throttle_mask=int(_optional(nvml, reasons, h) or 0),
        ))
    return readings


def families(readings: Iterable[GpuReading]) -> list[GaugeMetricFamily | CounterMetricFamily]:
    """The Prometheus families for a set of readings; a value the card cannot report is left out."""
    labels = ["gpu", "uuid", "name"]

    def gauge(name: str, doc: str) -> GaugeMetricFamily:
        return GaugeMetricFamily(f"serveops_gpu_{name}", doc, labels=labels)

    used = gauge("memory_used_bytes", "GPU memory in use.")
    total = gauge("memory_total_bytes", "GPU memory on the card.")
    util = gauge("utilization_ratio", "Share of time a kernel ran, 0-1.")
    mem_util = gauge("memory_utilization_ratio", "Share of time memory was read or written, 0-1.")
    power = gauge("power_watts", "Power draw.")
    temp = gauge("temperature_celsius", "GPU core temperature.")
    ecc = CounterMetricFamily("serveops_gpu_ecc_errors", "ECC errors since the driver loaded.",
                              labels=[*labels, "error_type"])
    throttle = GaugeMetricFamily("serveops_gpu_throttle_reason", "1 while this clock-event reason holds.",
                                 labels=[*labels, "reason"])
    for r in readings:
        ids = [str(r.index), r.uuid, r.name]
        used.add_metric(ids, r.memory_used_bytes)
        total.add_metric(ids, r.memory_total_bytes)
        util.add_metric(ids, r.utilization_gpu_ratio)
        mem_util.add_metric(ids, r.utilization_memory_ratio)
        temp.add_metric(ids, r.temperature_celsius)
        if r.power_watts is not None:
            power.add_metric(ids, r.power_watts)
        for kind, count in (("corrected", r.ecc_corrected), ("uncorrected", r.ecc_uncorrected)):
            if count is not None:
                ecc.add_metric([*ids, kind], count)
        for bit, reason in THROTTLE_REASONS.items():
            throttle.add_metric([*ids, reason], 1.0 if r.throttle_mask & bit else 0.0)
    return [used, total, util, mem_util, power, temp, ecc, throttle]


class NvmlCollector(Collector):
    def __init__(self, nvml: Any) -> None:
        self.nvml = nvml

    def collect(self):
        yield from families(read_all(self.nvml))


def init_nvml() -> Any | None:
    """The initialised pynvml module, or None when there is no driver or no GPU."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml if pynvml.nvmlDeviceGetCount() > 0 else None
    except Exception:
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9401)
    parser.add_argument("--check", action="store_true", help="exit 0 if a GPU is found, 3 if none")
    parser.add_argument("--record", metavar="FILE", help="write one reading per GPU as JSON and exit")
    args = parser.parse_args()
    nvml = init_nvml()
    if nvml is None:
        print("no NVIDIA GPU found: not exporting (serveops_gpu_* stay absent)")
        return 3
    if args.check:
        print(f"{nvml.nvmlDeviceGetCount()} GPU(s) found")
        return 0
    if args.record:
        import json
        from dataclasses import asdict

        with open(args.record, "w") as out:
            json.dump([asdict(r) for r in read_all(nvml)], out, indent=1)
        return 0
    from prometheus_client import REGISTRY, start_http_server

    REGISTRY.register(NvmlCollector(nvml))
    start_http_server(args.port, addr=args.host)
    print(f"exporting GPU metrics on http://{args.host}:{args.port}/metrics", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main())
