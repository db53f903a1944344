"""The live fuzz's own code (loadtests/bench/fuzz.py) over real HTTP, without the stack.

A hardened app (stack.serving.http_api.new_api, as every serveops app is) runs in uvicorn, the server
Serve's proxy runs on, in a thread on a free loopback port. Over the wire: the spec-driven fuzz finds no
failure, a chunked body over the limit is a 413 the client reads even though the server stopped reading
early, and header bytes that are not UTF-8 arrive as sent and get a 400 naming the header.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Annotated

import httpx
import pytest
import uvicorn
from fastapi import Header
from pydantic import BaseModel, ConfigDict, Field

from loadtests.bench import fuzz
from stack.serving.api_errors import ERROR_RESPONSES
from stack.serving.http_api import new_api
from stack.serving.settings import ApiLimits

LIMITS = ApiLimits(max_body_bytes=1000, max_text_chars=50, max_texts=4, max_features=4, max_tenant_id_chars=8,
                   max_messages=2, max_prompt_chars=100)


class Echo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: Annotated[str, Field(min_length=1, max_length=50)]


def app() -> object:
    api = new_api("fuzz target", LIMITS)

    @api.post("/", responses=ERROR_RESPONSES)
    async def echo(body: Echo, tenant: Annotated[str, Header(alias="serve_multiplexed_model_id",
                                                             convert_underscores=False, pattern=r"^[a-z]+$",
                                                             max_length=8)]) -> dict:
        return {"text": body.text, "tenant": tenant}

    return api


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app(), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=30) as client:
        yield client


def test_the_fuzz_finds_nothing_on_a_hardened_app(client: httpx.Client) -> None:
    known = {"serve_multiplexed_model_id": ["acme"]}
    report = fuzz.fuzz_spec(client, "/openapi.json", 120, seed=7, known=known)
    assert report.examples == 120 and report.failures == [], report.failures
    assert report.statuses[200] and report.statuses[400] and report.statuses[422] and report.statuses[415]


def test_a_chunked_body_over_the_limit_is_a_413_the_client_reads(client: httpx.Client) -> None:
    chunks = (b'{"text": "' + b"x" * 65536 if i == 0 else b"x" * 65536 for i in range(16))  # 1 MiB
    response = client.post("/", content=chunks, headers={"Content-Type": "application/json",
                                                         "serve_multiplexed_model_id": "acme"})
    assert response.status_code == 413
    assert response.json()["error"] == {"message": "request body exceeds 1000 bytes",
                                        "type": "request_too_large", "param": None, "code": 413}


@pytest.mark.parametrize("value", [b"\xff", "caf\u00e9".encode()])
def test_header_bytes_arrive_as_sent_and_get_a_400(client: httpx.Client, value: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"serve_multiplexed_model_id", value)]
    response = client.post("/", content=json.dumps({"text": "hi"}), headers=headers)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "serve_multiplexed_model_id"


def test_url_of_and_replaced() -> None:
    assert [fuzz.url_of("/embed", "/"), fuzz.url_of("", "/"), fuzz.url_of("", "/v1/models")] == [
        "/embed", "/", "/v1/models"]
    before = {"embed/Embedder": {"a", "b"}, "llm/OpenAiIngress": {"c"}}
    after = {"embed/Embedder": {"a", "d"}, "llm/OpenAiIngress": {"c"}}
    assert fuzz.replaced(before, after) == {"embed/Embedder": 1}
