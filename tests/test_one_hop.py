"""The one_hop_llm lever (stack/serving/llm_app.py): the validating ingress and the model's server in one
replica. In process, no Serve: the ingress's own routes over a stand-in server, through the same calls
Ray's OpenAiIngress makes on a DeploymentHandle. The live suite runs it on a stack (test_one_hop_live)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from ray import serve
from ray.serve import context as serve_context
from ray.serve.llm import LLMConfig
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse

from stack import levers, resources, serve_config
from stack.config import load
from stack.serving import api_errors, llm_app
from stack.serving.schemas import request_models
from stack.serving.settings import FIRST_CHUNK_AT_ONCE, ONE_HOP, one_hop
from tests.isolated_replica import FakeLLMServer
from tests.test_goodput import Recorder

MODEL = "tiny-llama"


def llm_config() -> LLMConfig:
    return LLMConfig.model_validate(load().profile("cpu").llm.models[0].to_llm_config())


@pytest.fixture
def one_hop_ingress(monkeypatch: pytest.MonkeyPatch) -> tuple[llm_app.OneHopIngress, FakeLLMServer, Recorder]:
    server, counter = FakeLLMServer(MODEL), Recorder()
    monkeypatch.setattr(llm_app.LLMServer, "sync_init", classmethod(lambda cls, config: server))
    metrics = type("M", (), {name: counter for name in (
        "llm_goodput", "llm_ttft_ms", "input_chars", "input_tokens", "llm_prompt_tokens",
        "llm_completion_tokens")})()
    monkeypatch.setattr(llm_app, "metrics", lambda: metrics)
    ing = object.__new__(llm_app.OneHopIngress)  # Serve awaits the async constructor the same way
    goodput = {MODEL: {"ttft_ms": 10_000, "tpot_ms": 10_000, "target": 0.9}}
    asyncio.run(ing.__init__(llm_config(), max_model_lens={MODEL: 512}, max_prompt_chars=1000,
                             goodput=goodput))
    return ing, server, counter


def request() -> Request:
    return Request({"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": [],
                    "query_string": b""})


def chat_body(**fields: Any) -> Any:
    models = request_models(load().api)
    return models.ChatRequest.model_validate(
        {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, **fields})


async def body_of(response: Any) -> str:
    if isinstance(response, StreamingResponse):
        return "".join([c if isinstance(c, str) else c.decode() async for c in response.body_iterator])
    return response.body.decode()


def test_the_server_starts_in_the_replica_and_the_ingress_calls_it_in_process(one_hop_ingress) -> None:
    ing, server, counter = one_hop_ingress
    assert server.started

    async def run() -> tuple[Any, str]:
        response = await ing.chat(chat_body(), request())
        return response, await body_of(response)

    response, text = asyncio.run(run())
    assert isinstance(response, JSONResponse) and json.loads(text)["choices"][0]["message"]["content"] == "ok"
    # the very request object the route validated, not a pickled copy: no hop between them
    assert len(server.seen) == 1 and server.seen[0].model == MODEL
    assert [t["verdict"] for t in counter.counted if "verdict" in t] == ["good"]


def test_a_stream_is_observed_as_with_two_hops(one_hop_ingress) -> None:
    ing, server, counter = one_hop_ingress

    async def run() -> str:
        return await body_of(await ing.chat(chat_body(stream=True), request()))

    text = asyncio.run(run())
    events = [e.removeprefix("data: ") for e in text.split("\n\n") if e.strip()]
    assert events[-1] == "[DONE]" and sum('"content": "ok"' in e for e in events) == 1
    assert not any('"usage"' in e for e in events)  # asked for by the ingress, dropped: the client did not
    assert server.seen[0].stream_options.include_usage is True
    assert [t["verdict"] for t in counter.counted if "verdict" in t] == ["good"]


def test_the_request_s_multiplexing_header_does_not_reach_the_server(one_hop_ingress) -> None:
    """Serve puts a request's serve_multiplexed_model_id header in the request context; with two hops the
    model's server never saw it (a handle call has its own context), and one hop keeps it so."""
    ing, server, _ = one_hop_ingress

    async def run() -> tuple[str, str]:
        serve_context._set_request_context(multiplexed_model_id="!")
        text = await body_of(await ing.chat(chat_body(stream=True), request()))
        return text, serve.get_multiplexed_model_id()

    text, after = asyncio.run(run())
    assert text.rstrip().endswith("[DONE]") and len(server.seen) == 1
    assert after == "!"  # the request's own context is left as it was


def test_bad_input_is_refused_before_the_server_sees_it(one_hop_ingress) -> None:
    ing, server, _ = one_hop_ingress
    with pytest.raises(api_errors.ApiError) as err:
        asyncio.run(ing.chat(chat_body(max_tokens=100_000), request()))
    assert err.value.status == 422 and "max_tokens" in str(err.value)
    assert server.seen == []


def test_health_and_shutdown_are_the_engine_s(one_hop_ingress) -> None:
    ing, server, _ = one_hop_ingress
    asyncio.run(ing.check_health())
    server.healthy = False
    with pytest.raises(RuntimeError, match="engine dead"):
        asyncio.run(ing.check_health())
    asyncio.run(ing.__del__())
    assert server.stopped


def test_local_model_is_what_the_ingress_takes_for_a_handle() -> None:
    server = FakeLLMServer(MODEL)
    handle = llm_app.LocalModel(server).options(stream=True).options(session_id="s")
    body = chat_body()

    async def run() -> list[Any]:
        return [item async for item in handle.chat.remote(body, None)]

    (answer,) = asyncio.run(run())
    assert answer.choices[0].message.content == "ok" and server.seen == [body]
    # a LoRA adapter's id (Ray routes it by multiplexed model id): refused, not answered by the base model
    with pytest.raises(api_errors.ApiError) as err:
        llm_app.LocalModel(server).options(stream=True, multiplexed_model_id=f"{MODEL}:adapter")
    assert err.value.status == 404 and err.value.param == "model"


def test_one_hop_only_for_one_model_with_the_lever() -> None:
    assert one_hop([{ONE_HOP: True}])
    assert one_hop([{ONE_HOP: True, FIRST_CHUNK_AT_ONCE: True}])
    assert not one_hop([{}]) and not one_hop([{FIRST_CHUNK_AT_ONCE: True}])
    assert not one_hop([{ONE_HOP: True}, {ONE_HOP: True}])  # several models: the ingress routes


def with_levers(names: list[str]):
    profile = load().profile("cpu")
    return profile.model_copy(update={"cluster": profile.cluster.model_copy(update={"levers": names})})


def test_the_lever_travels_in_the_serve_config_and_resources_count_one_deployment() -> None:
    assert levers.LEVERS["one_hop_llm"].llm_experimental == ONE_HOP
    assert levers.ray_env(["one_hop_llm"], "127.0.0.1", 8404, 9101) == {}  # the Serve config sets it
    on, off = with_levers(["one_hop_llm"]), with_levers([])
    configs = serve_config.llm_application(on)["args"]["llm_configs"]
    assert one_hop([c.get("experimental_configs", {}) for c in configs])
    assert not one_hop([c.get("experimental_configs", {}) for c in serve_config.llm_application(off)["args"]
                        ["llm_configs"]])
    names_on = [d.deployment for d in resources.deployments(on) if d.app == "llm"]
    names_off = [d.deployment for d in resources.deployments(off) if d.app == "llm"]
    assert names_on == [f"LLMServer:{MODEL}"]
    assert names_off == [resources.LLM_INGRESS, f"LLMServer:{MODEL}"]
    # the one deployment reserves what the model's server did: the ingress replica's CPU is saved
    llm_on = next(d for d in resources.deployments(on) if d.app == "llm")
    llm_off = next(d for d in resources.deployments(off) if d.deployment.startswith("LLMServer"))
    assert llm_on.replica == llm_off.replica


def test_serveops_levers_at_make_up_sets_it() -> None:
    def on(env: dict[str, str]) -> bool:
        config = serve_config.effective("cpu", env)
        llm = next(a for a in config["applications"] if a["name"] == "llm")
        return one_hop([m.get("experimental_configs", {}) for m in llm["args"]["llm_configs"]])

    assert on({levers.ENV: "one_hop_llm"}) and on({levers.ENV: "haproxy_ingress,one_hop_llm"})
    assert not on({levers.ENV: "none"}) and not on({levers.ENV: "first_chunk_at_once"})
    assert on({}) is ("one_hop_llm" in load().profile("cpu").cluster.levers)
