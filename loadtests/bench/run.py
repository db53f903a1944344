"""`make bench`: the figures of loadtests/bench, side by side in one run, into reports/bench-<ts>/.

  BENCH=full|smoke   full (default) or the short smoke set `make test` runs
  ONLY=detection,embed,llm,fuzz,instrumentation,levers   a subset of the sections (run in that order)

Writes results.json and results.md after every section, so a failed section leaves the others.
Exit 1 when a section could not be measured; a missed goal is a finding, reported, not an error.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loadtests import stack_client
from loadtests.bench import detection, embed, fuzz, instrumentation, levers, llm, results
from stack import ROOT
from stack.config import BenchMode, load
from stack.profile import select

# detection first: a burn-rate page needs its bad share over the 1h window, which the saturation runs
# of the other sections would fill with good requests (a run with detection after them: the slo-burn
# pages' window arithmetic, scorecard/bounds.py, came to ~10 minutes, past the experiment's bound); a
# fresh head follows it, so no fault's aftermath reaches a figure. fuzz before instrumentation: that
# restarts the stack. levers last: it restarts the stack once per lever, and gives the figures above
# their no-lever baseline.
SECTIONS = ("detection", "embed", "llm", "fuzz", "instrumentation", "levers")
# Sections that restart the stack or rerun chaos (`make test` runs every experiment already): the full
# run's, or ONLY's. The smoke set then leaves the stack as it found it, so `make test` can run it on a
# clean stack before the chaos experiments.
SMOKE_SKIPS = ("instrumentation", "detection", "levers")
# The figures each section fills, so a failed section still names what it owed.
OWES = {"embed": ("bert_serve_efficiency", "batching_gain", "texts_efficiency"),
        "llm": ("llm_throughput_ratio", "ttft_overhead_ms"),
        "fuzz": ("fuzz_server_errors", "fuzz_contract_violations"),
        "instrumentation": ("instrumentation_latency_ratio", "instrumentation_throughput_ratio"),
        "detection": ("detection_latency_s",),
        "levers": ("levers",)}


def settings(env: dict[str, str] | os._Environ) -> tuple[str, list[str]]:
    mode = env.get("BENCH", "").strip() or "full"
    if mode not in ("full", "smoke"):
        raise SystemExit(f"BENCH={mode!r}: expected full or smoke")
    only = [s.strip() for s in env.get("ONLY", "").split(",") if s.strip()] or [
        s for s in SECTIONS if mode == "full" or s not in SMOKE_SKIPS]
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        raise SystemExit(f"ONLY: unknown sections {unknown}; have {', '.join(SECTIONS)}")
    return mode, [s for s in SECTIONS if s in only]


def gpu_figure(figures: dict[str, Any], device: str, card: str | None) -> dict[str, Any]:
    if not device.startswith("cuda"):
        return {"value": None, "skipped": "no GPU on this machine (torch sees no CUDA device)"}
    texts = figures["texts_efficiency"]
    return {"value": texts["value"], "card": card, "inputs": texts["inputs"],
            **{k: texts[k] for k in ("per_repeat", "spread") if k in texts}}


def main() -> int:
    mode_name, sections = settings(os.environ)
    ops, profile = load(), select()
    mode: BenchMode = ops.bench.modes[mode_name]  # type: ignore[index]
    out = Path(os.environ.get("REPORT_DIR") or ROOT / "reports" / f"bench-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    stack_client.ensure_up(ops)
    doc: dict[str, Any] = {"mode": mode_name, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                           "machine": results.machine(profile), "settings": mode.model_dump()}
    runners: dict[str, Callable[[], dict[str, Any]]] = {
        "embed": lambda: embed.figures(ops, profile, mode),
        "llm": lambda: llm.figures(ops, profile, mode, out / "llm", breakdown=mode_name == "full"),
        "fuzz": lambda: fuzz.figures(ops, profile, mode),
        "instrumentation": lambda: instrumentation.figures(ops, mode, out),
        "detection": lambda: detection.figures(ops, mode, out),
        "levers": lambda: levers.figures(ops, profile, mode, out),
    }
    failed = []
    for section in sections:
        print(f"bench: {section} ...", flush=True)
        started = time.monotonic()
        try:
            figures = runners[section]()
        except Exception as err:  # one section failing must not lose the others' figures
            traceback.print_exc()
            failed.append(section)
            error = f"{type(err).__name__}: {err}"
            figures = {name: {"value": None, "error": error} for name in OWES[section]}
        if section == "embed" and section not in failed:
            device = figures["texts_efficiency"]["raw"]["device"]
            figures["gpu_texts_efficiency"] = gpu_figure(figures, device, doc["machine"]["gpu"])
        doc.update(figures)
        levers.baselines(doc)
        doc.setdefault("section_seconds", {})[section] = round(time.monotonic() - started, 1)
        results.judge(doc, ops.bench.goals)
        results.write(out, doc)
        print(f"bench: {section} done in {doc['section_seconds'][section]}s", flush=True)
        if section == "detection" and section != sections[-1]:
            stack_client.restart({}, out / "restarts.log")
    doc["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    results.write(out, doc)
    print(results.markdown(doc))
    print(f"report: {out}/results.json, {out}/results.md")
    return 1 if failed else 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # vLLM's benchmark imports triton, whose bindings print pages of "nanobind: leaked" at exit.
    os._exit(code)
