"""Bad input, found by a machine: the property-based fuzz of every served OpenAPI spec, on the stack.

Each spec under bench.fuzz_specs is fetched from the stack and fuzzed (loadtests/bench/openapi_fuzz.py)
with each mode's fuzz_examples requests, headers included, over real HTTP through Serve's proxy. Goals:
no 5xx or dropped connection (fuzz_server_errors) and every 4xx in the error contract
(fuzz_contract_violations); the replicas serving before must be the ones serving after. The seed is
random per run and recorded, so a finding can be replayed.
"""

from __future__ import annotations

import random
from typing import Any

import httpx

from loadtests.bench import openapi_fuzz
from stack.config import BenchMode, OpsConfig
from stack.local import serve_deploy
from stack.serving.api_errors import DECODED_HEADERS
from stack.serving.models import TENANT_STORE


def url_of(prefix: str, path: str) -> str:
    """An app's route from its spec path: the specs of route-prefixed apps say "/" for the prefix."""
    return prefix + path if path != "/" else prefix or "/"


def http_send(client: httpx.Client, prefix: str) -> openapi_fuzz.Send:
    def send(request: openapi_fuzz.FuzzRequest) -> tuple[int, str, bytes]:
        response = client.request(request.method, url_of(prefix, request.path), headers=list(request.headers),
                                  content=request.body)
        return response.status_code, response.headers.get("content-type", ""), response.content

    return send


def known_values(ops: OpsConfig, profile: str) -> dict[str, list[str]]:
    """What the schemas alone would almost never hit: the real tenants and model ids."""
    tenants = sorted(p.stem for p in TENANT_STORE.glob("*.joblib"))
    return {"serve_multiplexed_model_id": tenants,
            "model": [m.model_id for m in ops.profile(profile).llm.models]}


def fuzz_spec(client: httpx.Client, spec_path: str, examples: int, seed: int,
              known: dict[str, list[str]]) -> openapi_fuzz.Report:
    spec = client.get(spec_path).raise_for_status().json()
    prefix = spec_path.removesuffix("/openapi.json")
    strategy = openapi_fuzz.spec_requests(spec, known)
    return openapi_fuzz.run(strategy, http_send(client, prefix), examples, seed)


def replica_ids(ops: OpsConfig) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for app_name, app in serve_deploy.details(ops.listen.dashboard_url)["applications"].items():
        for dep_name, dep in app["deployments"].items():
            running = {r["replica_id"] for r in dep["replicas"] if r["state"] == "RUNNING"}
            out[f"{app_name}/{dep_name}"] = running
    return out


def replaced(before: dict[str, set[str]], after: dict[str, set[str]]) -> dict[str, int]:
    """Per deployment, how many replicas that served before no longer do."""
    gone = {name: len(ids - after.get(name, set())) for name, ids in before.items()}
    return {name: n for name, n in gone.items() if n}


def figures(ops: OpsConfig, profile: str, mode: BenchMode) -> dict[str, Any]:
    seed = random.randrange(2**32)
    known = known_values(ops, profile)
    before = replica_ids(ops)
    with httpx.Client(base_url=ops.listen.serve_url, timeout=120) as client:
        reports = {path: fuzz_spec(client, path, mode.fuzz_examples, seed, known)
                   for path in ops.bench.fuzz_specs}
    gone = replaced(before, replica_ids(ops))
    per_spec = {path: r.as_dict() for path, r in reports.items()}
    inputs = {"specs": ops.bench.fuzz_specs, "examples_per_spec": mode.fuzz_examples, "seed": seed,
              "headers_fuzzed": ["each operation's header parameters", *DECODED_HEADERS],
              "replay": "openapi_fuzz.run(spec_requests(spec, known), send, examples, seed)"}
    return {
        "fuzz_server_errors": {
            "value": sum(r.server_errors + r.transport_errors for r in reports.values()),
            "inputs": inputs, "replicas_replaced": gone, "per_spec": per_spec},
        "fuzz_contract_violations": {
            "value": sum(r.contract_violations for r in reports.values()),
            "inputs": inputs, "per_spec": {p: r["failures"] for p, r in per_spec.items()}},
    }
