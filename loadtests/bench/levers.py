"""`make bench` levers: each of Ray's request-path levers alone, and the kept set, against no levers.

Each configuration (stack/levers.py) runs on a fresh stack (SERVEOPS_LEVERS at `make up`, which sets the
head's levers and the Serve config's LLM levers alike). Every configuration is measured
the same way, in one run: /embed at saturation (req/s, p50/p99, the mean batch, CPU ms per request per
process group, and req/s over raw MiniLM at that batch with the replica's threads), /classify one
request at a time and at the throughput concurrency, and the LLM's output tok/s at the bench's LLM
concurrency and p50 TTFT one request at a time. The stack is left with the ops config's levers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from loadtests import stack_client
from loadtests.bench import cpu, embed, llm, pyspy, raw_bert, wrk
from stack import levers
from stack.config import BenchMode, OpsConfig
from stack.local import instrumentation

BASELINE = levers.NONE


def configurations(kept: list[str]) -> list[str]:
    """No levers, each lever alone, and the kept set if it is not one of those."""
    configs = [BASELINE, *levers.LEVERS]
    kept_name = ",".join(kept) or BASELINE
    return configs if kept_name in configs else [*configs, kept_name]


def restart(chosen: str, log: Path) -> None:
    stack_client.restart({levers.ENV: chosen}, log)


class Measure:
    """One configuration's figures; raw MiniLM per batch size is measured once per bench run."""

    def __init__(self, ops: OpsConfig, profile: str, mode: BenchMode, out: Path) -> None:
        self.ops, self.profile, self.mode, self.out = ops, profile, mode, out
        options = ops.profile(profile).deployment(embed.APP, embed.DEPLOYMENT)
        assert options.batching and options.max_ongoing_requests
        self.connections = min(2 * options.batching.max_batch_size, options.max_ongoing_requests)
        self.threads, _ = embed.replica_torch_threads(options, ops.profile(profile).cluster.env)
        self.raw: dict[int, float] = {}

    def raw_at(self, batch: int) -> float:
        if batch not in self.raw:
            text = self.ops.bench.embed_text
            self.raw[batch] = raw_bert.throughput([text], batch, min(self.mode.duration_s, 10),
                                                  self.threads)["texts_per_s"]
        return self.raw[batch]

    def embed(self) -> dict[str, Any]:
        run = embed.saturate(self.ops, {"text": self.ops.bench.embed_text}, self.connections, self.mode)
        batch = max(1, round(run["mean_batch_size"]))
        return {"ok_per_s": run["ok_per_s"], "p50_ms": run["p50_ms"], "p99_ms": run["p99_ms"],
                "failed": run["failed"], "mean_batch_size": run["mean_batch_size"],
                "efficiency": round(run["ok_per_s"] / self.raw_at(batch), 3),
                "cpu_ms_per_request": run["cpu_ms_per_request"]}

    def classify(self) -> dict[str, Any]:
        bench, mode = self.ops.bench, self.mode
        url, body = f"{self.ops.listen.serve_url}/classify", json.dumps({"text": bench.embed_text})
        wrk.run(url, body, bench.throughput_concurrency, mode.warmup_s)
        one = wrk.run(url, body, bench.latency_concurrency, mode.duration_s)
        before = cpu.snapshot()
        many = wrk.run(url, body, bench.throughput_concurrency, mode.duration_s)
        return {"p50_ms_c1": one.p50_ms, "p99_ms_c1": one.p99_ms, "ok_per_s": round(many.ok_per_s, 2),
                "p50_ms": many.p50_ms, "p99_ms": many.p99_ms, "failed": many.failed,
                "cpu_ms_per_request": cpu.per_request_ms(before, cpu.snapshot(), many.requests)}

    def llm(self) -> dict[str, Any]:
        model, bench = self.ops.profile(self.profile).llm.models[0], self.ops.bench.llm
        url, out = self.ops.listen.serve_url, self.out / "llm"
        at = llm.bench(url, model, bench, self.mode.llm_prompts, bench.concurrency, out,
                       llm.prompt_seed("at"))
        one = llm.bench(url, model, bench, self.mode.llm_ttft_prompts, 1, out, llm.prompt_seed("c1"))
        return {"output_tok_per_s": at["output_throughput"], "p50_ttft_ms": at["median_ttft_ms"],
                "p50_ttft_ms_c1": one["median_ttft_ms"], "p99_ttft_ms_c1": one["p99_ttft_ms"],
                "cpu_ms_per_output_token": at["cpu_ms_per_output_token"]}

    def all(self) -> dict[str, Any]:
        return {"contracts": contracts(self.ops, self.profile), "/embed": self.embed(),
                "/classify": self.classify(), "llm": self.llm()}


def contracts(ops: OpsConfig, profile: str) -> dict[str, str]:
    """The contracts a lever must keep, probed on its stack: 'ok', or what broke. The test suite is
    the full proof; this says in the bench table which lever would fail it, and why."""
    url, model = ops.listen.serve_url, ops.profile(profile).llm.models[0].model_id
    chat = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    probes = {
        # Serve decodes these headers as UTF-8 before the app; the error contract wants a 400 naming it.
        "bad header: 400 JSON": ("POST", "/predict", {"serve_multiplexed_model_id": b"\xff\xfe"},
                                 {"features": [0.1]}, 400),
        "bad body: 4xx JSON": ("POST", "/embed", {}, {"text": 7}, 422),
        "unknown route: 404 JSON": ("GET", "/no-such-route", {}, None, 404),
        "chat: 200": ("POST", "/v1/chat/completions", {}, chat, 200),
    }
    found = {}
    with httpx.Client(base_url=url, timeout=60) as client:
        for name, (method, path, headers, body, want) in probes.items():
            try:
                r = client.request(method, path, headers=headers, json=body)
                is_json = r.headers.get("content-type", "").startswith("application/json")
                found[name] = "ok" if r.status_code == want and is_json else (
                    f"{r.status_code} {r.headers.get('content-type', '')}: {r.text[:80]!r}")
            except httpx.HTTPError as err:
                found[name] = f"{type(err).__name__}: {err}"
    # The LLM SLOs read Serve's request counter per route: it must still name the route, not "/".
    deadline = time.monotonic() + 30
    while True:
        text = httpx.get(f"{ops.listen.metrics_url}/metrics", timeout=30).text
        if 'route="/v1/chat/completions"' in text or time.monotonic() > deadline:
            break
        time.sleep(2)
    found["Serve's HTTP metrics per route"] = "ok" if 'route="/v1/chat/completions"' in text else (
        "no ray_serve_* series with route=/v1/chat/completions")
    return found


def figures(ops: OpsConfig, profile: str, mode: BenchMode, out: Path) -> dict[str, Any]:
    kept = levers.chosen(ops.profile(profile).cluster.levers, {})
    kept_name = ",".join(kept) or BASELINE
    log, measure = out / "levers-restarts.log", Measure(ops, profile, mode, out)
    seen: dict[str, Any] = {}
    try:
        for config in configurations(kept):
            if instrumentation.running_levers() != config:
                restart(config, log)
            print(f"bench: levers: {config}", flush=True)
            seen[config] = measure.all()
    finally:
        if instrumentation.running_levers() != kept_name:
            restart(kept_name, log)
    profiles = profile_kept(ops, profile, mode, out, seen.get(kept_name, {}), measure.connections)
    return {"levers": {"kept": kept_name, "configs": seen, "compared": compare(seen), **profiles,
                       "inputs": {"embed_connections": measure.connections,
                                  "torch_threads_raw": measure.threads,
                                  "classify_concurrency": [ops.bench.latency_concurrency,
                                                           ops.bench.throughput_concurrency],
                                  "llm_concurrency": ops.bench.llm.concurrency,
                                  "llm_prompts": [mode.llm_prompts, mode.llm_ttft_prompts],
                                  "duration_s": mode.duration_s, "order": " -> ".join(seen),
                                  "restarts_log": str(log)}}}


# Per measure: where it sits in a configuration's figures, and whether higher is better.
MEASURES = {
    "/embed req/s": (("/embed", "ok_per_s"), True),
    "/embed efficiency": (("/embed", "efficiency"), True),
    "/embed p99 ms": (("/embed", "p99_ms"), False),
    "/classify p50 ms (c=1)": (("/classify", "p50_ms_c1"), False),
    "/classify req/s": (("/classify", "ok_per_s"), True),
    "LLM tok/s": (("llm", "output_tok_per_s"), True),
    "LLM p50 TTFT ms (c=1)": (("llm", "p50_ttft_ms_c1"), False),
}


def _get(figures: dict[str, Any], path: tuple[str, str]) -> float | None:
    value = figures.get(path[0], {}).get(path[1])
    return None if value is None else float(value)


def compare(seen: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each configuration against no levers: per measure the value and its ratio to the baseline."""
    base = seen.get(BASELINE, {})
    out: dict[str, dict[str, Any]] = {}
    for config, figures in seen.items():
        row = {}
        for name, (path, _) in MEASURES.items():
            value, was = _get(figures, path), _get(base, path)
            if value is None:
                continue
            row[name] = {"value": value, "ratio": round(value / was, 3) if was else None}
        out[config] = row
    return out


def wins(row: dict[str, Any]) -> list[str]:
    """The measures a configuration improves on no levers by more than 5% (noise on this box is ~3%)."""
    better = []
    for name, (_, higher) in MEASURES.items():
        ratio = row.get(name, {}).get("ratio")
        if ratio is not None and (ratio > 1.05 if higher else ratio < 0.95):
            better.append(name)
    return better


def broken_contracts(figures: dict[str, Any]) -> list[str]:
    return [f"{name}: {got}" for name, got in figures.get("contracts", {}).items() if got != "ok"]


def profile_kept(ops: OpsConfig, profile: str, mode: BenchMode, out: Path, kept_seen: dict[str, Any],
                 connections: int) -> dict[str, Any]:
    """Where the running (kept) stack's CPU goes: py-spy on the busiest process of each group that spent
    the most in kept_seen, per load. /embed at saturation; /classify, five hops, at the throughput
    concurrency (instrumentation costs each hop); the LLM at its concurrency (what Serve's path adds per
    output token)."""
    url, body = ops.listen.serve_url, json.dumps({"text": ops.bench.embed_text})
    model, bench = ops.profile(profile).llm.models[0], ops.bench.llm
    # results key: (its folder, the measure whose CPU split picks the groups, how many, the load)
    loads: dict[str, tuple[str, str, str, int, Callable[[float], Any]]] = {
        "profile": ("profiles", "/embed", "cpu_ms_per_request", 3,
                    lambda s: wrk.run(f"{url}/embed", body, connections, s)),
        "profile_classify": ("profiles-classify", "/classify", "cpu_ms_per_request", 5,
                             lambda s: wrk.run(f"{url}/classify", body, ops.bench.throughput_concurrency, s)),
        "profile_llm": ("profiles-llm", "llm", "cpu_ms_per_output_token", 3,
                        lambda s: llm.bench(url, model, bench, max(bench.concurrency, round(s * 4)),
                                            bench.concurrency, out / "llm")),
    }
    profiles = {}
    for key, (folder, measured, per, most, load) in loads.items():
        spent = kept_seen.get(measured, {}).get(per, {})
        groups = [g for g in spent if g not in ("all", "other")][:most]
        profiles[key] = pyspy.profile_groups(groups, mode.duration_s, out / folder, load)
    return profiles


def markdown(section: dict[str, Any]) -> str:
    compared = section["compared"]
    header = " | ".join(["configuration", *MEASURES, "CPU ms per /embed request (top groups)",
                         "better by >5%", "contracts"])
    rows = [f"| {header} |", "|---|" + "---|" * (len(MEASURES) + 3)]
    for config, row in compared.items():
        cells = []
        for name in MEASURES:
            got = row.get(name)
            cells.append("" if got is None else f"{got['value']:g}" + (
                f" ({got['ratio']:g}x)" if got["ratio"] is not None and config != BASELINE else ""))
        cpu_ms = section["configs"][config].get("/embed", {}).get("cpu_ms_per_request", {})
        groups = ", ".join(f"{k} {v:g}" for k, v in cpu_ms.items())
        kept = " (kept)" if config == section["kept"] else ""
        broken = broken_contracts(section["configs"][config])
        rows.append(f"| {config}{kept} | " + " | ".join(cells) + f" | {groups} | "
                    + (", ".join(wins(row)) or "-") + " | " + ("; ".join(broken) or "ok") + " |")
    for key, load in (("profile", "/embed at saturation"), ("profile_classify", "/classify at its throughput "
                      "concurrency"), ("profile_llm", "the LLM at its concurrency")):
        for group, found in section.get(key, {}).items():
            top = ", ".join(f"{f['function']} {f['share']:.0%}" for f in found.get("top", [])[:6])
            rows.append(f"\npy-spy, {group} (pid {found['pid']}), kept stack, {load}: "
                        + (top or found.get("error", "no samples")) + instrumentation_line(found))
    return "\n".join(rows) + "\n"


def instrumentation_line(found: dict[str, Any]) -> str:
    """The profile's answer to what instrumentation costs: its share of the process's samples."""
    got = found.get("instrumentation") or {}
    if got.get("share") is None:
        return ""
    where = ", ".join(f"{f['function']} {f['share']:.1%}" for f in got["top"][:3])
    return (f". Instrumentation (what SERVEOPS_INSTRUMENTATION=off removes): {got['share']:.1%} of "
            f"{got['samples']} samples" + (f" ({where})" if where else ""))


def baselines(doc: dict[str, Any]) -> None:
    """The goal figures as they were with no levers, from this run's levers section: results.md prints
    them beside today's figures."""
    none = doc.get("levers", {}).get("configs", {}).get(BASELINE)
    if not none:
        return
    if isinstance(doc.get("bert_serve_efficiency"), dict):
        doc["bert_serve_efficiency"]["baseline"] = {"value": none["/embed"]["efficiency"]}
    llm_fig, ttft = doc.get("llm_throughput_ratio"), doc.get("ttft_overhead_ms")
    if isinstance(llm_fig, dict) and llm_fig.get("vllm_output_tok_per_s"):
        doc["llm_throughput_ratio"]["baseline"] = {
            "value": round(none["llm"]["output_tok_per_s"] / llm_fig["vllm_output_tok_per_s"], 3)}
    if isinstance(ttft, dict) and ttft.get("vllm_p50_ttft_ms"):
        bare = sum(ttft["vllm_p50_ttft_ms"]) / len(ttft["vllm_p50_ttft_ms"])
        doc["ttft_overhead_ms"]["baseline"] = {"value": round(none["llm"]["p50_ttft_ms_c1"] - bare, 1)}
