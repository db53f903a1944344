"""The error contract on a bare FastAPI app: every class of bad input is a JSON 4xx naming the problem."""

from __future__ import annotations

import json

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel, ConfigDict, StrictStr

from stack.serving.api_errors import DECODED_HEADERS, field_path, install
from tests.isolated_replica import chunked_post


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: StrictStr


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = install(FastAPI(), max_body_bytes=100)

    @app.post("/echo")
    async def echo(body: Body) -> dict:
        return {"text": body.text}

    return TestClient(app)


def error(resp) -> dict:
    assert resp.headers["content-type"] == "application/json"
    return resp.json()["error"]


def test_good_request(client: TestClient) -> None:
    assert client.post("/echo", json={"text": "hi"}).json() == {"text": "hi"}


@pytest.mark.parametrize(("content", "headers", "status", "param"), [
    ('{"text": ', {"Content-Type": "application/json"}, 400, None),
    ('{"text": "hi", "more": 1}', {"Content-Type": "application/json"}, 422, "more"),
    ('{"text": 1}', {"Content-Type": "application/json"}, 422, "text"),
    ("{}", {"Content-Type": "application/json"}, 422, "text"),
    ('{"text": "hi"}', {"Content-Type": "text/plain"}, 415, "Content-Type"),
    ('{"text": "hi"}', {}, 415, "Content-Type"),
    ('{"text": "' + "x" * 200 + '"}', {"Content-Type": "application/json"}, 413, None),
])
def test_bad_input(client: TestClient, content: str, headers: dict, status: int, param: str | None) -> None:
    resp = client.post("/echo", content=content, headers=headers)
    assert resp.status_code == status
    err = error(resp)
    assert err["code"] == status and err["param"] == param and err["message"]


def test_chunked_body_over_limit_is_413(client: TestClient) -> None:
    chunks = (b'{"text": "' + b"x" * 60 + b'"}' for _ in range(3))  # no Content-Length
    resp = client.post("/echo", content=chunks, headers={"Content-Type": "application/json"})
    assert resp.status_code == 413, resp.text
    assert error(resp) == {"message": "request body exceeds 100 bytes", "type": "request_too_large",
                           "param": None, "code": 413}


def test_chunked_body_under_limit_reaches_the_route(client: TestClient) -> None:
    chunks = (part for part in (b'{"te', b'xt": "', b"hi", b'"}'))
    assert client.post("/echo", content=chunks, headers={"Content-Type": "application/json"}).json() == {
        "text": "hi"}


def test_a_streamed_body_is_read_no_further_than_the_limit(client: TestClient) -> None:
    # Driven as raw ASGI so each chunk is its own message, as a server delivers a chunked body.
    answer = chunked_post(client.app, "/echo", [b"x" * 40] * 50)
    assert answer.status == 413 and json.loads(answer.body)["error"]["code"] == 413
    assert answer.chunks_read == 3  # 120 bytes passed the limit of 100; the other 47 were never read


HEADERS = ["serve_multiplexed_model_id", "Serve-Multiplexed-Model-Id", "x-request-id", "x-session-id",
           "x-request-timeout-seconds", "traceparent"]


@pytest.mark.parametrize("header", HEADERS)
@pytest.mark.parametrize("value", [b"\xff\xfe", "café".encode(), "caf\u00e9".encode("latin-1")])
def test_a_non_ascii_header_is_400_naming_it(client: TestClient, header: str, value: bytes) -> None:
    resp = client.post("/echo", json={"text": "hi"}, headers=[(header.encode(), value)])
    assert resp.status_code == 400
    err = error(resp)
    canonical = header.lower().replace("-", "_") if "multiplexed" in header.lower() else header
    assert err["param"] == canonical and err["type"] == "invalid_header" and canonical in err["message"]


def test_other_headers_may_carry_any_bytes(client: TestClient) -> None:
    resp = client.post("/echo", json={"text": "hi"}, headers=[(b"user-agent", "naïve".encode())])
    assert resp.status_code == 200


def test_header_names_match_serves() -> None:
    """The headers Serve decodes, by its own constants, so a Ray upgrade that renames one shows here."""
    from ray.serve._private import constants as c

    names = {c.SERVE_MULTIPLEXED_MODEL_ID, c.SERVE_SESSION_ID, c.SERVE_HTTP_REQUEST_ID_HEADER,
             c.SERVE_HTTP_REQUEST_TIMEOUT_S_HEADER, "traceparent"}
    assert names == set(DECODED_HEADERS)


def test_unknown_route_and_method_are_json(client: TestClient) -> None:
    assert error(client.get("/nowhere"))["code"] == 404
    assert error(client.get("/echo"))["code"] == 405


@pytest.mark.parametrize(("loc", "expected"), [
    (("body", "features", 0, "int"), "features[0]"),
    (("messages", 0, "ChatCompletionDeveloperMessageParam", "content", "str"), "messages[0].content"),
    (("body", "text", "function-after[_not_blank(), constrained-str]"), "text"),
    (("body",), None),
])
def test_field_path(loc: tuple, expected: str | None) -> None:
    assert field_path(loc) == expected
